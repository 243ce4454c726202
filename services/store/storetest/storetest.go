// Package storetest is the conformance suite every state-store
// implementation passes, so the services behave the same on any backend.
//
// An implementation's test calls Run with a constructor:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Store { return newTestStore(t) })
//	}
package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/store"
)

// Store is the union of the methods the services consume.
type Store interface {
	CreateSession(ctx context.Context, s *api.Session, ttl time.Duration) (uint64, error)
	GetSession(ctx context.Context, id string) (*api.Session, uint64, error)
	UpdateSession(ctx context.Context, s *api.Session, rev uint64, ttl time.Duration) (uint64, error)
	ListSessions(ctx context.Context, user string) ([]*api.Session, error)
	OpenSessions(ctx context.Context, user string, now time.Time) (int, error)
	OpenCounts(ctx context.Context, now time.Time) (map[api.State]int, error)
	CreateUser(ctx context.Context, u *store.User) error
	GetUser(ctx context.Context, name string) (*store.User, error)
	UpdateUser(ctx context.Context, u *store.User) error
	CreateKey(ctx context.Context, sessionID string, sealed []byte, ttl time.Duration) error
	GetKey(ctx context.Context, sessionID string) ([]byte, error)
	DeleteKey(ctx context.Context, sessionID string) error
	Ping(ctx context.Context) error
	Close() error
}

const (
	longTTL  = time.Hour
	shortTTL = time.Second // the smallest TTL JetStream accepts
	// expiryWait bounds how long an expired record may linger. Backends
	// expire lazily (JetStream checks TTLs about once a second).
	expiryWait = 6 * time.Second
)

// Run runs the suite. Subtests run in parallel, each on its own store from
// newStore, so newStore must be safe to call concurrently and must return
// stores that do not share records (e.g. distinct bucket names or key
// prefixes). Run closes each store when its subtest ends.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	open := func(t *testing.T) Store {
		t.Helper()
		t.Parallel()
		s := newStore(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"SessionRoundTrip", testSessionRoundTrip},
		{"SessionCreateDuplicate", testSessionCreateDuplicate},
		{"SessionGetMissing", testSessionGetMissing},
		{"SessionUpdate", testSessionUpdate},
		{"SessionUpdateStale", testSessionUpdateStale},
		{"SessionUpdateMissing", testSessionUpdateMissing},
		{"SessionUpdateConcurrent", testSessionUpdateConcurrent},
		{"SessionExpiry", testSessionExpiry},
		{"SessionUpdateChangesTTL", testSessionUpdateChangesTTL},
		{"ListSessions", testListSessions},
		{"ListSessionsAmongOthers", testListSessionsAmongOthers},
		{"OpenSessions", testOpenSessions},
		{"OpenCounts", testOpenCounts},
		{"Users", testUsers},
		{"Keys", testKeys},
		{"KeyCreateRace", testKeyCreateRace},
		{"KeyExpiry", testKeyExpiry},
		{"InvalidNames", testInvalidNames},
		{"InvalidArguments", testInvalidArguments},
		{"Ping", testPing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

// newSession builds a session with every field set, times in a non-UTC zone
// with nanoseconds, so lossy encodings show up.
func newSession(id, initiator, responder string) *api.Session {
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	created := time.Date(2025, 3, 14, 15, 9, 26, 535897932, zone)
	return &api.Session{
		ID:        id,
		State:     api.StateWaiting,
		Initiator: initiator,
		Responder: responder,
		Manifest: api.Manifest{Files: []api.File{
			{Name: "report.pdf", Size: 1 << 20},
			{Name: "data/ünïcode name.bin", Size: 0},
		}},
		PeerAddrs: []string{"192.0.2.7:40123"},
		Reports: map[api.Role]api.Report{
			api.RoleInitiator: {OK: true, Bytes: 1 << 20, CRC32C: 0xdeadbeef, SHA256: strings.Repeat("ab", 32),
				At: created.Add(time.Minute)},
			api.RoleResponder: {OK: false, Bytes: 17, Error: "disk full", At: created.Add(2 * time.Minute)},
		},
		Reason:    "a reason",
		CreatedAt: created,
		UpdatedAt: created.Add(3 * time.Minute),
		ExpiresAt: created.Add(time.Hour),
	}
}

// normalize makes equal sessions deeply equal: same instants in UTC, and
// no distinction between a nil and an empty Reports map.
func normalize(s *api.Session) api.Session {
	c := *s
	c.CreatedAt, c.UpdatedAt, c.ExpiresAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC(), c.ExpiresAt.UTC()
	c.Reports = nil
	if len(s.Reports) > 0 {
		c.Reports = make(map[api.Role]api.Report, len(s.Reports))
		for k, r := range s.Reports {
			r.At = r.At.UTC()
			c.Reports[k] = r
		}
	}
	c.Manifest.Files = slices.Clone(s.Manifest.Files)
	return c
}

func requireSame(t *testing.T, got, want *api.Session) {
	t.Helper()
	if got == nil {
		t.Fatalf("got nil session, want %+v", want)
	}
	if g, w := normalize(got), normalize(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("session mismatch\n got: %+v\nwant: %+v", g, w)
	}
}

func requireErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func mustCreate(t *testing.T, s Store, sess *api.Session, ttl time.Duration) uint64 {
	t.Helper()
	rev, err := s.CreateSession(t.Context(), sess, ttl)
	if err != nil {
		t.Fatalf("CreateSession(%s): %v", sess.ID, err)
	}
	if rev == 0 {
		t.Fatalf("CreateSession(%s) returned revision 0", sess.ID)
	}
	return rev
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %v", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// gone reports whether the session is no longer readable.
func gone(s Store, id string) func() (bool, error) {
	return func() (bool, error) {
		_, _, err := s.GetSession(context.Background(), id)
		if errors.Is(err, store.ErrNotFound) {
			return true, nil
		}
		return false, err
	}
}

func listIDs(t *testing.T, s Store, user string) []string {
	t.Helper()
	list, err := s.ListSessions(t.Context(), user)
	if err != nil {
		t.Fatalf("ListSessions(%s): %v", user, err)
	}
	ids := make([]string, 0, len(list))
	for _, sess := range list {
		if _, ok := sess.RoleOf(user); !ok {
			t.Errorf("ListSessions(%s) returned %s, where %s is not a member", user, sess.ID, user)
		}
		ids = append(ids, sess.ID)
	}
	slices.Sort(ids)
	return ids
}

func testSessionRoundTrip(t *testing.T, s Store) {
	want := newSession("rt1", "alice", "bob")
	rev := mustCreate(t, s, want, longTTL)
	got, gotRev, err := s.GetSession(t.Context(), want.ID)
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	requireSame(t, got, want)
	if gotRev != rev {
		t.Errorf("GetSession revision = %d, CreateSession returned %d", gotRev, rev)
	}

	// A minimal session (no reports, zero times) survives as well.
	bare := &api.Session{ID: "rt2", State: api.StateJoined, Initiator: "carol", Responder: "dave"}
	mustCreate(t, s, bare, longTTL)
	got, _, err = s.GetSession(t.Context(), bare.ID)
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	requireSame(t, got, bare)
}

func testSessionCreateDuplicate(t *testing.T, s Store) {
	orig := newSession("dup", "alice", "bob")
	mustCreate(t, s, orig, longTTL)
	other := newSession("dup", "mallory", "bob")
	_, err := s.CreateSession(t.Context(), other, longTTL)
	requireErr(t, "second CreateSession", err, store.ErrExists)
	got, _, err := s.GetSession(t.Context(), "dup")
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	requireSame(t, got, orig)
	if ids := listIDs(t, s, "mallory"); len(ids) != 0 {
		t.Errorf("failed create left mallory with sessions %v", ids)
	}
}

func testSessionGetMissing(t *testing.T, s Store) {
	_, _, err := s.GetSession(t.Context(), "nope")
	requireErr(t, "GetSession(missing)", err, store.ErrNotFound)
}

func testSessionUpdate(t *testing.T, s Store) {
	sess := newSession("up", "alice", "bob")
	rev := mustCreate(t, s, sess, longTTL)
	sess.State = api.StateJoined
	sess.UpdatedAt = sess.UpdatedAt.Add(time.Second)
	newRev, err := s.UpdateSession(t.Context(), sess, rev, longTTL)
	if err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	if newRev == 0 || newRev == rev {
		t.Fatalf("UpdateSession revision = %d, old %d: want a new non-zero revision", newRev, rev)
	}
	got, gotRev, err := s.GetSession(t.Context(), sess.ID)
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	requireSame(t, got, sess)
	if gotRev != newRev {
		t.Errorf("GetSession revision = %d, UpdateSession returned %d", gotRev, newRev)
	}
	// The new revision is usable for the next compare-and-set.
	sess.State = api.StateCompleted
	if _, err := s.UpdateSession(t.Context(), sess, newRev, longTTL); err != nil {
		t.Fatalf("second UpdateSession: %v", err)
	}
}

func testSessionUpdateStale(t *testing.T, s Store) {
	sess := newSession("stale", "alice", "bob")
	rev := mustCreate(t, s, sess, longTTL)
	sess.State = api.StateJoined
	if _, err := s.UpdateSession(t.Context(), sess, rev, longTTL); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	loser := newSession("stale", "alice", "bob")
	loser.State = api.StateCancelled
	_, err := s.UpdateSession(t.Context(), loser, rev, longTTL)
	requireErr(t, "UpdateSession with stale revision", err, store.ErrConflict)
	_, err = s.UpdateSession(t.Context(), loser, 0, longTTL)
	requireErr(t, "UpdateSession with revision 0", err, store.ErrConflict)
	got, _, err := s.GetSession(t.Context(), sess.ID)
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	requireSame(t, got, sess)
}

func testSessionUpdateMissing(t *testing.T, s Store) {
	sess := newSession("ghost", "alice", "bob")
	for _, rev := range []uint64{0, 1, 12345} {
		_, err := s.UpdateSession(t.Context(), sess, rev, longTTL)
		requireErr(t, fmt.Sprintf("UpdateSession(missing, rev %d)", rev), err, store.ErrNotFound)
	}
	// A failed update must not have created the session.
	_, _, err := s.GetSession(t.Context(), sess.ID)
	requireErr(t, "GetSession after failed update", err, store.ErrNotFound)
}

func testSessionUpdateConcurrent(t *testing.T, s Store) {
	const n = 8
	base := newSession("race", "alice", "bob")
	rev := mustCreate(t, s, base, longTTL)
	var (
		wg     sync.WaitGroup
		start  = make(chan struct{})
		errs   = make([]error, n)
		winRev = make([]uint64, n)
	)
	for i := range n {
		wg.Go(func() {
			sess := newSession("race", "alice", "bob")
			sess.Reason = fmt.Sprintf("writer %d", i)
			<-start
			winRev[i], errs[i] = s.UpdateSession(context.Background(), sess, rev, longTTL)
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("writers %d and %d both won the same compare-and-set", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrConflict):
			t.Fatalf("writer %d: got %v, want ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won the compare-and-set")
	}
	got, gotRev, err := s.GetSession(t.Context(), "race")
	if err != nil {
		t.Fatalf("GetSession: %v", err)
	}
	if want := fmt.Sprintf("writer %d", winner); got.Reason != want || gotRev != winRev[winner] {
		t.Errorf("stored %q at revision %d, want the winner's %q at %d", got.Reason, gotRev, want, winRev[winner])
	}
}

func testSessionExpiry(t *testing.T, s Store) {
	sess := newSession("brief", "alice", "bob")
	mustCreate(t, s, sess, shortTTL)
	mustCreate(t, s, newSession("lasting", "alice", "bob"), longTTL)
	if ids := listIDs(t, s, "alice"); !slices.Equal(ids, []string{"brief", "lasting"}) {
		t.Fatalf("before expiry ListSessions(alice) = %v", ids)
	}
	eventually(t, expiryWait, "session expires", gone(s, sess.ID))
	for _, user := range []string{"alice", "bob"} {
		if ids := listIDs(t, s, user); !slices.Equal(ids, []string{"lasting"}) {
			t.Errorf("after expiry ListSessions(%s) = %v, want [lasting]", user, ids)
		}
	}
	// The id is free again once the record expired.
	mustCreate(t, s, newSession("brief", "carol", "dave"), longTTL)
	if ids := listIDs(t, s, "carol"); !slices.Equal(ids, []string{"brief"}) {
		t.Errorf("ListSessions(carol) = %v, want [brief]", ids)
	}
}

func testSessionUpdateChangesTTL(t *testing.T, s Store) {
	sess := newSession("extend", "alice", "bob")
	rev := mustCreate(t, s, sess, shortTTL)
	mustCreate(t, s, newSession("control", "alice", "bob"), shortTTL)
	sess.State = api.StateJoined
	rev, err := s.UpdateSession(t.Context(), sess, rev, longTTL)
	if err != nil {
		t.Fatalf("UpdateSession(extend): %v", err)
	}
	// The control, created with the same short TTL, marks when the
	// original TTL has passed.
	eventually(t, expiryWait, "control session expires", gone(s, "control"))
	got, _, err := s.GetSession(t.Context(), sess.ID)
	if err != nil {
		t.Fatalf("extended session is gone with its original TTL: %v", err)
	}
	requireSame(t, got, sess)
	if ids := listIDs(t, s, "bob"); !slices.Equal(ids, []string{"extend"}) {
		t.Errorf("ListSessions(bob) = %v, want [extend]: the index must follow the extended TTL", ids)
	}
	// Shortening works too.
	if _, err := s.UpdateSession(t.Context(), sess, rev, shortTTL); err != nil {
		t.Fatalf("UpdateSession(shorten): %v", err)
	}
	eventually(t, expiryWait, "shortened session expires", gone(s, sess.ID))
	if ids := listIDs(t, s, "bob"); len(ids) != 0 {
		t.Errorf("ListSessions(bob) = %v after expiry, want none", ids)
	}
}

func testListSessions(t *testing.T, s Store) {
	mustCreate(t, s, newSession("s1", "alice", "bob"), longTTL)
	rev := mustCreate(t, s, newSession("s2", "carol", "alice"), longTTL)
	mustCreate(t, s, newSession("s3", "bob", "carol"), longTTL)
	mustCreate(t, s, newSession("s4", "erin", "erin"), longTTL)
	// A user whose name is a prefix of another's must not see theirs.
	mustCreate(t, s, newSession("s5", "al", "bo"), longTTL)

	for _, tc := range []struct {
		user string
		want []string
	}{
		{"alice", []string{"s1", "s2"}},
		{"bob", []string{"s1", "s3"}},
		{"carol", []string{"s2", "s3"}},
		{"erin", []string{"s4"}},
		{"al", []string{"s5"}},
		{"dave", []string{}},
	} {
		if ids := listIDs(t, s, tc.user); !slices.Equal(ids, tc.want) {
			t.Errorf("ListSessions(%s) = %v, want %v", tc.user, ids, tc.want)
		}
	}

	// List returns the current record, not the one at creation.
	upd := newSession("s2", "carol", "alice")
	upd.State = api.StateCompleted
	if _, err := s.UpdateSession(t.Context(), upd, rev, longTTL); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	list, err := s.ListSessions(t.Context(), "alice")
	if err != nil {
		t.Fatalf("ListSessions: %v", err)
	}
	byID := map[string]*api.Session{}
	for _, sess := range list {
		byID[sess.ID] = sess
	}
	if got := byID["s2"]; got == nil {
		t.Fatalf("ListSessions(alice) lost s2: %v", slices.Collect(maps.Keys(byID)))
	}
	requireSame(t, byID["s2"], upd)
	requireSame(t, byID["s1"], newSession("s1", "alice", "bob"))
}

// testListSessionsAmongOthers: a user's list is exactly theirs when their
// sessions are spread among many more of other users', some of whose
// names start with theirs, as when many users create sessions at once.
func testListSessionsAmongOthers(t *testing.T, s Store) {
	want := map[string][]string{"an": {}}
	n := 0
	add := func(initiator, responder string) {
		id := fmt.Sprintf("m%03d", n)
		n++
		mustCreate(t, s, newSession(id, initiator, responder), longTTL)
		want[initiator] = append(want[initiator], id)
		want[responder] = append(want[responder], id)
	}
	for round := range 5 {
		add("ann", "bo")
		for i := range 20 {
			add(fmt.Sprintf("ann%d", i%3), fmt.Sprintf("ann-%d", round))
		}
		add("bo", "ann")
	}
	for user, ids := range want {
		if got := listIDs(t, s, user); !slices.Equal(got, ids) {
			t.Errorf("ListSessions(%s) = %v, want %v", user, got, ids)
		}
	}
}

// testOpenSessions: a user's open sessions are the live ones they
// initiated whose expiry is still ahead, whatever else they take part in.
func testOpenSessions(t *testing.T, s Store) {
	ctx := t.Context()
	now := time.Now()
	live := func(id, initiator, responder string, expires time.Duration) *api.Session {
		sess := newSession(id, initiator, responder)
		sess.Reports = nil
		sess.ExpiresAt = now.Add(expires)
		return sess
	}
	count := func(user string, at time.Time) int {
		t.Helper()
		n, err := s.OpenSessions(ctx, user, at)
		if err != nil {
			t.Fatalf("OpenSessions(%s): %v", user, err)
		}
		return n
	}
	o1 := live("o1", "alice", "bob", time.Hour)
	rev1 := mustCreate(t, s, o1, longTTL)
	o2 := live("o2", "alice", "carol", 30*time.Minute)
	rev2 := mustCreate(t, s, o2, longTTL)
	mustCreate(t, s, live("o3", "bob", "alice", time.Hour), longTTL)
	done := live("o4", "alice", "bob", time.Hour)
	done.State = api.StateCompleted
	mustCreate(t, s, done, longTTL)
	mustCreate(t, s, live("o5", "al", "bob", time.Hour), longTTL) // a prefix of alice

	for _, tc := range []struct {
		user string
		at   time.Time
		want int
	}{
		{"alice", now, 2},
		{"alice", now.Add(45 * time.Minute), 1}, // o2's expiry passed
		{"alice", now.Add(2 * time.Hour), 0},
		{"bob", now, 1},
		{"carol", now, 0},
		{"al", now, 1},
		{"dave", now, 0},
	} {
		if got := count(tc.user, tc.at); got != tc.want {
			t.Errorf("OpenSessions(%s, now%+v) = %d, want %d", tc.user, tc.at.Sub(now).Round(time.Minute), got, tc.want)
		}
	}

	// A live update keeps it open; an ended one frees its place; a lost
	// compare-and-set changes nothing.
	o1.State = api.StateJoined
	rev1, err := s.UpdateSession(ctx, o1, rev1, longTTL)
	if err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	if got := count("alice", now); got != 2 {
		t.Errorf("after a live update: %d open, want 2", got)
	}
	o2.State = api.StateCancelled
	if _, err := s.UpdateSession(ctx, o2, rev2+1000, longTTL); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale UpdateSession: %v, want ErrConflict", err)
	}
	if got := count("alice", now); got != 2 {
		t.Errorf("after a lost compare-and-set: %d open, want 2", got)
	}
	o1.State = api.StateCompleted
	if _, err := s.UpdateSession(ctx, o1, rev1, longTTL); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	if got := count("alice", now); got != 1 {
		t.Errorf("after ending o1: %d open, want 1", got)
	}
	if _, err := s.UpdateSession(ctx, o2, rev2, longTTL); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	if got := count("alice", now); got != 0 {
		t.Errorf("after ending both: %d open, want 0", got)
	}
	// A duplicate create does not count twice.
	if _, err := s.CreateSession(ctx, live("o3", "bob", "alice", time.Hour), longTTL); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate CreateSession: %v, want ErrExists", err)
	}
	if got := count("bob", now); got != 1 {
		t.Errorf("after a duplicate create: bob has %d open, want 1", got)
	}

	// Creations racing for one user are all counted.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if _, err := s.CreateSession(ctx, live(fmt.Sprintf("r%d", i), "erin", "bob", time.Hour), longTTL); err != nil {
				t.Errorf("CreateSession: %v", err)
			}
		})
	}
	wg.Wait()
	if got := count("erin", now); got != 8 {
		t.Errorf("after 8 concurrent creations: %d open, want 8", got)
	}
	if _, err := s.OpenSessions(ctx, "a.b", now); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("OpenSessions(a.b): %v, want ErrInvalid", err)
	}
}

// testOpenCounts: the open sessions of every user, by state, are the live
// ones whose expiry is still ahead, each counted once in its latest state.
func testOpenCounts(t *testing.T, s Store) {
	ctx := t.Context()
	now := time.Now()
	revs := map[string]uint64{}
	sessions := map[string]*api.Session{}
	create := func(id, initiator, responder string, state api.State, expires time.Duration) func() {
		return func() {
			sess := newSession(id, initiator, responder)
			sess.Reports, sess.State, sess.ExpiresAt = nil, state, now.Add(expires)
			sessions[id], revs[id] = sess, mustCreate(t, s, sess, longTTL)
		}
	}
	update := func(id string, state api.State) func() {
		return func() {
			sess := sessions[id]
			sess.State = state
			rev, err := s.UpdateSession(ctx, sess, revs[id], longTTL)
			if err != nil {
				t.Fatalf("UpdateSession(%s, %s): %v", id, state, err)
			}
			revs[id] = rev
		}
	}
	stale := func(id string, state api.State) func() {
		return func() {
			sess := *sessions[id]
			sess.State = state
			if _, err := s.UpdateSession(ctx, &sess, revs[id]+1000, longTTL); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("stale UpdateSession(%s): %v, want ErrConflict", id, err)
			}
		}
	}
	const w, j = api.StateWaiting, api.StateJoined
	for _, step := range []struct {
		name           string
		do             func()
		at             time.Duration // after now
		waiting, joint int
	}{
		{"empty", func() {}, 0, 0, 0},
		{"created by several users", func() {
			create("a1", "alice", "bob", w, time.Hour)()
			create("a2", "alice", "carol", w, 30*time.Minute)()
			create("b1", "bob", "alice", w, time.Hour)()
			create("c1", "carol", "dave", w, time.Hour)()
		}, 0, 4, 0},
		{"created ended", create("done", "dave", "alice", api.StateCompleted, time.Hour), 0, 4, 0},
		{"created past its expiry", create("late", "erin", "bob", w, -time.Minute), 0, 4, 0},
		{"joined", update("a1", j), 0, 3, 1},
		{"joined twice", update("a1", j), 0, 3, 1},
		{"a lost compare-and-set", stale("b1", j), 0, 3, 1},
		{"later, past one's expiry", func() {}, 45 * time.Minute, 2, 1},
		{"later, past every expiry", func() {}, 2 * time.Hour, 0, 0},
		{"joined one completed", update("a1", api.StateCompleted), 0, 3, 0},
		{"waiting one cancelled", update("b1", api.StateCancelled), 0, 2, 0},
		{"another joined", update("c1", j), 0, 1, 1},
	} {
		step.do()
		got, err := s.OpenCounts(ctx, now.Add(step.at))
		if err != nil {
			t.Fatalf("%s: OpenCounts: %v", step.name, err)
		}
		want := map[api.State]int{w: step.waiting, j: step.joint}
		if !maps.Equal(got, want) {
			t.Errorf("%s: OpenCounts(now%+v) = %v, want %v", step.name, step.at, got, want)
		}
	}
}

func testUsers(t *testing.T, s Store) {
	ctx := t.Context()
	created := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	u := &store.User{Name: "alice", PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
		Role: "user", CreatedAt: created}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	requireUser := func(want *store.User) {
		t.Helper()
		got, err := s.GetUser(ctx, want.Name)
		if err != nil {
			t.Fatalf("GetUser(%s): %v", want.Name, err)
		}
		if got.Name != want.Name || got.PasswordHash != want.PasswordHash || got.Role != want.Role ||
			!got.CreatedAt.Equal(want.CreatedAt) {
			t.Fatalf("GetUser(%s) = %+v, want %+v", want.Name, got, want)
		}
	}
	requireUser(u)

	dup := &store.User{Name: "alice", PasswordHash: "other", Role: "admin", CreatedAt: created}
	requireErr(t, "CreateUser(duplicate)", s.CreateUser(ctx, dup), store.ErrExists)
	requireUser(u)

	_, err := s.GetUser(ctx, "bob")
	requireErr(t, "GetUser(missing)", err, store.ErrNotFound)

	upd := *u
	upd.Role = "admin"
	upd.PasswordHash = "$argon2id$v=19$m=65536,t=3,p=4$bmV3$bmV3"
	if err := s.UpdateUser(ctx, &upd); err != nil {
		t.Fatalf("UpdateUser: %v", err)
	}
	requireUser(&upd)

	requireErr(t, "UpdateUser(missing)", s.UpdateUser(ctx, &store.User{Name: "bob", Role: "user"}), store.ErrNotFound)
	_, err = s.GetUser(ctx, "bob")
	requireErr(t, "GetUser after failed update", err, store.ErrNotFound)
}

func testKeys(t *testing.T, s Store) {
	ctx := t.Context()
	first, second := []byte("sealed-key-one\x00\xff"), []byte("sealed-key-two")
	if err := s.CreateKey(ctx, "k1", first, longTTL); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	requireKey := func(want []byte) {
		t.Helper()
		got, err := s.GetKey(ctx, "k1")
		if err != nil {
			t.Fatalf("GetKey: %v", err)
		}
		if string(got) != string(want) {
			t.Fatalf("GetKey = %q, want %q", got, want)
		}
	}
	requireKey(first)
	requireErr(t, "CreateKey(second)", s.CreateKey(ctx, "k1", second, longTTL), store.ErrExists)
	requireKey(first)

	_, err := s.GetKey(ctx, "k2")
	requireErr(t, "GetKey(missing)", err, store.ErrNotFound)

	if err := s.DeleteKey(ctx, "k1"); err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}
	_, err = s.GetKey(ctx, "k1")
	requireErr(t, "GetKey after delete", err, store.ErrNotFound)
	if err := s.DeleteKey(ctx, "k1"); err != nil {
		t.Errorf("DeleteKey(deleted): %v", err)
	}
	if err := s.DeleteKey(ctx, "never"); err != nil {
		t.Errorf("DeleteKey(missing): %v", err)
	}
	// A deleted key does not block a new one.
	if err := s.CreateKey(ctx, "k1", second, longTTL); err != nil {
		t.Fatalf("CreateKey after delete: %v", err)
	}
	requireKey(second)
}

func testKeyCreateRace(t *testing.T, s Store) {
	keyRace(t, s, "contested")
	// Again over a deleted key, which some backends keep as a tombstone.
	if err := s.DeleteKey(t.Context(), "contested"); err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}
	keyRace(t, s, "contested")
}

// keyRace has n members create the key of one session at once: exactly one
// must win, and the stored key must be the winner's.
func keyRace(t *testing.T, s Store, id string) {
	t.Helper()
	const n = 8
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = s.CreateKey(context.Background(), id, fmt.Appendf(nil, "key %d", i), longTTL)
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("members %d and %d both stored a key", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrExists):
			t.Fatalf("member %d: got %v, want ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no member stored a key")
	}
	got, err := s.GetKey(t.Context(), id)
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	if want := fmt.Sprintf("key %d", winner); string(got) != want {
		t.Errorf("GetKey = %q, want the winner's %q", got, want)
	}
}

func testKeyExpiry(t *testing.T, s Store) {
	ctx := t.Context()
	if err := s.CreateKey(ctx, "brief", []byte("k"), shortTTL); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if err := s.CreateKey(ctx, "lasting", []byte("k"), longTTL); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	eventually(t, expiryWait, "key expires", func() (bool, error) {
		_, err := s.GetKey(ctx, "brief")
		if errors.Is(err, store.ErrNotFound) {
			return true, nil
		}
		return false, err
	})
	if _, err := s.GetKey(ctx, "lasting"); err != nil {
		t.Errorf("GetKey(lasting): %v", err)
	}
	if err := s.CreateKey(ctx, "brief", []byte("again"), longTTL); err != nil {
		t.Errorf("CreateKey after expiry: %v", err)
	}
}

// badNames are refused by every backend: wildcards and separators would
// address other keys in some of them.
var badNames = []string{"", "a b", "a*", "a>", "a.b", ".", "a/b", "a\x00b", "ü", "a\nb", strings.Repeat("x", 1000)}

func testInvalidNames(t *testing.T, s Store) {
	ctx := t.Context()
	for _, name := range badNames {
		ops := map[string]func() error{
			"CreateSession(id)": func() error {
				_, err := s.CreateSession(ctx, newSession(name, "alice", "bob"), longTTL)
				return err
			},
			"CreateSession(initiator)": func() error {
				_, err := s.CreateSession(ctx, newSession("ok", name, "bob"), longTTL)
				return err
			},
			"CreateSession(responder)": func() error {
				_, err := s.CreateSession(ctx, newSession("ok", "alice", name), longTTL)
				return err
			},
			"GetSession": func() error { _, _, err := s.GetSession(ctx, name); return err },
			"UpdateSession": func() error {
				_, err := s.UpdateSession(ctx, newSession(name, "alice", "bob"), 1, longTTL)
				return err
			},
			"ListSessions": func() error { _, err := s.ListSessions(ctx, name); return err },
			"CreateUser":   func() error { return s.CreateUser(ctx, &store.User{Name: name, Role: "user"}) },
			"GetUser":      func() error { _, err := s.GetUser(ctx, name); return err },
			"UpdateUser":   func() error { return s.UpdateUser(ctx, &store.User{Name: name, Role: "user"}) },
			"CreateKey":    func() error { return s.CreateKey(ctx, name, []byte("k"), longTTL) },
			"GetKey":       func() error { _, err := s.GetKey(ctx, name); return err },
			"DeleteKey":    func() error { return s.DeleteKey(ctx, name) },
		}
		for op, fn := range ops {
			if err := fn(); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("%s(%q): got %v, want ErrInvalid", op, name, err)
			}
		}
	}
	// Nothing was stored along the way.
	_, _, err := s.GetSession(ctx, "ok")
	requireErr(t, "GetSession(ok)", err, store.ErrNotFound)
}

func testInvalidArguments(t *testing.T, s Store) {
	ctx := t.Context()
	rev := mustCreate(t, s, newSession("valid", "alice", "bob"), longTTL)
	for op, fn := range map[string]func() error{
		"CreateSession(nil)": func() error { _, err := s.CreateSession(ctx, nil, longTTL); return err },
		"CreateSession(ttl 0)": func() error {
			_, err := s.CreateSession(ctx, newSession("x", "alice", "bob"), 0)
			return err
		},
		"CreateSession(ttl<0)": func() error {
			_, err := s.CreateSession(ctx, newSession("x", "alice", "bob"), -time.Second)
			return err
		},
		"UpdateSession(nil)": func() error { _, err := s.UpdateSession(ctx, nil, rev, longTTL); return err },
		"UpdateSession(ttl 0)": func() error {
			_, err := s.UpdateSession(ctx, newSession("valid", "alice", "bob"), rev, 0)
			return err
		},
		"CreateUser(nil)":  func() error { return s.CreateUser(ctx, nil) },
		"UpdateUser(nil)":  func() error { return s.UpdateUser(ctx, nil) },
		"CreateKey(ttl 0)": func() error { return s.CreateKey(ctx, "x", []byte("k"), 0) },
		"CreateKey(empty)": func() error { return s.CreateKey(ctx, "x", nil, longTTL) },
	} {
		if err := fn(); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", op, err)
		}
	}
	// The refused update left the record alone.
	if _, gotRev, err := s.GetSession(ctx, "valid"); err != nil || gotRev != rev {
		t.Errorf("GetSession(valid) = rev %d, %v; want rev %d", gotRev, err, rev)
	}
}

// testPing: a store that is open answers Ping (the readiness check).
func testPing(t *testing.T, s Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}
