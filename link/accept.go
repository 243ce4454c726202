package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

const (
	// maxPending bounds the listener's connections in their handshake at
	// once. An unproven connection costs a goroutine and a few hundred
	// bytes, so a flood cannot exhaust memory or descriptors; a full set
	// makes room by closing the connection least likely to be the peer
	// (see evict), so a flood cannot lock the peer out either.
	maxPending = 64

	relayRetryMin = 200 * time.Millisecond
	relayRetryMax = 2 * time.Second
	// acceptRetryMax bounds the pause after a failed ln.Accept that may
	// heal, such as running out of descriptors.
	acceptRetryMax = time.Second
)

// Accept waits for the peer of session sessionID and returns the connection
// it chose: the peer, which dials (Connect or Dial), may complete the
// handshake on several connections, and selects one with its first record.
// Connections come from ln, unless it is nil, and, when opts.Relay is set,
// through the relay: Relay is called after opts.RelayDelay (at once when
// ln is nil) and again after each failure.
//
// Connections that fail the handshake (another key or session, garbage),
// stay silent, or complete it without being selected are closed, logged,
// and Accept keeps waiting. Many may be in their handshake at once, and
// when too many are, the oldest that has not proven itself (preferring the
// remote host with the most of them) is closed to make room, so neither
// idle connections nor a flood hold up the real peer; a peer whose
// connection was closed dials again.
//
// Accept takes ownership of ln and closes it before returning, so no second
// peer can ever connect; every connection it does not return is closed,
// and its goroutines have ended when it returns. When ctx ends first, the
// error wraps ctx.Err() and, if a connection attempt failed, that failure
// too (so errors.Is(err, ErrHandshake) tells that someone tried with the
// wrong key).
func Accept(ctx context.Context, ln net.Listener, key []byte, sessionID string, opts Options) (*Conn, error) {
	if ln != nil {
		defer ln.Close()
	}
	if err := checkParams(key, sessionID); err != nil {
		return nil, err
	}
	if ln == nil && opts.Relay == nil {
		return nil, errors.New("link: Accept needs a listener or a relay")
	}
	opts = opts.withDefaults()
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a := &acceptor{
		ctx:     ctx,
		key:     key,
		sid:     sessionID,
		opts:    opts,
		won:     make(chan *Conn),
		slots:   make(chan struct{}, maxPending),
		pending: make(map[*pending]struct{}),
	}
	listenErr := make(chan error, 1)
	if ln != nil {
		a.wg.Go(func() {
			if err := a.listen(ln); err != nil {
				listenErr <- err
			}
		})
	}
	if opts.Relay != nil {
		delay := opts.RelayDelay
		if ln == nil {
			delay = 0
		}
		a.wg.Go(func() { a.relay(delay) })
	}

	var (
		c   *Conn
		err error
	)
	for c == nil && err == nil && ctx.Err() == nil {
		select {
		case c = <-a.won:
		case err = <-listenErr:
			if opts.Relay != nil {
				opts.Logger.Warn("peer link: listener failed; waiting for the peer through the relay only", "err", err)
				err = nil
			}
		case <-ctx.Done():
		}
	}
	cancel()
	if ln != nil {
		ln.Close() // the only portable way to interrupt ln.Accept
	}
	a.wg.Wait()
	if c != nil {
		return c, nil
	}
	if parent.Err() != nil {
		return nil, a.gaveUp(parent.Err())
	}
	return nil, err
}

// acceptor is one Accept call: its sources feed connections to respond,
// and the first to be selected is offered on won.
type acceptor struct {
	ctx  context.Context // ends when Accept returns
	key  []byte
	sid  string
	opts Options
	won  chan *Conn
	wg   sync.WaitGroup

	// slots holds a token per listener connection in its handshake.
	slots chan struct{}

	mu       sync.Mutex
	pending  map[*pending]struct{}
	flooded  bool  // an eviction was logged at Warn
	lastErr  error // the last handshake failure worth reporting
	relayErr error // the last failure of Options.Relay
}

// pending is a listener connection in its handshake.
type pending struct {
	nc      net.Conn
	host    string
	since   time.Time
	proven  bool // sent a valid first message; guarded by acceptor.mu
	evicted bool // closed to make room; guarded by acceptor.mu
}

func (a *acceptor) listen(ln net.Listener) error {
	var pause time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if a.ctx.Err() != nil {
				return nil
			}
			if !acceptMayHeal(err) {
				return fmt.Errorf("waiting for the peer on %s: %w", ln.Addr(), err)
			}
			pause = min(max(2*pause, 5*time.Millisecond), acceptRetryMax)
			a.opts.Logger.Warn("peer link: cannot accept connections for now", "err", err, "retry_in", pause)
			if !sleep(a.ctx, pause) {
				return nil
			}
			continue
		}
		pause = 0
		p, ok := a.admit(nc)
		if !ok {
			nc.Close()
			return nil
		}
		a.wg.Go(func() { a.serve(p) })
	}
}

// acceptMayHeal reports ln.Accept failures that pass, as net/http's server
// treats them.
func acceptMayHeal(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNABORTED)
}

// admit takes a slot for nc, making room if all are taken. It fails only
// when Accept is ending.
func (a *acceptor) admit(nc net.Conn) (*pending, bool) {
	select {
	case a.slots <- struct{}{}:
	default:
		a.evict()
		// The evicted connection's goroutine frees its slot at once.
		select {
		case a.slots <- struct{}{}:
		case <-a.ctx.Done():
			return nil, false
		}
	}
	p := &pending{nc: nc, host: hostOf(nc.RemoteAddr()), since: time.Now()}
	a.mu.Lock()
	a.pending[p] = struct{}{}
	a.mu.Unlock()
	return p, true
}

// evict closes the pending connection least likely to be the peer's: one
// that has not sent a valid first message, from the remote host with the
// most of those, the oldest; failing that, the oldest of all. The peer's
// own connection proves itself within a round trip, so a flood of silent,
// slow or half-open connections only evicts its own kind.
func (a *acceptor) evict() {
	a.mu.Lock()
	defer a.mu.Unlock()
	unproven := map[string]int{}
	for p := range a.pending {
		if !p.proven && !p.evicted {
			unproven[p.host]++
		}
	}
	var victim *pending
	for p := range a.pending {
		if p.evicted {
			continue
		}
		if victim == nil || evictBefore(p, victim, unproven) {
			victim = p
		}
	}
	if victim == nil {
		return // every pending connection is ending anyway
	}
	victim.evicted = true
	victim.nc.Close()
	if !a.flooded {
		a.flooded = true
		a.opts.Logger.Warn("peer link: many connections at once (a port scan?); closing the oldest idle ones to make room",
			"pending", len(a.pending), "remote", victim.host)
	}
}

func evictBefore(p, q *pending, unproven map[string]int) bool {
	switch {
	case p.proven != q.proven:
		return !p.proven
	case !p.proven && unproven[p.host] != unproven[q.host]:
		return unproven[p.host] > unproven[q.host]
	}
	return p.since.Before(q.since)
}

func hostOf(addr net.Addr) string {
	if host, _, err := net.SplitHostPort(addr.String()); err == nil {
		return host
	}
	return addr.String()
}

// serve runs the handshake of a listener connection.
func (a *acceptor) serve(p *pending) {
	defer func() {
		a.mu.Lock()
		delete(a.pending, p)
		a.mu.Unlock()
		<-a.slots
	}()
	addr := p.nc.RemoteAddr().String()
	c, err := a.handshake(p.nc, PathDirect, addr, func() {
		a.mu.Lock()
		p.proven = true
		a.mu.Unlock()
	})
	if err != nil {
		a.mu.Lock()
		evicted := p.evicted
		a.mu.Unlock()
		a.reject(PathDirect, addr, err, evicted)
		p.nc.Close()
		return
	}
	a.offer(c)
}

// relay keeps a connection through the relay in its handshake until one
// is selected or Accept ends.
func (a *acceptor) relay(delay time.Duration) {
	if !sleep(a.ctx, delay) {
		return
	}
	pause := relayRetryMin
	for {
		nc, err := a.opts.Relay(a.ctx)
		if err != nil {
			if a.ctx.Err() != nil {
				return
			}
			a.opts.Logger.Debug("peer link: relay failed", "relay", a.opts.RelayAddr, "err", err, "retry_in", pause)
			a.mu.Lock()
			a.relayErr = err
			a.mu.Unlock()
		} else {
			addr := a.opts.RelayAddr
			if addr == "" {
				addr = nc.RemoteAddr().String()
			}
			c, err := a.handshake(nc, PathRelay, addr, nil)
			if err == nil {
				a.offer(c)
				return
			}
			a.reject(PathRelay, addr, err, false)
			nc.Close()
		}
		if !sleep(a.ctx, pause) {
			return
		}
		pause = min(2*pause, relayRetryMax)
	}
}

func (a *acceptor) handshake(nc net.Conn, path, addr string, hello func()) (*Conn, error) {
	enc, dec, err := respond(a.ctx, nc, a.key, a.sid, a.opts.HandshakeTimeout, hello)
	if err != nil {
		return nil, err
	}
	return linkConn(nc, a.opts.Logger, a.sid, enc, dec, path, addr), nil
}

// offer hands c to Accept, or closes it if another connection won.
func (a *acceptor) offer(c *Conn) {
	select {
	case a.won <- c:
	case <-a.ctx.Done():
		c.Close()
	}
}

// reject logs why the connection on path from addr failed, and remembers
// the failures that may mean someone tried with the wrong key. Call it
// before closing the connection: the peer learns of the failure by the
// close, and may end Accept.
func (a *acceptor) reject(path, addr string, err error, evicted bool) {
	if a.ctx.Err() != nil {
		return // Accept is ending: no failure of the connection's own
	}
	log := a.opts.Logger
	switch {
	case evicted:
		log.Debug("peer link: closed an unproven connection to make room", "remote", addr)
	case errors.Is(err, errSilent):
		log.Debug("peer link: connection closed before the handshake", "remote", addr, "path", path)
	case errors.Is(err, errNotSelected):
		log.Debug("peer link: the peer chose another connection", "remote", addr, "path", path)
	default:
		log.Warn("peer link: rejected connection", "remote", addr, "path", path, "err", err)
		from := "connection from " + addr
		if path == PathRelay {
			from = "connection through the relay at " + addr
		}
		a.mu.Lock()
		a.lastErr = fmt.Errorf("%s: %w", from, err)
		a.mu.Unlock()
	}
}

// gaveUp is Accept's error when ctx ended with cause before any peer was
// selected.
func (a *acceptor) gaveUp(cause error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var err error
	if a.lastErr != nil {
		err = fmt.Errorf("no peer completed the handshake: %w (last attempt: %w)", cause, a.lastErr)
	} else {
		err = fmt.Errorf("no peer connected: %w", cause)
	}
	if a.relayErr != nil {
		err = fmt.Errorf("%w; the relay failed: %w", err, a.relayErr)
	}
	return err
}

// sleep waits for d or until ctx ends, and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
