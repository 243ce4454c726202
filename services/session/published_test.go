package session

import (
	"testing"
	"time"

	"github.com/sftproject/sft/api"
)

func TestPublished(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	write := func(session string, ids ...string) []api.Event {
		var evs []api.Event
		for _, id := range ids {
			evs = append(evs, api.Event{ID: id, Session: session})
		}
		return evs
	}
	p := newPublished(time.Minute)
	joined := write("s1", "s1.3.0.joined")
	completed := write("s1", "s1.5.0.reported", "s1.5.1.completed")
	other := write("s2", "s2.0.0.created")
	if p.has(joined) || p.has(nil) {
		t.Fatal("nothing stored yet, or nothing to store, reads as stored")
	}
	p.stored(t0, joined)
	p.stored(t0, other)
	if !p.has(joined) || !p.has(other) {
		t.Error("stored writes not known")
	}
	if p.has(completed) {
		t.Error("a later write of the session reads as stored")
	}
	p.stored(t0.Add(10*time.Second), completed)
	if !p.has(completed) || p.has(joined) {
		t.Error("the session's last write is not the one known")
	}
	// Past keep, a sweep forgets what was stored before it.
	p.stored(t0.Add(90*time.Second), write("s3", "s3.0.0.created"))
	if p.has(other) || p.has(completed) {
		t.Error("entries older than keep survived the sweep")
	}
}
