package cli_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/sftproject/sft/services/devstack/devstacktest"
)

// running is an sft-cli command running in the background; the test reads
// its output as it comes.
type running struct {
	out, errOut syncbuf.Buffer
	done        chan error
	err         error
}

// background starts sft-cli as this user; it is interrupted (if still
// running) and waited for when the test ends.
func (e *env) background(ctx context.Context, args ...string) *running {
	ctx, cancel := context.WithCancel(ctx)
	r := &running{done: make(chan error, 1)}
	go func() {
		r.done <- cli.Run(ctx, cli.IO{In: strings.NewReader(""), Out: &r.out, Err: &r.errOut}, args, e.vars)
	}()
	e.t.Cleanup(func() {
		cancel()
		r.wait(e.t)
	})
	return r
}

// wait waits for the command to end and returns its error.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	if r.done != nil {
		select {
		case r.err = <-r.done:
			r.done = nil
		case <-time.After(time.Minute):
			t.Fatal("the command did not end")
		}
	}
	return r.err
}

// shows waits until w holds text. A server that comes back is found again
// after a backoff of up to ten seconds, so the bound is generous.
func (r *running) shows(t *testing.T, w *syncbuf.Buffer, text string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(w.String(), text) {
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("the command ended (%v) before it printed %q:\n%s\n%s", err, text, r.out.String(), r.errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q after a minute:\n%s\n%s", text, r.out.String(), r.errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// `sft-cli watch` with its server stopped says so, says when it is back,
// and then shows what happened meanwhile: as lines on standard error, or
// with --json as objects among the events.
func TestWatchAcrossServerRestart(t *testing.T) {
	var logs syncbuf.Buffer
	h := &harness{Harness: devstacktest.Start(t, nil, devstacktest.WithLog(&logs, slog.LevelDebug)), t: t}
	alice, carol := h.as("alice"), h.as("carol")
	ctx := within(t, 3*time.Minute)
	text := alice.background(ctx, "watch")
	asJSON := alice.background(ctx, "watch", "--json")
	// carol's watcher sees no event before the server stops; it must not
	// miss the one that comes for her while it is away.
	idle := carol.background(ctx, "watch")
	waitFor(t, "carol's watch relay", func() bool {
		return slices.ContainsFunc(strings.Split(logs.String(), "\n"), func(l string) bool {
			return strings.Contains(l, `msg="watch started"`) && strings.Contains(l, "user=carol")
		})
	})

	// Both watchers have their relays once they show a new session.
	s, err := alice.client().Create(ctx, api.CreateRequest{Responder: "bob", PeerAddrs: []string{"127.0.0.1:9"},
		Manifest: api.Manifest{Files: []api.File{{Name: "x.txt", Size: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	text.shows(t, &text.out, s.ID+"  created")
	asJSON.shows(t, &asJSON.out, `"type":"created"`)

	h.Stop()
	text.shows(t, &text.errOut, "server unreachable (")
	asJSON.shows(t, &asJSON.out, `"state":"lost"`)
	idle.shows(t, &idle.errOut, "server unreachable (")

	// While the watchers cannot reach it, the session is cancelled and
	// another one offered to carol.
	h.RestartAt("127.0.0.1:0")
	away := h.Login("alice")
	if _, err := away.Cancel(ctx, s.ID, "while you were away"); err != nil {
		t.Fatal(err)
	}
	s2, err := away.Create(ctx, api.CreateRequest{Responder: "carol", PeerAddrs: []string{"127.0.0.1:9"},
		Manifest: api.Manifest{Files: []api.File{{Name: "y.txt", Size: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	h.Stop()
	h.Restart()

	text.shows(t, &text.errOut, "server reachable again after")
	text.shows(t, &text.out, "while you were away")
	asJSON.shows(t, &asJSON.out, "while you were away")
	asJSON.shows(t, &asJSON.out, s2.ID)
	idle.shows(t, &idle.errOut, "server reachable again after")
	idle.shows(t, &idle.out, s2.ID+"  created")
	if strings.Contains(text.out.String(), "connection") {
		t.Errorf("connection messages on standard output:\n%s", text.out.String())
	}

	// In order: the loss, the return, then the event missed meanwhile.
	var seen []string
	for _, line := range strings.Split(strings.TrimSpace(asJSON.out.String()), "\n") {
		var obj struct{ Type, State string }
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Fatalf("watch --json printed %q: %v", line, err)
		}
		if obj.Type == "connection" {
			obj.Type += " " + obj.State
		}
		seen = append(seen, obj.Type)
	}
	want := []string{"created", "connection lost", "connection restored", "cancelled", "created"}
	if !slices.Equal(seen, want) {
		t.Errorf("watch --json printed %v, want %v:\n%s", seen, want, asJSON.out.String())
	}
}

// A waiting `sft-cli send` whose server stops says the server is
// unreachable, keeps trying, says when it is back, and then goes on.
func TestSendWaitsOutServerRestart(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, 3*time.Minute)
	src := randomFile(t, t.TempDir(), "patient.bin", 1<<20)
	send := alice.background(ctx, "send", src, "--to", "bob")
	s := openSession(t, alice, "patient.bin")

	h.Stop()
	send.shows(t, &send.errOut, "server unreachable")
	send.shows(t, &send.errOut, "until session "+s.ID+" expires at")
	h.Restart()
	send.shows(t, &send.errOut, "server reachable again")

	out := t.TempDir()
	if _, _, err := bob.run(ctx, "recv", s.ID, "-o", out); err != nil {
		t.Fatalf("recv after the restart: %v", err)
	}
	if err := send.wait(t); err != nil {
		t.Fatalf("send: %v\n%s", err, send.errOut.String())
	}
	sameFile(t, src, filepath.Join(out, "patient.bin"))
}

// A waiting `sft-cli send` whose server stays away until its session's
// expiry gives up then, with one line saying so and a non-zero exit.
func TestSendGivesUpWhenSessionExpiresWhileServerAway(t *testing.T) {
	bin := sftCLI(t)
	h := start(t, func(c *config.Config) { c.Session.TTL = 8 * time.Second })
	alice := h.as("alice")
	ctx := within(t, 2*time.Minute)
	src := randomFile(t, t.TempDir(), "late.bin", 1<<10)
	send := startCLI(t, ctx, bin, alice, "send", src, "--to", "bob")
	s := openSession(t, alice, "late.bin")
	h.Stop()

	out, err := runCLI(t, send)
	if code := send.cmd.ProcessState.ExitCode(); err == nil || code == 0 {
		t.Fatalf("send exited with %d (%v):\n%s", code, err, out)
	}
	if time.Now().Before(s.ExpiresAt) {
		t.Errorf("send gave up before the session's expiry at %s", s.ExpiresAt)
	}
	lines := strings.Split(strings.TrimSpace(send.stderr.String()), "\n")
	last := lines[len(lines)-1]
	want := "sft-cli: waiting for bob to join: session " + s.ID + " expired at " + s.ExpiresAt.Local().Format(time.TimeOnly) + " while the server was unreachable"
	if !strings.HasPrefix(last, want) {
		t.Errorf("last line %q, want one starting %q", last, want)
	}
	if !strings.Contains(send.stderr.String(), "server unreachable") {
		t.Errorf("send did not say the server was unreachable before giving up:\n%s", send.stderr.String())
	}
}
