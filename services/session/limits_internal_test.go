package session

import (
	"fmt"
	"strings"
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

func TestRefuseCreate(t *testing.T) {
	tests := []struct {
		limit, open int
		exists      bool
		want        string // "" for allowed
	}{
		{limit: 2, open: 1, exists: true},
		{limit: 1, open: 1, exists: true, want: "throttled: you have 1 open session, the limit"},
		{limit: 3, open: 3, exists: true, want: "throttled: you have 3 open sessions, the limit"},
		{limit: 2, open: 0, exists: false, want: `not_found: no user named "bob"`},
	}
	for _, tt := range tests {
		s := &Service{}
		s.o.Limits.OpenSessions = tt.limit
		err := s.refuseCreate(tt.open, "bob", tt.exists)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("limit %d, %d open: refused: %v", tt.limit, tt.open, err)
		case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
			t.Errorf("limit %d, %d open, responder exists %v: error %v, want %q…", tt.limit, tt.open, tt.exists, err, tt.want)
		}
	}
}
