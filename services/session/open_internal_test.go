package session

import (
	"maps"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
)

// The open set counts each session once, at the state of its latest
// event; an ended one leaves it, and one whose end this replica never saw
// leaves it at its expiry.
func TestOpenSetFollowsEvents(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	ev := func(id string, st api.State, at time.Duration) api.Event {
		return api.Event{Session: id, State: st, At: t0.Add(at)}
	}
	for _, tc := range []struct {
		name   string
		events []api.Event
		at     time.Duration
		want   map[api.State]int
	}{
		{"none", nil, 0, map[api.State]int{api.StateWaiting: 0, api.StateJoined: 0}},
		{"created", []api.Event{ev("a", api.StateWaiting, 0)}, time.Second, map[api.State]int{api.StateWaiting: 1, api.StateJoined: 0}},
		{"joined, and another waiting", []api.Event{
			ev("a", api.StateWaiting, 0), ev("b", api.StateWaiting, 0), ev("a", api.StateJoined, time.Second),
		}, 2 * time.Second, map[api.State]int{api.StateWaiting: 1, api.StateJoined: 1}},
		{"reported twice stays joined", []api.Event{
			ev("a", api.StateWaiting, 0), ev("a", api.StateJoined, 0), ev("a", api.StateJoined, time.Second), ev("a", api.StateJoined, 2*time.Second),
		}, 3 * time.Second, map[api.State]int{api.StateWaiting: 0, api.StateJoined: 1}},
		{"completed", []api.Event{
			ev("a", api.StateWaiting, 0), ev("a", api.StateJoined, 0), ev("a", api.StateCompleted, time.Second),
		}, 2 * time.Second, map[api.State]int{api.StateWaiting: 0, api.StateJoined: 0}},
		{"cancelled while waiting", []api.Event{ev("a", api.StateWaiting, 0), ev("a", api.StateCancelled, time.Second)},
			2 * time.Second, map[api.State]int{api.StateWaiting: 0, api.StateJoined: 0}},
		{"expired event missed", []api.Event{ev("a", api.StateWaiting, 0), ev("b", api.StateWaiting, time.Minute)},
			15 * time.Minute, map[api.State]int{api.StateWaiting: 1, api.StateJoined: 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOpenSet(15 * time.Minute)
			for _, e := range tc.events {
				o.apply(e)
			}
			if got := o.byState(t0.Add(tc.at)); !maps.Equal(got, tc.want) {
				t.Errorf("open = %v, want %v", got, tc.want)
			}
		})
	}
}
