package session_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/store/redisstore/redistest"
)

// TestExpiry leaves sessions alone past a short TTL: the JetStream timer,
// or on Redis the sweep of the due index, not a read, must end them. The
// test only reads the store directly (which does not expire anything)
// until the sessions are expired.
func TestExpiry(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"jetstream", "redis"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			testExpiry(t, backend)
		})
	}
}

func testExpiry(t *testing.T, backend string) {
	const ttl = 2 * time.Second
	var url string
	if backend == "redis" {
		url = redistest.Start(t, redistest.Options{}).URL()
	}
	w := newWorld(t, func(c *config.Config) {
		c.Session.TTL = ttl
		if url != "" {
			c.Store.Backend, c.Redis.URL = "redis", url
		}
	})
	ctx := testCtx(t)

	watch, err := openWatch(t, w.h.ConnFor(w.alice), w.alice.Token(), "", false)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	waiting := w.create(t, "alice", "bob")
	if d := waiting.ExpiresAt.Sub(before); d < ttl-time.Second || d > ttl+time.Second {
		t.Errorf("expires %s after creation, want about %s", d, ttl)
	}
	joined := w.joined(t)

	for _, s := range []*api.Session{waiting, joined} {
		eventually(t, 20*time.Second, "session "+s.ID+" expired with nobody reading it", func() bool {
			stored, _, err := w.h.Stack.Store.GetSession(ctx, s.ID)
			if err != nil {
				t.Fatal(err)
			}
			return stored.State == api.StateExpired
		})
	}
	if stored, _, err := w.h.Stack.Store.GetSession(ctx, waiting.ID); err != nil {
		t.Fatal(err)
	} else if stored.UpdatedAt.Before(waiting.ExpiresAt) {
		t.Errorf("expired at %v, before its time %v", stored.UpdatedAt, waiting.ExpiresAt)
	}

	// The watch-all saw both expire, in either order, with no actor:
	// nobody did it.
	expired := map[string]api.Event{}
	watch.until(t, func(ev api.Event) bool {
		if ev.Type == api.EventExpired {
			expired[ev.Session] = ev
		}
		return len(expired) == 2
	})
	for _, s := range []*api.Session{waiting, joined} {
		ev, ok := expired[s.ID]
		if !ok || ev.Actor != "" || ev.State != api.StateExpired || !strings.Contains(ev.Reason, "expired") {
			t.Errorf("session %s: expired event %+v", s.ID, ev)
		}
	}
	// A session watch replays the whole life and ends.
	evs, err := collectWatch(ctx, w.bob, joined.ID)
	if !errors.Is(err, client.ErrWatchEnded) || !strings.Contains(err.Error(), "session expired") {
		t.Errorf("session watch ended with %v", err)
	}
	if got := types(evs); got != "created,joined,expired" {
		t.Errorf("session watch saw %s", got)
	}
	if n := eventCounts(t, w.svc, waiting.ID)[api.EventExpired]; n != 1 {
		t.Errorf("%d expired events, want 1", n)
	}

	_, err = w.bob.Join(ctx, waiting.ID, nil)
	wantCode(t, "join after expiry", err, api.CodeExpired)
	_, err = w.alice.Report(ctx, joined.ID, checks("late"))
	wantCode(t, "report after expiry", err, api.CodeExpired)
	_, err = w.bob.Cancel(ctx, joined.ID, "")
	wantCode(t, "cancel after expiry", err, api.CodeExpired)
	got, err := w.alice.Get(ctx, waiting.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.StateExpired {
		t.Errorf("get: state %s", got.State)
	}
	list, err := w.bob.List(ctx, api.StateWaiting)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("%d sessions still waiting", len(list))
	}

	// A session whose last write was stored and never published (its
	// replica died in between) gets those events when it is due, once,
	// even with nobody coming back to it.
	lost := w.joined(t)
	if _, err := w.alice.Report(ctx, lost.ID, checks("x")); err != nil {
		t.Fatal(err)
	}
	sess, rev, err := w.h.Stack.Store.GetSession(ctx, lost.ID)
	if err != nil {
		t.Fatal(err)
	}
	completeUnpublished(sess)
	if _, err := w.h.Stack.Store.UpdateSession(ctx, sess, rev, time.Hour); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the completion's events published when due", func() bool {
		return eventCounts(t, w.svc, lost.ID)[api.EventCompleted] == 1
	})
	checkCounts(t, eventCounts(t, w.svc, lost.ID), map[api.EventType]uint64{
		api.EventCreated: 1, api.EventJoined: 1, api.EventReported: 2, api.EventCompleted: 1,
	})

	// A session that ended in time is left alone when due.
	done := w.create(t, "alice", "bob")
	if _, err := w.alice.Cancel(ctx, done.ID, ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(done.ExpiresAt) + time.Second)
	if counts := eventCounts(t, w.svc, done.ID); counts[api.EventExpired] != 0 {
		t.Errorf("a cancelled session got an expired event: %v", counts)
	}
	stored, _, err := w.h.Stack.Store.GetSession(ctx, done.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.State != api.StateCancelled {
		t.Errorf("cancelled session now %s", stored.State)
	}
}
