package session

import (
	"fmt"
	"testing"
	"time"
)

func TestRateLimiterRefills(t *testing.T) {
	r := newRateLimiter(60) // one a second
	now := time.Unix(1_000_000, 0)
	for i := range 60 {
		if ok, _ := r.allow("alice", now); !ok {
			t.Fatalf("burst: request %d refused", i)
		}
	}
	ok, wait := r.allow("alice", now)
	if ok || wait != time.Second {
		t.Fatalf("past the burst: ok=%v wait=%s, want refused for 1s", ok, wait)
	}
	if ok, _ := r.allow("bob", now); !ok {
		t.Fatal("bob refused for alice's use")
	}
	if ok, _ := r.allow("alice", now.Add(time.Second)); !ok {
		t.Fatal("no token a second later")
	}
	if ok, _ := r.allow("alice", now.Add(time.Second)); ok {
		t.Fatal("two tokens a second later")
	}
}

func TestRateLimiterMemoryBounded(t *testing.T) {
	r := newRateLimiter(60)
	now := time.Unix(1_000_000, 0)
	for i := range 3 * maxBuckets {
		r.allow(fmt.Sprint("user", i), now)
		if len(r.buckets) > maxBuckets {
			t.Fatalf("%d buckets after %d users, want at most %d", len(r.buckets), i+1, maxBuckets)
		}
	}
	// A minute on, every bucket refilled and is forgotten first.
	r.allow("late", now.Add(time.Minute))
	if len(r.buckets) != 1 {
		t.Errorf("%d buckets kept once all refilled, want 1", len(r.buckets))
	}
}
