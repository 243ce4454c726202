package session

import (
	"context"
	"sync"
)

// sessionLocks lets one change at a time run per session in this replica.
// The two members of a session often report at the same moment; without
// it the second write's compare-and-set fails and it reads and writes
// again, and with it the second builds on the record the first stored
// (recent). Changes through other replicas still race, and compare-and-set
// still settles them: this is only a saving.
type sessionLocks struct {
	mu    sync.Mutex
	locks map[string]*sessionLock
}

type sessionLock struct {
	held  chan struct{} // holds a value while a change runs
	users int           // changes running or waiting; the entry goes at 0
}

func newSessionLocks() *sessionLocks { return &sessionLocks{locks: map[string]*sessionLock{}} }

// lock waits until no other change of session id runs here, or ctx ends,
// and returns the function that ends this one's turn.
func (l *sessionLocks) lock(ctx context.Context, id string) (unlock func(), err error) {
	l.mu.Lock()
	e := l.locks[id]
	if e == nil {
		e = &sessionLock{held: make(chan struct{}, 1)}
		l.locks[id] = e
	}
	e.users++
	l.mu.Unlock()
	select {
	case e.held <- struct{}{}:
		return func() { <-e.held; l.leave(id, e) }, nil
	case <-ctx.Done():
		l.leave(id, e)
		return nil, ctx.Err()
	}
}

func (l *sessionLocks) leave(id string, e *sessionLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.users--; e.users == 0 {
		delete(l.locks, id)
	}
}
