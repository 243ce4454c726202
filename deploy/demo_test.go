package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemo runs the README's first Quick start command, deploy/demo.sh, as a
// user whose shell carries SFT, XDG and NATS settings of their own, each of
// which would break the transfer if it reached the demo's stack.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("a 64 MiB transfer on a stack of its own")
	}
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	bin := buildBinaries(t)
	decoy := t.TempDir()
	conf := filepath.Join(decoy, "xdg", "sft", "sft.yaml")
	if err := os.MkdirAll(filepath.Dir(conf), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("nats:\n  url: tls://127.0.0.1:1\nsession:\n  ttl: 1s\npeer:\n  listen: 192.0.2.1:9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bash, filepath.Join(repoRoot(t), "deploy", "demo.sh"), filepath.Dir(bin("sftd")))
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + filepath.Join(decoy, "home"),
		"XDG_CONFIG_HOME=" + filepath.Join(decoy, "xdg"), "SFT_CONFIG=" + conf,
		"SFT_SESSION_TTL=1s", "SFT_PEER_LISTEN=192.0.2.1:9", "SFT_USER=decoy", "SFT_NATS_URL=tls://127.0.0.1:1",
		"SFT_STORE_BACKEND=redis", "NATS_URL=nats://127.0.0.1:1",
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"== the file arrived intact", "completed  alice → bob"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}
