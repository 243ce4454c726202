package redisstore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/sftproject/sft/services/store"
	"github.com/sftproject/sft/services/store/redisstore/redistest"
	"github.com/sftproject/sft/services/store/storetest"
)

var prefixSeq atomic.Int64

// uniquePrefix keeps stores that share a server from sharing records.
func uniquePrefix() string { return fmt.Sprintf("t%d:", prefixSeq.Add(1)) }

func openStore(t *testing.T, opts Options) *Store {
	t.Helper()
	s, err := Open(t.Context(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// rawClient talks to the server directly, to look at what the store wrote.
func rawClient(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatalf("ParseURL: %v", err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rawStore is a store on a Redis of its own under a prefix of its own,
// with a raw client of that Redis to look at what the store wrote.
func rawStore(t *testing.T) (*Store, *redis.Client, string) {
	t.Helper()
	srv := redistest.Start(t, redistest.Options{})
	prefix := uniquePrefix()
	return openStore(t, Options{URL: srv.URL(), Prefix: prefix}), rawClient(t, srv), prefix
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	storetest.Run(t, func(t *testing.T) storetest.Store {
		s, err := Open(t.Context(), Options{URL: srv.URL(), Prefix: uniquePrefix()})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s // Run closes it
	})
}

func newSession(id, initiator, responder string) *api.Session {
	return &api.Session{ID: id, State: api.StateWaiting, Initiator: initiator, Responder: responder}
}

// TestTTLsInRedis checks the TTLs really sit on the Redis keys, the index
// included.
func TestTTLsInRedis(t *testing.T) {
	t.Parallel()
	s, rc, prefix := rawStore(t)
	ctx := t.Context()

	const ttl = 2 * time.Second
	if _, err := s.CreateSession(ctx, newSession("s1", "alice", "bob"), ttl); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	if err := s.CreateKey(ctx, "s1", []byte("sealed"), ttl); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if err := s.CreateUser(ctx, &store.User{Name: "alice", Role: "user"}); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	// The member sets outlive the record by their slack.
	for key, most := range map[string]time.Duration{"s:s1": ttl, "k:s1": ttl, "m:alice": ttl + ttl/indexSlack, "m:bob": ttl + ttl/indexSlack} {
		pttl, err := rc.PTTL(ctx, prefix+key).Result()
		if err != nil {
			t.Fatalf("PTTL %s: %v", key, err)
		}
		if pttl <= 0 || pttl > most {
			t.Errorf("PTTL %s = %v, want in (0, %v]", key, pttl, most)
		}
	}
	// Users never expire: PTTL -1 means "exists, no expiry".
	if pttl, err := rc.PTTL(ctx, prefix+"u:alice").Result(); err != nil || pttl != -1 {
		t.Errorf("PTTL of the user = %v, %v; want -1 (no expiry)", pttl, err)
	}
}

// TestMemberIndexOutlivesRecord checks that after every write each
// member's index entry, and its set, lasts at least as long as the record
// (else the session would vanish from ls while it is still kept), and that
// a write within the entry's slack leaves the sets alone.
func TestMemberIndexOutlivesRecord(t *testing.T) {
	t.Parallel()
	s, rc, prefix := rawStore(t)
	ctx := t.Context()

	check := func(step string) (scores []float64) {
		t.Helper()
		recordAt, err := rc.PExpireTime(ctx, prefix+"s:s1").Result()
		if err != nil || recordAt <= 0 {
			t.Fatalf("%s: PEXPIRETIME of the record = %v, %v", step, recordAt, err)
		}
		for _, user := range []string{"alice", "bob"} {
			score, err := rc.ZScore(ctx, prefix+"m:"+user, "s1").Result()
			if err != nil {
				t.Fatalf("%s: %s's index has no entry: %v", step, user, err)
			}
			setAt, err := rc.PExpireTime(ctx, prefix+"m:"+user).Result()
			if err != nil {
				t.Fatalf("%s: PEXPIRETIME of %s's index: %v", step, user, err)
			}
			if score < float64(recordAt.Milliseconds()) || setAt < time.Duration(score)*time.Millisecond {
				t.Errorf("%s: %s's entry lasts to %v and its set to %v, the record to %v", step, user,
					time.Duration(score)*time.Millisecond, setAt, recordAt)
			}
			scores = append(scores, score)
		}
		return scores
	}

	const ttl = time.Minute
	rev, err := s.CreateSession(ctx, newSession("s1", "alice", "bob"), ttl)
	if err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	created := check("create")
	if rev, err = s.UpdateSession(ctx, newSession("s1", "alice", "bob"), rev, ttl); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	if same := check("update within the slack"); !slices.Equal(same, created) {
		t.Errorf("an update within the slack moved the index entries from %v to %v", created, same)
	}
	if rev, err = s.UpdateSession(ctx, newSession("s1", "alice", "bob"), rev, 2*ttl); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	if pushed := check("update past the slack"); slices.Equal(pushed, created) {
		t.Errorf("an update that outlives the index entries left them at %v", pushed)
	}
	if _, err = s.UpdateSession(ctx, newSession("s1", "alice", "bob"), rev, time.Second); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	check("update with a shorter TTL")
}

// TestNoLeakAfterExpiry checks that once every session expired nothing is
// left but users and the revision counter: no records, no index sets.
func TestNoLeakAfterExpiry(t *testing.T) {
	t.Parallel()
	s, rc, prefix := rawStore(t)
	ctx := t.Context()

	rev, err := s.CreateSession(ctx, newSession("s1", "alice", "bob"), time.Second)
	if err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	// A second session pushes alice's index out further; its update takes
	// the refresh path.
	if _, err := s.CreateSession(ctx, newSession("s2", "alice", "carol"), time.Second); err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	if _, err := s.UpdateSession(ctx, newSession("s1", "alice", "bob"), rev, 1500*time.Millisecond); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	if err := s.CreateKey(ctx, "s1", []byte("sealed"), time.Second); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if n, err := rc.ZCard(ctx, prefix+"m:alice").Result(); err != nil || n != 2 {
		t.Fatalf("alice's index holds %d entries (%v), want 2", n, err)
	}

	deadline := time.Now().Add(8 * time.Second)
	for {
		// EXISTS also expires a key whose time is up, as any access does.
		n, err := rc.Exists(ctx, prefix+"m:alice", prefix+"m:bob", prefix+"m:carol",
			prefix+"s:s1", prefix+"s:s2", prefix+"k:s1").Result()
		if err != nil {
			t.Fatalf("EXISTS: %v", err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys still exist after every TTL passed", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The due index is emptied by the replicas that sweep it.
	ids, err := s.ClaimDue(ctx, 10, time.Second)
	if err != nil || !slices.Equal(ids, []string{"s1", "s2"}) {
		t.Fatalf("ClaimDue = %v, %v; want both sessions", ids, err)
	}
	if err := s.DoneDue(ctx, ids...); err != nil {
		t.Fatalf("DoneDue: %v", err)
	}
	keys, err := rc.Keys(ctx, prefix+"*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	if !slices.Equal(keys, []string{prefix + "rev"}) {
		t.Errorf("keys left behind: %v, want only the revision counter", keys)
	}
}

// TestDueIndex: a session is due at its expiry by the server's clock, a
// claim hands it to one caller for a lease, writes after its creation
// leave it as it is, and DoneDue takes it out.
func TestDueIndex(t *testing.T) {
	t.Parallel()
	s, rc, prefix := rawStore(t)
	ctx := t.Context()
	claim := func(lease time.Duration) []string {
		t.Helper()
		ids, err := s.ClaimDue(ctx, 100, lease)
		if err != nil {
			t.Fatalf("ClaimDue: %v", err)
		}
		slices.Sort(ids)
		return ids
	}

	soon, later := newSession("soon", "alice", "bob"), newSession("later", "alice", "bob")
	soon.ExpiresAt = time.Now().Add(time.Second)
	later.ExpiresAt = time.Now().Add(time.Hour)
	rev, err := s.CreateSession(ctx, soon, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateSession(ctx, later, time.Hour); err != nil {
		t.Fatal(err)
	}
	if ids := claim(time.Second); len(ids) != 0 {
		t.Fatalf("claimed %v before anything was due", ids)
	}
	time.Sleep(time.Until(soon.ExpiresAt) + 50*time.Millisecond)
	if ids := claim(2 * time.Second); !slices.Equal(ids, []string{"soon"}) {
		t.Fatalf("claimed %v at the first expiry, want [soon]", ids)
	}
	if ids := claim(time.Second); len(ids) != 0 {
		t.Fatalf("claimed %v again within the lease", ids)
	}

	// Writes after the creation leave the entry alone, an ending one too:
	// the replica that ends a session takes it out once its events are out.
	soon.State = api.StateJoined
	if rev, err = s.UpdateSession(ctx, soon, rev, time.Hour); err != nil {
		t.Fatal(err)
	}
	soon.State = api.StateCompleted
	if _, err = s.UpdateSession(ctx, soon, rev, time.Hour); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if ids := claim(time.Second); !slices.Equal(ids, []string{"soon"}) {
		t.Fatalf("claimed %v once the lease ran out, want [soon]", ids)
	}
	if err := s.DoneDue(ctx, "soon"); err != nil {
		t.Fatal(err)
	}
	if n, err := rc.ZCard(ctx, prefix+"due").Result(); err != nil || n != 1 {
		t.Errorf("due index holds %d entries (%v), want 1 (later)", n, err)
	}
	if err := s.DoneDue(ctx); err != nil {
		t.Errorf("DoneDue of nothing: %v", err)
	}

	for _, tc := range []struct {
		n     int
		lease time.Duration
	}{{0, time.Second}, {maxClaim + 1, time.Second}, {1, time.Millisecond}} {
		if _, err := s.ClaimDue(ctx, tc.n, tc.lease); err == nil {
			t.Errorf("ClaimDue(%d, %v) succeeded", tc.n, tc.lease)
		}
	}
}

// TestClaimDueOnce: replicas claiming at the same time never get the same
// session, and together get them all.
func TestClaimDueOnce(t *testing.T) {
	t.Parallel()
	s, _, _ := rawStore(t)
	ctx := t.Context()
	const sessions, claimers = 300, 4
	var want []string
	for i := range sessions {
		sess := newSession(fmt.Sprintf("s%03d", i), "alice", "bob")
		sess.ExpiresAt = time.Now()
		if _, err := s.CreateSession(ctx, sess, time.Hour); err != nil {
			t.Fatal(err)
		}
		want = append(want, sess.ID)
	}
	var (
		mu  sync.Mutex
		got []string
		wg  sync.WaitGroup
	)
	for range claimers {
		wg.Go(func() {
			for {
				ids, err := s.ClaimDue(ctx, 7, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if len(ids) == 0 {
					return
				}
				mu.Lock()
				got = append(got, ids...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("claimed %d sessions (%d distinct), want each of %d once", len(got), len(slices.Compact(slices.Clone(got))), sessions)
	}
}

// TestListSkipsDanglingIndex covers an index entry whose record vanished
// early: it must not surface, nor break the listing.
func TestListSkipsDanglingIndex(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	prefix := uniquePrefix()
	s := openStore(t, Options{URL: srv.URL(), Prefix: prefix})
	ctx := t.Context()
	for _, id := range []string{"gone", "kept"} {
		if _, err := s.CreateSession(ctx, newSession(id, "alice", "bob"), time.Hour); err != nil {
			t.Fatalf("CreateSession(%s): %v", id, err)
		}
	}
	if err := rawClient(t, srv).Del(ctx, prefix+"s:gone").Err(); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	list, err := s.ListSessions(ctx, "alice")
	if err != nil {
		t.Fatalf("ListSessions: %v", err)
	}
	if len(list) != 1 || list[0].ID != "kept" {
		t.Fatalf("ListSessions = %v, want only kept", list)
	}
}

// TestRevisionsNotReused checks a session recreated under an expired id
// gets revisions its predecessor never had, so a stale compare-and-set from
// before the expiry cannot land on the new record.
func TestRevisionsNotReused(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	s := openStore(t, Options{URL: srv.URL(), Prefix: uniquePrefix()})
	ctx := t.Context()
	old, err := s.CreateSession(ctx, newSession("x", "alice", "bob"), time.Hour)
	if err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	if err := rawClient(t, srv).Del(ctx, s.sessionKey("x")).Err(); err != nil { // as if it expired
		t.Fatalf("DEL: %v", err)
	}
	if _, err := s.CreateSession(ctx, newSession("x", "carol", "dave"), time.Hour); err != nil {
		t.Fatalf("CreateSession again: %v", err)
	}
	_, err = s.UpdateSession(ctx, newSession("x", "alice", "bob"), old, time.Hour)
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("UpdateSession with the old incarnation's revision: %v, want ErrConflict", err)
	}
}

// TestRestart checks that a clean restart keeps every record, revisions
// included, and the store's client reconnects by itself.
func TestRestart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		stop func(*redistest.Server)
	}{
		{"Graceful", (*redistest.Server).Stop},
		// With appendfsync always, a write acknowledged before the crash is
		// on disk.
		{"Kill", (*redistest.Server).Kill},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t, redistest.Options{})
			s := openStore(t, Options{URL: srv.URL(), Prefix: uniquePrefix()})
			ctx := t.Context()

			sess, rev := writeDurable(t, s)
			tc.stop(srv)
			srv.Restart()
			checkDurable(t, s, sess, rev, "after restart")

			// The TTL survived too.
			pttl, err := rawClient(t, srv).PTTL(ctx, s.sessionKey("durable")).Result()
			if err != nil || pttl <= 0 || pttl > time.Hour {
				t.Errorf("PTTL after restart = %v, %v", pttl, err)
			}
		})
	}
}

// writeDurable creates a session, moves it on, and stores a key and a
// user: the writes that must survive a crash. It returns the session and
// its revision.
func writeDurable(t *testing.T, s *Store) (*api.Session, uint64) {
	t.Helper()
	ctx := t.Context()
	sess := newSession("durable", "alice", "bob")
	rev, err := s.CreateSession(ctx, sess, time.Hour)
	if err != nil {
		t.Fatalf("CreateSession: %v", err)
	}
	sess.State = api.StateJoined
	if rev, err = s.UpdateSession(ctx, sess, rev, time.Hour); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	if err := s.CreateKey(ctx, "durable", []byte("sealed\x00key"), time.Hour); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	if err := s.CreateUser(ctx, &store.User{Name: "alice", Role: "admin"}); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	return sess, rev
}

// checkDurable checks what writeDurable wrote is all there, and that its
// revision works exactly once: the counter did not go back. when says
// after what.
func checkDurable(t *testing.T, s *Store, sess *api.Session, rev uint64, when string) {
	t.Helper()
	ctx := t.Context()
	got, gotRev, err := s.GetSession(ctx, "durable")
	if err != nil {
		t.Fatalf("GetSession %s: %v", when, err)
	}
	if got.State != api.StateJoined || gotRev != rev {
		t.Fatalf("%s: state %s rev %d, want %s rev %d", when, got.State, gotRev, api.StateJoined, rev)
	}
	if ids := listIDs(t, s, "bob"); !slices.Equal(ids, []string{"durable"}) {
		t.Errorf("ListSessions(bob) %s = %v", when, ids)
	}
	if key, err := s.GetKey(ctx, "durable"); err != nil || string(key) != "sealed\x00key" {
		t.Errorf("GetKey %s = %q, %v", when, key, err)
	}
	if u, err := s.GetUser(ctx, "alice"); err != nil || u.Role != "admin" {
		t.Errorf("GetUser %s = %+v, %v", when, u, err)
	}
	next := *sess
	next.State = api.StateCompleted
	newRev, err := s.UpdateSession(ctx, &next, rev, time.Hour)
	if err != nil {
		t.Fatalf("UpdateSession with the revision from before, %s: %v", when, err)
	}
	if newRev <= rev {
		t.Errorf("revision %s %d, not above %d: the counter went back", when, newRev, rev)
	}
	if _, err := s.UpdateSession(ctx, &next, rev, time.Hour); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second UpdateSession with the revision from before, %s: %v, want ErrConflict", when, err)
	}
}

func listIDs(t *testing.T, s *Store, user string) []string {
	t.Helper()
	list, err := s.ListSessions(t.Context(), user)
	if err != nil {
		t.Fatalf("ListSessions(%s): %v", user, err)
	}
	var ids []string
	for _, sess := range list {
		ids = append(ids, sess.ID)
	}
	slices.Sort(ids)
	return ids
}

// deadPort returns a loopback port nothing listens on.
func deadPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	const password = "correct-horse-battery"
	srv := redistest.Start(t, redistest.Options{Password: password})
	addr := srv.Addr()
	dead, dead2 := deadPort(t), deadPort(t)

	for _, tc := range []struct {
		name    string
		opts    Options
		want    string // the whole message when exact, else a part of it
		exact   bool
		invalid bool
		secret  string
	}{
		{name: "Refused", opts: Options{URL: "redis://" + dead},
			want: "redisstore: cannot reach Redis at " + dead + ": connection refused", exact: true},
		{name: "WrongPassword", opts: Options{URL: "redis://:wrong-password-1@" + addr},
			want: "Redis at " + addr + " refused the username or password", secret: "wrong-password-1"},
		{name: "WrongPasswordOverride", opts: Options{URL: srv.URL(), Password: "wrong-password-2"},
			want: "refused the username or password", secret: "wrong-password-2"},
		{name: "NoPassword", opts: Options{URL: "redis://" + addr},
			want: "Redis at " + addr + " needs a password"},
		{name: "RefusedWithPassword", opts: Options{URL: "redis://:hunter2-secret@" + dead},
			want: "cannot reach Redis at " + dead, secret: "hunter2-secret"},
		{name: "BadURL", opts: Options{URL: "redis://:hunter2-secret@host:port:x/0"},
			want: "Redis URL", invalid: true, secret: "hunter2-secret"},
		{name: "BadScheme", opts: Options{URL: "http://" + addr}, want: "want redis:// or rediss://", invalid: true},
		{name: "NoURL", opts: Options{}, want: "no Redis URL", invalid: true},
		{name: "SkipVerify", opts: Options{URL: "rediss://" + addr + "?skip_verify=true"},
			want: "skip_verify is not supported", invalid: true},
		{name: "CAFileWithoutTLS", opts: Options{URL: "redis://" + addr, CAFile: "/etc/hostname"},
			want: "use rediss://", invalid: true},
		{name: "UnknownOption", opts: Options{URL: "redis://" + addr + "?bogus=1"},
			want: "bogus", invalid: true},
		{name: "SentinelsRefused", opts: Options{URL: "redis://:hunter2-secret@unused/0", SentinelMaster: "sft",
			SentinelAddrs: []string{dead, dead2}, SentinelPassword: "sentinel-secret-3"},
			want: `cannot reach Redis at master "sft" of sentinels ` + dead + "," + dead2, secret: "sentinel-secret-3"},
		{name: "SentinelWithoutAddrs", opts: Options{URL: "redis://" + addr, SentinelMaster: "sft"},
			want: "without sentinel addresses", invalid: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.Context(), tc.opts)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			msg := err.Error()
			t.Logf("error: %s", msg)
			if tc.exact && msg != tc.want || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want %q", msg, tc.want)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			for _, secret := range []string{password, tc.secret} {
				if secret != "" && strings.Contains(msg, secret) {
					t.Errorf("error reveals a password: %q", msg)
				}
			}
			if tc.invalid != errors.Is(err, store.ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = %v, want %v", !tc.invalid, tc.invalid)
			}
		})
	}

	t.Run("PasswordOverride", func(t *testing.T) {
		s := openStore(t, Options{URL: "redis://:stale-password@" + addr, Password: password})
		if err := s.CreateUser(t.Context(), &store.User{Name: "alice", Role: "user"}); err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
	})
}

// TestOpenHonoursContext checks Open gives up when ctx does, against a
// server that accepts connections and never answers.
func TestOpenHonoursContext(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() { // ends when l closes
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err = Open(ctx, Options{URL: "redis://" + l.Addr().String()})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open against a silent server: %v, want context.DeadlineExceeded", err)
	}
	if want := "cannot reach Redis at " + l.Addr().String(); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to contain %q", err, want)
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := writeCerts(t, dir)
	srv := redistest.Start(t, redistest.Options{Password: "tls-pass", TLS: ca})
	if !strings.HasPrefix(srv.URL(), "rediss://") {
		t.Fatalf("URL = %s", srv.URL())
	}

	t.Run("TrustedCA", func(t *testing.T) {
		s := openStore(t, Options{URL: srv.URL(), CAFile: ca.CAFile, Prefix: uniquePrefix()})
		ctx := t.Context()
		if err := s.CreateKey(ctx, "k", []byte("sealed"), time.Minute); err != nil {
			t.Fatalf("CreateKey over TLS: %v", err)
		}
		if got, err := s.GetKey(ctx, "k"); err != nil || string(got) != "sealed" {
			t.Fatalf("GetKey over TLS = %q, %v", got, err)
		}
	})
	t.Run("UntrustedCA", func(t *testing.T) {
		other := writeCerts(t, t.TempDir())
		_, err := Open(t.Context(), Options{URL: srv.URL(), CAFile: other.CAFile})
		if err == nil || !strings.Contains(err.Error(), "set CAFile") {
			t.Fatalf("Open with a CA that did not sign the server's certificate: %v", err)
		}
		t.Logf("error: %v", err)
	})
	t.Run("SystemRoots", func(t *testing.T) {
		_, err := Open(t.Context(), Options{URL: srv.URL()})
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("Open trusting only the system roots: %v", err)
		}
	})
	t.Run("NotPEM", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(t.Context(), Options{URL: srv.URL(), CAFile: bad})
		if !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("Open with a CA file without certificates: %v", err)
		}
	})
	t.Run("PlainClientOnTLSPort", func(t *testing.T) {
		_, err := Open(t.Context(), Options{URL: strings.Replace(srv.URL(), "rediss://", "redis://", 1)})
		if err == nil {
			t.Fatal("plain-text Open succeeded against a TLS-only port")
		}
		t.Logf("error: %v", err)
	})
}

// writeCerts makes a CA and a server certificate for 127.0.0.1 signed by
// it, as PEM files in dir.
func writeCerts(t *testing.T, dir string) *redistest.TLS {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "SFT test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	files := &redistest.TLS{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "server.pem"),
		KeyFile:  filepath.Join(dir, "server.key"),
	}
	for path, block := range map[string]*pem.Block{
		files.CAFile:   {Type: "CERTIFICATE", Bytes: caDER},
		files.CertFile: {Type: "CERTIFICATE", Bytes: srvDER},
		files.KeyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func TestTTLMillis(t *testing.T) {
	for _, tc := range []struct {
		in      time.Duration
		want    int64
		invalid bool
	}{
		{in: -time.Second, invalid: true},
		{in: 0, invalid: true},
		{in: 999 * time.Millisecond, invalid: true},
		{in: time.Second, want: 1000},
		{in: time.Second + time.Nanosecond, want: 1001},
		{in: 1500 * time.Millisecond, want: 1500},
		{in: time.Duration(1<<63 - 1), want: (1<<63-1)/int64(time.Millisecond) + 1},
	} {
		got, err := ttlMillis(tc.in)
		if tc.invalid {
			if !errors.Is(err, store.ErrInvalid) {
				t.Errorf("ttlMillis(%v) error = %v, want ErrInvalid", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ttlMillis(%v) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// TestProtocol checks the store speaks RESP2 unless its URL asks for
// RESP3.
func TestProtocol(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	rc := rawClient(t, srv)
	for _, tc := range []struct{ query, want string }{
		{"?client_name=resp-default", "resp=2"},
		{"?client_name=resp-asked&protocol=3", "resp=3"},
	} {
		s := openStore(t, Options{URL: srv.URL() + tc.query, Prefix: uniquePrefix()})
		if err := s.Ping(t.Context()); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		list, err := rc.ClientList(t.Context()).Result()
		if err != nil {
			t.Fatalf("CLIENT LIST: %v", err)
		}
		name := strings.TrimPrefix(strings.Split(tc.query, "&")[0], "?client_name=")
		var found bool
		for _, line := range strings.Split(list, "\n") {
			fields := strings.Fields(line)
			if slices.Contains(fields, "name="+name) {
				found = true
				if !slices.Contains(fields, tc.want) {
					t.Errorf("URL %s: the store's connection is not %s: %s", tc.query, tc.want, line)
				}
			}
		}
		if !found {
			t.Errorf("URL %s: no connection named %s in\n%s", tc.query, name, list)
		}
	}
}

// TestConfigWarnings checks Open warns about server settings that would
// lose records.
func TestConfigWarnings(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	rc := rawClient(t, srv)
	ctx := t.Context()
	var buf syncbuf.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))

	openStore(t, Options{URL: srv.URL(), Logger: logger})
	if buf.String() != "" {
		t.Fatalf("warnings on a durable, non-evicting server:\n%s", buf.String())
	}
	for _, kv := range [][2]string{{"appendonly", "no"}, {"maxmemory-policy", "allkeys-lru"}} {
		if err := rc.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			t.Fatalf("CONFIG SET %s: %v", kv[0], err)
		}
	}
	openStore(t, Options{URL: srv.URL(), Logger: logger})
	for _, want := range []string{"appendonly off", "maxmemory-policy=allkeys-lru"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, buf.String())
		}
	}
}

// TestIssueKey checks the key service's one round trip: which requests
// store the key they bring and which find one or none, and records whose
// view an older version left out or behind.
func TestIssueKey(t *testing.T) {
	t.Parallel()
	s, rc, prefix := rawStore(t)
	checkIssueKey(t, s, rc, prefix)
}

// checkIssueKey runs IssueKey's cases on s; with rc, the raw client of s's
// server, and s's prefix, those of records an older version wrote too.
func checkIssueKey(t *testing.T, s *Store, rc *redis.Client, prefix string) {
	t.Helper()
	ctx := t.Context()
	const grace = time.Minute
	expires := time.Now().Add(time.Hour).Truncate(time.Millisecond).UTC()
	// The key found is returned to anyone: the key service decides who
	// gets it.
	type call struct {
		user, key   string // the caller and the key it brings
		want        string // the key it gets back ("": none)
		wantCreated bool
	}
	cases := []struct {
		name   string
		state  api.State
		past   bool                                             // ExpiresAt already passed
		before func(t *testing.T, id string, sess *api.Session) // what an older version did to the record
		calls  []call
	}{
		{name: "joined", state: api.StateJoined, calls: []call{
			{"alice", "first", "first", true}, {"bob", "second", "first", false}, {"alice", "third", "first", false}}},
		{name: "waiting", state: api.StateWaiting, calls: []call{{"alice", "k", "", false}}},
		{name: "not a member", state: api.StateJoined, calls: []call{{"carol", "k", "", false}, {"bob", "k2", "k2", true}}},
		{name: "past its expiry", state: api.StateJoined, past: true, calls: []call{{"alice", "k", "", false}}},
		{name: "ended", state: api.StateCompleted, calls: []call{{"alice", "k", "", false}}},
		{name: "no view", state: api.StateJoined, before: func(t *testing.T, id string, _ *api.Session) {
			if err := rc.HDel(ctx, prefix+"s:"+id, "view").Err(); err != nil {
				t.Fatal(err)
			}
		}, calls: []call{{"alice", "first", "first", true}, {"bob", "second", "first", false}, {"carol", "k", "first", false}}},
		// An older version's write leaves the view of the revision before.
		{name: "view left behind", state: api.StateJoined, before: func(t *testing.T, id string, sess *api.Session) {
			ended := *sess
			ended.State = api.StateCancelled
			data, err := json.Marshal(&ended)
			if err != nil {
				t.Fatal(err)
			}
			if err := rc.HSet(ctx, prefix+"s:"+id, "rev", "999999", "data", data).Err(); err != nil {
				t.Fatal(err)
			}
		}, calls: []call{{"alice", "k", "", false}}},
	}
	for i, tc := range cases {
		if tc.before != nil && rc == nil {
			continue
		}
		id := fmt.Sprintf("issue%d", i)
		sess := newSession(id, "alice", "bob")
		sess.State, sess.ExpiresAt = tc.state, expires
		if tc.past {
			sess.ExpiresAt = time.Now().Add(-time.Second).Truncate(time.Millisecond).UTC()
		}
		if _, err := s.CreateSession(ctx, sess, time.Hour); err != nil {
			t.Fatalf("%s: CreateSession: %v", tc.name, err)
		}
		if tc.before != nil {
			tc.before(t, id, sess)
		}
		for _, c := range tc.calls {
			got, key, created, err := s.IssueKey(ctx, id, c.user, []byte(c.key), grace)
			if err != nil || string(key) != c.want || created != c.wantCreated {
				t.Fatalf("%s: IssueKey(%s, %q) = %q, created %v, %v; want %q, created %v",
					tc.name, c.user, c.key, key, created, err, c.want, c.wantCreated)
			}
			if got.ID != id || got.Initiator != "alice" || got.Responder != "bob" || !got.ExpiresAt.Equal(sess.ExpiresAt) {
				t.Errorf("%s: session = %+v; want %s of alice and bob expiring at %v", tc.name, got, id, sess.ExpiresAt)
			}
			if tc.name != "view left behind" && got.State != tc.state {
				t.Errorf("%s: state %s, want %s", tc.name, got.State, tc.state)
			}
			if tc.name == "view left behind" && got.State != api.StateCancelled {
				t.Errorf("%s: state %s: the view of an older revision was taken over the record", tc.name, got.State)
			}
		}
		stored, err := s.GetKey(ctx, id)
		want := ""
		for _, c := range tc.calls {
			if c.wantCreated {
				want = c.key
			}
		}
		if want == "" && !errors.Is(err, store.ErrNotFound) || want != "" && (err != nil || string(stored) != want) {
			t.Errorf("%s: stored key %q, %v; want %q", tc.name, stored, err, want)
		}
		if want != "" && rc != nil {
			// The key lasts until the session's expiry plus grace.
			ttl, err := rc.PTTL(ctx, prefix+"k:"+id).Result()
			if left := time.Until(expires) + grace; err != nil || ttl > left+time.Second || ttl < left-time.Minute {
				t.Errorf("%s: key TTL %v, %v; want about %v", tc.name, ttl, err, left)
			}
		}
	}
	if _, _, _, err := s.IssueKey(ctx, "gonegonegone", "alice", []byte("k"), grace); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("IssueKey of no session: %v, want ErrNotFound", err)
	}
	if _, err := s.GetKey(ctx, "gonegonegone"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a key was stored for a session that is not there: %v", err)
	}
}

// The write that ends a session deletes its key in the same script; the
// writes before it leave the key alone.
func TestEndingSessionDeletesKey(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t, redistest.Options{})
	s := openStore(t, Options{URL: srv.URL(), Prefix: uniquePrefix()})
	ctx := t.Context()
	sess := newSession("ending", "alice", "bob")
	rev, err := s.CreateSession(ctx, sess, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateKey(ctx, "ending", []byte("sealed"), time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, state := range []api.State{api.StateJoined, api.StateCompleted} {
		sess.State = state
		if rev, err = s.UpdateSession(ctx, sess, rev, time.Hour); err != nil {
			t.Fatalf("UpdateSession to %s: %v", state, err)
		}
		_, err := s.GetKey(ctx, "ending")
		if ended := state.Terminal(); ended != errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: GetKey = %v; the key should be gone only once the session ended", state, err)
		}
	}
}

// TestCreateChecked: a new session is checked and stored in one step; a
// refused one leaves nothing behind, and creates at the same time never
// pass the open sessions' limit together.
func TestCreateChecked(t *testing.T) {
	t.Parallel()
	s, rc, prefix := rawStore(t)
	ctx := t.Context()
	for _, u := range []string{"bob", "carol"} {
		if err := s.CreateUser(ctx, &store.User{Name: u, Role: "user"}); err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
	}
	now := time.Now()
	for i, state := range []api.State{api.StateWaiting, api.StateJoined, api.StateCompleted} {
		sess := newSession(fmt.Sprintf("open%d", i), "alice", "bob")
		sess.State, sess.ExpiresAt = state, now.Add(time.Hour)
		if _, err := s.CreateSession(ctx, sess, time.Hour); err != nil {
			t.Fatalf("CreateSession: %v", err)
		}
	}
	fresh := func(id, initiator, responder string) *api.Session {
		sess := newSession(id, initiator, responder)
		sess.ExpiresAt = time.Now().Add(time.Hour)
		return sess
	}
	for _, tc := range []struct {
		name    string
		sess    *api.Session
		maxOpen int
		stored  bool
		open    int
		exists  bool
	}{
		{"under the limit", fresh("new1", "alice", "bob"), 3, true, 0, true},
		{"at the limit", fresh("new2", "alice", "bob"), 3, false, 3, true},
		{"no such responder", fresh("new3", "alice", "nobody"), 10, false, 3, false},
		{"initiator with none open", fresh("new4", "bob", "carol"), 1, true, 0, true},
	} {
		rev, open, exists, err := s.CreateChecked(ctx, tc.sess, time.Hour, tc.maxOpen)
		if err != nil || (rev > 0) != tc.stored || open != tc.open || exists != tc.exists {
			t.Errorf("%s: CreateChecked = %d, %d, %v, %v; want stored %v, %d, %v", tc.name, rev, open, exists, err, tc.stored, tc.open, tc.exists)
		}
		_, _, err = s.GetSession(ctx, tc.sess.ID)
		if stored := err == nil; stored != tc.stored {
			t.Errorf("%s: record stored %v, want %v (%v)", tc.name, stored, tc.stored, err)
		}
		if err := rc.ZScore(ctx, prefix+"due", tc.sess.ID).Err(); (err == nil) != tc.stored {
			t.Errorf("%s: in the due index: %v, want %v", tc.name, err == nil, tc.stored)
		}
	}
	if _, _, _, err := s.CreateChecked(ctx, fresh("new1", "alice", "bob"), time.Hour, 10); !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateChecked of an existing session: %v, want ErrExists", err)
	}
	if _, _, _, err := s.CreateChecked(ctx, fresh("new5", "alice", "bad name!"), time.Hour, 10); err == nil {
		t.Error("CreateChecked to an invalid responder name: no error")
	}

	// Twenty creates at once for a limit of five: five are stored.
	const limit = 5
	var stored atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			rev, _, _, err := s.CreateChecked(ctx, fresh(fmt.Sprintf("race%d", i), "carol", "bob"), time.Hour, limit)
			if err != nil {
				t.Error(err)
			}
			if rev > 0 {
				stored.Add(1)
			}
		})
	}
	wg.Wait()
	if n := stored.Load(); n != limit {
		t.Errorf("%d of 20 concurrent creates stored, want the limit %d", n, limit)
	}
}
