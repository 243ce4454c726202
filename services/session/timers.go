package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/jsretry"
)

// Session expiry is driven by JetStream rather than a sweep: creating a
// session stores a message schedule, the server publishes its timer into
// the work queue when it is due, and whichever replica pulls it moves the
// session to expired. The work survives restarts and spreads over replicas
// with no leader, and a live session costs the broker nothing until then.
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
	for range timerDroppers {
		s.wg.Go(func() { s.dropTimers(ctx) })
	}
	return nil
}

const (
	// timerDroppers are the requests that drop timers at once; ended is
	// how many sessions may wait for it. Past that a timer stays, to fire
	// and find its session ended.
	timerDroppers = 4
	endedBacklog  = 4096
)

// ended drops the expiry timer of a session that ended and whose events
// are in the stream: when due, it would only find the session ended and
// look its events up in the stream, work for the broker, the store and a
// replica that the purge of one subject saves. Best effort and off the
// request's path: a timer not dropped (this replica died, the broker did
// not answer, the backlog is full) fires and finds the session ended, as
// it did before.
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
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	// load moves a live session past its expiry to expired and publishes
	// the event; a session that ended before has the events of its last
	// write published if its writer died before it could.
	sess, rev, err := s.load(ctx, t.Session)
	if err == nil {
		err = s.flush(ctx, sess, rev)
	}
	var apiErr *api.Error
	if err != nil && (!errors.As(err, &apiErr) || apiErr.Code != api.CodeNotFound) {
		s.o.Logger.Warn("expiry timer failed; will retry", "session", t.Session, "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
}
