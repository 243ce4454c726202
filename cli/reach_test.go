package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sftproject/sft/internal/netns"
	"github.com/sftproject/sft/internal/syncbuf"
)

// machines is an SFT server and client machines in network namespaces,
// each client with a home of its own that knows only the server's URL and
// CA file, as the README's "Two machines" sets them up.
type machines struct {
	t      *testing.T
	bin    string
	server *netns.NS
	srvEnv []string
	url    string
	caFile string
	homes  map[string]string // user → home
	nss    map[string]*netns.NS
}

// startMachines starts `sftd dev --listen 0.0.0.0:4222` on server, with
// extra environment for it, and adds a user per client machine.
func startMachines(t *testing.T, ctx context.Context, server *netns.NS, serverIP string, extraEnv []string, clients map[string]*netns.NS) *machines {
	t.Helper()
	m := &machines{t: t, bin: buildBinaries(t), server: server, homes: map[string]string{}, nss: clients}
	m.srvEnv = append(machineEnv(m.bin, t.TempDir()), extraEnv...)
	out := startServer(t, ctx, server, m.bin, m.srvEnv, "NATS at", "dev", "--listen", "0.0.0.0:4222")
	m.caFile = submatch(t, out, `(?m)^sftd dev: CA certificate at (\S+)`)
	m.url = "tls://" + net.JoinHostPort(serverIP, "4222")
	for user, ns := range clients {
		add := server.Command(ctx, filepath.Join(m.bin, "sftd"), "user", "add", user)
		add.Env, add.Stdin = m.srvEnv, strings.NewReader("pw-"+user+"\n")
		if b, err := add.CombinedOutput(); err != nil {
			t.Fatalf("sftd user add %s: %v\n%s", user, err, b)
		}
		home := t.TempDir()
		copyFile(t, m.caFile, filepath.Join(home, "sft-ca.pem"))
		m.homes[user] = home
		login := ns.Command(ctx, filepath.Join(m.bin, "sft-cli"), "login", "--user", user)
		login.Env, login.Stdin = m.env(user), strings.NewReader("pw-"+user+"\n")
		if b, err := login.CombinedOutput(); err != nil {
			t.Fatalf("login %s: %v\n%s", user, err, b)
		}
	}
	return m
}

// env is user's whole environment on their machine.
func (m *machines) env(user string) []string {
	home := m.homes[user]
	return append(machineEnv(m.bin, home), "SFT_NATS_URL="+m.url, "SFT_NATS_CA_FILE="+filepath.Join(home, "sft-ca.pem"))
}

// cli runs sft-cli as user on their machine and returns its output.
func (m *machines) cli(ctx context.Context, user string, args ...string) (stdout, stderr string, err error) {
	cmd := m.nss[user].Command(ctx, filepath.Join(m.bin, "sft-cli"), args...)
	var out, errb bytes.Buffer
	cmd.Env, cmd.Stdout, cmd.Stderr = m.env(user), &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// machineProc is an sft-cli process on a machine of the test.
type machineProc struct {
	cmd    *exec.Cmd
	stdout *syncbuf.Buffer
	stderr *syncbuf.Buffer
	done   chan struct{}
	err    error
}

func (m *machines) start(ctx context.Context, user string, args ...string) *machineProc {
	m.t.Helper()
	p := &machineProc{cmd: m.nss[user].Command(ctx, filepath.Join(m.bin, "sft-cli"), args...), stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd.Env, p.cmd.Stdout, p.cmd.Stderr = m.env(user), p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	m.t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *machineProc) wait(t *testing.T, what string) string {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s still running after 2 minutes:\n%s", what, p.stderr.String())
	}
	if p.err != nil {
		t.Fatalf("%s: %v\n%s", what, p.err, p.stderr.String())
	}
	return p.stdout.String()
}

// sessionOf waits until p (a send) printed its session id, and returns it.
func (p *machineProc) sessionOf(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(p.stderr.String(), "\n") {
			if rest, ok := strings.CutPrefix(l, "Session "); ok {
				return strings.TrimSuffix(strings.Fields(rest)[0], ":")
			}
		}
		select {
		case <-p.done:
			t.Fatalf("send ended before its session appeared: %v\n%s", p.err, p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no session appeared:\n%s", p.stderr.String())
	return ""
}

// transferResult is the result line of a transfer with --json.
type transferResult struct {
	Type  string `json:"type"`
	Bytes int64  `json:"bytes"`
	Moved int64  `json:"moved"`
	Path  string `json:"path"`
	Via   string `json:"via"`
}

func lastResult(t *testing.T, out string) transferResult {
	t.Helper()
	var r transferResult
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var x transferResult
		if json.Unmarshal([]byte(l), &x) == nil && x.Type == "result" {
			r = x
		}
	}
	if r.Type == "" {
		t.Fatalf("no result line in:\n%s", out)
	}
	return r
}

// completedEvent replays the session's events as user and returns the
// completed one's path and address.
func (m *machines) completedEvent(t *testing.T, ctx context.Context, user, id string) (path, via string) {
	t.Helper()
	out, errOut, err := m.cli(ctx, user, "watch", "--session", id, "--json")
	if err != nil {
		t.Fatalf("watch: %v\n%s", err, errOut)
	}
	for _, l := range strings.Split(out, "\n") {
		var ev struct{ Type, Path, Via string }
		if json.Unmarshal([]byte(l), &ev) == nil && ev.Type == "completed" {
			return ev.Path, ev.Via
		}
	}
	t.Fatalf("no completed event in:\n%s", out)
	return "", ""
}

// knock opens and closes n connections to addr from ns at once, as a port
// scanner does.
func knock(t *testing.T, ctx context.Context, ns *netns.NS, addr string, n int) {
	t.Helper()
	err := ns.Do(func() error {
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				var d net.Dialer
				if c, err := d.DialContext(ctx, "tcp", addr); err == nil {
					c.Close()
				}
			})
		}
		wg.Wait()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// markerFile writes size bytes of a recognisable text, so a test can tell
// whether any of it crossed a wire in clear.
func markerFile(t *testing.T, dir, name string, size int) (path string, marker []byte) {
	t.Helper()
	marker = []byte("SFT-PLAINTEXT-MARKER-7f3a9c")
	line := append(append([]byte{}, marker...), '\n')
	path = filepath.Join(dir, name)
	if err := os.WriteFile(path, bytes.Repeat(line, size/len(line)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, marker
}

// recordingProxy forwards every connection to target and keeps a copy of
// all the bytes that crossed it, both ways.
type recordingProxy struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recordingProxy) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(b)
}

func (r *recordingProxy) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

func startRecordingProxy(t *testing.T, ctx context.Context, ns *netns.NS, listen, target string) *recordingProxy {
	t.Helper()
	ln, err := ns.Listen(ctx, "tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingProxy{}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				up, err := ns.Dial(ctx, "tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				var pipes sync.WaitGroup
				pipes.Go(func() { io.Copy(io.MultiWriter(up, rec), c); up.(*net.TCPConn).CloseWrite() })
				pipes.Go(func() { io.Copy(io.MultiWriter(c, rec), up); c.(*net.TCPConn).CloseWrite() })
				pipes.Wait()
			})
		}
	})
	return rec
}

// announced returns the addresses the listening side of session id
// announced, as user reads them.
func (m *machines) announced(t *testing.T, ctx context.Context, user, id string) []string {
	t.Helper()
	out, errOut, err := m.cli(ctx, user, "ls", "--json")
	if err != nil {
		t.Fatalf("ls: %v\n%s", err, errOut)
	}
	var all []struct {
		ID        string   `json:"id"`
		PeerAddrs []string `json:"peer_addrs"`
	}
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatalf("ls --json: %v\n%s", err, out)
	}
	for _, s := range all {
		if s.ID == id {
			return s.PeerAddrs
		}
	}
	t.Fatalf("session %s not in ls:\n%s", id, out)
	return nil
}

// ip runs ip with args in ns.
func ip(t *testing.T, ctx context.Context, ns *netns.NS, args ...string) {
	t.Helper()
	if b, err := ns.Command(ctx, "ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, b)
	}
}

// startRelay runs `sftd relay` on the server with its data (the ticket
// key) until the test ends.
func (m *machines) startRelay(t *testing.T, ctx context.Context, listen string) {
	t.Helper()
	startServer(t, ctx, m.server, m.bin, m.srvEnv, "serving on", "relay", "--listen", listen)
}

// killAtBytes SIGKILLs p once its --json progress shows n bytes.
func (p *machineProc) killAtBytes(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
		for sc.Scan() {
			if reached(sc.Bytes(), n) {
				p.cmd.Process.Signal(syscall.SIGKILL)
				<-p.done
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("finished before it could be killed: %v\n%s", p.err, p.stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatal("no progress within a minute")
}

// TestRelayBetweenNATs puts alice and bob each behind a NAT router of
// their own, the server on the "internet" between them. With no route
// from one home network to the other, the transfer goes through the
// relay, which sees only ciphertext; with routes between the routers, it
// goes directly; and a transfer cut on the direct path resumes through the
// relay once that path is gone.
func TestRelayBetweenNATs(t *testing.T) {
	tp := netns.New(t)
	wan := tp.Bridge("wan")
	server := tp.Namespace("server")
	alice, bob := tp.Namespace("alice"), tp.Namespace("bob")
	gwA, gwB := tp.Router("gw-alice"), tp.Router("gw-bob")
	wan.Attach(server, "203.0.113.1/24")
	gwA.Masquerade(wan.Attach(gwA, "203.0.113.2/24"))
	gwB.Masquerade(wan.Attach(gwB, "203.0.113.3/24"))
	tp.Link(alice, "198.51.100.2/25", gwA, "198.51.100.1/25")
	tp.Link(bob, "198.51.100.130/25", gwB, "198.51.100.129/25")
	alice.DefaultRoute("198.51.100.1")
	bob.DefaultRoute("198.51.100.129")
	ctx := within(t, 4*time.Minute)

	// The relay runs as its own process behind a proxy that records every
	// byte it is given; sftd dev offers the proxy's address.
	m := startMachines(t, ctx, server, "203.0.113.1", []string{"SFT_RELAY_ADDRS=203.0.113.1:4300"},
		map[string]*netns.NS{"alice": alice, "bob": bob})
	m.startRelay(t, ctx, "203.0.113.1:4223")
	rec := startRecordingProxy(t, ctx, server, "203.0.113.1:4300", "203.0.113.1:4223")

	send := func(src string) (*machineProc, string) {
		p := m.start(ctx, "alice", "send", src, "--to", "bob")
		return p, p.sessionOf(t)
	}
	recv := func(id, dir string, args ...string) transferResult {
		out, errOut, err := m.cli(ctx, "bob", append([]string{"recv", id, "-o", dir, "--yes", "--json"}, args...)...)
		if err != nil {
			t.Fatalf("recv: %v\n%s", err, errOut)
		}
		return lastResult(t, out)
	}

	t.Run("relay", func(t *testing.T) {
		src, marker := markerFile(t, t.TempDir(), "secret.txt", 16<<20)
		sender, id := send(src)
		// A scan of the relay first: it must not cost the transfer.
		knock(t, ctx, bob, "203.0.113.1:4300", 100)
		dir := t.TempDir()
		got := recv(id, dir)
		sender.wait(t, "send")
		if got.Path != "relay" || got.Via != "203.0.113.1:4300" {
			t.Errorf("went %s via %s, want relay via 203.0.113.1:4300", got.Path, got.Via)
		}
		sameFile(t, src, filepath.Join(dir, "secret.txt"))
		if path, via := m.completedEvent(t, ctx, "alice", id); path != "relay" || via != "203.0.113.1:4300" {
			t.Errorf("completed event: %s via %s", path, via)
		}
		seen := rec.bytes()
		if len(seen) < 16<<20 {
			t.Errorf("the relay carried %d bytes, less than the file", len(seen))
		}
		if bytes.Contains(seen, marker) {
			t.Error("the file's plaintext crossed the relay")
		}
		t.Logf("the relay carried %d bytes for a %d-byte file, none of it in clear", len(seen), 16<<20)
	})

	// Routes between the two home networks: the peers reach each other
	// (each router masquerades what it forwards).
	ip(t, ctx, gwA, "route", "add", "198.51.100.128/25", "via", "203.0.113.3")
	ip(t, ctx, gwB, "route", "add", "198.51.100.0/25", "via", "203.0.113.2")

	t.Run("direct", func(t *testing.T) {
		src := randomFile(t, t.TempDir(), "direct.bin", 4<<20)
		sender, id := send(src)
		addrs := m.announced(t, ctx, "bob", id)
		if len(addrs) == 0 || !strings.HasPrefix(addrs[0], "198.51.100.2:") {
			t.Fatalf("alice announced %q, want her LAN address first", addrs)
		}
		knock(t, ctx, bob, addrs[0], 100) // a port scan of the listening peer
		dir := t.TempDir()
		got := recv(id, dir)
		sender.wait(t, "send")
		if got.Path != "direct" || got.Via != addrs[0] {
			t.Errorf("went %s via %s, want direct via %s", got.Path, got.Via, addrs[0])
		}
		sameFile(t, src, filepath.Join(dir, "direct.bin"))
		if path, _ := m.completedEvent(t, ctx, "bob", id); path != "direct" {
			t.Errorf("completed event says %s", path)
		}
	})

	t.Run("resume on the relay", func(t *testing.T) {
		const size = 256 << 20
		src := randomFile(t, t.TempDir(), "big.bin", size)
		sender, id := send(src)
		dir := t.TempDir()
		first := m.start(ctx, "bob", "recv", id, "-o", dir, "--yes", "--json")
		first.killAtBytes(t, size/2) // past the first checkpoint (64 MiB)
		// The direct path goes away while bob is down.
		ip(t, ctx, gwA, "route", "del", "198.51.100.128/25")
		ip(t, ctx, gwB, "route", "del", "198.51.100.0/25")
		got := recv(id, dir)
		sender.wait(t, "send")
		if got.Path != "relay" {
			t.Errorf("resumed %s via %s, want relay", got.Path, got.Via)
		}
		if got.Moved >= size || got.Bytes != size {
			t.Errorf("the rerun moved %d of %d bytes: it did not resume", got.Moved, got.Bytes)
		}
		sameFile(t, src, filepath.Join(dir, "big.bin"))
	})
}
