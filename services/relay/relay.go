package relay

import (
	"container/list"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sftproject/sft/api"
)

// Defaults of Options.
const (
	DefaultMaxSessions      = 256
	DefaultMaxWaiting       = 1024
	DefaultMaxAdmitting     = 256
	DefaultIdleTimeout      = 30 * time.Second
	DefaultPairTimeout      = 2 * time.Minute
	DefaultAdmissionTimeout = 5 * time.Second
)

const (
	// statusWriteTimeout bounds writing a status frame: a client that does
	// not read its few bytes is not waited for.
	statusWriteTimeout = 5 * time.Second
	// maxRememberedTickets bounds the used ticket IDs kept against replay
	// (some 150 bytes each).
	maxRememberedTickets = 1 << 17
)

// Options configures a Server. Zero values take the defaults.
type Options struct {
	// TicketKey verifies tickets (required): the public half of the
	// session service's relay ticket key.
	TicketKey ed25519.PublicKey
	// MaxSessions caps the pairs relayed at once (default 256).
	MaxSessions int
	// MaxWaiting caps the admitted connections waiting for their peer
	// (default 1024).
	MaxWaiting int
	// MaxAdmitting caps the connections that have not yet sent their
	// preamble (default 256); one more pushes out the oldest.
	MaxAdmitting int
	// RatePerSession caps a pair's bytes per second, both directions
	// together; 0 means no cap.
	RatePerSession int64
	// IdleTimeout closes a pair after this long without a byte either way
	// (default 30s).
	IdleTimeout time.Duration
	// PairTimeout bounds how long a connection waits for its peer
	// (default 2m); a ticket's expiry may cut it shorter.
	PairTimeout time.Duration
	// AdmissionTimeout bounds the wait for a new connection's preamble
	// (default 5s).
	AdmissionTimeout time.Duration
	// Logger receives refusals (Warn) and pairs' ends (default slog.Default()).
	Logger *slog.Logger
	// Metrics counts refusals (nil: not counted); Stats has the rest.
	Metrics Metrics
}

// Metrics is what the relay records (services/metrics.Metrics).
type Metrics interface {
	RelayRefused(code string)
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxSessions, DefaultMaxSessions)
	def(&o.MaxWaiting, DefaultMaxWaiting)
	def(&o.MaxAdmitting, DefaultMaxAdmitting)
	defDur(&o.IdleTimeout, DefaultIdleTimeout)
	defDur(&o.PairTimeout, DefaultPairTimeout)
	defDur(&o.AdmissionTimeout, DefaultAdmissionTimeout)
	if o.RatePerSession < 0 {
		o.RatePerSession = 0
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Stats is a snapshot of a Server's work.
type Stats struct {
	ActivePairs  int   // pairs being relayed
	Waiting      int   // admitted connections waiting for their peer
	BytesRelayed int64 // bytes copied since the start, both directions
}

// Server is a relay. Its methods are safe for concurrent use.
type Server struct {
	opts     Options
	log      *slog.Logger
	verifier *Verifier
	tick     time.Duration // how often a quiet pair looks at its idle time

	bytes atomic.Int64
	wg    sync.WaitGroup // every connection's goroutine

	mu        sync.Mutex
	started   bool
	ln        net.Listener
	closed    bool // Serve is ending: no new connection is kept
	draining  bool // Drain was called: no new admission
	drained   chan struct{}
	conns     map[*net.TCPConn]struct{} // every connection still open
	admitting *list.List                // *admittee, oldest first
	sessions  map[string]*session
	waiting   int
	pairs     int
	used      usedTickets
}

// session is the relay's state of one session id.
type session struct {
	waiting  [2]*waiter // by role: initiator, responder
	relaying bool       // its two connections are paired
}

// waiter is an admitted connection waiting for its peer. claimed and
// replaced are set under Server.mu by the connection that pairs with it or
// takes its place.
type waiter struct {
	conn     *net.TCPConn
	remote   string
	ticket   Ticket
	claimed  bool
	replaced bool
	handoff  chan bool // after claimed: whether the client is still there
}

// admittee is a connection whose preamble is awaited.
type admittee struct {
	conn    *net.TCPConn
	evicted bool
}

// New returns a relay server; Serve runs it.
func New(opts Options) *Server {
	opts = opts.withDefaults()
	tick := min(max(opts.IdleTimeout/4, 10*time.Millisecond), time.Second)
	return &Server{
		opts: opts, log: opts.Logger, verifier: NewVerifier(opts.TicketKey), tick: tick,
		conns: map[*net.TCPConn]struct{}{}, admitting: list.New(), sessions: map[string]*session{},
		used: usedTickets{max: maxRememberedTickets},
	}
}

// Stats returns what the server is doing now.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{ActivePairs: s.pairs, Waiting: s.waiting, BytesRelayed: s.bytes.Load()}
}

// Serve accepts relay clients on ln, a TCP listener, until ctx ends; then
// it closes ln and every connection and returns once all its goroutines
// stopped. It takes ownership of ln. It returns nil when ctx ended, or the
// listener's error if ln failed first. Call it once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		ln.Close()
		return errors.New("relay: Serve called twice")
	}
	s.started, s.ln = true, ln
	draining := s.draining
	s.mu.Unlock()
	if len(s.opts.TicketKey) != ed25519.PublicKeySize {
		ln.Close()
		return errors.New("relay: no ticket public key")
	}
	if draining {
		ln.Close()
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	err := s.accept(ctx, ln)
	if err == nil {
		<-ctx.Done() // drained: pairs run on until ctx ends
	}
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// accept runs the accept loop; it returns nil once ctx ended or Drain
// closed ln.
func (s *Server) accept(ctx context.Context, ln net.Listener) error {
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			draining := s.draining
			s.mu.Unlock()
			if ctx.Err() != nil || draining {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("relay: %w", err)
			}
			// Out of descriptors and the like: wait for connections to end
			// rather than spin or give up.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("relay: accept failed; retrying", "err", err, "in", delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
			}
			continue
		}
		delay = 0
		s.wg.Go(func() { s.handle(ctx, nc) })
	}
}

// Drain stops taking connections and sends away those waiting for their
// peer, then waits until no pair is relayed or ctx ends. Serve keeps
// running until its own context ends.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	if s.ln != nil {
		s.ln.Close()
	}
	for _, sess := range s.sessions {
		for _, w := range sess.waiting {
			if w != nil {
				_ = w.conn.SetReadDeadline(aLongTimeAgo)
			}
		}
	}
	if s.pairs == 0 {
		s.mu.Unlock()
		return nil
	}
	if s.drained == nil {
		s.drained = make(chan struct{})
	}
	done := s.drained
	s.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// track registers c to be closed when Serve ends; false if it already has.
func (s *Server) track(c *net.TCPConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) closeConn(c *net.TCPConn) {
	c.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// handle serves one connection from its accept to its close.
func (s *Server) handle(ctx context.Context, nc net.Conn) {
	c, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		s.log.Error("relay: listener gave a connection that is not TCP", "remote", nc.RemoteAddr().String())
		return
	}
	if !s.track(c) {
		c.Close()
		return
	}
	remote := c.RemoteAddr().String()
	t, e := s.admission(c)
	if e != nil {
		s.refuse(c, remote, e, slog.LevelWarn)
		return
	}
	s.admit(ctx, c, remote, t)
}

// admission reads and verifies c's preamble within the admission
// deadline, among at most MaxAdmitting connections.
func (s *Server) admission(c *net.TCPConn) (Ticket, *api.Error) {
	a := &admittee{conn: c}
	s.mu.Lock()
	if s.admitting.Len() >= s.opts.MaxAdmitting {
		// The oldest has had the longest to speak; a real client speaks
		// at once, so under a flood it is the silent ones that go.
		old := s.admitting.Remove(s.admitting.Front()).(*admittee)
		old.evicted = true
		old.conn.Close()
	}
	e := s.admitting.PushBack(a)
	s.mu.Unlock()

	_ = c.SetDeadline(time.Now().Add(s.opts.AdmissionTimeout))
	raw, err := readPreamble(c)

	s.mu.Lock()
	evicted := a.evicted
	if !evicted {
		s.admitting.Remove(e)
	}
	s.mu.Unlock()
	switch {
	case evicted:
		return Ticket{}, api.Errorf(api.CodeThrottled, "too many connections in admission")
	case errors.Is(err, os.ErrDeadlineExceeded):
		return Ticket{}, api.Errorf(api.CodeInvalid, "no preamble within %s", s.opts.AdmissionTimeout)
	case err != nil:
		return Ticket{}, api.Errorf(api.CodeInvalid, "not an SFT relay preamble")
	}
	t, err := s.verifier.Verify(raw)
	if err != nil {
		var te *TicketError
		if errors.As(err, &te) {
			return Ticket{}, api.Errorf(api.CodeForbidden, "ticket %s", te.Reason)
		}
		return Ticket{}, api.Errorf(api.CodeForbidden, "ticket invalid")
	}
	_ = c.SetDeadline(time.Time{})
	return t, nil
}

// refuse tells c why it is not admitted, logs it and closes c.
func (s *Server) refuse(c *net.TCPConn, remote string, e *api.Error, level slog.Level, attrs ...any) {
	if s.opts.Metrics != nil {
		s.opts.Metrics.RelayRefused(string(e.Code))
	}
	s.log.Log(context.Background(), level, "relay: refused connection", append([]any{"remote", remote, "reason", e.Error()}, attrs...)...)
	_ = c.SetWriteDeadline(time.Now().Add(statusWriteTimeout))
	_, _ = c.Write(refusal(e))
	s.closeConn(c)
}

// writeStatus sends c a status frame.
func writeStatus(c *net.TCPConn, k kind, msg string) error {
	_ = c.SetWriteDeadline(time.Now().Add(statusWriteTimeout))
	_, err := c.Write(appendStatus(nil, k, msg))
	_ = c.SetWriteDeadline(time.Time{})
	return err
}

// admit places a verified connection: it pairs with its waiting peer, or
// waits for it.
func (s *Server) admit(ctx context.Context, c *net.TCPConn, remote string, t Ticket) {
	attrs := []any{"session", t.Session, "role", t.Role}
	s.mu.Lock()
	e := s.used.add(t.ID, t.ExpiresAt, time.Now())
	s.mu.Unlock()
	if e != nil {
		s.refuse(c, remote, e, slog.LevelWarn, attrs...)
		return
	}
	me := &waiter{conn: c, remote: remote, ticket: t, handoff: make(chan bool, 1)}
	for {
		peer, e := s.place(me)
		if e != nil {
			s.refuse(c, remote, e, slog.LevelWarn, attrs...)
			return
		}
		if peer == nil {
			s.wait(ctx, me)
			return
		}
		if <-peer.handoff {
			s.relay(ctx, peer, me)
			return
		}
		// The peer left just as it was paired: this one waits instead.
		s.log.Info("relay: peer left before pairing", "remote", peer.remote, "session", t.Session, "role", peer.ticket.Role)
		s.closeConn(peer.conn)
		s.mu.Lock()
		delete(s.sessions, t.Session) // nothing waits in it: place made it relaying
		s.pairs--
		s.signalDrained()
		s.mu.Unlock()
	}
}

// place takes w's peer out of waiting, or puts w there. It replaces a
// connection of w's role still waiting, and refuses w when the session is
// relayed already or a limit is reached.
func (s *Server) place(w *waiter) (peer *waiter, e *api.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.draining {
		return nil, api.Errorf(api.CodeUnavailable, "relay is shutting down; retry")
	}
	id := w.ticket.Session
	sess := s.sessions[id]
	if sess != nil && sess.relaying {
		return nil, api.Errorf(api.CodeConflict, "session %s is already relayed", id)
	}
	if s.pairs >= s.opts.MaxSessions {
		return nil, api.Errorf(api.CodeThrottled, "relay is at its limit of %d sessions; retry later", s.opts.MaxSessions)
	}
	if sess == nil {
		sess = &session{}
		s.sessions[id] = sess
	}
	r := roleIndex(w.ticket.Role)
	if old := sess.waiting[r]; old != nil {
		old.replaced = true
		_ = old.conn.SetReadDeadline(aLongTimeAgo)
		sess.waiting[r] = nil
		s.waiting--
	}
	if peer = sess.waiting[1-r]; peer != nil {
		peer.claimed = true
		_ = peer.conn.SetReadDeadline(aLongTimeAgo)
		sess.waiting[1-r] = nil
		s.waiting--
		sess.relaying = true
		s.pairs++
		return peer, nil
	}
	if s.waiting >= s.opts.MaxWaiting {
		if sess.waiting == [2]*waiter{} {
			delete(s.sessions, id)
		}
		return nil, api.Errorf(api.CodeThrottled, "relay has %d connections waiting for their peers; retry later", s.waiting)
	}
	sess.waiting[r] = w
	s.waiting++
	return nil, nil
}

func roleIndex(r api.Role) int {
	if r == api.RoleInitiator {
		return 0
	}
	return 1
}

// wait holds w until its peer claims it, a newer connection replaces it,
// its client leaves, or its time is up.
func (s *Server) wait(ctx context.Context, w *waiter) {
	limit := s.opts.PairTimeout
	deadline := time.Now().Add(limit)
	expiresFirst := w.ticket.ExpiresAt.Before(deadline)
	if expiresFirst {
		deadline = w.ticket.ExpiresAt
	}
	gone := writeStatus(w.conn, kindAccepted, "waiting for the peer") != nil
	var r watch
	if !gone {
		s.mu.Lock()
		if !w.claimed && !w.replaced && !s.draining { // else already woken
			_ = w.conn.SetReadDeadline(deadline)
		}
		s.mu.Unlock()
		r = watchClient(w.conn)
	}

	s.mu.Lock()
	if w.claimed {
		s.mu.Unlock()
		w.handoff <- !gone && r == watchQuiet
		return
	}
	attrs := []any{"session", w.ticket.Session, "role", w.ticket.Role}
	if w.replaced {
		s.mu.Unlock()
		s.refuse(w.conn, w.remote, api.Errorf(api.CodeConflict, "replaced by a newer connection for the same role"), slog.LevelInfo, attrs...)
		return
	}
	sess := s.sessions[w.ticket.Session]
	sess.waiting[roleIndex(w.ticket.Role)] = nil
	if sess.waiting == [2]*waiter{} && !sess.relaying {
		delete(s.sessions, w.ticket.Session)
	}
	s.waiting--
	draining := s.draining
	s.mu.Unlock()

	switch {
	case ctx.Err() != nil || draining:
		s.refuse(w.conn, w.remote, api.Errorf(api.CodeUnavailable, "relay is shutting down; retry"), slog.LevelInfo, attrs...)
	case gone || r == watchClosed:
		s.log.Info("relay: waiting client left", append([]any{"remote", w.remote}, attrs...)...)
		s.closeConn(w.conn)
	case r == watchData:
		s.refuse(w.conn, w.remote, api.Errorf(api.CodeInvalid, "data before the peer was paired"), slog.LevelWarn, attrs...)
	case expiresFirst:
		s.refuse(w.conn, w.remote, api.Errorf(api.CodeUnavailable, "the ticket expired before the peer came"), slog.LevelInfo, attrs...)
	default:
		s.refuse(w.conn, w.remote, api.Errorf(api.CodeUnavailable, "no peer within %s", limit), slog.LevelInfo, attrs...)
	}
}

// watch is what a waiting client did.
type watch int

const (
	watchQuiet  watch = iota // nothing until its read deadline
	watchClosed              // closed or reset its connection
	watchData                // sent bytes before paired: against the protocol
)

// watchClient waits until c's client closes, sends something or c's read
// deadline passes. The byte it may read is never a peer's: a client sends
// nothing until paired, and one that does is refused.
func watchClient(c *net.TCPConn) watch {
	var b [1]byte
	n, err := c.Read(b[:])
	switch {
	case n > 0:
		return watchData
	case errors.Is(err, os.ErrDeadlineExceeded):
		return watchQuiet
	}
	return watchClosed
}

// relay runs the pair of a (which waited) and b until it ends.
func (s *Server) relay(ctx context.Context, a, b *waiter) {
	if a.ticket.Role != api.RoleInitiator {
		a, b = b, a
	}
	id := a.ticket.Session
	defer func() {
		s.mu.Lock()
		delete(s.sessions, id)
		s.pairs--
		s.signalDrained()
		s.mu.Unlock()
	}()
	for _, w := range []*waiter{a, b} {
		_ = w.conn.SetReadDeadline(time.Time{})
	}
	for _, w := range []*waiter{a, b} {
		if err := writeStatus(w.conn, kindPaired, "peer connected"); err != nil {
			s.log.Info("relay: client left as it was paired", "remote", w.remote, "session", id, "role", w.ticket.Role)
			s.closeConn(a.conn)
			s.closeConn(b.conn)
			return
		}
	}
	p := newPair(ctx, s, id, a.conn, b.conn, min(a.ticket.MaxBytes, b.ticket.MaxBytes))
	s.log.Info("relay: pair started", "session", id, "initiator", a.remote, "responder", b.remote)
	p.run()
}

// signalDrained wakes Drain once no pair is left; s.mu is held.
func (s *Server) signalDrained() {
	if s.pairs == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
}
