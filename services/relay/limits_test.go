package relay

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
)

// wantRefused checks a Dial result is a refusal with code whose message
// contains reason.
func wantRefused(t *testing.T, res dialResult, code api.Code, reason string) {
	t.Helper()
	var e *api.Error
	if !errors.As(res.err, &e) || e.Code != code || !strings.Contains(e.Message, reason) {
		t.Fatalf("Dial = %v, want %s: …%s", res.err, code, reason)
	}
}

func TestCapacity(t *testing.T) {
	t.Run("sessions", func(t *testing.T) {
		r := startRelay(t, Options{MaxSessions: 1})
		ctx := within(t, time.Minute)
		ini, resp := r.pair(ctx)
		wantRefused(t, <-r.dial(ctx, r.ticket(newSessionID(), api.RoleInitiator)), api.CodeThrottled, "limit of 1 sessions")
		if got := copyThrough(t, ini, resp, []byte("x")); string(got) != "x" {
			t.Fatal("the pair stopped relaying")
		}
		ini.Close()
		resp.Close()
		r.waitStats(ctx, "the pair to end", func(s Stats) bool { return s.ActivePairs == 0 })
		r.pair(ctx) // room again
	})
	t.Run("waiting", func(t *testing.T) {
		r := startRelay(t, Options{MaxWaiting: 1})
		ctx := within(t, time.Minute)
		waiting := newSessionID()
		first := r.dial(ctx, r.ticket(waiting, api.RoleInitiator))
		r.waitStats(ctx, "one to wait", func(s Stats) bool { return s.Waiting == 1 })
		wantRefused(t, <-r.dial(ctx, r.ticket(newSessionID(), api.RoleInitiator)), api.CodeThrottled, "waiting for their peers")
		// Its peer still pairs with it, and a replacement takes its place.
		second := r.dial(ctx, r.ticket(waiting, api.RoleInitiator))
		wantRefused(t, <-first, api.CodeConflict, "replaced by a newer connection")
		resp := <-r.dial(ctx, r.ticket(waiting, api.RoleResponder))
		ini := <-second
		if ini.err != nil || resp.err != nil {
			t.Fatalf("pairing with the waiting one: %v, %v", ini.err, resp.err)
		}
		ini.conn.Close()
		resp.conn.Close()
	})
}

// A second connection for a waiting role replaces the first, which hears
// why; the peer pairs with the second.
func TestReplaceWaiting(t *testing.T) {
	r := startRelay(t, Options{})
	ctx := within(t, time.Minute)
	session := newSessionID()
	first := r.dial(ctx, r.ticket(session, api.RoleResponder))
	r.waitStats(ctx, "the first to wait", func(s Stats) bool { return s.Waiting == 1 })
	second := r.dial(ctx, r.ticket(session, api.RoleResponder))
	wantRefused(t, <-first, api.CodeConflict, "replaced")
	if s := r.srv.Stats(); s.Waiting != 1 {
		t.Errorf("%d waiting, want the second only", s.Waiting)
	}
	ini := <-r.dial(ctx, r.ticket(session, api.RoleInitiator))
	resp := <-second
	if ini.err != nil || resp.err != nil {
		t.Fatalf("pair: %v, %v", ini.err, resp.err)
	}
	defer ini.conn.Close()
	defer resp.conn.Close()
	if got := copyThrough(t, ini.conn, resp.conn, []byte("to the second")); string(got) != "to the second" {
		t.Fatalf("got %q", got)
	}
}

func TestPairTimeout(t *testing.T) {
	r := startRelay(t, Options{PairTimeout: 200 * time.Millisecond})
	ctx := within(t, time.Minute)
	wantRefused(t, <-r.dial(ctx, r.ticket(newSessionID(), api.RoleInitiator)), api.CodeUnavailable, "no peer within 200ms")

	// The ticket's expiry comes before the pair timeout.
	r = startRelay(t, Options{PairTimeout: time.Hour})
	soon := func(t *Ticket) { t.ExpiresAt = time.Now().Add(time.Second) }
	wantRefused(t, <-r.dial(ctx, r.ticket(newSessionID(), api.RoleInitiator, soon)), api.CodeUnavailable, "ticket expired before the peer came")
	if s := r.srv.Stats(); s.Waiting != 0 {
		t.Errorf("%d still waiting", s.Waiting)
	}
}

// Dial gives up when its context ends, and the relay notices the client
// left.
func TestDialContext(t *testing.T) {
	r := startRelay(t, Options{})
	ctx, cancel := context.WithCancel(within(t, time.Minute))
	waiting := r.dial(ctx, r.ticket(newSessionID(), api.RoleInitiator))
	r.waitStats(ctx, "the client to wait", func(s Stats) bool { return s.Waiting == 1 })
	cancel()
	if res := <-waiting; !errors.Is(res.err, context.Canceled) || res.conn != nil {
		t.Fatalf("Dial = %v, %v; want context.Canceled", res.conn, res.err)
	}
	r.waitStats(within(t, time.Minute), "the relay to notice", func(s Stats) bool { return s.Waiting == 0 })

	if _, err := Dial(ctx, r.addr, r.ticket(newSessionID(), api.RoleInitiator)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial with an ended context = %v", err)
	}
	if _, err := Dial(within(t, time.Minute), r.addr, strings.Repeat("x", MaxTicket+1)); err == nil {
		t.Fatal("Dial sent an oversized ticket")
	}
}

func TestIdleTimeout(t *testing.T) {
	r := startRelay(t, Options{IdleTimeout: 300 * time.Millisecond})
	ctx := within(t, time.Minute)
	ini, resp := r.pair(ctx)
	if got := copyThrough(t, ini, resp, []byte("then silence")); string(got) != "then silence" {
		t.Fatalf("got %q", got)
	}
	// The responder neither sends nor closes: the pair idles out.
	if err := readsEOF(resp, 30*time.Second); err != nil {
		t.Fatalf("the idle pair was not closed: %v", err)
	}
	r.waitStats(ctx, "the pair to end", func(s Stats) bool { return s.ActivePairs == 0 })
	if logs := r.logs.String(); !strings.Contains(logs, "idle for 300ms") {
		t.Errorf("logs do not say the pair idled:\n%s", logs)
	}
}

// A pair relays no more than the smaller MaxBytes of its tickets, then
// both are closed and it is logged.
func TestByteLimit(t *testing.T) {
	r := startRelay(t, Options{})
	ctx := within(t, time.Minute)
	const limit = 1 << 20
	session := newSessionID()
	a := r.dial(ctx, r.ticket(session, api.RoleInitiator, func(t *Ticket) { t.MaxBytes = 4 * limit }))
	b := r.dial(ctx, r.ticket(session, api.RoleResponder, func(t *Ticket) { t.MaxBytes = limit }))
	ini, resp := <-a, <-b
	if ini.err != nil || resp.err != nil {
		t.Fatal(ini.err, resp.err)
	}
	defer ini.conn.Close()
	defer resp.conn.Close()
	data := randomBytes(2*limit, 3)
	go func() { _, _ = ini.conn.Write(data) }() // fails once the relay closes
	got, _ := io.ReadAll(resp.conn)
	if len(got) != limit || !bytes.Equal(got, data[:limit]) {
		t.Fatalf("received %d bytes, want the first %d", len(got), limit)
	}
	r.waitStats(ctx, "the pair to end", func(s Stats) bool { return s.ActivePairs == 0 })
	if s := r.srv.Stats(); s.BytesRelayed != limit {
		t.Errorf("relayed %d bytes, want %d", s.BytesRelayed, limit)
	}
	if logs := r.logs.String(); !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "byte limit reached") {
		t.Errorf("logs do not warn of the limit:\n%s", logs)
	}
}

// A rate limit makes a copy take at least as long as the bucket allows
// (a lower bound only: a busy machine may take longer).
func TestRateLimit(t *testing.T) {
	const rate, size = 256 << 10, 1 << 20
	r := startRelay(t, Options{RatePerSession: rate})
	ctx := within(t, time.Minute)
	ini, resp := r.pair(ctx)
	data := randomBytes(size, 4)
	start := time.Now()
	got := copyThrough(t, ini, resp, data)
	elapsed := time.Since(start)
	if !bytes.Equal(got, data) {
		t.Fatal("bytes changed on the way")
	}
	// The bucket starts full (one burst of `rate` bytes) and each copy is
	// charged after it moved, so the last burst is not waited for either.
	if least := time.Duration(size-2*rate) * time.Second / rate; elapsed < least {
		t.Fatalf("%d bytes at %d bytes/s took %s, less than %s", size, rate, elapsed, least)
	}
}

// Bursts of connections that close at once, send garbage, or say nothing
// never cost a real pair its relay.
func TestBurst(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   Options
		during bool // the burst runs while the pair connects and copies
	}{
		{"during", Options{}, true},
		{"admission full", Options{MaxAdmitting: 8}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startRelay(t, tc.opts)
			ctx := within(t, 2*time.Minute)
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			var mu sync.Mutex
			burst := func() {
				var wg sync.WaitGroup
				for i := range 220 {
					wg.Go(func() {
						c, err := net.Dial("tcp", r.addr)
						if err != nil {
							return // the backlog may overflow: that is the point
						}
						switch {
						case i < 100: // connect and close
							c.Close()
						case i < 150: // garbage
							_, _ = c.Write(randomBytes(100, byte(i)))
							c.Close()
						case i < 200: // silent, held open
							mu.Lock()
							held = append(held, c)
							mu.Unlock()
						default: // half a preamble, then nothing
							_, _ = io.WriteString(c, "SFTR1\n\x07\xd0abc")
							mu.Lock()
							held = append(held, c)
							mu.Unlock()
						}
					})
				}
				wg.Wait()
			}
			var wg sync.WaitGroup
			if tc.during {
				wg.Go(burst)
			} else {
				burst()
			}
			ini, resp := r.pair(ctx)
			data := randomBytes(64<<20, 5)
			got := copyThrough(t, ini, resp, data)
			wg.Wait()
			if sha256.Sum256(got) != sha256.Sum256(data) {
				t.Fatalf("received %d bytes that differ from the %d sent", len(got), len(data))
			}
		})
	}
}

// When Serve's context ends, every connection closes and Serve returns.
func TestShutdown(t *testing.T) {
	r := startRelay(t, Options{})
	ctx := within(t, time.Minute)
	ini, resp := r.pair(ctx)
	waiting := r.dial(ctx, r.ticket(newSessionID(), api.RoleInitiator))
	r.waitStats(ctx, "one to wait", func(s Stats) bool { return s.Waiting == 1 })
	silent, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	if err := r.stop(); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	if res := <-waiting; res.err == nil {
		t.Error("the waiting client was paired with nobody")
	}
	for name, c := range map[string]net.Conn{"initiator": ini, "responder": resp, "silent": silent} {
		if err := readsEOF(c, 30*time.Second); err != nil {
			t.Errorf("%s's connection is still open: %v", name, err)
		}
	}
	if _, err := net.Dial("tcp", r.addr); err == nil {
		t.Error("the listener still accepts")
	}
}

// Drain sends the waiting away and stops taking connections, but lets
// pairs finish.
func TestDrain(t *testing.T) {
	r := startRelay(t, Options{})
	ctx := within(t, time.Minute)
	ini, resp := r.pair(ctx)
	waiting := r.dial(ctx, r.ticket(newSessionID(), api.RoleInitiator))
	r.waitStats(ctx, "one to wait", func(s Stats) bool { return s.Waiting == 1 })

	drained := make(chan error, 1)
	go func() { drained <- r.srv.Drain(ctx) }()
	wantRefused(t, <-waiting, api.CodeUnavailable, "shutting down")
	if _, err := Dial(ctx, r.addr, r.ticket(newSessionID(), api.RoleInitiator)); err == nil {
		t.Error("a new client was admitted while draining")
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned with a pair still relayed: %v", err)
	default:
	}
	if got := copyThrough(t, ini, resp, []byte("finishing")); string(got) != "finishing" {
		t.Fatalf("got %q", got)
	}
	resp.(*net.TCPConn).CloseWrite()
	if err := <-drained; err != nil {
		t.Fatalf("Drain = %v", err)
	}

	// A deadline cuts the wait short.
	r = startRelay(t, Options{})
	r.pair(ctx)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := r.srv.Drain(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain = %v, want its context's error", err)
	}
}
