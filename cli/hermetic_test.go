package cli_test

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// decoy is a config file a test must never read: its settings break every
// transfer.
const decoy = "# A decoy: a test that reads this let the developer's environment in.\n" +
	"user: decoy\nnats:\n  url: tls://127.0.0.1:1\npeer:\n  listen: 192.0.2.1:9\nsession:\n  ttl: 1s\nlog:\n  level: debug\n"

// setDecoys points every variable a developer's shell may set for SFT, its
// config and NATS at decoys, for the rest of the test, and returns the
// directory that holds every decoy (which must stay as it is).
func setDecoys(t *testing.T) string {
	dir := t.TempDir()
	home, xdg := filepath.Join(dir, "home"), filepath.Join(dir, "xdg-config")
	file := filepath.Join(dir, "sft.yaml")
	for _, d := range []string{filepath.Join(home, ".config", "sft"), filepath.Join(xdg, "sft"), dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "sft.yaml"), []byte(decoy), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range map[string]string{
		"HOME": home, "XDG_CONFIG_HOME": xdg, "XDG_DATA_HOME": filepath.Join(dir, "xdg-data"),
		"XDG_CACHE_HOME": filepath.Join(dir, "xdg-cache"), "XDG_RUNTIME_DIR": filepath.Join(dir, "xdg-runtime"),
		"SFT_CONFIG": file, "SFT_CONFIG_DIR": dir, "SFT_DATA_DIR": filepath.Join(dir, "data"),
		"SFT_NATS_URL": "tls://127.0.0.1:1", "SFT_USER": "decoy", "SFT_PEER_LISTEN": "192.0.2.1:9",
		"SFT_LOG_LEVEL": "debug", "NATS_URL": "nats://127.0.0.1:1",
	} {
		t.Setenv(k, v)
	}
	return dir
}

// Nothing of the developer's environment reaches what the harness runs:
// with XDG_*, SFT_* and NATS_URL pointing at decoys, two users log in,
// send and receive through sft-cli processes, each with a token of its own,
// and no decoy is read or written.
func TestHarnessIsHermetic(t *testing.T) {
	bin := sftCLI(t) // built before the decoys, with the real Go caches
	decoys := setDecoys(t)
	before := treeOf(t, decoys)

	h := start(t, nil)
	ctx := within(t, time.Minute)
	alice := &env{t: t, h: h.Harness, user: "alice", vars: h.Env("alice")}
	bob := &env{t: t, h: h.Harness, user: "bob", vars: h.Env("bob")}
	for _, e := range []*env{alice, bob} {
		if out, err := runCLI(t, startCLI(t, ctx, bin, e, "login")); err != nil {
			t.Fatalf("sft-cli login as %s: %v\n%s", e.user, err, out)
		}
	}
	src := randomFile(t, t.TempDir(), "hermetic.bin", 1<<20)
	send := startCLI(t, ctx, bin, alice, "send", src, "--to", "bob", "--json")
	s := openSession(t, alice, "hermetic.bin")
	out := t.TempDir()
	if got, err := runCLI(t, startCLI(t, ctx, bin, bob, "recv", s.ID, "-o", out)); err != nil {
		t.Fatalf("sft-cli recv as bob: %v\n%s", err, got)
	}
	if got, err := runCLI(t, send); err != nil {
		t.Fatalf("sft-cli send as alice: %v\n%s", err, got)
	}
	sameFile(t, src, filepath.Join(out, "hermetic.bin"))
	if s.Initiator != "alice" || s.Responder != "bob" {
		t.Errorf("the session went from %s to %s", s.Initiator, s.Responder)
	}
	if got := treeOf(t, decoys); !slices.Equal(got, before) {
		t.Errorf("the decoys changed: %v, were %v", got, before)
	}
}

// runCLI waits for p to end and returns what it printed.
func runCLI(t *testing.T, p *cliProc) (string, error) {
	t.Helper()
	out, _ := io.ReadAll(p.stdout)
	err := p.cmd.Wait()
	return string(out) + p.stderr.String(), err
}

// treeOf lists the files under dir.
func treeOf(t *testing.T, dir string) []string {
	t.Helper()
	var paths []string
	err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return paths
}
