package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/internal/hermetic"
	"github.com/sftproject/sft/link"
)

// runIn is run with in as standard input.
func (e *env) runIn(ctx context.Context, in io.Reader, args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	err := cli.Run(ctx, cli.IO{In: in, Out: &out, Err: &errb}, args, e.vars)
	return out.String(), errb.String(), err
}

// sessionFrom polls until a session from alice to bob that is not ended
// shows up and returns it.
func openSession(t *testing.T, e *env, summary string) api.Session {
	t.Helper()
	c := e.client()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		all, err := c.List(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range all {
			if !s.State.Terminal() && s.Manifest.Summary() == summary {
				return s
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no open session offering %s appeared", summary)
	return api.Session{}
}

// jsonLines decodes the JSON objects a --json run printed.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON line: %q", line)
		}
		objs = append(objs, m)
	}
	return objs
}

func TestSendFolders(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, time.Minute)

	src := t.TempDir()
	mtime := time.Date(2023, 1, 2, 3, 4, 5, 0, time.UTC)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "photos/2023/empty"), 0o755))
	top := randomFile(t, src, "notes.txt", 1000)
	must(os.Chmod(top, 0o640))
	must(os.Chtimes(top, mtime, mtime))
	randomFile(t, filepath.Join(src, "photos/2023"), "a.jpg", 300<<10)
	script := randomFile(t, filepath.Join(src, "photos"), "run.sh", 10)
	must(os.Chmod(script, 0o755))
	must(os.Symlink("/etc/passwd", filepath.Join(src, "photos/link")))

	sendRes := alice.runAsync(ctx, "send", top, filepath.Join(src, "photos"), "--to", "bob", "--json")
	s := openSession(t, alice, "6 entries")
	out := t.TempDir()
	stdout, _, err := bob.run(ctx, "recv", s.ID, "-o", out, "--yes", "--json")
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	sr := <-sendRes
	if sr.err != nil {
		t.Fatalf("send: %v", sr.err)
	}
	for _, rel := range []string{"notes.txt", "photos/2023/a.jpg", "photos/run.sh"} {
		sameFile(t, filepath.Join(src, rel), filepath.Join(out, rel))
	}
	if fi, err := os.Stat(filepath.Join(out, "photos/2023/empty")); err != nil || !fi.IsDir() {
		t.Errorf("empty folder missing: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(out, "notes.txt")); fi.Mode().Perm() != 0o640 || !fi.ModTime().Equal(mtime) {
		t.Errorf("notes.txt: mode %v, mtime %v", fi.Mode(), fi.ModTime())
	}
	if fi, _ := os.Stat(filepath.Join(out, "photos/run.sh")); fi.Mode().Perm() != 0o755 {
		t.Errorf("run.sh: mode %v", fi.Mode())
	}
	if _, err := os.Lstat(filepath.Join(out, "photos/link")); err == nil {
		t.Error("a symlink was sent")
	}
	if !strings.Contains(sr.out, `"skipping `) {
		t.Errorf("sender did not say it skipped the symlink:\n%s", sr.out)
	}
	lines := jsonLines(t, stdout)
	last := lines[len(lines)-1]
	if last["type"] != "result" || last["state"] != "completed" || last["entries"] != float64(6) {
		t.Errorf("last line = %v", last)
	}
	if !slicesContainsType(lines, "progress") {
		t.Errorf("no progress line in %s", stdout)
	}
}

func slicesContainsType(lines []map[string]any, typ string) bool {
	for _, l := range lines {
		if l["type"] == typ {
			return true
		}
	}
	return false
}

func TestPipesAndText(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, time.Minute)

	t.Run("stdin to stdout", func(t *testing.T) {
		data := bytes.Repeat([]byte("tar bytes "), 50000)
		sendRes := make(chan error, 1)
		go func() {
			_, _, err := alice.runIn(ctx, bytes.NewReader(data), "send", "-", "--name", "dir.tar", "--to", "bob")
			sendRes <- err
		}()
		s := openSession(t, alice, "dir.tar")
		// A stream's length is known only once it has gone through.
		if size := lsSize(t, alice, s.ID); size != "stream" {
			t.Errorf("ls shows the waiting stream's size as %q, want stream", size)
		}
		out, _, err := bob.run(ctx, "recv", s.ID, "-o", "-")
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if err := <-sendRes; err != nil {
			t.Fatalf("send: %v", err)
		}
		if out != string(data) {
			t.Errorf("stdout holds %d bytes, want %d", len(out), len(data))
		}
		if size := lsSize(t, alice, s.ID); size != "488.3 KiB" {
			t.Errorf("ls shows the sent stream's size as %q, want 488.3 KiB", size)
		}
	})
	t.Run("text", func(t *testing.T) {
		sendRes := alice.runAsync(ctx, "send", "--text", "the door code is 4711\x1b[2J", "--to", "bob")
		s := openSession(t, alice, "a text message")
		out, _, err := bob.run(ctx, "recv", s.ID)
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if sr := <-sendRes; sr.err != nil {
			t.Fatalf("send: %v", sr.err)
		}
		if strings.TrimSpace(out) != `the door code is 4711\u001b[2J` {
			t.Errorf("shown text = %q", out)
		}
	})
	t.Run("bad usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"send", "-", "--to", "bob"},
			{"send", "--text", "x", "file", "--to", "bob"},
			{"send", "--to", "bob"},
			{"send", "a", "--name", "x", "--to", "bob"},
			{"recv", "-o", "-", "--json"},
		} {
			if _, _, err := alice.run(ctx, args...); err == nil {
				t.Errorf("%v succeeded", args)
			}
		}
	})
}

// lsSize is the SIZE column of session id in u's `sft-cli ls`.
func lsSize(t *testing.T, u *env, id string) string {
	t.Helper()
	out, _, err := u.run(t.Context(), "ls")
	if err != nil {
		t.Fatalf("ls: %v", err)
	}
	lines := strings.Split(out, "\n")
	at := strings.Index(lines[0], "SIZE")
	for _, l := range lines[1:] {
		if strings.HasPrefix(l, id+" ") && at >= 0 && at < len(l) {
			return strings.TrimSpace(strings.SplitN(strings.TrimSpace(l[at:]), "  ", 2)[0])
		}
	}
	t.Fatalf("ls shows no session %s:\n%s", id, out)
	return ""
}

func TestReceiverListens(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, time.Minute)
	src := randomFile(t, t.TempDir(), "nat.bin", 1<<20)
	sendRes := alice.runAsync(ctx, "send", src, "--to", "bob")
	s := openSession(t, alice, "nat.bin")
	out := t.TempDir()
	if _, _, err := bob.run(ctx, "recv", s.ID, "-o", out, "--listen", "127.0.0.1:0"); err != nil {
		t.Fatalf("recv --listen: %v", err)
	}
	if sr := <-sendRes; sr.err != nil {
		t.Fatalf("send: %v", sr.err)
	}
	sameFile(t, src, filepath.Join(out, "nat.bin"))
	final, err := bob.client().Get(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.Listener != api.RoleResponder || final.State != api.StateCompleted {
		t.Errorf("session: listener %s, state %s; want responder, completed", final.Listener, final.State)
	}
}

// Ctrl-C on one side cancels the session; the other side says so, and no
// partial file is left.
func TestInterrupt(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, time.Minute)
	src := randomFile(t, t.TempDir(), "big.bin", 512<<20)
	sendRes := alice.runAsync(ctx, "send", src, "--to", "bob")
	s := openSession(t, alice, "big.bin")
	out := t.TempDir()
	rctx, interrupt := context.WithCancel(ctx)
	go func() {
		// Interrupt once data is flowing.
		for rctx.Err() == nil {
			if ents, _ := os.ReadDir(out); len(ents) > 0 {
				time.Sleep(50 * time.Millisecond)
				interrupt()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	_, _, err := bob.run(rctx, "recv", s.ID, "-o", out)
	interrupt()
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("recv err = %v, want interrupted", err)
	}
	sr := <-sendRes
	if sr.err == nil || !strings.Contains(sr.err.Error(), "cancelled by bob") {
		t.Fatalf("send err = %v, want it to say bob cancelled", sr.err)
	}
	if got := dirEntries(t, out); len(got) != 0 {
		t.Errorf("destination holds %v", got)
	}
	final, _ := alice.client().Get(ctx, s.ID)
	if final.State != api.StateCancelled {
		t.Errorf("state %s, want cancelled", final.State)
	}
}

var (
	cliBinOnce sync.Once
	cliBin     string
	cliBinErr  error
)

// sftCLI builds the sft-cli binary once, for tests that must kill a real
// process.
func sftCLI(t *testing.T) string {
	t.Helper()
	cliBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sft-cli-bin")
		if err != nil {
			cliBinErr = err
			return
		}
		cliBin = filepath.Join(dir, "sft-cli")
		out, err := exec.Command("go", "build", "-o", cliBin, "./sft-cli").CombinedOutput()
		if err != nil {
			cliBinErr = &buildError{string(out)}
		}
	})
	if cliBinErr != nil {
		t.Fatal(cliBinErr)
	}
	return cliBin
}

type buildError struct{ out string }

// cliProc is an sft-cli process run with --json.
type cliProc struct {
	cmd    *exec.Cmd
	stdout io.Reader
	stderr bytes.Buffer
}

// startCLI starts the sft-cli binary bin as e's user.
func startCLI(t *testing.T, ctx context.Context, bin string, e *env, args ...string) *cliProc {
	t.Helper()
	p := &cliProc{cmd: exec.CommandContext(ctx, bin, args...)}
	p.cmd.Env = hermetic.Environ(e.vars...)
	p.cmd.Stderr = &p.stderr
	var err error
	if p.stdout, err = p.cmd.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return p
}

// reached reports whether line, of a --json run, shows a file at n bytes.
func reached(line []byte, n int64) bool {
	var ev struct {
		Type  string `json:"type"`
		Bytes int64  `json:"bytes"`
	}
	return json.Unmarshal(line, &ev) == nil && ev.Type == "progress" && ev.Bytes >= n
}

// killAtProgress reads p's progress lines and SIGKILLs it once a file has
// reached n bytes; it fails the test if p ends first.
func killAtProgress(t *testing.T, p *cliProc, n int64, who string) {
	t.Helper()
	sc := bufio.NewScanner(p.stdout)
	killed := false
	for sc.Scan() {
		if reached(sc.Bytes(), n) {
			p.cmd.Process.Signal(syscall.SIGKILL)
			killed = true
			break
		}
	}
	p.cmd.Wait()
	if !killed {
		t.Fatalf("the %s finished before it could be killed: %s", who, p.stderr.String())
	}
}

func (e *buildError) Error() string { return "go build sft-cli: " + e.out }

// The receiver is killed (SIGKILL) half-way through a 256 MiB file and run
// again: the transfer continues from the last verified offset, the total
// sent stays under 1.6 × the size, and the file is identical.
func TestResumeAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 256 MiB")
	}
	bin := sftCLI(t)
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, 3*time.Minute)
	const size = 256 << 20
	src := randomFile(t, t.TempDir(), "big.bin", size)
	sendRes := alice.runAsync(ctx, "send", src, "--to", "bob", "--json", "--timeout", "1m")
	s := openSession(t, alice, "big.bin")
	out := t.TempDir()

	killAtProgress(t, startCLI(t, ctx, bin, bob, "recv", s.ID, "-o", out, "--json"), size/2, "receiver")
	if _, err := os.Stat(filepath.Join(out, "big.bin")); err == nil {
		t.Fatal("the file is in place after the receiver was killed")
	}

	stdout2, _, err := bob.run(ctx, "recv", s.ID, "-o", out, "--json")
	if err != nil {
		t.Fatalf("second recv: %v", err)
	}
	sr := <-sendRes
	if sr.err != nil {
		t.Fatalf("send: %v", sr.err)
	}
	sameFile(t, src, filepath.Join(out, "big.bin"))
	sent := jsonLines(t, sr.out)
	res := sent[len(sent)-1]
	moved := int64(res["moved"].(float64))
	t.Logf("sent %d bytes over the link for a %d-byte file (%.2f×)", moved, size, float64(moved)/size)
	if moved >= size*16/10 {
		t.Errorf("sent %d bytes in all, want under 1.6 × %d", moved, size)
	}
	recvd := jsonLines(t, stdout2)
	if again := int64(recvd[len(recvd)-1]["moved"].(float64)); again >= size {
		t.Errorf("the second run received %d bytes: it started over", again)
	}
	if ents := dirEntries(t, out); len(ents) != 1 {
		t.Errorf("destination holds %v, want only big.bin", ents)
	}
}

// Ctrl-C on the sending side: the receiver is told who cancelled, and
// keeps nothing.
func TestInterruptSender(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, time.Minute)
	src := randomFile(t, t.TempDir(), "big.bin", 512<<20)
	sctx, interrupt := context.WithCancel(ctx)
	defer interrupt()
	sendRes := alice.runAsync(sctx, "send", src, "--to", "bob")
	s := openSession(t, alice, "big.bin")
	out := t.TempDir()
	go func() {
		for sctx.Err() == nil {
			if ents, _ := os.ReadDir(out); len(ents) > 0 {
				time.Sleep(50 * time.Millisecond)
				interrupt()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	_, _, err := bob.run(ctx, "recv", s.ID, "-o", out)
	if err == nil || !strings.Contains(err.Error(), "cancelled by alice") {
		t.Fatalf("recv err = %v, want it to say alice cancelled", err)
	}
	if sr := <-sendRes; sr.err == nil || !strings.Contains(sr.err.Error(), "interrupted") {
		t.Fatalf("send err = %v, want interrupted", sr.err)
	}
	if got := dirEntries(t, out); len(got) != 0 {
		t.Errorf("destination holds %v", got)
	}
}

// A transfer that would not fit is refused before joining: the sender is
// told at once, and the session still waits.
func TestNoSpace(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, time.Minute)
	// A sparse file larger than any test machine's free space.
	src := filepath.Join(t.TempDir(), "huge.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(900 << 30); err != nil {
		t.Skip("no sparse files here:", err)
	}
	f.Close()
	out := t.TempDir()
	if free, err := link.FreeSpace(out); err != nil || free >= 900<<30 {
		t.Skip("cannot tell, or the destination has 900 GiB free")
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	sender := alice.runLive(sctx, "send", src, "--to", "bob")
	s := openSession(t, alice, "huge.img")
	_, _, err = bob.run(ctx, "recv", s.ID, "-o", out)
	if err == nil || !strings.Contains(err.Error(), "not enough free space") {
		t.Fatalf("recv err = %v, want not enough free space", err)
	}
	sender.waitSays(t, "bob cannot receive now: not enough free space: needs 900.0 GiB, ")
	sender.waitSays(t, " available; still waiting — Ctrl-C to cancel")
	if got, _ := bob.client().Get(ctx, s.ID); got.State != api.StateWaiting {
		t.Errorf("state = %s, want waiting", got.State)
	}
	if got := dirEntries(t, out); len(got) != 0 {
		t.Errorf("destination holds %v", got)
	}
	stop()
	<-sender.res
}

// The sender is killed part way; running the same send again finds the
// session, listens anew, and the waiting receiver reconnects and resumes.
// (Should the receiver have had everything already, the second send
// checks its file against the receiver's report instead.)
func TestResumeAfterSenderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 256 MiB")
	}
	bin := sftCLI(t)
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	const size = 256 << 20
	src := randomFile(t, t.TempDir(), "big.bin", size)
	out := t.TempDir()

	sender := startCLI(t, ctx, bin, alice, "send", src, "--to", "bob", "--json")
	s := openSession(t, alice, "big.bin")
	recvRes := bob.runAsync(ctx, "recv", s.ID, "-o", out, "--json", "--timeout", "1m")
	killAtProgress(t, sender, size/4, "sender")

	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	sendOut, sendErr, err := alice.run(sctx, "send", src, "--to", "bob", "--json")
	if err != nil {
		cancel()
		rr := <-recvRes
		t.Fatalf("second send: %v\n%s\n%s\nreceiver: %v\n%s\n%s", err, sendOut, sendErr, rr.err, rr.out, rr.errOut)
	}
	rr := <-recvRes
	if rr.err != nil {
		t.Fatalf("recv: %v", rr.err)
	}
	sameFile(t, src, filepath.Join(out, "big.bin"))
	lines := jsonLines(t, sendOut)
	res := lines[len(lines)-1]
	if res["session"] != s.ID {
		t.Errorf("second send used session %v, want %s resumed", res["session"], s.ID)
	}
	if again := int64(res["moved"].(float64)); again >= size {
		t.Errorf("the second send moved %d bytes: it started over", again)
	}
	recvd := jsonLines(t, rr.out)
	moved := int64(recvd[len(recvd)-1]["moved"].(float64))
	t.Logf("received %d bytes over the link for a %d-byte file (%.2f×)", moved, size, float64(moved)/size)
	if moved >= size*16/10 {
		t.Errorf("received %d bytes in all, want under 1.6 × %d", moved, size)
	}
}

// Running the same send twice: the second resumes the session and carries
// it; the first stops without touching it.
func TestSecondSendTakesOver(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, time.Minute)
	src := randomFile(t, t.TempDir(), "twice.bin", 1<<20)
	first := alice.runAsync(ctx, "send", src, "--to", "bob")
	s := openSession(t, alice, "twice.bin")
	second := alice.runAsync(ctx, "send", src, "--to", "bob")
	// Bob joins once the second run announced its address.
	deadline := time.Now().Add(20 * time.Second)
	for {
		cur, err := bob.client().Get(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cur.PeerAddrs, s.PeerAddrs) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second send did not resume the session")
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := t.TempDir()
	if _, _, err := bob.run(ctx, "recv", s.ID, "-o", out); err != nil {
		t.Fatalf("recv: %v", err)
	}
	if r := <-second; r.err != nil {
		t.Fatalf("second send: %v", r.err)
	}
	if r := <-first; r.err == nil || !strings.Contains(r.err.Error(), "resumed by another sft-cli") {
		t.Fatalf("first send: %v, want it to step aside", r.err)
	}
	sameFile(t, src, filepath.Join(out, "twice.bin"))
	if final, _ := bob.client().Get(ctx, s.ID); final.State != api.StateCompleted {
		t.Errorf("state %s, want completed", final.State)
	}
}

// A receiver that stopped after putting the files in place but before
// reporting: running recv again checks the files against what the sender
// confirmed and completes the session.
func TestRecvAfterPlacedNotReported(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	bc := bob.client()
	out := t.TempDir()

	src := randomFile(t, t.TempDir(), "placed.bin", 3<<20)
	sendRes := alice.runAsync(ctx, "send", src, "--to", "bob")
	s := openSession(t, alice, "placed.bin")
	receiveUnreported(t, ctx, bc, s.ID, out)
	sameFile(t, src, filepath.Join(out, "placed.bin"))
	if _, _, err := bob.run(ctx, "recv", s.ID, "-o", out); err != nil {
		t.Fatalf("second recv: %v", err)
	}
	if r := <-sendRes; r.err != nil {
		t.Fatalf("send: %v", r.err)
	}
	if final, _ := bc.Get(ctx, s.ID); final.State != api.StateCompleted {
		t.Errorf("state %s, want completed", final.State)
	}

	// Files that no longer match are not confirmed.
	src2 := randomFile(t, t.TempDir(), "changed.bin", 1<<20)
	sendRes = alice.runAsync(ctx, "send", src2, "--to", "bob", "--timeout", "2s")
	s2 := openSession(t, alice, "changed.bin")
	receiveUnreported(t, ctx, bc, s2.ID, out)
	os.WriteFile(filepath.Join(out, "changed.bin"), []byte("tampered"), 0o600)
	if _, _, err := bob.run(ctx, "recv", s2.ID, "-o", out, "--timeout", "2s"); err == nil {
		t.Fatal("recv confirmed files that differ from what was sent")
	}
	cancel()
	<-sendRes
}

// receiveUnreported is a receiver that stops just before reporting: it
// joins, fetches the key, receives into out, and returns once the sender
// has reported.
func receiveUnreported(t *testing.T, ctx context.Context, c *client.Client, id, out string) {
	t.Helper()
	sess, err := c.Join(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, err := c.Key(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := link.Dial(ctx, sess.PeerAddrs[0], key, id, link.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Receive(ctx, sess.Manifest, out, link.ReceiveOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		cur, err := c.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := cur.Reports[api.RoleInitiator]; ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
