package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sftproject/sft/internal/hermetic"
	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/sftproject/sft/services/daemon"
)

// envRequireNATS turns a missing nats-server binary from a skip into a
// failure, so CI cannot pass by silently skipping.
const envRequireNATS = "SFT_REQUIRE_NATS"

// Generous bounds for a busy 2-core machine; none of them bounds a test that
// passes.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 15 * time.Second
)

// repoRoot is the repository root; tests run in deploy/.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// sftdCerts runs `sftd certs --host nats`, as `task certs` does, with its
// data directory at dataDir, and returns dataDir. Each of clients also
// gets a client certificate (--client).
func sftdCerts(t testing.TB, dataDir string, clients ...string) string {
	t.Helper()
	env := append(hermetic.Home(t.TempDir()), "SFT_DATA_DIR="+dataDir)
	var out, errOut bytes.Buffer
	stdio := daemon.IO{In: strings.NewReader(""), Out: &out, Err: &errOut}
	args := []string{"certs", "--host", "nats"}
	for _, c := range clients {
		args = append(args, "--client", c)
	}
	if err := daemon.Run(t.Context(), stdio, args, env); err != nil {
		t.Fatalf("sftd certs: %v\n%s", err, errOut.String())
	}
	return dataDir
}

// copyFile copies src to dst with src's permission bits, creating dst's
// directory (0700) as needed.
func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	st, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, st.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
}

// natsBinary finds nats-server on PATH or skips the test, unless
// SFT_REQUIRE_NATS=1.
func natsBinary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err == nil {
		return bin
	}
	msg := "nats-server not found on PATH; install it with `go install github.com/nats-io/nats-server/v2@v2.15.2` to run this test"
	if os.Getenv(envRequireNATS) == "1" {
		t.Fatalf("%s (%s=1 requires it)", msg, envRequireNATS)
	}
	t.Skip(msg)
	return ""
}

// natsProc is a nats-server process started by startNATS or launchNATS.
type natsProc struct {
	URL      string // client URL, tls://127.0.0.1:port
	Monitor  string // monitoring URL, http://127.0.0.1:port
	log      *syncbuf.Buffer
	cmd      *exec.Cmd
	portsDir string
	exited   chan struct{}
	waitErr  error
}

// startNATS runs the nats-server binary with the configuration conf and the
// working directory dir, on random ports of 127.0.0.1 (the flags override
// the configuration's listen addresses), waits until /healthz reports it
// ready (JetStream included) and stops it when the test ends. args are
// more flags.
func startNATS(t testing.TB, conf, dir string, args ...string) *natsProc {
	t.Helper()
	p := launchNATS(t, conf, dir, args...)
	p.ready(t)
	return p
}

// launchNATS is startNATS without the wait for readiness: a cluster node
// is ready only once a majority of the nodes run.
func launchNATS(t testing.TB, conf, dir string, args ...string) *natsProc {
	t.Helper()
	bin := natsBinary(t)
	p := &natsProc{log: &syncbuf.Buffer{}, portsDir: t.TempDir(), exited: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, append([]string{"-c", conf,
		"-a", "127.0.0.1", "-p", "-1", "-m", "-1", "--ports_file_dir", p.portsDir}, args...)...)
	cmd.Dir = dir
	// The configuration reads variables ($SFT_AUTH_NKEY, ...): only its
	// include may define them.
	cmd.Env = hermetic.Environ()
	cmd.Stdout, cmd.Stderr = p.log, p.log
	// SIGTERM lets it shut down cleanly; WaitDelay kills it if it hangs.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopTimeout
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start nats-server: %v", err)
	}
	p.cmd = cmd
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.exited
		if t.Failed() {
			t.Logf("nats-server %s output:\n%s", conf, p.log.String())
		}
	})
	return p
}

// ready waits until the server reports itself healthy on /healthz.
func (p *natsProc) ready(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-p.exited:
			t.Fatalf("nats-server exited: %v\n%s", p.waitErr, p.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server not ready after %s\n%s", startTimeout, p.log.String())
		}
		if p.URL == "" {
			p.URL, p.Monitor = readPortsFile(p.portsDir)
		}
		if p.Monitor != "" && healthy(p.Monitor) {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// kill ends the server at once (SIGKILL), as a crashed machine would.
func (p *natsProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// readPortsFile returns the client and monitoring URLs nats-server wrote
// once it listens, or empty strings before that.
func readPortsFile(dir string) (client, monitor string) {
	files, _ := filepath.Glob(filepath.Join(dir, "*.ports"))
	if len(files) != 1 {
		return "", ""
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		return "", ""
	}
	var ports struct {
		NATS       []string `json:"nats"`
		Monitoring []string `json:"monitoring"`
	}
	if json.Unmarshal(b, &ports) != nil || len(ports.NATS) == 0 || len(ports.Monitoring) == 0 {
		return "", "" // partly written
	}
	return ports.NATS[0], ports.Monitoring[0]
}

// healthy asks the endpoint the compose health check uses.
func healthy(monitor string) bool {
	resp, err := http.Get(monitor + "/healthz")
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitForOutput waits until out contains want, or done closes (the writer
// has stopped), or startTimeout passes.
func waitForOutput(out *syncbuf.Buffer, want string, done <-chan struct{}) error {
	deadline := time.After(startTimeout)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(out.String(), want) {
		select {
		case <-done:
			return fmt.Errorf("exited before printing %q", want)
		case <-deadline:
			return fmt.Errorf("no %q after %s", want, startTimeout)
		case <-tick.C:
		}
	}
	return nil
}

// verifyLine is the commented line of deploy/nats-server.conf that turns
// on mutual TLS.
const verifyLine = "  # verify: true\n"

// enableVerify turns on mutual TLS in a copy of deploy/nats-server.conf by
// uncommenting its `verify: true` line, as its comment tells an operator.
func enableVerify(t testing.TB, conf string) {
	t.Helper()
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), verifyLine); n != 1 {
		t.Fatalf("%s has %d lines %q, want one", conf, n, strings.TrimSpace(verifyLine))
	}
	b = []byte(strings.Replace(string(b), verifyLine, "  verify: true\n", 1))
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
