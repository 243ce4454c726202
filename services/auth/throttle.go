package auth

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// throttle slows password guessing: after a few failed logins for a name,
// each further attempt must wait an exponentially growing delay. It is kept
// per replica; a guesser spreading attempts over replicas gains at most a
// factor of the replica count.
type throttle struct {
	mu      sync.Mutex
	entries map[string]*throttleEntry
	now     func() time.Time

	free     int           // failures that cost no delay; each one after that doubles it
	base     time.Duration // first delay
	max      time.Duration // delay cap
	forgetAt time.Duration // idle time after which a name's failures are forgotten
	limit    int           // bound on tracked names, so guessing many names cannot exhaust memory
}

type throttleEntry struct {
	failures int
	until    time.Time // no attempt before this
	last     time.Time
}

func newThrottle() *throttle {
	return &throttle{
		entries: make(map[string]*throttleEntry), now: time.Now,
		free: 3, base: time.Second, max: 15 * time.Minute, forgetAt: time.Hour, limit: 100_000,
	}
}

// newAddrThrottle is the per-address throttle: free attempts (more than
// per name, since many users may share one address behind NAT), then the
// same growing delay.
func newAddrThrottle(free int) *throttle {
	t := newThrottle()
	t.free = free
	return t
}

// allow returns how long the caller must still wait for name (0: go ahead).
func (t *throttle) allow(name string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entries[name]
	if e == nil {
		return 0
	}
	if wait := e.until.Sub(t.now()); wait > 0 {
		return wait
	}
	return 0
}

func (t *throttle) failed(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	e := t.entries[name]
	if e == nil {
		if len(t.entries) >= t.limit {
			t.sweep(now)
		}
		e = &throttleEntry{}
		t.entries[name] = e
	}
	if t.forgotten(e, now) {
		*e = throttleEntry{}
	}
	e.failures++
	e.last = now
	// The attempt after the free ones already waits base: with free=3 the
	// fourth attempt is the first delayed one.
	if over := e.failures - t.free; over >= 0 {
		d := t.base << min(over, 20)
		e.until = now.Add(min(d, t.max))
	}
}

// forgotten reports whether e's failures are old enough to no longer count.
func (t *throttle) forgotten(e *throttleEntry, now time.Time) bool {
	return now.Sub(e.last) > t.forgetAt && !e.until.After(now)
}

func (t *throttle) succeeded(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.entries, name)
}

// sweep drops forgotten names; if that frees nothing, half the names go:
// those not locked out first, then those whose lock ends soonest, so
// flooding the table with new names is a poor way to lift a lock.
func (t *throttle) sweep(now time.Time) {
	for k, e := range t.entries {
		if t.forgotten(e, now) {
			delete(t.entries, k)
		}
	}
	if len(t.entries) < t.limit {
		return
	}
	type named struct {
		name string
		e    *throttleEntry
	}
	all := make([]named, 0, len(t.entries))
	for k, e := range t.entries {
		all = append(all, named{k, e})
	}
	slices.SortFunc(all, func(a, b named) int {
		// An unlocked entry's "until" is in the past; clamping it to now
		// ranks all unlocked entries first, oldest failure first.
		ua, ub := latest(a.e.until, now), latest(b.e.until, now)
		return cmp.Or(ua.Compare(ub), a.e.last.Compare(b.e.last))
	})
	for _, n := range all[:max(len(all)-t.limit/2, 1)] {
		delete(t.entries, n.name)
	}
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
