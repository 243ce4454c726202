package kvstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/store"
	"github.com/sftproject/sft/services/store/storetest"
)

// startJetStream runs an embedded JetStream server on a random port for the
// test's lifetime and returns a JetStream context connected to it.
func startJetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

var bucketSeq atomic.Int64

// uniqueOptions names a fresh set of buckets, so stores sharing a server
// do not share records.
func uniqueOptions() Options {
	n := bucketSeq.Add(1)
	return Options{
		SessionsBucket: fmt.Sprintf("T%d_SESSIONS", n),
		UsersBucket:    fmt.Sprintf("T%d_USERS", n),
		KeysBucket:     fmt.Sprintf("T%d_KEYS", n),
		MarkerTTL:      time.Second,
	}
}

func openStore(t *testing.T, js jetstream.JetStream, opts Options) *Store {
	t.Helper()
	s, err := Open(t.Context(), js, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	js := startJetStream(t)
	storetest.Run(t, func(t *testing.T) storetest.Store {
		return openStore(t, js, uniqueOptions())
	})
}

// withSession opens a store on a fresh server and creates session s1
// (alice to bob) with ttl, returning what the test needs of it.
func withSession(t *testing.T, ttl time.Duration) (jetstream.JetStream, Options, *Store, *api.Session, uint64) {
	t.Helper()
	js := startJetStream(t)
	opts := uniqueOptions()
	s := openStore(t, js, opts)
	sess := &api.Session{ID: "s1", State: api.StateWaiting, Initiator: "alice", Responder: "bob"}
	rev, err := s.CreateSession(t.Context(), sess, ttl)
	if err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	return js, opts, s, sess, rev
}

// TestNoLeakAfterExpiry checks that an expired session leaves nothing
// behind: no record, no index entry, and, once the marker TTL has passed,
// not even the server's delete markers.
func TestNoLeakAfterExpiry(t *testing.T) {
	t.Parallel()
	js, opts, s, sess, rev := withSession(t, time.Second)
	ctx := t.Context()
	// Exercise the index refresh path too.
	if _, err := s.UpdateSession(ctx, sess, rev, time.Second); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	if err := s.CreateKey(ctx, "s1", []byte("sealed"), time.Second); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if err := s.CreateKey(ctx, "s2", []byte("sealed"), time.Hour); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if err := s.DeleteKey(ctx, "s2"); err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}
	if n := countKeys(t, s.sessions, "m.>"); n != 2 {
		t.Fatalf("index has %d entries, want 2", n)
	}

	deadline := time.Now().Add(8 * time.Second)
	for _, bucket := range []string{opts.SessionsBucket, opts.KeysBucket} {
		for {
			st, err := js.Stream(ctx, "KV_"+bucket)
			if err != nil {
				t.Fatalf("stream %s: %v", bucket, err)
			}
			info, err := st.Info(ctx)
			if err != nil {
				t.Fatalf("stream %s info: %v", bucket, err)
			}
			if info.State.Msgs == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("bucket %s still holds %d messages on %d subjects",
					bucket, info.State.Msgs, info.State.NumSubjects)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestIndexRewrittenOnlyWhenExpiryGrows checks that an update rewrites the
// member index only when the record would otherwise outlive it, and that a
// replica that did not write the index rewrites it.
func TestIndexRewrittenOnlyWhenExpiryGrows(t *testing.T) {
	t.Parallel()
	js, opts, s, sess, rev := withSession(t, time.Hour)
	ctx := t.Context()
	indexRevs := func() [2]uint64 {
		t.Helper()
		var revs [2]uint64
		for i, user := range []string{"alice", "bob"} {
			e, err := s.sessions.Get(ctx, memberKey(user, sess.ID))
			if err != nil {
				t.Fatalf("index entry of %s: %v", user, err)
			}
			revs[i] = e.Revision()
		}
		return revs
	}
	steps := []struct {
		name    string
		store   *Store
		ttl     time.Duration
		rewrite bool
	}{
		{"earlier expiry", s, 50 * time.Minute, false},
		{"the same expiry, a moment later", s, time.Hour - time.Second, false},
		{"later expiry", s, 2 * time.Hour, true},
		{"shorter again", s, time.Hour, false},
		{"another replica", openStore(t, js, opts), time.Hour, true},
	}
	for _, st := range steps {
		before := indexRevs()
		sess.Reason = st.name
		var err error
		if rev, err = st.store.UpdateSession(ctx, sess, rev, st.ttl); err != nil {
			t.Fatalf("%s: UpdateSession: %v", st.name, err)
		}
		if rewrote := indexRevs() != before; rewrote != st.rewrite {
			t.Errorf("%s: index rewritten = %v, want %v", st.name, rewrote, st.rewrite)
		}
	}
	if list, err := s.ListSessions(ctx, "bob"); err != nil || len(list) != 1 {
		t.Errorf("ListSessions(bob) = %v, %v; want s1", list, err)
	}
}

func countKeys(t *testing.T, kv jetstream.KeyValue, filter string) int {
	t.Helper()
	kl, err := kv.ListKeysFiltered(t.Context(), filter)
	if err != nil {
		t.Fatalf("ListKeysFiltered: %v", err)
	}
	n := 0
	for range kl.Keys() {
		n++
	}
	return n
}

// TestListSkipsDanglingIndex covers an index entry that outlives its record
// (e.g. a failed create): it must not surface, nor break the listing.
func TestListSkipsDanglingIndex(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	s := openStore(t, js, uniqueOptions())
	ctx := t.Context()
	for _, id := range []string{"gone", "kept"} {
		sess := &api.Session{ID: id, State: api.StateWaiting, Initiator: "alice", Responder: "bob"}
		if _, err := s.CreateSession(ctx, sess, time.Hour); err != nil {
			t.Fatalf("CreateSession(%s): %v", id, err)
		}
	}
	if err := s.sessions.Purge(ctx, sessionKey("gone")); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	list, err := s.ListSessions(ctx, "alice")
	if err != nil {
		t.Fatalf("ListSessions: %v", err)
	}
	if len(list) != 1 || list[0].ID != "kept" {
		t.Fatalf("ListSessions = %v, want only kept", list)
	}
}

func TestOpen(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	ctx := t.Context()

	t.Run("Defaults", func(t *testing.T) {
		s := openStore(t, js, Options{})
		for _, kv := range []jetstream.KeyValue{s.sessions, s.users, s.keys} {
			st, err := kv.Status(ctx)
			if err != nil {
				t.Fatalf("Status: %v", err)
			}
			if st.History() != 1 || st.BackingStore() != "JetStream" {
				t.Errorf("%s: history %d, backing %s", st.Bucket(), st.History(), st.BackingStore())
			}
			info := st.(*jetstream.KeyValueBucketStatus).StreamInfo()
			if info.Config.Storage != jetstream.FileStorage {
				t.Errorf("%s: storage %v, want file", st.Bucket(), info.Config.Storage)
			}
		}
		if got := s.sessions.Bucket(); got != DefaultSessionsBucket {
			t.Errorf("sessions bucket = %s", got)
		}
	})

	t.Run("BindsExisting", func(t *testing.T) {
		opts := uniqueOptions()
		a := openStore(t, js, opts)
		if err := a.CreateUser(ctx, &store.User{Name: "alice", Role: "user"}); err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
		// A second replica with a different marker TTL binds, keeping data.
		opts.MarkerTTL = time.Hour
		b := openStore(t, js, opts)
		if _, err := b.GetUser(ctx, "alice"); err != nil {
			t.Fatalf("GetUser via second store: %v", err)
		}
	})

	t.Run("RefusesBucketWithoutTTL", func(t *testing.T) {
		opts := uniqueOptions()
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: opts.KeysBucket}); err != nil {
			t.Fatalf("CreateKeyValue: %v", err)
		}
		_, err := Open(ctx, js, opts)
		if err == nil {
			t.Fatal("Open succeeded on a keys bucket that cannot expire keys")
		}
		t.Logf("error: %v", err)
	})

	t.Run("BadBucketName", func(t *testing.T) {
		opts := uniqueOptions()
		opts.UsersBucket = "bad name"
		if _, err := Open(ctx, js, opts); err == nil {
			t.Fatal("Open accepted an invalid bucket name")
		}
	})

	t.Run("CanceledContext", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := Open(cctx, js, uniqueOptions()); !errors.Is(err, context.Canceled) {
			t.Fatalf("Open with canceled context: %v", err)
		}
	})
}

func TestWholeSeconds(t *testing.T) {
	for _, tc := range []struct {
		in, want time.Duration
		invalid  bool
	}{
		{in: -time.Second, invalid: true},
		{in: 0, invalid: true},
		{in: 999 * time.Millisecond, invalid: true},
		{in: time.Second, want: time.Second},
		{in: 1500 * time.Millisecond, want: 2 * time.Second},
		{in: time.Hour + time.Nanosecond, want: time.Hour + time.Second},
	} {
		got, err := wholeSeconds(tc.in)
		if tc.invalid {
			if !errors.Is(err, store.ErrInvalid) {
				t.Errorf("wholeSeconds(%v) error = %v, want ErrInvalid", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("wholeSeconds(%v) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// TestMemberIndexReads checks the two ways ListSessions reads a user's
// member index: the direct get, and the scan it falls back to where the
// server answers no direct get (direct gets off for the bucket, more
// entries than one direct get returns). Each must return the user's ids
// and only theirs, and neither an entry that expired.
func TestMemberIndexReads(t *testing.T) {
	t.Parallel()
	js := startJetStream(t)
	ids := func(prefix string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s%04d", prefix, i)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		// directOff makes the sessions bucket with direct gets off.
		directOff bool
		// entries is how many index entries alice gets, written raw.
		entries int
		// expired adds a session of alice's whose entry expired and
		// left the server's marker.
		expired bool
		direct  bool // the direct get answers
	}{
		{name: "direct", entries: 3, direct: true},
		{name: "direct, an entry expired", entries: 3, expired: true, direct: true},
		{name: "none", direct: true},
		{name: "direct gets off", entries: 3, directOff: true},
		{name: "more than one direct get returns", entries: 1025},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			opts := uniqueOptions()
			opts.MarkerTTL = time.Minute // markers outlive the test
			if tc.directOff {
				disableDirect(t, js, opts)
			}
			s := openStore(t, js, opts)
			want := ids("a", tc.entries)
			for _, id := range want {
				if _, err := js.PublishAsync(s.sessPre+memberKey("alice", id), nil); err != nil {
					t.Fatal(err)
				}
				// Another user's entries between alice's, and one of
				// a user whose name starts with hers.
				for _, other := range []string{"bob", "alice2"} {
					if _, err := js.PublishAsync(s.sessPre+memberKey(other, "o"+id), nil); err != nil {
						t.Fatal(err)
					}
				}
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
			if tc.expired {
				expireEntry(t, js, s, opts, "alice")
			}
			got, err := s.directIDs(ctx, "alice")
			if tc.direct != (err == nil) || !tc.direct && !errors.Is(err, errNoDirect) {
				t.Fatalf("direct get: %v; want it to answer: %v", err, tc.direct)
			}
			if tc.direct {
				requireIDs(t, "direct get", got, want)
			}
			got, err = s.sessionIDs(ctx, "alice")
			if err != nil {
				t.Fatalf("sessionIDs: %v", err)
			}
			requireIDs(t, "sessionIDs", got, want)
		})
	}
}

// disableDirect makes the sessions bucket of opts with direct gets off,
// as a bucket made by another client may be.
func disableDirect(t *testing.T, js jetstream.JetStream, opts Options) {
	t.Helper()
	ctx := t.Context()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: opts.SessionsBucket, History: 1, Storage: jetstream.FileStorage, LimitMarkerTTL: opts.MarkerTTL,
	}); err != nil {
		t.Fatalf("CreateKeyValue: %v", err)
	}
	st, err := js.Stream(ctx, "KV_"+opts.SessionsBucket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.AllowDirect = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("UpdateStream: %v", err)
	}
}

// expireEntry creates a session of user's that expires at once and waits
// until the server replaced its index entry with a marker.
func expireEntry(t *testing.T, js jetstream.JetStream, s *Store, opts Options, user string) {
	t.Helper()
	ctx := t.Context()
	sess := &api.Session{ID: "brief", State: api.StateWaiting, Initiator: user, Responder: "bob"}
	if _, err := s.CreateSession(ctx, sess, time.Second); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	st, err := js.Stream(ctx, "KV_"+opts.SessionsBucket)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(8 * time.Second)
	for {
		m, err := st.GetLastMsgForSubject(ctx, s.sessPre+memberKey(user, sess.ID))
		if err != nil {
			t.Fatalf("index entry of %s: %v", sess.ID, err)
		}
		if m.Header.Get(jetstream.MarkerReasonHeader) != "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the index entry did not expire")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func requireIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("%s: %d ids %.5v, want %d %.5v", what, len(got), got, len(want), want)
	}
}

func TestAPIPrefix(t *testing.T) {
	for _, tc := range []struct {
		opts jetstream.JetStreamOptions
		want string
	}{
		{jetstream.JetStreamOptions{}, "$JS.API."},
		{jetstream.JetStreamOptions{APIPrefix: "$JS.API."}, "$JS.API."},
		{jetstream.JetStreamOptions{APIPrefix: "hub.api"}, "hub.api."},
		{jetstream.JetStreamOptions{Domain: "leaf", APIPrefix: "$JS.API."}, "$JS.leaf.API."},
	} {
		if got := apiPrefix(tc.opts); got != tc.want {
			t.Errorf("apiPrefix(%+v) = %q, want %q", tc.opts, got, tc.want)
		}
	}
}
