package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/api"
)

// decodeEvent parses one event a watch relay delivered.
func decodeEvent(data []byte) (api.Event, error) {
	var ev api.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return api.Event{}, fmt.Errorf("watch: undecodable event: %w", err)
	}
	return ev, nil
}

// ErrWatchEnded is returned by a Watch whose relay stopped; the message
// says why (for a session watch, "session completed" and the like).
var ErrWatchEnded = errors.New("watch ended")

// ConnState says whether a watch has the server.
type ConnState string

const (
	// ConnLost: the server cannot be reached (the connection dropped, or
	// no session service answers). The watch keeps trying.
	ConnLost ConnState = "lost"
	// ConnRestored: the watch has a relay again. The events missed
	// meanwhile come next, then the live ones.
	ConnRestored ConnState = "restored"
)

// ConnEvent tells a watcher that the server went away or came back.
type ConnEvent struct {
	State ConnState
	At    time.Time
	Since time.Time // with ConnRestored: when the server was lost
	Err   error     // with ConnLost: why
}

// Outage is how long the server was away, as a restore reports it, rounded
// for people.
func (e ConnEvent) Outage() time.Duration {
	return e.At.Sub(e.Since).Round(100 * time.Millisecond)
}

// Watch calls fn for each event the user may see, in order: with a session
// id, that session's events from its start; without, every event of the
// user's sessions from now on. It returns when ctx ends, fn returns an
// error (returned as is), or the relay ends the watch (ErrWatchEnded, with
// the reason). A relay that dies with its replica, or one whose replica
// shuts down, is replaced by a new one that resumes after the last event
// seen, so nothing is missed or repeated; so is one whose connection
// dropped, once the server can be reached again, however long that takes.
func (c *Client) Watch(ctx context.Context, sessionID string, fn func(api.Event) error) error {
	return c.WatchStatus(ctx, sessionID, fn, nil)
}

// WatchStatus is Watch that also tells status, if not nil, when the server
// becomes unreachable and when the watch has it back (before the events
// missed meanwhile). status runs on the goroutine that runs fn, never at
// the same time.
func (c *Client) WatchStatus(ctx context.Context, sessionID string, fn func(api.Event) error, status func(ConnEvent)) error {
	conn := followConn(c.nc, status)
	defer conn.stop()
	var pos watchPos
	for attempt := 0; ; attempt++ {
		if err := conn.waitConnected(ctx); err != nil {
			return err
		}
		relayed, err := c.watchOnce(ctx, sessionID, &pos, fn, conn)
		if !errors.Is(err, errRelayLost) {
			return err
		}
		if relayed {
			attempt = 0 // a relay that ran is replaced at once
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(min(attempt, 10)) * 200 * time.Millisecond):
		}
	}
}

var errRelayLost = errors.New("watch relay lost")

// relaySilence is how long a watch waits for a heartbeat or an event before
// it assumes the relay is gone.
const relaySilence = 3*api.HeartbeatEvery + time.Second

// watchPos is where a watch is in the event stream: after seq, once a
// relay started.
type watchPos struct {
	seq     uint64
	started bool
}

// watchOnce runs one relay until it ends; relayed says whether the relay
// started.
func (c *Client) watchOnce(ctx context.Context, sessionID string, pos *watchPos, fn func(api.Event) error, conn *connWatch) (relayed bool, err error) {
	conn.forget()
	inbox := c.nc.NewInbox()
	ch := make(chan *nats.Msg, 256)
	sub, err := c.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return false, fmt.Errorf("watch: subscribe: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	var rep api.WatchReply
	// A replica that dies while it handles the request never answers; ask
	// again rather than wait out the whole request timeout.
	callCtx, cancel := context.WithTimeout(ctx, relaySilence)
	err = c.callOnce(callCtx, api.SubjectSessionWatch, api.WatchRequest{SessionID: sessionID, Deliver: inbox, AfterSeq: pos.seq, Resume: pos.started}, &rep)
	cancel()
	if api.CodeOf(err) == api.CodeUnavailable || (errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil) {
		// No live session replica answered; try again.
		switch {
		case !conn.connected():
			err = errDropped
		case errors.Is(err, context.DeadlineExceeded):
			err = fmt.Errorf("no answer to the watch request within %s", relaySilence)
		}
		conn.down(err)
		return false, errRelayLost
	}
	if err != nil {
		return false, err
	}
	if !pos.started {
		// Where the first relay starts: a watch that sees no event before
		// it loses the relay resumes from there, missing nothing.
		pos.seq, pos.started = rep.AfterSeq, true
	}
	conn.up()
	silence := time.NewTimer(relaySilence)
	defer silence.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-silence.C:
			return true, errRelayLost
		case st := <-conn.changed():
			if st != nats.CONNECTED || !conn.connected() {
				// The relay's messages to us may have been lost on the
				// way: a new relay resumes after the last event seen.
				conn.down(errDropped)
				return true, errRelayLost
			}
		case m := <-ch:
			silence.Reset(relaySilence)
			if m.Header.Get(api.HeartbeatHeader) != "" {
				_ = m.Respond(nil)
				continue
			}
			if why := m.Header.Get(api.WatchEndHeader); why != "" {
				if m.Header.Get(api.WatchResumeHeader) != "" {
					return true, errRelayLost
				}
				return true, fmt.Errorf("%w: %s", ErrWatchEnded, why)
			}
			ev, err := decodeEvent(m.Data)
			if err != nil {
				return true, err
			}
			if ev.Seq != 0 && ev.Seq <= pos.seq {
				continue // already seen through an earlier relay
			}
			pos.seq = ev.Seq
			if err := fn(ev); err != nil {
				return true, err
			}
		}
	}
}

// ErrServerUnreachable marks a wait given up because the server could not
// be reached until the session's expiry: nothing can happen in the
// session any more.
var ErrServerUnreachable = errors.New("server unreachable")

// expiredUnreachable is ErrServerUnreachable for one session.
type expiredUnreachable struct {
	id    string
	at    time.Time
	cause error
}

func (e *expiredUnreachable) Error() string {
	return fmt.Sprintf("session %s expired at %s while the server was unreachable (%v)", e.id, e.at.Local().Format(time.TimeOnly), e.cause)
}

func (e *expiredUnreachable) Unwrap() error { return ErrServerUnreachable }

// sessionEvents runs a session watch in the background and delivers its
// events on a channel; the caller owns it and must call stop. It says
// through notify when the server becomes unreachable and when it is back.
type sessionEvents struct {
	ch      chan api.Event
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	err     error // set before ch closes
	id      string
	expires time.Time

	lostChanged chan struct{} // signalled when lost changes
	mu          sync.Mutex
	lost        *ConnEvent // while the server is unreachable
}

func (c *Client) watchSession(ctx context.Context, sess *api.Session, notify func(string, ...any)) *sessionEvents {
	ctx, cancel := context.WithCancel(ctx)
	w := &sessionEvents{ch: make(chan api.Event, 64), cancel: cancel, id: sess.ID, expires: sess.ExpiresAt, lostChanged: make(chan struct{}, 1)}
	say := func(format string, args ...any) {
		if notify != nil {
			notify(format, args...)
		}
	}
	w.wg.Go(func() {
		defer close(w.ch)
		w.err = c.WatchStatus(ctx, sess.ID, func(ev api.Event) error {
			select {
			case w.ch <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}, func(ce ConnEvent) {
			w.mu.Lock()
			if ce.State == ConnLost {
				w.lost = &ce
			} else {
				w.lost = nil
			}
			w.mu.Unlock()
			select {
			case w.lostChanged <- struct{}{}:
			default:
			}
			if ce.State == ConnLost {
				say("server unreachable (%v); still trying, until session %s expires at %s", ce.Err, w.id, w.expires.Local().Format(time.TimeOnly))
			} else {
				say("server reachable again after %s", ce.Outage())
			}
		})
	})
	return w
}

func (w *sessionEvents) stop() {
	w.cancel()
	w.wg.Wait()
}

// until waits for an event that done accepts, or for the watch to end. It
// gives up once the session's expiry has passed with the server
// unreachable (ErrServerUnreachable): no event can come any more.
func (w *sessionEvents) until(ctx context.Context, done func(api.Event) bool) (api.Event, error) {
	expiry := time.NewTimer(time.Until(w.expires))
	defer expiry.Stop()
	for {
		select {
		case <-ctx.Done():
			return api.Event{}, ctx.Err()
		case ev, ok := <-w.ch:
			if !ok {
				if w.err == nil {
					w.err = ErrWatchEnded
				}
				return api.Event{}, w.err
			}
			if done(ev) {
				return ev, nil
			}
		case <-w.lostChanged:
		case <-expiry.C:
		}
		if err := w.gone(); err != nil {
			return api.Event{}, err
		}
	}
}

// gone is the error of a session whose expiry passed while the server was
// unreachable, or nil.
func (w *sessionEvents) gone() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.lost == nil || w.expires.IsZero() || time.Now().Before(w.expires) {
		return nil
	}
	return &expiredUnreachable{id: w.id, at: w.expires, cause: w.lost.Err}
}
