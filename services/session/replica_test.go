package session_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nkeys"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/link"
	"github.com/sftproject/sft/services/rpc"
	"github.com/sftproject/sft/services/session"
	"github.com/sftproject/sft/services/store"
	"github.com/sftproject/sft/services/store/kvstore"
	"github.com/sftproject/sft/services/token"
)

// bareStack is a broker and a state store with no session service, so a
// test decides how many replicas run. (The dev stack always runs one that
// a test cannot stop.)
type bareStack struct {
	t        *testing.T
	url, ca  string
	password string
	signing  ed25519.PrivateKey
	log      *slog.Logger
}

const serviceUser = "sft-service"

func startBareStack(t *testing.T) *bareStack {
	t.Helper()
	dir := t.TempDir()
	pki, err := broker.EnsureDevPKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	_, signing, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b := &bareStack{
		t: t, ca: pki.CAFile, password: rand.Text(), signing: signing,
		log: slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	iss, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	xk, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	keys := broker.CalloutKeys{Issuer: iss, XKey: xk}
	issPub, xkPub, err := keys.Public()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := broker.StartEmbedded(testCtx(t), broker.EmbeddedOptions{
		StoreDir: filepath.Join(dir, "jetstream"), PKI: pki,
		ServiceUser: serviceUser, ServicePassword: b.password, Logger: b.log,
		CalloutIssuer: issPub, CalloutXKey: xkPub,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	b.url = srv.ClientURL()
	// Clients connect with their tokens, admitted as the auth service
	// would admit them (there is none here).
	v := token.NewVerifier(signing.Public().(ed25519.PublicKey))
	sub, err := broker.ServeCallout(t.Context(), b.serviceConn(), keys, func(_ context.Context, c broker.Credentials) (broker.Grant, error) {
		claims, err := v.Verify(c.Token)
		if err != nil {
			return broker.Grant{}, err
		}
		return broker.Grant{User: claims.User, Expires: claims.ExpiresAt}, nil
	}, b.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return b
}

// addUsers creates user records (no password: tokens are issued directly).
func addUsers(t *testing.T, st session.Store, names ...string) {
	t.Helper()
	for _, u := range names {
		if err := st.(*kvstore.Store).CreateUser(testCtx(t), &store.User{Name: u, PasswordHash: "unused", Role: "user", CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

func (b *bareStack) serviceConn() *nats.Conn {
	b.t.Helper()
	nc, err := broker.Connect(testCtx(b.t), broker.ConnOptions{URL: b.url, CAFile: b.ca, User: serviceUser, Password: b.password})
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(nc.Close)
	return nc
}

func (b *bareStack) store(nc *nats.Conn) *kvstore.Store {
	b.t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		b.t.Fatal(err)
	}
	st, err := kvstore.Open(testCtx(b.t), js, kvstore.Options{Logger: b.log})
	if err != nil {
		b.t.Fatal(err)
	}
	return st
}

// client is user's API client on its own connection, with a token signed
// as the auth service would.
func (b *bareStack) client(user string) *client.Client {
	b.t.Helper()
	tok, _, err := token.NewIssuer(b.signing, time.Hour).Issue(user, "user")
	if err != nil {
		b.t.Fatal(err)
	}
	nc, err := client.DialToken(testCtx(b.t), broker.ConnOptions{URL: b.url, CAFile: b.ca}, user, tok)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(nc.Close)
	return client.New(nc, user, tok)
}

// replica is one session service with its own connection and store client.
type replica struct {
	name    string
	svc     *session.Service
	micro   micro.Service
	cancel  context.CancelFunc
	nc      *nats.Conn
	ownConn bool
	store   session.Store
}

func (b *bareStack) startReplica(name string) *replica {
	b.t.Helper()
	nc := b.serviceConn()
	return startReplica(b.t, name, nc, true, b.store(nc), token.NewVerifier(b.signing.Public().(ed25519.PublicKey)), time.Hour)
}

// startReplica starts a session service on nc; the test's end stops it.
// ownConn says whether nc is the replica's alone, to drain when it stops.
func startReplica(t *testing.T, name string, nc *nats.Conn, ownConn bool, st session.Store, v rpc.Verifier, ttl time.Duration) *replica {
	t.Helper()
	s := session.New(session.Options{
		Store: st, Verifier: v, CheckManifest: link.CheckManifest,
		TTL: ttl, Retention: time.Hour,
		// Tests share a few users across many sessions.
		Limits: session.Limits{OpenSessions: 1000, SessionsPerMinute: 1000},
		Logger: slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("replica", name),
	})
	ctx, cancel := context.WithCancel(context.Background())
	m, err := s.Start(ctx, nc)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r := &replica{name: name, svc: s, micro: m, cancel: cancel, nc: nc, ownConn: ownConn, store: st}
	t.Cleanup(r.stop)
	return r
}

// stop shuts the replica down without dropping a request: the endpoints
// stop taking new ones, draining its connection lets every request already
// delivered be answered (their store calls still work while it drains),
// and only then does the background work end.
func (r *replica) stop() {
	if r.micro.Stopped() {
		return
	}
	_ = r.micro.Stop()
	if r.ownConn {
		closed := make(chan struct{})
		r.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if err := r.nc.Drain(); err == nil {
			<-closed
		}
	}
	r.cancel()
	r.svc.Wait()
}

func (r *replica) served() int {
	n := 0
	for _, e := range r.micro.Stats().Endpoints {
		n += e.NumRequests
	}
	return n
}

// TestReplicas runs two replicas in the queue group and stops each in
// turn, under a steady stream of reads: every request is answered and
// every session survives.
func TestReplicas(t *testing.T) {
	t.Parallel()
	b := startBareStack(t)
	alice, bob := b.client("alice"), b.client("bob")
	ctx := testCtx(t)
	a := b.startReplica("a")
	r2 := b.startReplica("b")
	addUsers(t, a.store, "alice", "bob")

	var ids []string
	create := func(n int) {
		t.Helper()
		for range n {
			s, err := alice.Create(ctx, createReq("bob"))
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			ids = append(ids, s.ID)
		}
	}
	create(6)

	// Reads keep flowing while replicas come and go.
	var (
		loadWG   sync.WaitGroup
		reads    atomic.Int64
		failures atomic.Int64
	)
	loadCtx, stopLoad := context.WithCancel(ctx)
	first := ids[0]
	for i := range 2 {
		loadWG.Go(func() {
			c := []*client.Client{alice, bob}[i]
			for loadCtx.Err() == nil {
				rctx, cancel := context.WithTimeout(loadCtx, 5*time.Second)
				_, err := c.Get(rctx, first)
				cancel()
				if err != nil && loadCtx.Err() == nil {
					failures.Add(1)
					t.Errorf("read during a replica change: %v", err)
				}
				reads.Add(1)
			}
		})
	}
	defer func() {
		stopLoad()
		loadWG.Wait()
	}()
	waitReads := func() {
		t.Helper()
		n := reads.Load()
		eventually(t, 10*time.Second, "reads continue", func() bool { return reads.Load() > n+20 })
	}

	waitReads()
	a.stop()
	waitReads()
	// Only b is left: everything created on either replica is there.
	for _, id := range ids {
		if _, err := bob.Join(ctx, id, nil); err != nil {
			t.Fatalf("join %s with only b running: %v", id, err)
		}
	}
	create(2)
	servedB := r2.served()

	a2 := b.startReplica("a2")
	// Stop b only once a2 takes requests: a2's subscriptions must have
	// reached the server, or the reads in between find no responder.
	eventually(t, 10*time.Second, "a2 serves", func() bool { return a2.served() > 0 })
	r2.stop()
	waitReads()
	// Only a2 is left.
	for i, id := range ids {
		if i < 6 {
			for _, c := range []*client.Client{alice, bob} {
				if _, err := c.Report(ctx, id, checks("x")); err != nil {
					t.Fatalf("report on %s with only a2 running: %v", id, err)
				}
			}
		} else if _, err := alice.Cancel(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
	}
	create(1)
	stopLoad()
	loadWG.Wait()

	list, err := bob.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]api.State{}
	for i, id := range ids {
		switch {
		case i < 6:
			want[id] = api.StateCompleted
		case i < 8:
			want[id] = api.StateCancelled
		default:
			want[id] = api.StateWaiting
		}
	}
	got := map[string]api.State{}
	for _, s := range list {
		got[s.ID] = s.State
	}
	for id, st := range want {
		if got[id] != st {
			t.Errorf("session %s: %q, want %s", id, got[id], st)
		}
	}
	if len(got) != len(want) {
		t.Errorf("bob has %d sessions, want %d", len(got), len(want))
	}
	if servedB == 0 || a2.served() == 0 {
		t.Errorf("a replica left alone served nothing: b %d, a2 %d", servedB, a2.served())
	}
	t.Logf("%d reads, %d failed; b served %d, a2 %d", reads.Load(), failures.Load(), servedB, a2.served())
}
