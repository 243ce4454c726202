package session

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/sftproject/sft/api"
)

// recent remembers, for a short while, the record this replica last
// stored for each live session, so that the next change to it (a join
// after the create, a report after the join) builds on it without reading
// it back from the store. It is only a saving: every write is a
// compare-and-set on the revision, so a record that moved on since (a
// write by another replica, an expiry) fails it and is read again, and an
// answer that is not a write (a refusal, a request already applied) is
// only ever given from a record read from the store.
type recent struct {
	keep time.Duration
	max  int

	mu     sync.Mutex
	recs   map[string]recentRecord
	pruned time.Time
}

type recentRecord struct {
	sess *api.Session
	rev  uint64
	at   time.Time
}

// recentKeep bounds how long a record is remembered: a session's setup
// (create, join, keys) takes seconds, and a shorter memory leaves less for
// a store that lost writes in a failover to disagree with.
const recentKeep = time.Minute

// recentMax bounds how many are remembered (a few KiB each): past it, new
// records are not, until the old ones age out.
const recentMax = 4096

func newRecent(keep time.Duration, max int) *recent {
	return &recent{keep: keep, max: max, recs: map[string]recentRecord{}}
}

// put remembers sess, just stored at revision rev; an ended session is
// forgotten, as nothing builds on it.
func (r *recent) put(now time.Time, sess *api.Session, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.pruned) > r.keep {
		// Entries live keep at least and 2×keep at most: one sweep per
		// keep, not one per call.
		maps.DeleteFunc(r.recs, func(_ string, rec recentRecord) bool { return now.Sub(rec.at) > r.keep })
		r.pruned = now
	}
	if sess.State.Terminal() {
		delete(r.recs, sess.ID)
		return
	}
	if _, ok := r.recs[sess.ID]; !ok && len(r.recs) >= r.max {
		return
	}
	r.recs[sess.ID] = recentRecord{sess: cloneSession(sess), rev: rev, at: now}
}

// get returns a copy of the record remembered for id and its revision, if
// it is recent and its session was not due to expire by now (load moves
// such a session to expired).
func (r *recent) get(now time.Time, id string) (*api.Session, uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.recs[id]
	if !ok || now.Sub(rec.at) > r.keep || !now.Before(rec.sess.ExpiresAt) {
		return nil, 0, false
	}
	return cloneSession(rec.sess), rec.rev, true
}

// forget drops what is remembered for id: its write failed in a way that
// leaves the stored record unknown.
func (r *recent) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.recs, id)
}

// cloneSession copies sess deeply enough that a change to the copy leaves
// sess as it was: the maps and slices a change may write to are copied;
// events are never changed once made.
func cloneSession(sess *api.Session) *api.Session {
	c := *sess
	c.Manifest.Files = slices.Clone(sess.Manifest.Files)
	c.PeerAddrs = slices.Clone(sess.PeerAddrs)
	c.Reports = maps.Clone(sess.Reports)
	c.Outbox = slices.Clone(sess.Outbox)
	return &c
}
