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

// Session expiry is driven by a JetStream work queue rather than a sweep:
// creating a session enqueues a timer, and whichever replica pulls it when
// it is due moves the session to expired. A timer that is not due yet is
// handed back with a delay, so the work survives restarts and spreads over
// replicas with no leader.
const (
	timerStream   = "SFT_TIMERS"
	timerSubjects = api.Prefix + ".timers.>"
	timerConsumer = "session-expiry"
)

func timerSubject(id string) string { return api.Prefix + ".timers.session." + id }

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
	}
	st, err := jsretry.Do(ctx, func() (jetstream.Stream, error) { return s.js.CreateOrUpdateStream(ctx, cfg) })
	if err != nil {
		return fmt.Errorf("ensure timer stream: %w", err)
	}
	ccfg := jetstream.ConsumerConfig{
		Durable:       timerConsumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: -1, // every live session holds one pending timer
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
	return nil
}

func (s *Service) scheduleExpiry(ctx context.Context, sess *api.Session) error {
	b, err := json.Marshal(timer{Session: sess.ID, Due: sess.ExpiresAt})
	if err != nil {
		return err
	}
	// A create sent again schedules its session's timer once.
	if err := jsretry.Publish(ctx, s.js, timerSubject(sess.ID), b, sess.ID); err != nil {
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
