package session

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/events"
)

// openSet follows the event stream to know how many sessions are open
// (waiting or joined) across every replica, for the metrics and the admin
// status. Every event carries its session's state after the write, so the
// last one seen is the session's state; an ended session leaves the set.
// Each replica follows the whole stream, so each sees the same numbers.
type openSet struct {
	ttl time.Duration

	mu       sync.Mutex
	sessions map[string]openEntry
}

type openEntry struct {
	state   api.State
	expires time.Time // no later than this: the first event's time + TTL
}

func newOpenSet(ttl time.Duration) *openSet {
	return &openSet{ttl: ttl, sessions: map[string]openEntry{}}
}

// follow reads the stream from as far back as a session that is still
// open may have started, until ctx ends.
func (o *openSet) follow(ctx context.Context, js jetstream.JetStream, wg *sync.WaitGroup) error {
	from := time.Now().Add(-o.ttl - time.Minute)
	cons, err := js.OrderedConsumer(ctx, api.EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{api.AllEvents},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy, OptStartTime: &from,
	})
	if err != nil {
		return fmt.Errorf("follow open sessions: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if ev, err := events.Decode(m.Data()); err == nil {
			o.apply(ev)
		}
	})
	if err != nil {
		return fmt.Errorf("follow open sessions: %w", err)
	}
	wg.Go(func() {
		<-ctx.Done()
		cc.Stop()
	})
	return nil
}

func (o *openSet) apply(ev api.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ev.State.Terminal() {
		delete(o.sessions, ev.Session)
		return
	}
	e, ok := o.sessions[ev.Session]
	if !ok {
		e.expires = ev.At.Add(o.ttl)
	}
	e.state = ev.State
	o.sessions[ev.Session] = e
}

// byState counts the open sessions by state at now; those past their
// expiry (whose expired event this replica missed) are dropped.
func (o *openSet) byState(now time.Time) map[api.State]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[api.State]int{api.StateWaiting: 0, api.StateJoined: 0}
	maps.DeleteFunc(o.sessions, func(_ string, e openEntry) bool { return !now.Before(e.expires) })
	for _, e := range o.sessions {
		out[e.state]++
	}
	return out
}

// OpenSessions counts the sessions open now across every replica, by
// state (waiting, joined).
func (s *Service) OpenSessions() map[api.State]int {
	return s.open.byState(s.now())
}
