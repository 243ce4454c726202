package session_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/devstack/devstacktest"
	"github.com/sftproject/sft/services/rpc"
	"github.com/sftproject/sft/services/secrets"
	"github.com/sftproject/sft/services/session"
	"github.com/sftproject/sft/services/token"
)

// Relays read the heartbeat timing unlocked, so it is set once, before any
// service starts. A short period lets the tests see a vanished watcher
// noticed in well under a second instead of five.
const (
	testHeartbeat        = 200 * time.Millisecond
	testHeartbeatTimeout = 2 * time.Second
)

func TestMain(m *testing.M) {
	session.SetHeartbeat(testHeartbeat, testHeartbeatTimeout)
	os.Exit(m.Run())
}

// world is a running stack with everyone logged in.
type world struct {
	h                        *devstacktest.Harness
	alice, bob, carol, admin *client.Client
	// svc is a service connection for reading the event stream and for
	// extra replicas. One for the whole test: the broker checks each
	// service login with bcrypt, which is slow under the race detector.
	svc *nats.Conn
}

func newWorld(t *testing.T, tweak func(*config.Config)) *world {
	t.Helper()
	h := devstacktest.Start(t, tweak)
	return &world{
		h: h, alice: h.Login("alice"), bob: h.Login("bob"), carol: h.Login("carol"), admin: h.Login(devstacktest.Admin),
		svc: h.ServiceConn(),
	}
}

// addReplicas starts n more session replicas in the queue group, sharing
// the stack's store, so that requests on one session really run at the
// same time (one replica handles an endpoint's requests one by one). They
// stop when t ends.
func (w *world) addReplicas(t *testing.T, n int) []*replica {
	t.Helper()
	sec, err := secrets.Ensure(w.h.Cfg.SecretsPath())
	if err != nil {
		t.Fatal(err)
	}
	v := token.NewVerifier(sec.SigningKey.Public().(ed25519.PublicKey))
	var out []*replica
	for i := range n {
		out = append(out, startReplica(t, fmt.Sprintf("extra%d", i), w.svc, false, w.h.Stack.Store, v, w.h.Cfg.Session.TTL))
	}
	return out
}

func (w *world) as(name string) *client.Client {
	switch name {
	case "alice":
		return w.alice
	case "bob":
		return w.bob
	case "carol":
		return w.carol
	case devstacktest.Admin:
		return w.admin
	}
	panic("unknown user " + name)
}

// testCtx bounds one test's requests so a hang fails instead of stalling.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func createReq(responder string) api.CreateRequest {
	return api.CreateRequest{
		Responder: responder,
		Manifest:  api.Manifest{Files: []api.File{{Name: "report.pdf", Size: 1234}}},
		PeerAddrs: []string{"127.0.0.1:40000"},
	}
}

// create opens an alice→to session.
func (w *world) create(t *testing.T, from, to string) *api.Session {
	t.Helper()
	s, err := w.as(from).Create(testCtx(t), createReq(to))
	if err != nil {
		t.Fatalf("create %s→%s: %v", from, to, err)
	}
	return s
}

// joined opens an alice→bob session that bob joined.
func (w *world) joined(t *testing.T) *api.Session {
	t.Helper()
	s := w.create(t, "alice", "bob")
	if _, err := w.bob.Join(testCtx(t), s.ID, nil); err != nil {
		t.Fatalf("join: %v", err)
	}
	return s
}

// checks is a successful report of content.
func checks(content string) api.Report {
	sum := sha256.Sum256([]byte(content))
	return api.Report{
		OK:     true,
		Bytes:  int64(len(content)),
		CRC32C: crc32.Checksum([]byte(content), crc32.MakeTable(crc32.Castagnoli)),
		SHA256: hex.EncodeToString(sum[:]),
	}
}

func failure(why string) api.Report { return api.Report{OK: false, Error: why} }

func wantCode(t *testing.T, what string, err error, want api.Code) {
	t.Helper()
	if got := api.CodeOf(err); got != want {
		t.Fatalf("%s: error %v (code %q), want code %q", what, err, got, want)
	}
}

// randomID is a well-formed session id the service never issued.
func randomID(t *testing.T) string {
	t.Helper()
	const alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// watcher is a watch opened by hand, so a test knows when the relay is in
// place (the reply came) and controls the connection it listens on.
type watcher struct {
	Deliver string
	events  chan api.Event
	beats   chan struct{}
	ended   chan string
}

// openWatch sends a watch request on nc and relays what arrives; it answers
// heartbeats unless silent is set.
func openWatch(t *testing.T, nc *nats.Conn, tok, sessionID string, silent bool) (*watcher, error) {
	t.Helper()
	w := &watcher{
		Deliver: nc.NewInbox(),
		events:  make(chan api.Event, 1024),
		beats:   make(chan struct{}, 1024),
		ended:   make(chan string, 1),
	}
	sub, err := nc.Subscribe(w.Deliver, func(m *nats.Msg) {
		switch {
		case m.Header.Get(api.HeartbeatHeader) != "":
			select {
			case w.beats <- struct{}{}:
			default:
			}
			if !silent {
				_ = m.Respond(nil)
			}
		case m.Header.Get(api.WatchEndHeader) != "":
			select {
			case w.ended <- m.Header.Get(api.WatchEndHeader):
			default:
			}
		default:
			// Problems become events the reader fails on: a callback may
			// still run after the test ended, when t must not be used.
			var ev api.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				ev = api.Event{Type: "undecodable", Reason: string(m.Data)}
			}
			select {
			case w.events <- ev:
			default:
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	var rep api.WatchReply
	if err := rpc.Call(testCtx(t), nc, api.SubjectSessionWatch, tok, api.WatchRequest{SessionID: sessionID, Deliver: w.Deliver}, &rep); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	if rep.WatchID == "" {
		t.Error("watch reply without a watch id")
	}
	return w, nil
}

// until collects events until one matches stop, failing after a deadline.
func (w *watcher) until(t *testing.T, stop func(api.Event) bool) []api.Event {
	t.Helper()
	var got []api.Event
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev := <-w.events:
			if ev.Type == "undecodable" {
				t.Fatalf("watch delivered undecodable data %q", ev.Reason)
			}
			got = append(got, ev)
			if stop(ev) {
				return got
			}
		case why := <-w.ended:
			// Events arrive before the end marker, but select picks at
			// random among ready channels: take the ones already queued.
			for {
				select {
				case ev := <-w.events:
					got = append(got, ev)
					if stop(ev) {
						w.ended <- why // for a reader that waits for the end
						return got
					}
					continue
				default:
				}
				break
			}
			t.Fatalf("watch ended (%s) after %d events (%s), before the one awaited", why, len(got), types(got))
		case <-deadline:
			t.Fatalf("no awaited event after %d events", len(got))
		}
	}
}

func isEvent(id string, typ api.EventType) func(api.Event) bool {
	return func(ev api.Event) bool { return ev.Session == id && ev.Type == typ }
}

func types(evs []api.Event) string {
	var s []string
	for _, ev := range evs {
		s = append(s, string(ev.Type))
	}
	return strings.Join(s, ",")
}

// collectWatch runs client.Watch on one session to its end (or for 15s:
// a session that never ends must not stall the test).
func collectWatch(ctx context.Context, c *client.Client, id string) ([]api.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var evs []api.Event
	err := c.Watch(ctx, id, func(ev api.Event) error {
		evs = append(evs, ev)
		return nil
	})
	return evs, err
}

// eventCounts reads, from the stream itself, how many events of each type
// a session has: what was published, whoever watches.
func eventCounts(t *testing.T, nc *nats.Conn, id string) map[api.EventType]uint64 {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(testCtx(t), api.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(testCtx(t), jetstream.WithSubjectFilter(api.SessionEvents(id)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[api.EventType]uint64{}
	for subj, n := range info.State.Subjects {
		out[api.EventType(subj[strings.LastIndexByte(subj, '.')+1:])] = n
	}
	return out
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// parallel runs fn n times at once, released together.
func parallel(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}
