package link

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/flynn/noise"
)

// The paths a connection to the peer takes.
const (
	PathDirect = "direct" // straight to the peer's address
	PathRelay  = "relay"  // through a relay that pairs the two peers
)

// Candidate is one way to reach the peer.
type Candidate struct {
	// Path is PathDirect or PathRelay.
	Path string
	// Addr names the candidate to users, in errors and in Conn.PeerAddr:
	// the peer's address, or the relay's.
	Addr string
	// Dial opens a byte stream to the peer; nil dials Addr over TCP. It
	// must return once ctx ends.
	Dial func(ctx context.Context) (net.Conn, error)
}

// A candidate that failed is tried again after a pause that doubles from
// retryMin up to retryMax: soon enough to catch a listener that comes
// back, rare enough not to hammer one that refuses.
const (
	retryMin = 100 * time.Millisecond
	retryMax = time.Second
)

// Connect reaches the peer through the first of cands on which the
// handshake completes, as the Noise initiator, and selects that connection
// with its first record, so that Accept on the other side keeps the same
// one. Direct candidates are tried in order, one more every opts.Stagger
// or as soon as the previous attempt failed, each left running while the
// next starts (RFC 8305); relay candidates start after opts.RelayDelay, or
// at once when there is no direct candidate or every direct attempt has
// failed. A candidate that fails (refused, handshake cut by the other end)
// is tried again after a short pause, until the peer is reached or
// opts.DialTimeout has passed or ctx ends. Every connection but the one
// returned is closed, and Connect's goroutines have ended when it returns.
//
// When every attempt failed, the error names each candidate and why it
// failed ("cannot reach the peer at 198.51.100.2:40001 (no answer),
// 203.0.113.5:40001 (connection refused); no relay"), and wraps those
// causes (and ctx.Err(), if ctx ended) for errors.Is: ErrHandshake when a
// peer did not complete the handshake, os.ErrDeadlineExceeded when an
// address never answered, syscall.ECONNREFUSED, …
func Connect(ctx context.Context, cands []Candidate, key []byte, sessionID string, opts Options) (*Conn, error) {
	if err := checkParams(key, sessionID); err != nil {
		return nil, err
	}
	if err := checkCandidates(cands); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dialCtx, cancelDial := context.WithTimeout(ctx, opts.DialTimeout)
	defer cancelDial()
	d := &dialer{
		ctx:     ctx,
		dialCtx: dialCtx,
		key:     key,
		sid:     sessionID,
		opts:    opts,
		cands:   cands,
		tries:   make([]try, len(cands)),
		results: make(chan attempt, len(cands)),
	}
	for i, c := range cands {
		if c.Path == PathDirect {
			d.direct = append(d.direct, i)
		} else {
			d.relays = append(d.relays, i)
		}
	}
	c := d.run()
	cancel()
	for ; d.running > 0; d.running-- {
		if r := <-d.results; r.nc != nil {
			r.nc.Close()
		}
	}
	d.wg.Wait()
	if c != nil {
		return c, nil
	}
	err := &reachError{peer: opts.PeerName, cands: cands, errs: make([]error, len(cands))}
	for i, t := range d.tries {
		err.errs[i] = t.err
	}
	if parent.Err() != nil {
		return nil, fmt.Errorf("%w: %w", err, parent.Err())
	}
	return nil, err
}

// Dial connects to the peer at addr: Connect with addr as the only, direct,
// candidate.
func Dial(ctx context.Context, addr string, key []byte, sessionID string, opts Options) (*Conn, error) {
	return Connect(ctx, []Candidate{{Path: PathDirect, Addr: addr}}, key, sessionID, opts)
}

func checkCandidates(cands []Candidate) error {
	if len(cands) == 0 {
		return errors.New("link: no address to reach the peer at")
	}
	for _, c := range cands {
		if c.Path != PathDirect && c.Path != PathRelay {
			return fmt.Errorf("link: candidate %q has path %q, want %q or %q", c.Addr, c.Path, PathDirect, PathRelay)
		}
		if c.Addr == "" {
			return errors.New("link: candidate without an address")
		}
	}
	return nil
}

// dialer is one Connect call. Its loop, run, is the only one to touch
// tries and running; attempts report on results.
type dialer struct {
	ctx     context.Context // ends when Connect returns
	dialCtx context.Context // ctx, and DialTimeout after Connect started
	key     []byte
	sid     string
	opts    Options
	cands   []Candidate
	direct  []int // indexes into cands, in order
	relays  []int
	tries   []try
	results chan attempt // room for one attempt per candidate
	running int
	wg      sync.WaitGroup
}

// try is what the loop knows of one candidate.
type try struct {
	running bool
	fails   int
	retryAt time.Time // when to try again; zero: not scheduled
	err     error     // why the last attempt that says something failed
}

// attempt is the outcome of one try of candidate i: a connection that
// completed the handshake, or why not.
type attempt struct {
	i        int
	nc       net.Conn
	enc, dec *noise.CipherState
	err      error
	cut      bool // ended by Connect's deadline or return, which says nothing of the candidate
}

// run starts attempts as they fall due and returns the first connection
// that completes the handshake and is selected, or nil once dialCtx ended
// and no attempt is left running.
func (d *dialer) run() *Conn {
	start := time.Now()
	next, staggerAt := 0, start // the next direct candidate to start, and when
	relayAt, relaysStarted := start.Add(d.opts.RelayDelay), len(d.relays) == 0
	if len(d.direct) == 0 {
		relayAt = start
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		open := d.dialCtx.Err() == nil
		if open {
			for next < len(d.direct) && !now.Before(staggerAt) {
				d.launch(d.direct[next])
				next++
				staggerAt = now.Add(d.opts.Stagger)
			}
			if !relaysStarted && (!now.Before(relayAt) || (next == len(d.direct) && !d.anyRunning(d.direct))) {
				for _, i := range d.relays {
					d.launch(i)
				}
				relaysStarted = true
			}
			for i := range d.tries {
				if t := &d.tries[i]; !t.running && !t.retryAt.IsZero() && !now.Before(t.retryAt) {
					d.launch(i)
				}
			}
		} else if d.running == 0 {
			return nil
		}

		var wake time.Time
		due := func(t time.Time) {
			if !t.IsZero() && (wake.IsZero() || t.Before(wake)) {
				wake = t
			}
		}
		var closing <-chan struct{}
		if open {
			if next < len(d.direct) {
				due(staggerAt)
			}
			if !relaysStarted {
				due(relayAt)
			}
			for _, t := range d.tries {
				if !t.running {
					due(t.retryAt)
				}
			}
			closing = d.dialCtx.Done()
		}
		var tick <-chan time.Time
		if !wake.IsZero() {
			timer.Reset(time.Until(wake))
			tick = timer.C
		}
		select {
		case r := <-d.results:
			if c := d.settle(r); c != nil {
				return c
			}
			if d.cands[r.i].Path == PathDirect && next < len(d.direct) {
				staggerAt = time.Now() // a failure starts the next at once
			}
		case <-tick:
		case <-closing:
		}
	}
}

func (d *dialer) anyRunning(idx []int) bool {
	for _, i := range idx {
		if d.tries[i].running {
			return true
		}
	}
	return false
}

func (d *dialer) launch(i int) {
	t := &d.tries[i]
	t.running, t.retryAt = true, time.Time{}
	d.running++
	d.wg.Go(func() { d.results <- d.attempt(i) })
}

// settle takes in the outcome of an attempt: the winning connection, or
// nil and the candidate scheduled for another try.
func (d *dialer) settle(r attempt) *Conn {
	d.running--
	t := &d.tries[r.i]
	t.running = false
	cand := d.cands[r.i]
	if r.err == nil {
		c, err := d.choose(r)
		if err == nil {
			d.opts.Logger.Debug("peer link: connected", "path", cand.Path, "addr", cand.Addr)
			return c
		}
		r.err = err
	}
	t.fails++
	if !r.cut || t.err == nil {
		t.err = r.err
	}
	pause := min(retryMin<<min(t.fails-1, 8), retryMax)
	t.retryAt = time.Now().Add(pause)
	d.opts.Logger.Debug("peer link: attempt failed", "path", cand.Path, "addr", cand.Addr, "err", r.err, "retry_in", pause)
	return nil
}

// choose makes the connection of r the link: its first record, select,
// tells the accepting side to keep this one.
func (d *dialer) choose(r attempt) (*Conn, error) {
	cand := d.cands[r.i]
	c := linkConn(r.nc, d.opts.Logger, d.sid, r.enc, r.dec, cand.Path, cand.Addr)
	r.nc.SetWriteDeadline(time.Now().Add(d.opts.HandshakeTimeout))
	if err := c.writeRecord(recSelect, nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: selecting the connection: %w", ErrHandshake, err)
	}
	r.nc.SetWriteDeadline(time.Time{})
	return c, nil
}

func (d *dialer) attempt(i int) attempt {
	nc, err := d.dial(d.cands[i])
	if err != nil {
		return attempt{i: i, err: err, cut: d.dialCtx.Err() != nil}
	}
	enc, dec, err := initiate(d.ctx, nc, d.key, d.sid, d.opts.HandshakeTimeout)
	if err != nil {
		nc.Close()
		return attempt{i: i, err: err, cut: d.ctx.Err() != nil}
	}
	return attempt{i: i, nc: nc, enc: enc, dec: dec}
}

func (d *dialer) dial(c Candidate) (net.Conn, error) {
	var (
		nc  net.Conn
		err error
	)
	if c.Dial != nil {
		nc, err = c.Dial(d.dialCtx)
	} else {
		var nd net.Dialer
		nc, err = nd.DialContext(d.dialCtx, "tcp", c.Addr)
	}
	switch {
	case err == nil:
		return nc, nil
	case d.dialCtx.Err() != nil, isTimeout(err):
		return nil, errNoAnswer
	}
	return nil, netCause(err)
}
