// Package events owns the session event stream: its JetStream definition,
// publishing with de-duplication, and decoding. The session service
// publishes, the key service reacts to terminal events, and the watch relay
// replays them to clients.
package events

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

// MaxAge is how long events are kept for late watchers.
const MaxAge = 24 * time.Hour

// DedupWindow is how long the stream remembers an event id: an event
// published again within it is stored once.
const DedupWindow = 2 * time.Minute

// EnsureStream creates or updates the event stream, kept on replicas
// servers of a cluster (1 on a single server; an existing stream is moved
// to that count). Every service that uses the stream calls it at start, so
// start order does not matter.
func EnsureStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	cfg := jetstream.StreamConfig{
		Name:        api.EventStream,
		Description: "SFT session events",
		Subjects:    []string{api.AllEvents},
		Storage:     jetstream.FileStorage,
		MaxAge:      MaxAge,
		Duplicates:  DedupWindow,
		Discard:     jetstream.DiscardOld,
		Replicas:    max(replicas, 1),
	}
	s, err := jsretry.Do(ctx, func() (jetstream.Stream, error) { return js.CreateOrUpdateStream(ctx, cfg) })
	if err != nil {
		return nil, fmt.Errorf("ensure event stream %s: %w", api.EventStream, err)
	}
	return s, nil
}

// Publish stores evs in the stream, in order. They are sent together and
// their acknowledgements awaited together, so a request that records
// several events waits about one round trip, not one per event. The event
// id is the de-duplication id, so an event retried after a lost
// acknowledgement is stored once. Publish returns the first failure after
// trying every event.
func Publish(ctx context.Context, js jetstream.JetStream, evs ...api.Event) error {
	msgs := make([][]byte, len(evs))
	acks := make([]jetstream.PubAckFuture, len(evs))
	var errs []error
	for i, ev := range evs {
		b, err := json.Marshal(ev)
		if err != nil {
			errs = append(errs, fmt.Errorf("encode event: %w", err))
			continue
		}
		msgs[i] = b
		acks[i], err = js.PublishAsync(api.EventSubject(ev.Session, ev.Type), b, jetstream.WithMsgID(ev.ID))
		if err != nil {
			acks[i] = nil // published again below
		}
	}
	for i, ev := range evs {
		if msgs[i] == nil {
			continue
		}
		if acks[i] != nil {
			select {
			case <-acks[i].Ok():
				continue
			case <-acks[i].Err():
			case <-ctx.Done():
			}
		}
		if err := publishOne(ctx, js, ev, msgs[i]); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// publishOne retries one event synchronously, a few times.
func publishOne(ctx context.Context, js jetstream.JetStream, ev api.Event, b []byte) error {
	var err error
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			err = ctx.Err()
			break
		}
		_, err = js.Publish(ctx, api.EventSubject(ev.Session, ev.Type), b, jetstream.WithMsgID(ev.ID))
		if err == nil || attempt == 2 {
			break
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("publish %s event of session %s: %w", ev.Type, ev.Session, err)
	}
	return nil
}

// Decode parses an event from the stream.
func Decode(b []byte) (api.Event, error) {
	var ev api.Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return api.Event{}, fmt.Errorf("decode event: %w", err)
	}
	if ev.Session == "" || ev.Type == "" {
		return api.Event{}, errors.New("decode event: missing session or type")
	}
	return ev, nil
}

// TerminalSubjects are the subjects of events that end a session.
func TerminalSubjects() []string {
	return []string{
		api.EventsPrefix + ".*." + string(api.EventCompleted),
		api.EventsPrefix + ".*." + string(api.EventFailed),
		api.EventsPrefix + ".*." + string(api.EventCancelled),
		api.EventsPrefix + ".*." + string(api.EventExpired),
	}
}
