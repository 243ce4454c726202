package deploy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sftproject/sft/internal/hermetic"
	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/sftproject/sft/services/store/redisstore/redistest"
)

// The production topology as real processes on loopback: nats-server with
// deploy/nats-server.conf, redis-server, `sftd auth`, two `sftd session`
// replicas and `sftd key`, and sft-cli processes moving files.
func TestProductionTopology(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a dozen processes")
	}
	rs := redistest.Start(t, redistest.Options{})
	bin := buildBinaries(t)
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	data := sftdCerts(t, filepath.Join(dir, "data"))
	// Each process sees only what this test sets.
	base := append(hermetic.Home(home), "PATH="+os.Getenv("PATH"), "SFT_DATA_DIR="+data)

	// nats-server runs in a directory laid out as its configuration expects.
	natsDir := filepath.Join(dir, "nats")
	for src, dst := range map[string]string{
		"nats-server.conf":               "nats-server.conf",
		data + "/pki/ca.pem":             "pki/ca.pem",
		data + "/pki/server.pem":         "pki/server.pem",
		data + "/pki/server-key.pem":     "pki/server-key.pem",
		data + "/secrets/nats-auth.conf": "secrets/nats-auth.conf",
	} {
		copyFile(t, src, filepath.Join(natsDir, dst))
	}
	nats := startNATS(t, "nats-server.conf", natsDir)
	natsPort := nats.URL[strings.LastIndex(nats.URL, ":")+1:]

	env := append(base,
		"SFT_NATS_URL=tls://127.0.0.1:"+natsPort,
		"SFT_NATS_CA_FILE="+data+"/pki/ca.pem",
		"SFT_STORE_BACKEND=redis",
		"SFT_REDIS_URL="+rs.URL(),
	)
	auth := start(t, "auth", dir, env, bin("sftd"), "auth")
	session1 := start(t, "session-1", dir, env, bin("sftd"), "session")
	session2 := start(t, "session-2", dir, env, bin("sftd"), "session")
	key := start(t, "key", dir, env, bin("sftd"), "key")
	for _, p := range []*proc{auth, session1, session2, key} {
		p.waitFor(t, "serving on")
	}
	as := aliceAndBob(t, dir, env, bin)
	transfer := transfers(t, dir, 16<<20, as, bin)
	transfer("first", func(string) {})
	// A session replica dies (SIGKILL) while a session is open: the other
	// replica carries on, and nothing is lost or stuck.
	transfer("replica-killed", func(string) { session1.kill() })
	// Redis restarts (AOF) under a live session.
	transfer("redis-restarted", func(string) { rs.Restart() })

	ls := mustRun(t, as("alice"), nil, bin("sft-cli"), "ls")
	if n := strings.Count(ls, "completed"); n != 3 || strings.Contains(ls, "waiting") || strings.Contains(ls, "joined") {
		t.Fatalf("alice's sessions after three transfers:\n%s", ls)
	}
	// No session key outlives its session: each went with the write that
	// ended it.
	opt, err := redis.ParseURL(rs.URL())
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opt)
	defer rc.Close()
	if keys, err := rc.Keys(t.Context(), "sft:k:*").Result(); err != nil || len(keys) != 0 {
		t.Fatalf("session keys in Redis after three completed sessions: %v (%v)", keys, err)
	}

	// SIGTERM: the surviving replica drains and exits cleanly.
	session2.signal(syscall.SIGTERM)
	if err := session2.wait(15 * time.Second); err != nil {
		t.Fatalf("session replica after SIGTERM: %v\n%s", err, session2.output())
	}
	session2.waitFor(t, "msg=stopped")
}

// aliceAndBob adds the users alice and bob (sftd user add) and logs both
// in (sft-cli login); as gives the environment of sft-cli as one of them.
func aliceAndBob(t *testing.T, dir string, env []string, bin func(string) string) (as func(user string) []string) {
	t.Helper()
	as = func(user string) []string {
		return append(slices.Clip(env), "SFT_CONFIG_DIR="+filepath.Join(dir, user), "SFT_USER="+user, "SFT_PASSWORD="+user+"-password")
	}
	for _, user := range []string{"alice", "bob"} {
		mustRun(t, env, strings.NewReader(user+"-password\n"), bin("sftd"), "user", "add", user)
		mustRun(t, as(user), nil, bin("sft-cli"), "login")
	}
	return as
}

// transfers returns transfer, which sends a file of size random bytes
// from alice to bob with sft-cli and checks bob got it; during gets the
// session's id and runs between its creation and bob's receive.
func transfers(t *testing.T, dir string, size int64, as func(string) []string, bin func(string) string) (transfer func(name string, during func(id string))) {
	t.Helper()
	src := filepath.Join(dir, "payload.bin")
	writeRandom(t, src, size)
	waiting := regexp.MustCompile(`Session (\S+): waiting for bob`)
	return func(name string, during func(id string)) {
		t.Helper()
		out := filepath.Join(dir, "inbox-"+name)
		if err := os.MkdirAll(out, 0o700); err != nil {
			t.Fatal(err)
		}
		send := start(t, "send-"+name, dir, as("alice"), bin("sft-cli"), "send", src, "--to", "bob")
		send.waitFor(t, "waiting for bob")
		during(waiting.FindStringSubmatch(send.output())[1])
		mustRun(t, as("bob"), nil, bin("sft-cli"), "recv", "-o", out)
		if err := send.wait(time.Minute); err != nil {
			t.Fatalf("send %s: %v\n%s", name, err, send.output())
		}
		sameFile(t, src, filepath.Join(out, "payload.bin"))
	}
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// buildBinaries builds sftd and sft-cli once per test binary.
func buildBinaries(t *testing.T) func(string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "sft-bin-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binDir+"/", "../services/sftd", "../cli/sft-cli").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return func(name string) string { return filepath.Join(binDir, name) }
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// proc is a child process whose output is kept for assertions and logs.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  syncbuf.Buffer
	done chan struct{}
	err  error
}

func (p *proc) output() string { return p.out.String() }

func start(t *testing.T, name, dir string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = hermetic.Environ(env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, p.output())
		}
	})
	return p
}

func (p *proc) signal(s syscall.Signal) { _ = p.cmd.Process.Signal(s) }

func (p *proc) kill() {
	select {
	case <-p.done:
	default:
		p.signal(syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s still running after %s", p.name, d)
	}
}

// waitFor waits until the process printed s.
func (p *proc) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.output(), s) {
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before printing %q:\n%s", p.name, p.err, s, p.output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not print %q:\n%s", p.name, s, p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustRun(t *testing.T, env []string, stdin io.Reader, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = hermetic.Environ(env...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}

func writeRandom(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		t.Fatal(err)
	}
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ", a, b)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}
