package auth

import (
	"fmt"
	"testing"
	"time"
)

// clock is a settable time source for the throttle.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func testThrottle() (*throttle, *clock) {
	c := &clock{t: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	th := newThrottle()
	th.now = c.now
	return th, c
}

// The wait required after each consecutive failure: three free attempts,
// then 1s, 2s, 4s ... up to the cap.
func TestThrottleBackoff(t *testing.T) {
	th, c := testThrottle()
	th.max = 10 * time.Second
	// want[i] is the wait after failure i+1: the third failure makes the
	// fourth attempt wait.
	want := []time.Duration{0, 0, 1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i, w := range want {
		if got := th.allow("alice"); got != 0 {
			t.Fatalf("before failure %d: allow = %v, want 0 (the previous wait was served)", i+1, got)
		}
		th.failed("alice")
		if got := th.allow("alice"); got != w {
			t.Fatalf("after failure %d: allow = %v, want %v", i+1, got, w)
		}
		c.advance(w)
	}
}

func TestThrottlePartialWait(t *testing.T) {
	th, c := testThrottle()
	for range 3 {
		th.failed("alice")
		c.advance(th.allow("alice"))
	}
	th.failed("alice") // the fourth failure: the fifth attempt waits 2s
	c.advance(1500 * time.Millisecond)
	if got := th.allow("alice"); got != 500*time.Millisecond {
		t.Fatalf("allow = %v, want 500ms left", got)
	}
	if got := th.allow("bob"); got != 0 {
		t.Fatalf("allow(bob) = %v: names must be throttled independently", got)
	}
}

func TestThrottleCapNeverOverflows(t *testing.T) {
	th, c := testThrottle()
	for i := range 200 {
		th.failed("alice")
		w := th.allow("alice")
		if w < 0 || w > th.max {
			t.Fatalf("after %d failures: allow = %v, want within [0, %v]", i+1, w, th.max)
		}
		c.advance(w)
	}
	th.failed("alice")
	if got := th.allow("alice"); got != th.max {
		t.Fatalf("after 201 failures: allow = %v, want the cap %v", got, th.max)
	}
}

func TestThrottleSuccessResets(t *testing.T) {
	th, c := testThrottle()
	for range 5 {
		th.failed("alice")
	}
	c.advance(th.allow("alice"))
	th.succeeded("alice")
	if got := th.allow("alice"); got != 0 {
		t.Fatalf("allow after success = %v, want 0", got)
	}
	for i := range 2 {
		th.failed("alice")
		if got := th.allow("alice"); got != 0 {
			t.Fatalf("failure %d after a success: allow = %v, want 0 (free again)", i+1, got)
		}
	}
}

// Failures long past no longer count: a user who mistyped last week starts
// with free attempts again.
func TestThrottleForgetsOldFailures(t *testing.T) {
	th, c := testThrottle()
	for range 6 {
		th.failed("alice")
	}
	c.advance(th.allow("alice") + th.forgetAt + time.Second)
	th.failed("alice")
	if got := th.allow("alice"); got != 0 {
		t.Fatalf("first failure after %v idle: allow = %v, want 0", th.forgetAt, got)
	}

	// Not yet idle long enough: the count goes on.
	th2, c2 := testThrottle()
	for range 3 {
		th2.failed("bob")
	}
	c2.advance(th2.forgetAt / 2)
	th2.failed("bob")
	if got := th2.allow("bob"); got != 2*time.Second {
		t.Fatalf("fourth failure within %v: allow = %v, want 2s", th2.forgetAt, got)
	}
}

func TestThrottleSweepBoundsMemory(t *testing.T) {
	th, c := testThrottle()
	th.limit = 100
	for i := range 1000 {
		th.failed(fmt.Sprintf("guess%d", i))
		c.advance(time.Millisecond)
		if n := len(th.entries); n > th.limit {
			t.Fatalf("after %d names: %d entries tracked, limit %d", i+1, n, th.limit)
		}
	}
}

func TestThrottleSweepDropsForgottenFirst(t *testing.T) {
	th, c := testThrottle()
	th.limit = 10
	for i := range 5 {
		th.failed(fmt.Sprintf("old%d", i))
	}
	c.advance(th.forgetAt + time.Minute)
	for i := range 5 {
		th.failed(fmt.Sprintf("new%d", i))
	}
	th.failed("trigger") // the table is full: sweep
	if len(th.entries) != 6 {
		t.Fatalf("%d entries after sweep, want 6 (the five forgotten ones gone)", len(th.entries))
	}
	for i := range 5 {
		if th.entries[fmt.Sprintf("old%d", i)] != nil {
			t.Errorf("forgotten name old%d kept", i)
		}
	}
}

// When nothing is forgotten, a name that is locked out survives a sweep
// forced by a flood of fresh names, so the flood does not lift the lock.
func TestThrottleSweepKeepsLockedNames(t *testing.T) {
	th, c := testThrottle()
	th.limit = 10
	for range 8 {
		th.failed("victim")
	}
	lock := th.allow("victim")
	if lock <= 0 {
		t.Fatal("victim is not locked")
	}
	for i := range 50 {
		c.advance(time.Millisecond)
		th.failed(fmt.Sprintf("flood%d", i))
	}
	if got := th.allow("victim"); got != lock-50*time.Millisecond {
		t.Fatalf("victim's wait after the flood = %v, want %v", got, lock-50*time.Millisecond)
	}
}
