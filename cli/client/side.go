package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/link"
)

// side is one member's part in a transfer: it connects the peer link —
// listening or dialing, as the session says — runs the transfer over it,
// and when the link drops, re-establishes it with the peer (a new listen
// address is announced through the session) and lets the transfer resume.
type side struct {
	c         *Client
	sess      *api.Session
	role      api.Role
	w         *sessionEvents
	listen    string // where to listen when this side listens
	advertise string
	timeout   time.Duration // for the peer to connect, or to come back after a drop
	notify    func(string, ...any)
	log       *slog.Logger
	resumable bool // the transfer can continue after a drop (not a pipe or a text)

	ln        net.Listener
	addr      string // the address this side announced for the peer to dial
	bound     string // the address the last listener had, reused so the peer's view stays valid
	key       []byte
	connected bool // a link was established at least once
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

// startListening opens the peer link listener and returns the address the
// peer should dial.
func (s *side) startListening() (string, error) {
	var ln net.Listener
	var err error
	if s.bound != "" {
		// The same port again, so an advertised or forwarded address
		// still leads here.
		ln, err = net.Listen("tcp", s.bound)
	}
	if ln == nil {
		if ln, err = net.Listen("tcp", s.listen); err != nil {
			return "", fmt.Errorf("listen for the peer on %s: %w", s.listen, err)
		}
	}
	s.bound = ln.Addr().String()
	addr := s.advertise
	if addr == "" {
		if tcp, ok := ln.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
			ln.Close()
			return "", fmt.Errorf("listen address %s does not say where the peer should connect: give a host (--listen HOST:PORT) or --advertise HOST:PORT", s.listen)
		}
		addr = ln.Addr().String()
	}
	s.ln, s.addr = ln, addr
	return addr, nil
}

// transfer waits until the session is joined, then runs fn over the peer
// link, once or, after drops, again until it succeeds. moved accumulates
// the bytes each attempt moved.
func (s *side) transfer(ctx context.Context, moved *int64, fn func(*link.Conn) (link.Result, error)) (link.Result, error) {
	if s.sess.State == api.StateWaiting {
		ev, err := s.w.until(ctx, func(ev api.Event) bool { return ev.Type == api.EventJoined || ev.State.Terminal() })
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
	if sess.Listener == s.role && s.addr != "" && sess.PeerAddr != s.addr {
		return link.Result{}, errors.New("another sft-cli resumed the session")
	}
	if s.key, err = s.c.Key(ctx, sess.ID); err != nil {
		return link.Result{}, fmt.Errorf("get session key: %w", err)
	}
	if s.sess.Listener == s.role && s.ln == nil {
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
		s.say("link to %s lost: %v; waiting up to %s for it to come back", s.peerName(), err, s.timeout)
		if err := s.reconnect(ctx); err != nil {
			return link.Result{}, err
		}
		s.say("resuming session %s", s.sess.ID)
	}
}

// connect establishes the peer link for one attempt.
func (s *side) connect(ctx context.Context) (*link.Conn, error) {
	opts := link.Options{Logger: s.log, DialTimeout: s.timeout, HandshakeTimeout: s.timeout}
	if s.sess.Listener != s.role {
		return link.Dial(ctx, s.sess.PeerAddr, s.key, s.sess.ID, opts)
	}
	actx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	conn, err := link.Accept(actx, s.ln, s.key, s.sess.ID, opts)
	s.ln = nil // Accept closed it
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		if !s.connected {
			return nil, fmt.Errorf("%s joined but did not connect to %s within %s", s.peerName(), s.bound, s.timeout)
		}
		return nil, fmt.Errorf("%w: %s did not connect again within %s", ErrLeftForResume, s.peerName(), s.timeout)
	}
	return conn, err
}

// reconnect prepares the next attempt after a drop. The listener listens
// again and announces its address through the session; the dialer waits
// for that announcement. Either gives up after the timeout, leaving the
// session open for a later run.
func (s *side) reconnect(ctx context.Context) error {
	if s.sess.Listener == s.role {
		return s.relisten(ctx)
	}
	wctx, cancel := context.WithTimeout(ctx, s.timeout)
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
		return fmt.Errorf("%w: %s did not come back within %s", ErrLeftForResume, s.peerName(), s.timeout)
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
	addr, err := s.startListening()
	if err != nil {
		return err
	}
	sess, err := s.c.Resume(ctx, s.sess.ID, addr)
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
// announces another address than ours: a second run resumed it.
func (s *side) tookOver(ctx context.Context) bool {
	if s.addr == "" || s.sess == nil || s.sess.Listener != s.role {
		return false
	}
	cur, err := s.c.Get(ctx, s.sess.ID)
	return err == nil && !cur.State.Terminal() && cur.Listener == s.role && cur.PeerAddr != s.addr
}
