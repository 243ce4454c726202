package relay

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/internal/syncbuf"
)

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// newSessionID returns a random session id of the session service's shape.
func newSessionID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.EncodeToString(b[:]))
}

// within returns a context that ends after d or with the test.
func within(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// testRelay is a Server on a random port of 127.0.0.1, serving until the
// test ends, and the issuer of its tickets.
type testRelay struct {
	t    testing.TB
	srv  *Server
	addr string
	key  ed25519.PrivateKey
	iss  *Issuer
	logs *syncbuf.Buffer
	stop func() error // ends Serve's context and returns what it returned
}

// startRelay starts a relay with opts (its ticket key and logger are set
// here) and stops it, checking it returned cleanly, when the test ends.
func startRelay(t testing.TB, opts Options) *testRelay {
	t.Helper()
	key := newKey(t)
	logs := &syncbuf.Buffer{}
	opts.TicketKey = key.Public().(ed25519.PublicKey)
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("Serve did not return after its context ended")
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testRelay{t: t, srv: srv, addr: ln.Addr().String(), key: key, iss: NewIssuer(key), logs: logs, stop: stop}
}

// ticket issues a ticket for role in session, valid for an hour, with a
// MaxBytes of 1 GiB unless edit changes it.
func (r *testRelay) ticket(session string, role api.Role, edit ...func(*Ticket)) string {
	r.t.Helper()
	tk := Ticket{Session: session, Role: role, ExpiresAt: time.Now().Add(time.Hour), MaxBytes: 1 << 30}
	for _, e := range edit {
		e(&tk)
	}
	s, err := r.iss.Issue(tk)
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

// dialResult is what Dial returned.
type dialResult struct {
	conn net.Conn
	err  error
}

// dial runs Dial in the background.
func (r *testRelay) dial(ctx context.Context, ticket string) <-chan dialResult {
	ch := make(chan dialResult, 1)
	go func() {
		c, err := Dial(ctx, r.addr, ticket)
		ch <- dialResult{c, err}
	}()
	return ch
}

// pair connects both members of a new session through the relay and
// returns the initiator's and the responder's connections. A member whose
// connection was dropped before the relay read its ticket (a flood can
// crowd it out) comes back with a new ticket, as clients do.
func (r *testRelay) pair(ctx context.Context, edit ...func(*Ticket)) (ini, resp net.Conn) {
	r.t.Helper()
	session := newSessionID()
	roles := []api.Role{api.RoleInitiator, api.RoleResponder}
	pending := make([]<-chan dialResult, 2)
	got := make([]dialResult, 2)
	tries := make([]int, 2)
	for i, role := range roles {
		pending[i] = r.dial(ctx, r.ticket(session, role, edit...))
	}
	for done := 0; done < 2; {
		select {
		case got[0] = <-pending[0]:
		case got[1] = <-pending[1]:
		}
		for i := range roles {
			switch res := got[i]; {
			case pending[i] == nil:
			case res.conn == nil && res.err == nil: // not in yet
			case res.err != nil && (errors.Is(res.err, io.EOF) || errors.Is(res.err, syscall.ECONNRESET)) && tries[i] < 5:
				// Evicted while admitting (the oldest gives way to a
				// flood still leaving the accept backlog): a real dialer
				// tries again, and so does this one.
				tries[i]++
				got[i] = dialResult{}
				pending[i] = r.dial(ctx, r.ticket(session, roles[i], edit...))
			default:
				pending[i] = nil
				done++
			}
		}
	}
	if got[0].err != nil || got[1].err != nil {
		r.t.Fatalf("pair: %v, %v", got[0].err, got[1].err)
	}
	r.t.Cleanup(func() { got[0].conn.Close(); got[1].conn.Close() })
	return got[0].conn, got[1].conn
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("still waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitStats waits until the relay's stats satisfy cond.
func (r *testRelay) waitStats(ctx context.Context, what string, cond func(Stats) bool) {
	r.t.Helper()
	waitFor(r.t, ctx, what, func() bool { return cond(r.srv.Stats()) })
}

// readsEOF tells whether c's next read ends its stream (EOF or a reset)
// rather than timing out.
func readsEOF(c net.Conn, d time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	var b [1]byte
	n, err := c.Read(b[:])
	switch {
	case n > 0:
		return errors.New("read data")
	case errors.Is(err, io.EOF):
		return nil
	case err == nil:
		return errors.New("no error")
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return nil // reset: closed too
}
