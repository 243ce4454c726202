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

	"github.com/sftproject/sft/services/api"
)

// MaxAge is how long events are kept for late watchers.
const MaxAge = 24 * time.Hour

// EnsureStream creates or updates the event stream. Every service that uses
// the stream calls it at start, so start order does not matter.
func EnsureStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        api.EventStream,
		Description: "SFT session events",
		Subjects:    []string{api.AllEvents},
		Storage:     jetstream.FileStorage,
		MaxAge:      MaxAge,
		Duplicates:  2 * time.Minute,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("ensure event stream %s: %w", api.EventStream, err)
	}
	return s, nil
}

// Publish stores ev in the stream. The event id is the de-duplication id,
// so a retried publish after a lost acknowledgement is stored once.
func Publish(ctx context.Context, js jetstream.JetStream, ev api.Event) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	subj := api.EventSubject(ev.Session, ev.Type)
	for attempt := 0; ; attempt++ {
		_, err = js.Publish(ctx, subj, b, jetstream.WithMsgID(ev.ID))
		if err == nil || attempt == 2 || ctx.Err() != nil {
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
