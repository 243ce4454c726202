package cli_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/config"
)

// --relay sends through the relay of the dev stack even when a direct
// path exists, and a transfer through it resumes after the receiver is
// killed (SIGKILL) half-way, through the relay again.
func TestForcedRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 256 MiB")
	}
	bin := sftCLI(t)
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, 3*time.Minute)
	const size = 256 << 20
	src := randomFile(t, t.TempDir(), "relayed.bin", size)
	sendRes := alice.runAsync(ctx, "send", src, "--to", "bob", "--relay", "--json")
	s := openSession(t, alice, "relayed.bin")
	if len(s.PeerAddrs) != 0 {
		t.Errorf("a sender forced through the relay announced %q", s.PeerAddrs)
	}
	out := t.TempDir()
	killAtProgress(t, startCLI(t, ctx, bin, bob, "recv", s.ID, "-o", out, "--json", "--relay"), size/2, "receiver") // past the first checkpoint (64 MiB)

	stdout, errOut, err := bob.run(ctx, "recv", s.ID, "-o", out, "--json", "--relay")
	if err != nil {
		t.Fatalf("second recv: %v\n%s", err, errOut)
	}
	sr := <-sendRes
	if sr.err != nil {
		t.Fatalf("send: %v\n%s", sr.err, sr.errOut)
	}
	sameFile(t, src, filepath.Join(out, "relayed.bin"))
	want := h.Stack.RelayAddrs[len(h.Stack.RelayAddrs)-1] // the loopback one
	for who, o := range map[string]string{"sender": sr.out, "receiver": stdout} {
		got := lastResult(t, o)
		if got.Path != "relay" || got.Via != want {
			t.Errorf("%s: went %s via %s, want relay via %s", who, got.Path, got.Via, want)
		}
	}
	if again := lastResult(t, stdout).Moved; again >= size {
		t.Errorf("the second run received %d bytes: it started over", again)
	}
}

// --no-relay keeps the bytes off the relay: a sender reachable only
// through it cannot be reached, and the error says so; --relay and
// --no-relay together are refused; a relay that does not answer is named
// in the error.
func TestRelayChoices(t *testing.T) {
	h := start(t, nil)
	alice, bob := h.as("alice"), h.as("bob")
	ctx := within(t, 2*time.Minute)

	t.Run("no relay to a relay-only sender", func(t *testing.T) {
		src := randomFile(t, t.TempDir(), "only-relay.txt", 100)
		sendRes := alice.runAsync(ctx, "send", src, "--to", "bob", "--relay", "--timeout", "5s")
		s := openSession(t, alice, "only-relay.txt")
		_, _, err := bob.run(ctx, "recv", s.ID, "-o", t.TempDir(), "--no-relay", "--timeout", "5s")
		if err == nil || !strings.Contains(err.Error(), "--no-relay forbids the relay") {
			t.Fatalf("recv --no-relay: %v", err)
		}
		if sr := <-sendRes; sr.err == nil {
			t.Error("the send succeeded without its receiver")
		}
	})
	t.Run("both flags", func(t *testing.T) {
		_, _, err := alice.run(ctx, "send", "--text", "hi", "--to", "bob", "--relay", "--no-relay")
		if err == nil || !strings.Contains(err.Error(), "contradict") {
			t.Fatalf("send --relay --no-relay: %v", err)
		}
	})
	t.Run("a server without a relay", func(t *testing.T) {
		// relay.addrs names a relay elsewhere, so sftd dev runs none; the
		// session service offers it, but nothing listens there.
		h2 := start(t, func(c *config.Config) { c.Relay.Addrs = []string{"127.0.0.1:9"} })
		a2, b2 := h2.as("alice"), h2.as("bob")
		src := randomFile(t, t.TempDir(), "nowhere.txt", 100)
		sendRes := a2.runAsync(ctx, "send", src, "--to", "bob", "--relay", "--timeout", "3s")
		s := openSession(t, a2, "nowhere.txt")
		_, _, err := b2.run(ctx, "recv", s.ID, "-o", t.TempDir(), "--relay", "--timeout", "3s")
		if err == nil || !strings.Contains(err.Error(), "through the relay") || !strings.Contains(err.Error(), "127.0.0.1:9") {
			t.Fatalf("recv through a relay that is down: %v", err)
		}
		<-sendRes
	})
}
