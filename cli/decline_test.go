package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli"
	"github.com/sftproject/sft/internal/syncbuf"
)

// live is an sft-cli run whose standard error a test reads while it runs.
type live struct {
	errOut syncbuf.Buffer
	res    chan result
}

// runLive runs sft-cli as e in the background.
func (e *env) runLive(ctx context.Context, args ...string) *live {
	l := &live{res: make(chan result, 1)}
	go func() {
		var out bytes.Buffer
		err := cli.Run(ctx, cli.IO{In: strings.NewReader(""), Out: &out, Err: &l.errOut}, args, e.vars)
		l.res <- result{out: out.String(), errOut: l.errOut.String(), err: err}
	}()
	return l
}

// waitSays waits until the run has printed text on standard error.
func (l *live) waitSays(t *testing.T, text string) {
	t.Helper()
	waitFor(t, "the output to show "+text, func() bool { return strings.Contains(l.errOut.String(), text) })
}

// A receiver that cannot take a file (no such destination, then the name
// taken): the waiting sender is told at once each time, the session waits,
// and a recv with --overwrite completes it. The session's events show the
// refusals.
func TestRefusalReachesSender(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, time.Minute)
	src := randomFile(t, t.TempDir(), "report.pdf", 100<<10)
	sender := alice.runLive(ctx, "send", src, "--to", "bob")
	s := waitingSession(t, bob.client(), "report.pdf")
	out := t.TempDir()
	if err := os.WriteFile(filepath.Join(out, "report.pdf"), []byte("older"), 0o600); err != nil {
		t.Fatal(err)
	}

	if _, _, err := bob.run(ctx, "recv", s.ID, "-o", filepath.Join(out, "missing")); err == nil {
		t.Fatal("recv into a missing directory succeeded")
	}
	sender.waitSays(t, "bob cannot receive now: the destination is not a directory; still waiting")

	_, _, err := bob.run(ctx, "recv", s.ID, "-o", out)
	if err == nil || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), "alice was told") {
		t.Fatalf("recv err = %v, want the name taken and alice told", err)
	}
	sender.waitSays(t, "bob cannot receive now: report.pdf exists in the destination; still waiting — Ctrl-C to cancel")
	if got, _ := bob.client().Get(ctx, s.ID); got.State != api.StateWaiting {
		t.Fatalf("state = %s, want waiting for a retry", got.State)
	}

	if _, _, err := bob.run(ctx, "recv", s.ID, "-o", out, "--overwrite"); err != nil {
		t.Fatalf("recv --overwrite: %v", err)
	}
	if sr := <-sender.res; sr.err != nil {
		t.Fatalf("send: %v\n%s", sr.err, sr.errOut)
	}
	sameFile(t, src, filepath.Join(out, "report.pdf"))

	text, _, err := bob.run(ctx, "watch", "--session", s.ID)
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`(?m)  declined   alice → bob  by bob  \(report\.pdf exists in the destination\)$`)
	if !line.MatchString(text) {
		t.Errorf("watch does not show the refusal:\n%s", text)
	}
	asJSON, _, err := bob.run(ctx, "watch", "--session", s.ID, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var types, reasons []string
	for _, l := range strings.Split(strings.TrimSpace(asJSON), "\n") {
		var ev api.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("watch --json printed %q: %v", l, err)
		}
		types = append(types, string(ev.Type))
		if ev.Type == api.EventDeclined {
			if ev.Actor != "bob" || ev.State != api.StateWaiting {
				t.Errorf("declined event by %q in %s, want by bob, waiting", ev.Actor, ev.State)
			}
			reasons = append(reasons, ev.Reason)
		}
	}
	if got := strings.Join(types, ","); got != "created,declined,declined,joined,reported,reported,completed" {
		t.Errorf("events %s", got)
	}
	if got := strings.Join(reasons, "; "); got != "the destination is not a directory; report.pdf exists in the destination" {
		t.Errorf("declined for %s", got)
	}
}

// recv --decline ends the session without receiving; the waiting sender
// stops at once with one line saying who declined and why.
func TestDecline(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, time.Minute)
	src := randomFile(t, t.TempDir(), "unwanted.txt", 100)
	sender := alice.runLive(ctx, "send", src, "--to", "bob")
	s := waitingSession(t, bob.client(), "unwanted.txt")

	if _, _, err := bob.run(ctx, "recv", s.ID, "--reason", "no"); err == nil || !strings.Contains(err.Error(), "--reason goes with --decline") {
		t.Fatalf("--reason without --decline: %v", err)
	}
	if _, _, err := alice.run(ctx, "recv", "--decline", s.ID); api.CodeOf(err) != api.CodeForbidden {
		t.Fatalf("the sender declined its own session: %v", err)
	}

	stdout, _, err := bob.run(ctx, "recv", "--decline", "--reason", "not expecting this")
	if err != nil {
		t.Fatalf("recv --decline: %v", err)
	}
	want := "bob declined: not expecting this"
	if strings.TrimSpace(stdout) != "session "+s.ID+" cancelled: "+want {
		t.Errorf("recv --decline printed %q", stdout)
	}
	sr := <-sender.res
	if sr.err == nil || !strings.Contains(sr.err.Error(), want) || strings.Contains(sr.err.Error(), "\n") {
		t.Fatalf("send ended with %v, want one line saying %q", sr.err, want)
	}
	if got, _ := alice.client().Get(ctx, s.ID); got.State != api.StateCancelled || got.Reason != want {
		t.Errorf("session %s (%q), want cancelled (%q)", got.State, got.Reason, want)
	}
	if _, _, err := bob.run(ctx, "recv", "--decline", s.ID); api.CodeOf(err) != api.CodeConflict {
		t.Errorf("declining an ended session: %v, want a conflict", err)
	}
}
