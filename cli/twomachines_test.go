package cli_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sftproject/sft/internal/netns"
	"github.com/sftproject/sft/internal/syncbuf"
)

// TestTwoMachines follows the README's "Two machines" on three machines
// (network namespaces on one bridge, each with only its own real address):
// `sftd dev --listen 0.0.0.0:4222` with otherwise default settings on the
// server, users added there as the README says, and on the two clients
// nothing but what sftd dev printed: a URL, the CA file (copied over) and
// the line to run.
func TestTwoMachines(t *testing.T) {
	tp := netns.New(t)
	lan := tp.Bridge("lan")
	server, alice, bob := tp.Namespace("server"), tp.Namespace("alice"), tp.Namespace("bob")
	lan.Attach(server, "203.0.113.1/24")
	aliceIface := lan.Attach(alice, "203.0.113.2/24")
	lan.Attach(bob, "203.0.113.3/24")
	bin := buildBinaries(t)
	ctx := within(t, 3*time.Minute)

	// The server machine.
	srvEnv := machineEnv(bin, t.TempDir())
	out := startServer(t, ctx, server, bin, srvEnv, "NATS at", "dev", "--listen", "0.0.0.0:4222")
	var urls []string
	for _, m := range regexp.MustCompile(`(?m)^sftd dev: NATS at (\S+)$`).FindAllStringSubmatch(out, -1) {
		urls = append(urls, m[1])
	}
	if !slices.Equal(urls, []string{"tls://127.0.0.1:4222", "tls://203.0.113.1:4222"}) {
		t.Errorf("sftd dev printed the URLs %q, want the loopback one and the LAN address's", urls)
	}
	caFile := submatch(t, out, `(?m)^sftd dev: CA certificate at (\S+)`)
	example := regexp.MustCompile(`(?m)^sftd dev: on another machine, copy the CA file to ~/(\S+) and run: (.+)$`).FindStringSubmatch(out)
	if example == nil {
		t.Fatalf("sftd dev printed no example for other machines:\n%s", out)
	}
	caName, line := example[1], example[2]
	if !strings.Contains(line, "SFT_NATS_URL=tls://203.0.113.1:4222") {
		t.Errorf("the example does not use the LAN URL: %s", line)
	}

	// echo "$PW" | sftd user add NAME, on the server.
	for _, user := range []string{"alice", "bob"} {
		add := server.Command(ctx, filepath.Join(bin, "sftd"), "user", "add", user)
		add.Env, add.Stdin = srvEnv, strings.NewReader("pw-"+user+"\n")
		if b, err := add.CombinedOutput(); err != nil {
			t.Fatalf("sftd user add %s: %v\n%s", user, err, b)
		}
	}

	// The client machines: nothing listens on their own loopback, so what
	// works below went over the LAN.
	homes := map[string]string{}
	for _, c := range []struct {
		ns   *netns.NS
		user string
	}{{alice, "alice"}, {bob, "bob"}} {
		if conn, err := c.ns.Dial(ctx, "tcp", "127.0.0.1:4222"); !errors.Is(err, syscall.ECONNREFUSED) {
			if conn != nil {
				conn.Close()
			}
			t.Fatalf("%s's own 127.0.0.1:4222: %v, want connection refused", c.user, err)
		}
		home := t.TempDir()
		homes[c.user] = home
		copyFile(t, caFile, filepath.Join(home, caName))
		script := strings.ReplaceAll(line, "NAME", c.user) + "\nsft-cli ls\n"
		sh := c.ns.Command(ctx, "/bin/sh", "-ec", script)
		sh.Env, sh.Stdin = machineEnv(bin, home), strings.NewReader("pw-"+c.user+"\n")
		b, err := sh.CombinedOutput()
		if err != nil {
			t.Fatalf("on %s's machine:\n%s\n%v\n%s", c.user, script, err, b)
		}
		if s := string(b); !strings.Contains(s, "Logged in as "+c.user) || !strings.Contains(s, "SESSION") {
			t.Errorf("on %s's machine, login and ls said:\n%s", c.user, s)
		}
	}

	// A transfer between the two client machines, with the defaults: alice
	// listens on every interface and announces her LAN address, and bob's
	// receive reaches it directly.
	m := &machines{t: t, bin: bin, server: server, url: "tls://203.0.113.1:4222", caFile: caFile,
		homes: map[string]string{"alice": homes["alice"], "bob": homes["bob"]}, nss: map[string]*netns.NS{"alice": alice, "bob": bob}}
	for _, home := range m.homes { // where machines.env looks for it
		copyFile(t, caFile, filepath.Join(home, "sft-ca.pem"))
	}
	src := randomFile(t, t.TempDir(), "report.pdf", 1<<20)
	send := m.start(ctx, "alice", "send", src, "--to", "bob")
	id := send.sessionOf(t)
	dir := t.TempDir()
	out, errOut, err := m.cli(ctx, "bob", "recv", id, "-o", dir, "--yes", "--json")
	if err != nil {
		t.Fatalf("recv: %v\n%s", err, errOut)
	}
	send.wait(t, "send")
	if got := lastResult(t, out); got.Path != "direct" || !strings.HasPrefix(got.Via, "203.0.113.2:") {
		t.Errorf("went %s via %s, want direct to alice's 203.0.113.2", got.Path, got.Via)
	}
	sameFile(t, src, filepath.Join(dir, "report.pdf"))
	if !strings.Contains(send.stderr.String()+send.stdout.String(), "directly (203.0.113.2:") {
		t.Errorf("alice's result line does not say the path:\n%s", send.stdout.String())
	}

	// Two announced addresses that drop every packet (blackholed, not
	// refused) come before the one that works: bob still connects within
	// a few stagger steps instead of waiting for them to time out.
	alice.AddAddr(aliceIface, "203.0.113.20/24")
	alice.AddAddr(aliceIface, "203.0.113.21/24")
	alice.Blackhole("203.0.113.20")
	alice.Blackhole("203.0.113.21")
	src = randomFile(t, t.TempDir(), "notes.txt", 64<<10)
	send = m.start(ctx, "alice", "send", src, "--to", "bob", "--no-relay", "--listen", ":7000",
		"--advertise", "203.0.113.20:7000,203.0.113.21:7000")
	id = send.sessionOf(t)
	addrs := m.announced(t, ctx, "bob", id)
	if len(addrs) < 3 || addrs[0] != "203.0.113.20:7000" || addrs[1] != "203.0.113.21:7000" || addrs[2] != "203.0.113.2:7000" {
		t.Fatalf("alice announced %q, want the two advertised addresses, then her own", addrs)
	}
	start := time.Now()
	out, errOut, err = m.cli(ctx, "bob", "recv", id, "-o", dir, "--yes", "--json", "--no-relay")
	took := time.Since(start)
	if err != nil {
		t.Fatalf("recv: %v\n%s", err, errOut)
	}
	send.wait(t, "send")
	if got := lastResult(t, out); got.Via != "203.0.113.2:7000" {
		t.Errorf("went via %s, want 203.0.113.2:7000", got.Via)
	}
	// The reachable address's turn comes 0.5 s in; the blackholed ones
	// would hold a sequential dialer for the whole --timeout (1m).
	t.Logf("recv with two blackholed addresses first took %s", took)
	if took > 20*time.Second {
		t.Errorf("recv took %s: the blackholed addresses held up the working one", took)
	}
}

// buildBinaries builds sftd and sft-cli into a directory of their own.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"github.com/sftproject/sft/services/sftd", "github.com/sftproject/sft/cli/sft-cli")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// machineEnv is the whole environment of a process on a machine whose
// user's home is home: no SFT_* variable of the test's own leaks in.
func machineEnv(bin, home string) []string {
	return []string{
		"PATH=" + bin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"SFT_CONFIG_DIR=" + filepath.Join(home, ".config", "sft"),
		"SFT_DATA_DIR=" + filepath.Join(home, ".local", "share", "sft"),
	}
}

// startServer runs bin/sftd with args in ns until the test ends (then
// stops it as Ctrl-C would) and returns what it printed once it printed
// ready.
func startServer(t *testing.T, ctx context.Context, ns *netns.NS, bin string, env []string, ready string, args ...string) string {
	t.Helper()
	ctx, stop := context.WithCancel(ctx)
	cmd := ns.Command(ctx, filepath.Join(bin, "sftd"), args...)
	var out, errb syncbuf.Buffer
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, &errb
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		stop()
		<-exited
		if !cmd.ProcessState.Success() {
			t.Errorf("sftd %s did not stop cleanly: %v\n%s", strings.Join(args, " "), cmd.ProcessState, errb.String())
		} else if t.Failed() {
			t.Logf("sftd %s log:\n%s", strings.Join(args, " "), errb.String())
		}
	})
	// Everything is printed in one write, so all of it is there with ready.
	deadline := time.After(time.Minute)
	for !strings.Contains(out.String(), ready) {
		select {
		case <-exited:
			t.Fatalf("sftd %s ended before it was ready:\n%s%s", strings.Join(args, " "), out.String(), errb.String())
		case <-deadline:
			t.Fatalf("sftd %s did not print %q within a minute:\n%s%s", strings.Join(args, " "), ready, out.String(), errb.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return out.String()
}

func submatch(t *testing.T, s, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no %s in:\n%s", re, s)
	}
	return m[1]
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
