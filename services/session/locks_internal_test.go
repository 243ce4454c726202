package session

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

// One change at a time runs per session; changes of other sessions run
// beside it; a change that gives up waiting leaves no trace; and no entry
// outlives the changes of its session.
func TestSessionLocks(t *testing.T) {
	l := newSessionLocks()
	ctx := t.Context()

	var running, most atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			unlock, err := l.lock(ctx, "a")
			if err != nil {
				t.Error(err)
				return
			}
			n := running.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			running.Add(-1)
			unlock()
		})
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Errorf("%d changes of one session ran at once", most.Load())
	}

	unlockA, err := l.lock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	unlockB, err := l.lock(ctx, "b") // another session: not held up
	if err != nil {
		t.Fatal(err)
	}
	gaveUp, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.lock(gaveUp, "a"); !errors.Is(err, context.Canceled) {
		t.Errorf("lock of a held session with a cancelled context = %v", err)
	}
	unlockA()
	unlockB()
	if len(l.locks) != 0 {
		t.Errorf("%d entries left after every change ended", len(l.locks))
	}
}
