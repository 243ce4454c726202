package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/jsretry"
)

// Session expiry. Every session is looked at again when its time is up:
// a live one is moved to expired, and one that ended has the events of its
// last write published, in case its writer died before it could. What
// brings a session back to a replica depends on the store:
//   - A store that indexes sessions by when they are due (DueIndex: the
//     Redis store, in the same script as each record) is swept: every
//     replica claims what is due, about once a second. A session costs the
//     broker nothing, and the replica that ends one takes it out of the
//     index, in batches, once its events are stored.
//   - Otherwise (JetStream KV) creating a session stores a message
//     schedule: the server publishes its timer into a work queue when it
//     is due, and whichever replica pulls it does the work; a session that
//     ends drops its schedule.
//
// Either way the work survives restarts and spreads over replicas with no
// leader. The timer consumer runs on every store, for the schedules older
// versions made.
const (
	timerStream   = "SFT_TIMERS"
	timerSubjects = api.Prefix + ".timers.>"
	timerConsumer = "session-expiry"
	// firedTimers are the timers due: what the schedules publish, and what
	// versions before them queued directly. The consumer takes only these:
	// a schedule it were given and acked would be deleted and never fire.
	firedTimers = api.Prefix + ".timers.session.>"
	// maxPendingTimers bounds the timers handed out and not yet acked.
	// Only due ones are pending now (a replica's pull buffer, those naked
	// back while the store fails), so a store outage cannot pile up every
	// due timer at once; it is far above what replicas hold, so it does
	// not slow normal work. Timers an older version left pending count
	// until they fall due, at most one TTL after an upgrade.
	maxPendingTimers = 4096
)

// timerSubject is where a session's timer fires; scheduleSubject holds the
// schedule that fires it.
func timerSubject(id string) string    { return api.Prefix + ".timers.session." + id }
func scheduleSubject(id string) string { return api.Prefix + ".timers.at." + id }

type timer struct {
	Session string    `json:"session"`
	Due     time.Time `json:"due"`
}

func (s *Service) startTimers(ctx context.Context) error {
	cfg := jetstream.StreamConfig{
		Name:        timerStream,
		Description: "SFT session expiry timers",
		Subjects:    []string{timerSubjects},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    max(s.o.Replicas, 1),
		// An update turns schedules on in a stream an older version made;
		// they cannot be turned off again. Schedules replace their subject,
		// so they need roll-ups (the server would turn them on anyway).
		AllowMsgSchedules: true,
		AllowRollup:       true,
	}
	st, err := jsretry.Do(ctx, func() (jetstream.Stream, error) { return s.js.CreateOrUpdateStream(ctx, cfg) })
	if err != nil {
		return fmt.Errorf("ensure timer stream: %w", err)
	}
	ccfg := jetstream.ConsumerConfig{
		Durable:       timerConsumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: maxPendingTimers,
		FilterSubject: firedTimers,
	}
	cons, err := jsretry.Do(ctx, func() (jetstream.Consumer, error) { return st.CreateOrUpdateConsumer(ctx, ccfg) })
	if err != nil {
		return fmt.Errorf("ensure timer consumer: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { s.fire(ctx, m) })
	if err != nil {
		return fmt.Errorf("consume timers: %w", err)
	}
	s.wg.Go(func() {
		<-ctx.Done()
		cc.Stop()
	})
	s.timers = st
	if idx, ok := s.o.Store.(DueIndex); ok {
		s.due = idx
		s.wg.Go(func() { s.sweep(ctx, idx) })
		s.wg.Go(func() { s.confirmEnded(ctx, idx) })
		return nil
	}
	for range timerDroppers {
		s.wg.Go(func() { s.dropTimers(ctx) })
	}
	return nil
}

// DueIndex is a store that keeps, with every session it stores, when a
// replica must look at it next: at its expiry, until DoneDue.
type DueIndex interface {
	// ClaimDue hands out up to n sessions that are due, each to one
	// caller: a claimed session is due again after lease.
	ClaimDue(ctx context.Context, n int, lease time.Duration) ([]string, error)
	// DoneDue takes sessions out of the index: they ended and their
	// events are stored, or they are gone.
	DoneDue(ctx context.Context, ids ...string) error
}

const (
	// sweepEvery is how often a replica claims what is due; the claim
	// takes at most sweepBatch, and what is claimed is worked on by
	// sweepWorkers at once. A session the replica could not finish
	// (the store or the stream failed, or this replica's clock is behind
	// the store's) is claimed again after sweepLease.
	sweepEvery   = time.Second
	sweepBatch   = 64
	sweepWorkers = 8
	sweepLease   = 15 * time.Second
	// confirmAfter is how long the sessions this replica ended gather
	// before it takes them out of the index in one write, at most
	// confirmBatch at a time.
	confirmAfter = 100 * time.Millisecond
	confirmBatch = 256
)

// sweep claims the sessions that are due until ctx ends, and takes out of
// the index those that need nothing more.
func (s *Service) sweep(ctx context.Context, idx DueIndex) {
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	failing := false // said once, not every second of an outage
	for {
		for ctx.Err() == nil {
			ids, err := idx.ClaimDue(ctx, sweepBatch, sweepLease)
			if err != nil {
				if !failing && ctx.Err() == nil {
					s.o.Logger.Warn("claiming the sessions due failed; retrying every second", "err", err)
				}
				failing = true
				break
			}
			if failing {
				s.o.Logger.Info("claiming the sessions due works again")
				failing = false
			}
			if done := s.visit(ctx, ids); len(done) > 0 {
				if err := idx.DoneDue(ctx, done...); err != nil && ctx.Err() == nil {
					s.o.Logger.Debug("sessions done not taken out of the due index; they will be looked at again", "err", err)
				}
			}
			if len(ids) < sweepBatch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// visit does what ids are due for, sweepWorkers at a time, and returns the
// ones that need nothing more.
func (s *Service) visit(ctx context.Context, ids []string) []string {
	var (
		mu   sync.Mutex
		done []string
		wg   sync.WaitGroup
		sem  = make(chan struct{}, sweepWorkers)
	)
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ok, err := s.dueWork(ctx, id)
			if err != nil {
				s.o.Logger.Warn("expiry failed; will retry", "session", id, "err", err)
			}
			if ok {
				mu.Lock()
				done = append(done, id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return done
}

// dueWork does what a session whose time is up needs: a live one past its
// expiry is moved to expired (load), and the events of the last write of
// one that ended are published if its writer died before it could
// (flush). done is whether the session needs nothing more: it ended, or
// it is gone.
func (s *Service) dueWork(ctx context.Context, id string) (done bool, err error) {
	if api.ValidSessionID(id) != nil {
		return true, nil // nothing this service stored
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	sess, rev, err := s.load(ctx, id)
	if err == nil {
		err = s.flush(ctx, sess, rev)
	}
	var apiErr *api.Error
	switch {
	case errors.As(err, &apiErr) && apiErr.Code == api.CodeNotFound:
		return true, nil
	case err != nil:
		return false, err
	}
	return sess.State.Terminal(), nil
}

// confirmEnded takes the sessions this replica ended (ended) out of the
// due index, gathered for confirmAfter so that one write serves many. One
// not taken out (this replica died, the store failed) is looked at when
// due, and found ended.
func (s *Service) confirmEnded(ctx context.Context, idx DueIndex) {
	var (
		ids   []string
		timer = time.NewTimer(confirmAfter)
		wait  <-chan time.Time
	)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case id := <-s.endedIDs:
			ids = append(ids, id)
			if wait == nil {
				timer.Reset(confirmAfter)
				wait = timer.C
			}
			if len(ids) < confirmBatch {
				continue
			}
			timer.Stop()
		case <-wait:
		}
		wait = nil
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := idx.DoneDue(cctx, ids...); err != nil && ctx.Err() == nil {
			s.o.Logger.Debug("ended sessions not taken out of the due index; they will be looked at when due", "err", err)
		}
		cancel()
		ids = ids[:0]
	}
}

const (
	// timerDroppers are the requests that drop timers at once; ended is
	// how many sessions may wait for it. Past that a timer stays, to fire
	// and find its session ended.
	timerDroppers = 4
	endedBacklog  = 4096
)

// ended drops the expiry timer or due entry of a session that ended and
// whose events are in the stream: when due, it would only find the session
// ended and look its events up in the stream, work for the broker, the
// store and a replica. Best effort and off the request's path: a timer or
// entry not dropped (this replica died, the broker or store did not
// answer, the backlog is full) comes due and finds the session ended.
func (s *Service) ended(id string) {
	select {
	case s.endedIDs <- id:
	default:
	}
}

func (s *Service) dropTimers(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-s.endedIDs:
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := s.timers.Purge(pctx, jetstream.WithPurgeSubject(scheduleSubject(id)))
			cancel()
			if err != nil && ctx.Err() == nil {
				s.o.Logger.Debug("expiry timer of an ended session not dropped; it will fire and find it ended", "session", id, "err", err)
			}
		}
	}
}

func (s *Service) scheduleExpiry(ctx context.Context, sess *api.Session) error {
	if s.due != nil {
		return nil // the store indexes it with its record
	}
	b, err := json.Marshal(timer{Session: sess.ID, Due: sess.ExpiresAt})
	if err != nil {
		return err
	}
	// A create sent again schedules its session's timer once. The server
	// reads the time to the second: rounding up, it never fires early.
	at := sess.ExpiresAt.Truncate(time.Second)
	if at.Before(sess.ExpiresAt) {
		at = at.Add(time.Second)
	}
	if err := jsretry.Publish(ctx, s.js, scheduleSubject(sess.ID), b, sess.ID,
		jetstream.WithScheduleAt(at), jetstream.WithScheduleTarget(timerSubject(sess.ID))); err != nil {
		s.o.Metrics.PublishFailed(timerStream)
		return fmt.Errorf("schedule expiry of session %s: %w", sess.ID, err)
	}
	return nil
}

func (s *Service) fire(ctx context.Context, m jetstream.Msg) {
	var t timer
	if err := json.Unmarshal(m.Data(), &t); err != nil || api.ValidSessionID(t.Session) != nil {
		s.o.Logger.Error("dropping malformed expiry timer", "subject", m.Subject())
		_ = m.Term()
		return
	}
	// Schedules fire on the broker's clock; this replica's may be behind.
	if wait := t.Due.Sub(s.now()); wait > 0 {
		_ = m.NakWithDelay(wait)
		return
	}
	if _, err := s.dueWork(ctx, t.Session); err != nil {
		s.o.Logger.Warn("expiry timer failed; will retry", "session", t.Session, "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
}
