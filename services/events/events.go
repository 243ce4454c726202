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

// Publish stores evs in the stream, one after the other, each asked again
// until it is stored or ctx ends (a cluster electing a stream leader
// answers nothing for a moment). It stops at the first event it could not
// store, so none is stored after one that is missing: the caller keeps the
// rest to publish later (the session record's outbox), and the stream keeps
// each session's events in order. The event id is the de-duplication id,
// so an event published again is stored once.
func Publish(ctx context.Context, js jetstream.JetStream, evs ...api.Event) error {
	for _, ev := range evs {
		b, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("encode %s event of session %s: %w", ev.Type, ev.Session, err)
		}
		if err := jsretry.Publish(ctx, js, api.EventSubject(ev.Session, ev.Type), b, ev.ID); err != nil {
			return fmt.Errorf("publish %s event of session %s: %w", ev.Type, ev.Session, err)
		}
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
