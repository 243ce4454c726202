package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/link"
	"github.com/sftproject/sft/services/relay"
)

// side is one member's part in a transfer: it connects the peer link —
// listening or dialing, as the session says, directly or through the
// relay — runs the transfer over it, and when the link drops,
// re-establishes it with the peer (new listen addresses are announced
// through the session) and lets the transfer resume, on whichever path
// works then.
type side struct {
	c         *Client
	sess      *api.Session
	role      api.Role
	w         *sessionEvents
	listen    string   // where to listen when this side listens
	advertise []string // addresses to announce before the interfaces' own
	peer      PeerOptions
	notify    func(string, ...any)
	log       *slog.Logger
	resumable bool // the transfer can continue after a drop (not a pipe or a text)

	ln         net.Listener
	addrs      []string // the addresses this side announced for the peer to dial
	bound      string   // the address the last listener had, reused so the peer's view stays valid
	key        []byte
	connected  bool     // a link was established at least once
	noRelay    bool     // the server offers no relay
	relayAddrs []string // the server's relay, once known
	// ticket is a relay ticket fetched ahead and not yet used; relay
	// attempts may run on another goroutine.
	ticket atomic.Pointer[api.RelayReply]
	path   api.Path
	via    string
}

// RelayMode says whether a transfer may go through the relay.
type RelayMode string

const (
	RelayAuto   RelayMode = "auto"   // when no direct connection works within the relay delay
	RelayAlways RelayMode = "always" // only through the relay (networks where direct attempts are slow to fail)
	RelayNever  RelayMode = "never"  // never: the bytes must not touch a server
)

// PeerOptions tune how the peers find each other.
type PeerOptions struct {
	// Listen is where this side listens when it is the listener
	// (host:port, port 0 = any; ":0" = every interface).
	Listen string
	// Advertise lists addresses (comma-separated) the peer should try
	// before this host's own: a NAT's public address, a port forward.
	Advertise string
	// Timeout bounds the wait for the peer to connect, or to come back
	// after a drop.
	Timeout time.Duration
	// Relay says whether the relay may be used; RelayDelay is how long
	// direct attempts get before it is tried too.
	Relay      RelayMode
	RelayDelay time.Duration
}

func newSide(c *Client, role api.Role, listen string, peer PeerOptions, notify func(string, ...any), log *slog.Logger, resumable bool) *side {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &side{c: c, role: role, listen: listen, advertise: splitAddrs(peer.Advertise), peer: peer, notify: notify, log: log, resumable: resumable}
}

// report is this side's successful report: the checks, and the path the
// last link took.
func (s *side) report(r link.Result) api.Report {
	rep := okReport(r)
	rep.Path, rep.Via = s.path, s.via
	return rep
}

func (s *side) close() {
	if s.ln != nil {
		s.ln.Close()
	}
	clear(s.key)
}

func (s *side) say(format string, args ...any) {
	if s.notify != nil {
		s.notify(format, args...)
	}
}

func (s *side) peerName() string {
	if s.role == api.RoleInitiator {
		return s.sess.Responder
	}
	return s.sess.Initiator
}

// startListening opens the peer link listener and returns the addresses
// the peer should try. Forced through the relay, it listens nowhere.
func (s *side) startListening() ([]string, error) {
	if s.peer.Relay == RelayAlways {
		s.addrs = []string{}
		return nil, nil
	}
	var ln net.Listener
	var err error
	if s.bound != "" {
		// The same port again, so an advertised or forwarded address
		// still leads here.
		ln, err = net.Listen("tcp", s.bound)
	}
	if ln == nil {
		if ln, err = listenIn(s.listen); err != nil {
			return nil, err
		}
	}
	s.bound = ln.Addr().String()
	s.ln, s.addrs = ln, Candidates(ln.Addr().(*net.TCPAddr), s.advertise)
	return s.addrs, nil
}

// transfer waits until the session is joined, then runs fn over the peer
// link, once or, after drops, again until it succeeds. moved accumulates
// the bytes each attempt moved.
func (s *side) transfer(ctx context.Context, moved *int64, fn func(*link.Conn) (link.Result, error)) (link.Result, error) {
	if s.sess.State == api.StateWaiting {
		ev, err := s.w.until(ctx, func(ev api.Event) bool {
			s.noteDeclined(ev)
			return ev.Type == api.EventJoined || ev.State.Terminal()
		})
		if err != nil {
			return link.Result{}, fmt.Errorf("waiting for %s to join: %w", s.sess.Responder, err)
		}
		if ev.Type != api.EventJoined {
			return link.Result{}, fmt.Errorf("session %s %s: %s", s.sess.ID, ev.State, ev.Reason)
		}
	}
	sess, err := s.c.Get(ctx, s.sess.ID)
	if err != nil {
		return link.Result{}, err
	}
	s.sess = sess
	if sess.Listener == s.role && s.addrs != nil && !slices.Equal(sess.PeerAddrs, s.addrs) {
		return link.Result{}, errors.New("another sft-cli resumed the session")
	}
	if s.key, err = s.c.Key(ctx, sess.ID); err != nil {
		return link.Result{}, fmt.Errorf("get session key: %w", err)
	}
	if err := s.prepareRelay(ctx); err != nil {
		return link.Result{}, err
	}
	if s.sess.Listener == s.role && s.addrs == nil {
		// Joined as the listener elsewhere, or a stale record: listen anew.
		if err := s.relisten(ctx); err != nil {
			return link.Result{}, err
		}
	} else if s.sess.Listener != s.role && s.ln != nil {
		// The sender offered to listen, but the receiver chose to.
		s.ln.Close()
		s.ln = nil
	}
	for {
		conn, err := s.connect(ctx)
		linkErr := false
		if err == nil {
			s.connected = true
			var res link.Result
			res, err = fn(conn)
			conn.Close()
			*moved += res.Moved
			if err == nil {
				return res, nil
			}
			linkErr = true
		}
		// Nothing to resume before a link existed; once one did, failing
		// to reach the peer again is as transient as the drop was.
		switch {
		case ctx.Err() != nil, !s.resumable, !s.connected, errors.Is(err, ErrLeftForResume):
			return link.Result{}, err
		case linkErr && !link.Resumable(err):
			return link.Result{}, err
		}
		s.say("link to %s lost: %v; waiting up to %s for it to come back", s.peerName(), err, s.peer.Timeout)
		if err := s.reconnect(ctx); err != nil {
			return link.Result{}, err
		}
		s.say("resuming session %s", s.sess.ID)
	}
}

// connect establishes the peer link for one attempt: the dialer tries the
// listener's addresses and, failing them, the relay; the listener accepts
// on its socket and, failing that, meets the dialer at the relay.
func (s *side) connect(ctx context.Context) (*link.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, s.peer.Timeout)
	defer cancel()
	opts := link.Options{Logger: s.log, DialTimeout: s.peer.Timeout, HandshakeTimeout: s.peer.Timeout, RelayDelay: s.peer.RelayDelay, PeerName: s.peerName()}
	relayDial := s.relayDialer()
	var (
		conn *link.Conn
		err  error
	)
	if s.sess.Listener != s.role {
		var cands []link.Candidate
		if s.peer.Relay != RelayAlways {
			for _, a := range dialOrder(s.sess.PeerAddrs, s.sess.PeerHost) {
				cands = append(cands, link.Candidate{Path: link.PathDirect, Addr: a})
			}
		}
		if relayDial != nil {
			cands = append(cands, link.Candidate{Path: link.PathRelay, Addr: strings.Join(s.relayAddrs, " or "), Dial: relayDial})
		}
		if len(cands) == 0 {
			return nil, fmt.Errorf("%s listens only through the relay, and %s", s.peerName(), s.noRelayWhy())
		}
		conn, err = link.Connect(actx, cands, s.key, s.sess.ID, opts)
	} else {
		opts.Relay = relayDial
		ln := s.ln
		s.ln = nil // Accept closes it
		if ln == nil && relayDial == nil {
			return nil, fmt.Errorf("this side listens only through the relay, and %s", s.noRelayWhy())
		}
		conn, err = link.Accept(actx, ln, s.key, s.sess.ID, opts)
	}
	if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		switch {
		case s.connected:
			return nil, fmt.Errorf("%w: %s did not connect again within %s", ErrLeftForResume, s.peerName(), s.peer.Timeout)
		case s.sess.Listener == s.role:
			return nil, fmt.Errorf("%s joined but did not connect within %s", s.peerName(), s.peer.Timeout)
		}
	}
	if err != nil {
		return nil, err
	}
	s.path, s.via = api.Path(conn.Path()), conn.PeerAddr()
	switch {
	case s.path == api.PathRelay:
		s.via = conn.RemoteAddr().String() // the one of the relay's addresses reached
	case s.sess.Listener == s.role:
		s.via = conn.LocalAddr().String() // the address the peer reached, as the dialer reports it
	}
	s.log.Info("peer link up", "session", s.sess.ID, "path", s.path, "via", s.via)
	return conn, nil
}

func (s *side) noRelayWhy() string {
	if s.peer.Relay == RelayNever {
		return "--no-relay forbids the relay"
	}
	return "this server offers no relay"
}

// relayDialer returns how this side reaches the relay for one attempt, or
// nil when it may not (RelayNever) or the server has none. Every call asks
// the session service for a fresh ticket, good for one connection.
func (s *side) relayDialer() func(context.Context) (net.Conn, error) {
	if s.peer.Relay == RelayNever || s.noRelay {
		return nil
	}
	return func(ctx context.Context) (net.Conn, error) {
		rep := s.ticket.Swap(nil)
		if rep == nil {
			var err error
			if rep, err = s.c.RelayTicket(ctx, s.sess.ID); err != nil {
				return nil, fmt.Errorf("relay ticket: %w", err)
			}
		}
		nc, _, err := relay.DialAny(ctx, rep.Addrs, rep.Ticket)
		return nc, err
	}
}

// prepareRelay learns, once per run, whether the server offers a relay
// and where, keeping the ticket that came with the answer for the first
// relay attempt.
func (s *side) prepareRelay(ctx context.Context) error {
	if s.peer.Relay == RelayNever || s.relayAddrs != nil || s.noRelay {
		return nil
	}
	rep, err := s.c.RelayTicket(ctx, s.sess.ID)
	switch {
	case api.CodeOf(err) == api.CodeUnavailable:
		s.noRelay = true
		if s.peer.Relay == RelayAlways {
			return fmt.Errorf("--relay: %w", err)
		}
		return nil
	case api.CodeOf(err) == api.CodeConflict, api.CodeOf(err) == api.CodeExpired:
		return err // the session ended meanwhile; the error says how
	case err != nil && s.peer.Relay == RelayAlways:
		return fmt.Errorf("ask for the relay: %w", err)
	case err != nil:
		// No answer for now: the direct path may do, and a relay attempt
		// asks for its own ticket.
		s.log.Warn("no answer about the relay; trying the direct path", "session", s.sess.ID, "err", err)
		return nil
	}
	s.relayAddrs = rep.Addrs
	s.ticket.Store(rep)
	return nil
}

// reconnect prepares the next attempt after a drop. The listener listens
// again and announces its address through the session; the dialer waits
// for that announcement. Either gives up after the timeout, leaving the
// session open for a later run.
func (s *side) reconnect(ctx context.Context) error {
	if s.sess.Listener == s.role {
		return s.relisten(ctx)
	}
	wctx, cancel := context.WithTimeout(ctx, s.peer.Timeout)
	defer cancel()
	other := api.RoleResponder
	if s.role == api.RoleResponder {
		other = api.RoleInitiator
	}
	ev, err := s.w.until(wctx, func(ev api.Event) bool {
		return (ev.Type == api.EventResumed && ev.Role == other) || ev.State.Terminal()
	})
	switch {
	case err != nil && ctx.Err() == nil:
		return fmt.Errorf("%w: %s did not come back within %s", ErrLeftForResume, s.peerName(), s.peer.Timeout)
	case err != nil:
		return err
	case ev.State.Terminal():
		return fmt.Errorf("session %s %s: %s", s.sess.ID, ev.State, ev.Reason)
	}
	sess, err := s.c.Get(ctx, s.sess.ID)
	if err != nil {
		return err
	}
	s.sess = sess
	return nil
}

func (s *side) relisten(ctx context.Context) error {
	addrs, err := s.startListening()
	if err != nil {
		return err
	}
	sess, err := s.c.Resume(ctx, s.sess.ID, addrs)
	if err != nil {
		return fmt.Errorf("resume session %s: %w", s.sess.ID, err)
	}
	s.sess = sess
	return nil
}

// fail settles a transfer that did not succeed. Interrupted by the user
// (Ctrl-C): the session is cancelled, so the peer is told. Left for a
// resume: the session stays as it is. Otherwise the session is failed with
// the reason — unless the peer already ended it, whose reason is then the
// better message.
func (s *side) fail(ctx context.Context, cause error) error {
	if errors.Is(cause, ErrServerUnreachable) {
		return cause // the session is over, and there is no server to tell
	}
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if s.tookOver(bg) {
		// Another run of the same command resumed the session and listens
		// now: it is that run's to finish or fail, not ours.
		return fmt.Errorf("session %s was resumed by another sft-cli, which carries on; this one stops", s.sess.ID)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		_, _ = s.c.Cancel(bg, s.sess.ID, "interrupted")
		return fmt.Errorf("interrupted: session %s cancelled", s.sess.ID)
	}
	if errors.Is(cause, ErrLeftForResume) {
		return fmt.Errorf("%w (session %s, until %s)", cause, s.sess.ID, s.sess.ExpiresAt.Local().Format(time.DateTime))
	}
	// The peer may have ended the session (cancelled) a moment before our
	// link noticed; its reason says what happened.
	if errors.Is(cause, link.ErrAborted) {
		wctx, wcancel := context.WithTimeout(bg, 2*time.Second)
		ev, err := s.w.until(wctx, func(ev api.Event) bool { return ev.State.Terminal() })
		wcancel()
		if err == nil && ev.State == api.StateCancelled {
			return fmt.Errorf("session %s %s", s.sess.ID, ev.Reason)
		}
	}
	sess, err := s.c.Get(bg, s.sess.ID)
	if err == nil && !sess.State.Terminal() {
		if sess.State == api.StateWaiting {
			_, _ = s.c.Cancel(bg, s.sess.ID, cause.Error())
		} else {
			_, _ = s.c.Report(bg, s.sess.ID, api.Report{OK: false, Error: cause.Error()})
		}
	}
	return cause
}

// tookOver reports whether, this side being the listener, the session now
// announces other addresses than ours: a second run resumed it.
func (s *side) tookOver(ctx context.Context) bool {
	if s.addrs == nil || s.sess == nil || s.sess.Listener != s.role {
		return false
	}
	cur, err := s.c.Get(ctx, s.sess.ID)
	return err == nil && !cur.State.Terminal() && cur.Listener == s.role && !slices.Equal(cur.PeerAddrs, s.addrs)
}
