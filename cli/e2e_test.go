package cli_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/devstack/devstacktest"
	"github.com/sftproject/sft/services/store"
)

// env is one user's world: a home with its own config dir (token cache).
type env struct {
	t    *testing.T
	h    *devstacktest.Harness
	user string
	vars []string
}

type harness struct {
	*devstacktest.Harness
	t *testing.T
}

func start(t *testing.T, tweak func(*config.Config)) *harness {
	return &harness{Harness: devstacktest.Start(t, tweak), t: t}
}

// as returns user's environment, logged in through `sft-cli login`.
func (h *harness) as(user string) *env {
	h.t.Helper()
	e := &env{t: h.t, h: h.Harness, user: user, vars: h.Env(user)}
	if _, _, err := e.run(context.Background(), "login"); err != nil {
		h.t.Fatalf("login %s: %v", user, err)
	}
	return e
}

// run executes sft-cli as this user and returns stdout, stderr and the error.
func (e *env) run(ctx context.Context, args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	err := cli.Run(ctx, cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb}, args, e.vars)
	return out.String(), errb.String(), err
}

// client returns a logged-in API client for the user, for steps the CLI
// does not expose one by one.
func (e *env) client() *client.Client { return e.h.Login(e.user) }

// within is the test's context, ended after d at the latest.
func within(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func randomFile(t *testing.T, dir, name string, size int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, int64(size)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
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

type result struct {
	out, errOut string
	err         error
}

func (e *env) runAsync(ctx context.Context, args ...string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		o, eo, err := e.run(ctx, args...)
		ch <- result{o, eo, err}
	}()
	return ch
}

// waitingSession polls until c's user has a waiting session offering file
// name and returns it.
func waitingSession(t *testing.T, c *client.Client, name string) api.Session {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		all, err := c.List(context.Background(), api.StateWaiting)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range all {
			if s.Manifest.Files[0].Name == name {
				return s
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no session appeared")
	return api.Session{}
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestEndToEnd(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, 2*time.Minute)

	// A watcher that starts before anything happens sees every event live.
	var mu sync.Mutex
	var seen []api.Event
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watcher := alice.client()
	watchDone := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		watchDone <- watcher.Watch(watchCtx, "", func(ev api.Event) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, ev)
			return nil
		})
	}()
	// The relay starts from "now": give its consumer a moment to exist.
	go func() { time.Sleep(300 * time.Millisecond); close(ready) }()
	<-ready

	src := randomFile(t, t.TempDir(), "report.bin", 64<<20)
	sendRes := alice.runAsync(ctx, "send", src, "--to", "bob")
	sess := waitingSession(t, bob.client(), "report.bin")
	outDir := t.TempDir()
	stdout, _, err := bob.run(ctx, "recv", "-o", outDir)
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	if !strings.Contains(stdout, "verified") {
		t.Errorf("recv output %q does not say verified", stdout)
	}
	sr := <-sendRes
	if sr.err != nil {
		t.Fatalf("send: %v (%s)", sr.err, sr.errOut)
	}
	sameFile(t, src, filepath.Join(outDir, "report.bin"))
	if got := dirEntries(t, outDir); !slices.Equal(got, []string{"report.bin"}) {
		t.Errorf("destination holds %v, want only report.bin", got)
	}

	final, err := alice.client().Get(ctx, sess.ID)
	if err != nil {
		t.Fatal(err)
	}
	if final.State != api.StateCompleted {
		t.Fatalf("state = %s (%s)", final.State, final.Reason)
	}
	ri, rr := final.Reports[api.RoleInitiator], final.Reports[api.RoleResponder]
	if !ri.OK || !rr.OK || ri.CRC32C != rr.CRC32C || ri.Bytes != 64<<20 || rr.SHA256 != ri.SHA256 {
		t.Fatalf("reports = %+v", final.Reports)
	}

	// The key is deleted once the session ended.
	waitFor(t, "key deleted", func() bool {
		_, err := h.Stack.Store.GetKey(ctx, sess.ID)
		return errors.Is(err, store.ErrNotFound)
	})

	want := []api.EventType{api.EventCreated, api.EventJoined, api.EventReported, api.EventReported, api.EventCompleted}
	waitFor(t, "all events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) >= len(want)
	})
	stopWatch()
	<-watchDone
	mu.Lock()
	defer mu.Unlock()
	var got []api.EventType
	for i, ev := range seen {
		got = append(got, ev.Type)
		if ev.Session != sess.ID {
			t.Errorf("event %d is for session %s", i, ev.Session)
		}
		if i > 0 && ev.Seq <= seen[i-1].Seq {
			t.Errorf("event %d out of stream order: seq %d after %d", i, ev.Seq, seen[i-1].Seq)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}

	// A late watcher of the session replays the same history and ends with it.
	var replay []api.EventType
	err = bob.client().Watch(ctx, sess.ID, func(ev api.Event) error { replay = append(replay, ev.Type); return nil })
	if !errors.Is(err, client.ErrWatchEnded) || !slices.Equal(replay, want) {
		t.Fatalf("replay = %v, %v; want %v and the end of the watch", replay, err, want)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// proxy forwards one TCP connection to target, passing each byte from the
// sender's side through mangle (which may change it or cut the stream).
func proxy(t *testing.T, target string, mangle func(off int64, b []byte) (keep int)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		down, err := ln.Accept()
		if err != nil {
			return
		}
		defer down.Close()
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		go func() { _, _ = io.Copy(up, down); up.(*net.TCPConn).CloseWrite() }()
		buf := make([]byte, 32<<10)
		var off int64
		for {
			n, err := up.Read(buf)
			if n > 0 {
				keep := mangle(off, buf[:n])
				if _, werr := down.Write(buf[:keep]); werr != nil || keep < n {
					return
				}
				off += int64(n)
			}
			if err != nil {
				return
			}
		}
	}()
	return ln.Addr().String()
}

func TestLinkAttacks(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	const size = 4 << 20
	tests := []struct {
		name   string
		mangle func(off int64, b []byte) int
		want   string
	}{
		{"flipped byte", func(off int64, b []byte) int {
			if at := 1<<20 - off; at >= 0 && at < int64(len(b)) {
				b[at] ^= 0x40
			}
			return len(b)
		}, "modified"},
		// The link through the proxy is cut half-way; the receiver comes
		// back on the sender's other address and finishes.
		{"cut stream", func(off int64, b []byte) int {
			if off+int64(len(b)) > 2<<20 {
				return int(max(0, 2<<20-off))
			}
			return len(b)
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := within(t, time.Minute)
			src := randomFile(t, t.TempDir(), "data.bin", size)
			port := freePort(t)
			p := proxy(t, "127.0.0.1:"+port, tt.mangle)
			cut := strings.HasPrefix(tt.name, "cut")
			sendRes := alice.runAsync(ctx, "send", src, "--to", "bob", "--listen", "127.0.0.1:"+port, "--advertise", p, "--timeout", "3s")
			sess := waitingSession(t, bob.client(), "data.bin")
			outDir := t.TempDir()
			_, errOut, err := bob.run(ctx, "recv", sess.ID, "-o", outDir, "--timeout", "3s")
			if cut {
				if err != nil || !strings.Contains(errOut, "link to alice lost") {
					t.Fatalf("recv after a cut: %v\n%s", err, errOut)
				}
				if sr := <-sendRes; sr.err != nil {
					t.Fatalf("send: %v", sr.err)
				}
				sameFile(t, src, filepath.Join(outDir, "data.bin"))
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("recv err = %v, want it to mention %q", err, tt.want)
			}
			if sr := <-sendRes; sr.err == nil {
				t.Fatal("send succeeded over a broken link")
			}
			if names := dirEntries(t, outDir); len(names) > 0 {
				t.Fatalf("destination holds %s after a failed transfer", names)
			}
			final, err := alice.client().Get(ctx, sess.ID)
			if err != nil {
				t.Fatal(err)
			}
			if final.State != api.StateFailed || final.Reason == "" {
				t.Fatalf("session %s (%q), want failed with a reason", final.State, final.Reason)
			}
		})
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

func TestGarbageBeforePeer(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, time.Minute)
	src := randomFile(t, t.TempDir(), "g.bin", 100<<10)
	sendRes := alice.runAsync(ctx, "send", src, "--to", "bob")
	sess := waitingSession(t, bob.client(), "g.bin")
	// Anyone may knock on the announced port; garbage must not end the session.
	for _, junk := range [][]byte{[]byte("GET / HTTP/1.0\r\n\r\n"), bytes.Repeat([]byte{0xff}, 70000), {0, 0}} {
		c, err := net.Dial("tcp", sess.PeerAddrs[0])
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write(junk)
		c.Close()
	}
	outDir := t.TempDir()
	if _, _, err := bob.run(ctx, "recv", sess.ID, "-o", outDir); err != nil {
		t.Fatalf("recv after garbage: %v", err)
	}
	if sr := <-sendRes; sr.err != nil {
		t.Fatalf("send: %v", sr.err)
	}
	sameFile(t, src, filepath.Join(outDir, "g.bin"))
}

func TestBadInput(t *testing.T) {
	h := start(t, nil)
	alice, bob, carol := h.as("alice"), h.as("bob"), h.as("carol")
	ctx := within(t, 2*time.Minute)
	ac, bc, cc := alice.client(), bob.client(), carol.client()

	newSession := func(t *testing.T) *api.Session {
		t.Helper()
		s, err := ac.Create(ctx, api.CreateRequest{Responder: "bob", PeerAddrs: []string{"127.0.0.1:9"}, Manifest: api.Manifest{Files: []api.File{{Name: "x.txt", Size: 1}}}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	wantCode := func(t *testing.T, err error, code api.Code) {
		t.Helper()
		if api.CodeOf(err) != code {
			t.Fatalf("err = %v, want code %s", err, code)
		}
	}

	t.Run("wrong password", func(t *testing.T) {
		e := *alice
		e.vars = append(h.Env("alice"), "SFT_PASSWORD=nope") // a home of its own: no token
		_, _, err := e.run(ctx, "login")
		if err == nil || !strings.Contains(err.Error(), "wrong user name or password") {
			t.Fatalf("err = %v", err)
		}
		e.vars = append(e.vars, "SFT_USER=nobody")
		_, _, err2 := e.run(ctx, "login")
		if err2 == nil || strings.ReplaceAll(err2.Error(), "nobody", "alice") != err.Error() {
			t.Fatalf("unknown user answered %v, wrong password %v: they must look the same", err2, err)
		}
	})
	t.Run("not logged in", func(t *testing.T) {
		e := *alice
		e.vars = h.Env("alice") // a home of its own: no token
		_, _, err := e.run(ctx, "ls")
		if err == nil || !strings.Contains(err.Error(), "sft-cli login") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("forged token", func(t *testing.T) {
		bad := client.New(clientConn(t, h), "alice", "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.AAAA")
		_, err := bad.List(ctx, "")
		wantCode(t, err, api.CodeUnauthorized)
	})
	t.Run("unknown session", func(t *testing.T) {
		_, _, err := bob.run(ctx, "recv", "aaaaaaaaaaaaaaaa", "-o", t.TempDir())
		if api.CodeOf(err) != api.CodeNotFound {
			t.Fatalf("err = %v", err)
		}
		_, _, err = bob.run(ctx, "recv", "../../etc", "-o", t.TempDir())
		wantCode(t, err, api.CodeInvalid)
	})
	t.Run("folder too large for one session", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "tree")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 1000 { // ≈ 100 KB of manifest, over the default 64 KiB request limit
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%04d-%s.txt", i, strings.Repeat("n", 50))), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		_, _, err := alice.run(ctx, "send", dir, "--to", "bob")
		if err == nil || !strings.Contains(err.Error(), "1001 entries is too long for one session") || !strings.Contains(err.Error(), "tar c DIR") {
			t.Fatalf("err = %v", err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("error spans lines: %q", err)
		}
		if s, _ := bc.List(ctx, api.StateWaiting); len(s) != 0 {
			t.Fatalf("a refused send left sessions: %v", s)
		}
	})
	t.Run("join by a non-responder", func(t *testing.T) {
		s := newSession(t)
		_, err := cc.Join(ctx, s.ID, nil)
		wantCode(t, err, api.CodeForbidden)
		_, err = ac.Join(ctx, s.ID, nil)
		wantCode(t, err, api.CodeForbidden)
		_, err = cc.Get(ctx, s.ID)
		wantCode(t, err, api.CodeForbidden)
	})
	t.Run("second join", func(t *testing.T) {
		s := newSession(t)
		if _, err := bc.Join(ctx, s.ID, nil); err != nil {
			t.Fatal(err)
		}
		_, err := bc.Join(ctx, s.ID, nil)
		wantCode(t, err, api.CodeConflict)
	})
	t.Run("key before join and by a non-member", func(t *testing.T) {
		s := newSession(t)
		_, err := ac.Key(ctx, s.ID)
		wantCode(t, err, api.CodeConflict)
		if _, err := bc.Join(ctx, s.ID, nil); err != nil {
			t.Fatal(err)
		}
		_, err = cc.Key(ctx, s.ID)
		wantCode(t, err, api.CodeForbidden)
		ka, err := ac.Key(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		kb, err := bc.Key(ctx, s.ID)
		if err != nil || !bytes.Equal(ka, kb) {
			t.Fatalf("members got different keys (%v)", err)
		}
	})
	t.Run("unsafe name", func(t *testing.T) {
		for _, name := range []string{"../evil", "/abs", "a//b", "..", "x\x1b[2J", "C:x", ""} {
			_, err := ac.Create(ctx, api.CreateRequest{Responder: "bob", PeerAddrs: []string{"127.0.0.1:9"}, Manifest: api.Manifest{Files: []api.File{{Name: name, Size: 1}}}})
			wantCode(t, err, api.CodeInvalid)
		}
	})
	t.Run("existing destination", func(t *testing.T) {
		src := randomFile(t, t.TempDir(), "dup.txt", 1000)
		sendCtx, stop := context.WithCancel(ctx)
		sendRes := alice.runAsync(sendCtx, "send", src, "--to", "bob")
		s := waitingSession(t, bc, "dup.txt")
		outDir := t.TempDir()
		if err := os.WriteFile(filepath.Join(outDir, "dup.txt"), []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := bob.run(ctx, "recv", s.ID, "-o", outDir)
		if err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("err = %v", err)
		}
		if b, _ := os.ReadFile(filepath.Join(outDir, "dup.txt")); string(b) != "keep me" {
			t.Fatal("existing file was changed")
		}
		// Refused before joining: the session still waits for a retry.
		if got, _ := ac.Get(ctx, s.ID); got.State != api.StateWaiting {
			t.Fatalf("state = %s, want waiting", got.State)
		}
		if _, _, err := bob.run(ctx, "recv", s.ID, "-o", outDir, "--overwrite"); err != nil {
			t.Fatalf("recv --overwrite: %v", err)
		}
		sameFile(t, src, filepath.Join(outDir, "dup.txt"))
		if sr := <-sendRes; sr.err != nil {
			t.Fatalf("send: %v", sr.err)
		}
		stop()
	})
	t.Run("peer never connects", func(t *testing.T) {
		src := randomFile(t, t.TempDir(), "lonely.txt", 10)
		sendRes := alice.runAsync(ctx, "send", src, "--to", "bob", "--timeout", "2s")
		s := waitingSession(t, bc, "lonely.txt")
		if _, err := bc.Join(ctx, s.ID, nil); err != nil {
			t.Fatal(err)
		}
		sr := <-sendRes
		if sr.err == nil || !strings.Contains(sr.err.Error(), "did not connect") {
			t.Fatalf("send err = %v", sr.err)
		}
		got, _ := ac.Get(ctx, s.ID)
		if got.State != api.StateFailed || !strings.Contains(got.Reason, "did not connect") {
			t.Fatalf("state = %s (%s), want failed", got.State, got.Reason)
		}
	})
	t.Run("sender unreachable", func(t *testing.T) {
		s := newSession(t) // announces 127.0.0.1:9, where nothing listens
		_, _, err := bob.run(ctx, "recv", s.ID, "-o", t.TempDir(), "--timeout", "2s")
		if err == nil || !strings.Contains(err.Error(), "127.0.0.1:9") {
			t.Fatalf("err = %v", err)
		}
		got, _ := ac.Get(ctx, s.ID)
		if got.State != api.StateFailed {
			t.Fatalf("state = %s, want failed", got.State)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		s := newSession(t)
		if _, _, err := bob.run(ctx, "cancel", s.ID, "--reason", "not now"); err != nil {
			t.Fatal(err)
		}
		got, _ := ac.Get(ctx, s.ID)
		if got.State != api.StateCancelled || !strings.Contains(got.Reason, "not now") {
			t.Fatalf("state = %s (%s)", got.State, got.Reason)
		}
		_, err := bc.Join(ctx, s.ID, nil)
		wantCode(t, err, api.CodeConflict)
	})
	t.Run("garbage on every subject", func(t *testing.T) {
		nc := clientConn(t, h)
		subjects := []string{api.SubjectAuthInfo, api.SubjectAuthLogin, api.SubjectSessionCreate, api.SubjectSessionJoin,
			api.SubjectSessionGet, api.SubjectSessionList, api.SubjectSessionReport, api.SubjectSessionCancel,
			api.SubjectSessionDecline, api.SubjectSessionWatch, api.SubjectKeyGet}
		bodies := [][]byte{nil, []byte("{"), []byte("[]"), []byte("\x00\xff"), []byte(`{"unknown":1}`), []byte(`{} {}`), bytes.Repeat([]byte("a"), 70<<10)}
		for _, subj := range subjects {
			for _, body := range bodies {
				for _, withToken := range []bool{false, true} {
					msg := nats.NewMsg(subj)
					msg.Data = body
					if withToken {
						msg.Header.Set(api.AuthHeader, "Bearer "+ac.Token())
					}
					rep, err := nc.RequestMsg(msg, 5*time.Second)
					if err != nil {
						t.Fatalf("%s: %v", subj, err)
					}
					code := api.Code(rep.Header.Get("Nats-Service-Error-Code"))
					if subj == api.SubjectAuthInfo && code == "" {
						continue // info takes no input worth refusing... unless malformed
					}
					if code != api.CodeInvalid && code != api.CodeUnauthorized {
						t.Errorf("%s with %q (token %v): code %q, want invalid or unauthorized", subj, trunc(body), withToken, code)
					}
				}
			}
		}
	})
}

func trunc(b []byte) string {
	if len(b) > 20 {
		return fmt.Sprintf("%q… (%d bytes)", b[:20], len(b))
	}
	return string(b)
}

func clientConn(t *testing.T, h *harness) *nats.Conn { return h.Conn() }
