package session_test

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/store/redisstore"
	"github.com/sftproject/sft/services/store/redisstore/redistest"
	"github.com/sftproject/sft/services/token"
)

// TestTimersUpgrade starts the service on the timer stream and consumer
// the version before message schedules made, holding a timer that version
// queued and handed back until due: the old timer still expires its
// session, a new session's schedule expires it too, and nothing is left in
// the stream after.
func TestTimersUpgrade(t *testing.T) {
	t.Parallel()
	b := startBareStack(t)
	ctx := testCtx(t)
	const ttl = 2 * time.Second
	nc := b.serviceConn()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "SFT_TIMERS", Description: "SFT session expiry timers", Subjects: []string{"sft.v1.timers.>"},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Replicas: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	old, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "session-expiry", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: -1,
	})
	if err != nil {
		t.Fatal(err)
	}

	// A session the old version created: its record and its plain timer,
	// which its consumer took at once and handed back until due.
	kv := b.store(nc)
	addUsers(t, kv, "alice", "bob")
	now := time.Now().UTC()
	oldSess := &api.Session{
		ID: api.NewID(), State: api.StateWaiting, Initiator: "alice", Responder: "bob",
		Manifest: createReq("bob").Manifest, Listener: api.RoleInitiator, PeerAddrs: createReq("bob").PeerAddrs,
		CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(ttl),
		LastEvent: api.EventCreated, LastRole: api.RoleInitiator,
	}
	if _, err := kv.CreateSession(ctx, oldSess, time.Hour); err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(map[string]any{"session": oldSess.ID, "due": oldSess.ExpiresAt})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "sft.v1.timers.session."+oldSess.ID, body, jetstream.WithMsgID(oldSess.ID)); err != nil {
		t.Fatal(err)
	}
	batch, err := old.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.NakWithDelay(time.Until(oldSess.ExpiresAt)); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Error(); err != nil {
		t.Fatal(err)
	}
	if info, err := old.Info(ctx); err != nil || info.NumAckPending != 1 {
		t.Fatalf("old consumer before the upgrade: %+v, %v; want the timer pending", info, err)
	}

	rnc := b.serviceConn()
	startReplica(t, "new", rnc, true, b.store(rnc), token.NewVerifier(b.signing.Public().(ed25519.PublicKey)), ttl)
	sinfo, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !sinfo.Config.AllowMsgSchedules || sinfo.Config.Retention != jetstream.WorkQueuePolicy {
		t.Errorf("timer stream after the upgrade: schedules %v, retention %v", sinfo.Config.AllowMsgSchedules, sinfo.Config.Retention)
	}
	cinfo, err := old.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cinfo.Config.FilterSubject != "sft.v1.timers.session.>" || cinfo.Config.MaxAckPending <= 0 {
		t.Errorf("timer consumer after the upgrade: filter %q, max ack pending %d", cinfo.Config.FilterSubject, cinfo.Config.MaxAckPending)
	}

	newSess, err := b.client("alice").Create(ctx, createReq("bob"))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{oldSess.ID, newSess.ID} {
		eventually(t, 30*time.Second, "session "+id+" expired by its timer", func() bool {
			s, _, err := kv.GetSession(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return s.State == api.StateExpired
		})
	}
	eventually(t, 10*time.Second, "the timer stream emptied", func() bool {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs == 0
	})
}

// TestEndedDropsTimer: the expiry timer of a session that ended goes with
// it and never fires; a live session's stays and fires when due.
func TestEndedDropsTimer(t *testing.T) {
	t.Parallel()
	const ttl = 5 * time.Second
	w := newWorld(t, func(c *config.Config) { c.Session.TTL = ttl })
	ctx := testCtx(t)
	st := timerStream(t, w)
	timers := func(id string) uint64 {
		t.Helper()
		subject := "sft.v1.timers.at." + id
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects[subject]
	}

	completed, cancelled, live := w.endedAndLive(t)
	if n := timers(live.ID); n != 1 {
		t.Errorf("live session: %d timers, want its one", n)
	}
	for _, id := range []string{completed.ID, cancelled.ID} {
		eventually(t, 10*time.Second, "the timer of ended session "+id+" dropped", func() bool { return timers(id) == 0 })
	}
	// The ended sessions' timers were due first: once the live one fired
	// and a while passed, any of theirs would have fired too, each a new
	// message in the stream after the three schedules.
	eventually(t, 30*time.Second, "the live session expired by its timer", func() bool {
		s, _, err := w.h.Stack.Store.GetSession(ctx, live.ID)
		if err != nil {
			t.Fatal(err)
		}
		return s.State == api.StateExpired
	})
	time.Sleep(time.Second)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fired := info.State.LastSeq - 3; fired != 1 {
		t.Errorf("%d timers fired, want only the live session's", fired)
	}
}

// TestEndedLeavesDueIndex: on Redis a session needs no timer in the
// broker. The one that ended leaves the store's due index once its events
// are out, a live one stays until it is due and the sweep expires it, and
// nothing is left in the index or the timer stream after.
func TestEndedLeavesDueIndex(t *testing.T) {
	t.Parallel()
	const ttl = 5 * time.Second
	srv := redistest.Start(t, redistest.Options{})
	w := newWorld(t, func(c *config.Config) {
		c.Session.TTL = ttl
		c.Store.Backend, c.Redis.URL = "redis", srv.URL()
	})
	ctx := testCtx(t)
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opts)
	t.Cleanup(func() { _ = rc.Close() })
	due := func(id string) bool {
		t.Helper()
		err := rc.ZScore(ctx, redisstore.DefaultPrefix+"due", id).Err()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
		return err == nil
	}

	completed, cancelled, live := w.endedAndLive(t)
	if !due(live.ID) {
		t.Errorf("live session %s is not in the due index", live.ID)
	}
	// Taken out by the replica that ended them, not by a sweep when due.
	for _, s := range []*api.Session{completed, cancelled} {
		eventually(t, time.Until(s.ExpiresAt), "ended session "+s.ID+" out of the due index before it was due", func() bool { return !due(s.ID) })
	}
	eventually(t, 20*time.Second, "the live session expired by the sweep", func() bool {
		s, _, err := w.h.Stack.Store.GetSession(ctx, live.ID)
		if err != nil {
			t.Fatal(err)
		}
		return s.State == api.StateExpired
	})
	eventually(t, 10*time.Second, "the due index empty", func() bool {
		n, err := rc.Exists(ctx, redisstore.DefaultPrefix+"due").Result()
		if err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	if n := eventCounts(t, w.svc, live.ID)[api.EventExpired]; n != 1 {
		t.Errorf("%d expired events, want 1", n)
	}
	st := timerStream(t, w)
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.LastSeq != 0 {
		t.Errorf("%d messages went through the timer stream, want none", info.State.LastSeq)
	}
}

// endedAndLive makes three alice→bob sessions: one completed, one
// cancelled, and one joined and left alone.
func (w *world) endedAndLive(t *testing.T) (completed, cancelled, live *api.Session) {
	t.Helper()
	ctx := testCtx(t)
	completed = w.joined(t)
	for _, c := range []*client.Client{w.alice, w.bob} {
		if _, err := c.Report(ctx, completed.ID, checks("data")); err != nil {
			t.Fatal(err)
		}
	}
	cancelled = w.create(t, "alice", "bob")
	if _, err := w.alice.Cancel(ctx, cancelled.ID, "changed my mind"); err != nil {
		t.Fatal(err)
	}
	return completed, cancelled, w.joined(t)
}

// timerStream is the stack's stream of expiry timers.
func timerStream(t *testing.T, w *world) jetstream.Stream {
	t.Helper()
	js, err := jetstream.New(w.svc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(testCtx(t), "SFT_TIMERS")
	if err != nil {
		t.Fatal(err)
	}
	return st
}
