package session_test

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sftproject/sft/api"
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
