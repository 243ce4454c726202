package session

import (
	"sync"
	"time"

	"github.com/sftproject/sft/api"
)

// published remembers, per session, the last event this replica saw stored
// in the stream, for a short while: a request that builds on a write whose
// events this replica published itself need not publish them again (flush
// does, for writes whose writer may have died before publishing). It is
// only a saving: a session it forgot, or never knew, is flushed as before.
type published struct {
	keep time.Duration

	mu     sync.Mutex
	last   map[string]string // session id → the id of its last event stored
	at     map[string]time.Time
	pruned time.Time
}

func newPublished(keep time.Duration) *published {
	return &published{keep: keep, last: map[string]string{}, at: map[string]time.Time{}}
}

// stored notes that evs, the events of one write, are in the stream.
func (p *published) stored(now time.Time, evs []api.Event) {
	if len(evs) == 0 {
		return
	}
	ev := evs[len(evs)-1]
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(p.pruned) > p.keep {
		// Entries live keep at least and 2×keep at most: one sweep per
		// keep, not one per call.
		for id, t := range p.at {
			if now.Sub(t) > p.keep {
				delete(p.at, id)
				delete(p.last, id)
			}
		}
		p.pruned = now
	}
	p.last[ev.Session], p.at[ev.Session] = ev.ID, now
}

// has tells whether evs, the events of one write, are known to be stored.
func (p *published) has(evs []api.Event) bool {
	if len(evs) == 0 {
		return false
	}
	ev := evs[len(evs)-1]
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last[ev.Session] == ev.ID
}
