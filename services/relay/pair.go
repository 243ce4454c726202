package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// chunk is the most one copy moves before the pair checks its limits. On
// Linux a copy between two *net.TCPConn (io.CopyN, here with a reused
// LimitedReader) is splice(2) through a pipe, so the bytes stay in the
// kernel whatever the size.
const chunk = 256 << 10

var (
	// errLimit ends a pair that relayed all its tickets allow.
	errLimit = errors.New("byte limit reached")
	// errShutdown ends the pairs when the server stops.
	errShutdown = errors.New("relay shutting down")
)

// pair relays between two connections until both sides closed, the byte
// limit is spent, it idles, or the server stops.
type pair struct {
	s       *Server
	session string
	a, b    *net.TCPConn // initiator, responder
	budget  budget
	limiter *rate.Limiter // nil: no rate limit
	chunk   int64
	started time.Time
	ctx     context.Context
	cancel  context.CancelFunc

	last  atomic.Int64 // unix nanoseconds of the latest bytes either way
	bytes atomic.Int64

	mu       sync.Mutex
	acked    uint64    // what the peers had acknowledged at the last look
	ackedAt  time.Time // when that last grew
	endErr   error     // why it ended, first cause
	finished bool
}

func newPair(ctx context.Context, s *Server, session string, a, b *net.TCPConn, maxBytes int64) *pair {
	p := &pair{s: s, session: session, a: a, b: b, budget: budget{left: maxBytes}, chunk: chunk, started: time.Now()}
	p.ctx, p.cancel = context.WithCancel(ctx)
	if r := s.opts.RatePerSession; r > 0 {
		// A burst of one chunk at most; the bucket is charged after each
		// copy with what it moved.
		burst := min(chunk, r)
		p.chunk = burst
		p.limiter = rate.NewLimiter(rate.Limit(r), int(burst))
	}
	p.last.Store(p.started.UnixNano())
	return p
}

// run copies both ways until the pair ends, then closes both connections.
func (p *pair) run() {
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(p.b, p.a) })
	p.pipe(p.a, p.b)
	wg.Wait()
	p.end(nil)

	level, reason := slog.LevelInfo, "both peers closed"
	if p.endErr != nil {
		reason = p.endErr.Error()
		if errors.Is(p.endErr, errLimit) {
			level = slog.LevelWarn
		}
	}
	p.s.log.Log(context.Background(), level, "relay: pair ended", "session", p.session,
		"bytes", p.bytes.Load(), "duration", time.Since(p.started).Round(time.Millisecond), "reason", reason)
}

// end closes both connections, once, recording why (nil: both peers
// closed their sides).
func (p *pair) end(err error) {
	p.mu.Lock()
	if p.finished {
		p.mu.Unlock()
		return
	}
	if p.ctx.Err() != nil { // Serve's context ended and closed the connections
		err = errShutdown
	}
	p.finished, p.endErr = true, err
	p.mu.Unlock()
	p.cancel()
	p.s.closeConn(p.a)
	p.s.closeConn(p.b)
}

// pipe copies src to dst in chunks until src closes (then it half-closes
// dst and returns: the other direction carries on) or the pair ends.
func (p *pair) pipe(dst, src *net.TCPConn) {
	// io.CopyN, with one LimitedReader for all chunks: still splice, and
	// no allocation per chunk.
	lr := &io.LimitedReader{R: src}
	for {
		n, err := p.budget.take(p.ctx, p.chunk)
		if err != nil {
			if errors.Is(err, errLimit) {
				p.end(err)
			}
			return
		}
		// The deadline wakes a quiet direction now and then to look at
		// the pair's idle time; splice keeps no bytes back when it fires.
		_ = src.SetReadDeadline(time.Now().Add(p.s.tick))
		lr.N = n
		w, err := io.Copy(dst, lr)
		if err == nil && w < n {
			err = io.EOF
		}
		p.budget.give(n, w)
		if w > 0 {
			p.last.Store(time.Now().UnixNano())
			p.bytes.Add(w)
			p.s.bytes.Add(w)
			if p.limiter != nil && p.limiter.WaitN(p.ctx, int(w)) != nil {
				return
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			_ = dst.CloseWrite()
			return
		case errors.Is(err, os.ErrDeadlineExceeded):
			if p.idle() {
				p.end(fmt.Errorf("idle for %s", p.s.opts.IdleTimeout))
				return
			}
		default:
			p.end(err)
			return
		}
	}
}

// idle tells whether no byte moved either way for IdleTimeout; a quiet
// direction asks at every tick. A copy blocked on a slow reader counts its
// bytes only when it returns, so the bytes the peers acknowledged count
// too, where the system tells them.
func (p *pair) idle() bool {
	now := time.Now()
	acked, ok := ackedBytes(p.a)
	b, okb := ackedBytes(p.b)
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok && okb && acked+b != p.acked {
		p.acked, p.ackedAt = acked+b, now
	}
	last := time.Unix(0, p.last.Load())
	if p.ackedAt.After(last) {
		last = p.ackedAt
	}
	return now.Sub(last) >= p.s.opts.IdleTimeout
}

// budget is what a pair may still relay, shared by its two directions: a
// copy takes its size before it starts and gives back what it did not use.
type budget struct {
	mu     sync.Mutex
	left   int64
	held   int64      // taken by copies under way
	waiter chan int64 // the direction waiting for bytes to be given back
}

// take reserves up to want bytes. With nothing left it waits for the other
// direction's copy to give some back, or fails with errLimit when none is
// under way.
func (b *budget) take(ctx context.Context, want int64) (int64, error) {
	b.mu.Lock()
	if b.left > 0 {
		n := min(want, b.left)
		b.left -= n
		b.held += n
		b.mu.Unlock()
		return n, nil
	}
	if b.held == 0 {
		b.mu.Unlock()
		return 0, errLimit
	}
	ch := make(chan int64, 1)
	b.waiter = ch
	b.mu.Unlock()
	select {
	case n := <-ch:
		if n == 0 {
			return 0, errLimit
		}
		return n, nil
	case <-ctx.Done():
		b.mu.Lock()
		if b.waiter == ch {
			b.waiter = nil
		}
		select {
		case n := <-ch: // handed over just now
			b.held -= n
			b.left += n
		default:
		}
		b.mu.Unlock()
		return 0, ctx.Err()
	}
}

// give returns a reservation of taken bytes of which used were copied.
// What is left goes straight to a waiting direction: otherwise the giver,
// looping back at once, would take it again and starve the other.
func (b *budget) give(taken, used int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held -= taken
	back := taken - used
	if b.waiter == nil {
		b.left += back
		return
	}
	// A waiter found nothing left, and since then all that came back went
	// to it, so left is 0: it gets what this copy did not use, or 0 when
	// the whole budget is spent.
	if back == 0 && b.held > 0 {
		return
	}
	b.held += back
	b.waiter <- back
	b.waiter = nil
}
