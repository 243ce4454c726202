package deploy_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/internal/hermetic"
	"github.com/sftproject/sft/services/auth"
	"github.com/sftproject/sft/services/events"
	"github.com/sftproject/sft/services/launch"
	"github.com/sftproject/sft/services/store"
	"github.com/sftproject/sft/services/store/redisstore/redistest"
)

// The chaos test's schedule. It is counted in transfers started, not in
// seconds, so what happens when does not depend on the machine's speed.
const (
	chaosTransfers = 200
	chaosPairs     = 20 // sender/receiver user pairs; each pair makes every 20th transfer
	chaosFileSize  = 1 << 20
	chaosSpacing   = 100 * time.Millisecond // 200 starts over about 20 s
	// chaosTTL is the services' session.ttl: short, so the test can wait
	// past the expiry of every session it made.
	chaosTTL = 60 * time.Second
	// chaosGrace is how long past the last expiry the test waits before it
	// reads the final states: time for the expiry timer to be delivered
	// and for a write that met a failover to be retried.
	chaosGrace = 10 * time.Second
	// chaosDuring is how many starts after a kill count as during it in
	// the latency table: two seconds, the time a failover takes.
	chaosDuring = 20
)

// TestChaos is the chaos test of the scaled-out deployment: the 3-node NATS
// cluster of deploy/nats-cluster with JetStream on three replicas, Redis
// under Sentinel (a primary, a replica, three sentinels), and two processes
// each of `sftd auth`, `sftd session` and `sftd key`. Sender/receiver pairs
// make 200 transfers of 1 MiB, started over about 20 s, each side doing what
// `sft-cli send` and `sft-cli recv SESSION` do (a connection of its own with
// the cached login token, then client.Send or client.Receive). Once given
// transfers have started, the test SIGKILLs the NATS node most clients are
// connected to, one session replica, one key replica, and the Redis
// primary (Sentinel promotes the replica; the killed server then comes back
// as a replica, as an operator's supervisor would bring it back).
//
// Once every session is past its TTL it reports, and asserts that
//   - every transfer delivered identical bytes, or failed with an error of
//     its own (not a hang) and a session that ended other than completed;
//   - no session is left in a non-terminal state (read from the store, not
//     through the API, whose reads would expire an overdue session
//     themselves);
//   - every session's events in the stream are complete, in order and
//     once each, and end as the store's record does.
//
// Setup latency is reported, not asserted: p50 and p99 before, during and
// after each kill.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 14 servers and runs for about two minutes")
	}
	// Heavy enough that it runs only where both servers are required (CI).
	if os.Getenv(envRequireNATS) != "1" || os.Getenv(redistest.EnvRequire) != "1" {
		t.Skipf("the chaos test runs with %s=1 %s=1", envRequireNATS, redistest.EnvRequire)
	}
	natsBinary(t)
	bin := buildBinaries(t)
	dir := t.TempDir()
	data := sftdCerts(t, filepath.Join(dir, "data"))
	nodes, natsURL := startNATSCluster(t, data)
	redis := redistest.StartSentinel(t, redistest.SentinelOptions{})

	env := append(hermetic.Home(filepath.Join(dir, "home")),
		"PATH="+os.Getenv("PATH"), "SFT_DATA_DIR="+data,
		"SFT_NATS_URL="+natsURL,
		"SFT_NATS_CA_FILE="+data+"/pki/ca.pem",
		"SFT_NATS_REPLICAS=3",
		"SFT_STORE_BACKEND=redis",
		"SFT_REDIS_URL="+redis.URL(),
		"SFT_REDIS_SENTINEL_MASTER="+redistest.MasterName,
		"SFT_REDIS_SENTINEL_ADDRS="+strings.Join(redis.Addrs(), ","),
		"SFT_SESSION_TTL="+chaosTTL.String(),
	)
	svcs := map[string]*proc{}
	for _, name := range []string{"auth-1", "auth-2", "session-1", "session-2", "key-1", "key-2"} {
		svc, _, _ := strings.Cut(name, "-")
		svcs[name] = start(t, name, dir, env, bin("sftd"), svc)
	}
	for _, p := range svcs {
		p.waitFor(t, "serving on")
	}

	cfg, err := config.Load(env, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := launch.OpenStore(t.Context(), cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	load := newChaosLoad(t, dir, cfg, st)

	kills := []chaosKill{
		{at: 40, name: "NATS node", do: func() string {
			busiest, n := busiestNode(t, nodes)
			name := serverName(t, busiest.Monitor)
			busiest.kill()
			return fmt.Sprintf("%s, the node with the most connections (%d)", name, n)
		}},
		{at: 80, name: "session replica", do: func() string { svcs["session-1"].kill(); return "sftd session (session-1)" }},
		{at: 120, name: "key replica", do: func() string { svcs["key-1"].kill(); return "sftd key (key-1)" }},
		{at: 160, name: "Redis primary", do: func() string {
			primary := redis.Primary()
			primary.Kill()
			killed := time.Now()
			redis.WaitFailover(primary)
			promoted := time.Since(killed)
			redis.Rejoin(primary)
			return fmt.Sprintf("redis-server %s; replica promoted after %s, the killed server back as a replica after %s",
				primary.Addr(), promoted.Round(100*time.Millisecond), time.Since(killed).Round(100*time.Millisecond))
		}},
	}
	load.run(kills)

	// Every session must have ended by its expiry; the test reads the
	// outcome once the last expiry is chaosGrace behind.
	sessions := load.snapshot(data, natsURL)
	load.stopClients()
	checkSchedulesFired(t, data, natsURL)
	load.report(kills, sessions, svcs)
}

// chaosKill is one kill of the schedule: do runs once transfers 0..at-1
// have started, on the test's goroutine, and says what it killed.
type chaosKill struct {
	at   int
	name string
	do   func() string

	when time.Time
	what string
}

// chaosLoad is the transfers of the chaos test and what the test learned
// of them.
type chaosLoad struct {
	t     *testing.T
	dir   string
	conn  broker.ConnOptions // as sft-cli's: where NATS is, no credentials
	peer  client.PeerOptions // sft-cli's defaults
	st    launch.Store
	users []string
	token map[string]string // the cached login tokens, by user

	begin     time.Time
	transfers []*chaosTransfer
	// clients is the context of the transfers' sides; cancelling it is
	// Ctrl-C to each.
	clients context.Context
	cancel  context.CancelFunc
	starter sync.WaitGroup // the goroutine that starts transfers
	wg      sync.WaitGroup // the transfers
}

// chaosTransfer is one transfer: who, its session, its timings and how each
// side ended.
type chaosTransfer struct {
	i        int
	from, to string
	// id is the session, once the sender was told it. The test reads it
	// while a hung transfer may still run.
	idMu sync.Mutex
	id   string
	// start is when the sender called client.Send (its first request);
	// joined is the joined event's time, from the stream.
	start, joined      time.Time
	sendLink, recvLink linkLog
	sendErr, recvErr   error
	end                time.Time // when the last side returned
	received           bool      // the receiver returned success
	sameBytes          bool      // ... and its file holds the bytes sent
	done               atomic.Bool
	hung               bool // still running when the test read the outcome
}

func (tr *chaosTransfer) session() string {
	tr.idMu.Lock()
	defer tr.idMu.Unlock()
	return tr.id
}

func newChaosLoad(t *testing.T, dir string, cfg config.Config, st launch.Store) *chaosLoad {
	t.Helper()
	l := &chaosLoad{
		t: t, dir: dir, st: st, token: map[string]string{},
		conn: broker.ConnOptions{URL: cfg.NATS.URL, CAFile: cfg.CAFile(), Name: "sft-cli"},
		peer: client.PeerOptions{
			Listen: cfg.Peer.Listen, Advertise: cfg.Peer.Advertise, Timeout: cfg.Peer.ConnectTimeout,
			Relay: client.RelayMode(cfg.Peer.Relay), RelayDelay: cfg.Peer.RelayDelay,
		},
	}
	for _, d := range []string{"out", "in"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The users go straight into the store with a cheap password hash, as
	// the bench's do: `sftd user add`'s hash costs a second of CPU each,
	// and logins are not what this test is about.
	cheap := auth.HashParams{Memory: 8 << 10, Time: 1, Threads: 1}
	for p := range chaosPairs {
		l.users = append(l.users, fmt.Sprintf("sender-%02d", p), fmt.Sprintf("receiver-%02d", p))
	}
	for _, u := range l.users {
		hash, err := auth.HashPassword(u+"-password", cheap)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.CreateUser(t.Context(), &store.User{Name: u, PasswordHash: hash, Role: "user", CreatedAt: time.Now()}); err != nil {
			t.Fatalf("create user %s: %v", u, err)
		}
		l.token[u] = l.login(u)
	}
	return l
}

// login does what `sft-cli login` does and returns the token it caches.
func (l *chaosLoad) login(user string) string {
	t := l.t
	t.Helper()
	nc, err := client.DialPassword(t.Context(), l.conn, user, user+"-password")
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	defer nc.Close()
	c := client.New(nc, "", "")
	if _, err := c.Login(t.Context(), user, user+"-password"); err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return c.Token()
}

// run starts the transfers at chaosSpacing, on a goroutine of their own,
// while this goroutine (the test's, so a kill may fail the test) kills as
// the schedule says. It returns once every transfer has started and every
// kill is done.
func (l *chaosLoad) run(kills []chaosKill) {
	l.clients, l.cancel = context.WithCancel(context.Background())
	l.t.Cleanup(l.stopClients)
	l.begin = time.Now()
	started := make(chan int, chaosTransfers)
	l.starter.Go(func() {
		defer close(started)
		for i := range chaosTransfers {
			select {
			case <-l.clients.Done():
				return
			case <-time.After(time.Until(l.begin.Add(time.Duration(i) * chaosSpacing))):
			}
			p := i % chaosPairs
			tr := &chaosTransfer{i: i, from: l.users[2*p], to: l.users[2*p+1]}
			l.transfers = append(l.transfers, tr)
			l.wg.Go(func() { l.transfer(tr) })
			started <- i + 1
		}
	})
	n := 0
	for k := range kills {
		for n < kills[k].at {
			next, ok := <-started
			if !ok {
				l.t.Fatalf("the transfers stopped starting after %d", n)
			}
			n = next
		}
		kills[k].when = time.Now()
		kills[k].what = kills[k].do()
	}
	l.starter.Wait()
}

// stopClients ends whatever transfer still runs, as Ctrl-C would, and
// waits for them.
func (l *chaosLoad) stopClients() {
	if l.cancel != nil {
		l.cancel()
	}
	l.starter.Wait()
	l.wg.Wait()
}

// transfer runs one transfer: the sender as `sft-cli send FILE --to
// RECEIVER`, and, once the sender was told the session, the receiver as
// `sft-cli recv SESSION -o DIR`.
func (l *chaosLoad) transfer(tr *chaosTransfer) {
	defer tr.done.Store(true)
	src := filepath.Join(l.dir, "out", fmt.Sprintf("t%03d.bin", tr.i))
	inbox := filepath.Join(l.dir, "in", fmt.Sprintf("t%03d", tr.i))
	defer os.Remove(src)
	defer os.RemoveAll(inbox)
	payload := make([]byte, chaosFileSize)
	_, _ = rand.Read(payload)
	if err := os.WriteFile(src, payload, 0o600); err != nil {
		tr.sendErr = fmt.Errorf("test: write the file to send: %w", err)
		return
	}
	if err := os.Mkdir(inbox, 0o700); err != nil {
		tr.sendErr = fmt.Errorf("test: make the receiver's directory: %w", err)
		return
	}
	ids := make(chan string, 1)
	sent := make(chan struct{})
	var sender sync.WaitGroup
	sender.Go(func() {
		defer close(sent)
		tr.sendErr = l.send(tr, src, ids)
	})
	var id string
	select {
	case id = <-ids:
	case <-sent:
		select {
		case id = <-ids:
		default:
		}
	}
	if id != "" {
		tr.recvErr = l.receive(tr, id, inbox, payload)
	}
	sender.Wait()
	tr.end = time.Now()
}

// dial connects as user with the cached token, as every sft-cli command
// but login does.
func (l *chaosLoad) dial(user string) (*client.Client, func(), error) {
	nc, err := client.DialToken(l.clients, l.conn, user, l.token[user])
	if err != nil {
		return nil, nil, err
	}
	return client.New(nc, user, l.token[user]), nc.Close, nil
}

func (l *chaosLoad) send(tr *chaosTransfer, src string, ids chan<- string) error {
	c, closeConn, err := l.dial(tr.from)
	if err != nil {
		return err
	}
	defer closeConn()
	srcs, err := client.FilesFrom([]string{src})
	if err != nil {
		return err
	}
	tr.start = time.Now()
	_, err = c.Send(l.clients, client.SendOptions{
		To: tr.to, Sources: srcs, Peer: l.peer, Logger: slog.New(&tr.sendLink),
		OnSession: func(s *api.Session, _ bool) {
			tr.idMu.Lock()
			tr.id = s.ID
			tr.idMu.Unlock()
			ids <- s.ID
		},
	})
	return err
}

func (l *chaosLoad) receive(tr *chaosTransfer, id, inbox string, payload []byte) error {
	c, closeConn, err := l.dial(tr.to)
	if err != nil {
		return err
	}
	defer closeConn()
	out, err := c.Receive(l.clients, client.ReceiveOptions{SessionID: id, Dir: inbox, Peer: l.peer, Logger: slog.New(&tr.recvLink)})
	if err != nil {
		return err
	}
	tr.received = true
	got, err := os.ReadFile(out.Paths[0])
	tr.sameBytes = err == nil && bytes.Equal(got, payload)
	return nil
}

// linkLog is the logger of one side of a transfer. It keeps only when the
// side's peer link first came up: the client logs "peer link up" once the
// link's handshake with the peer completed.
type linkLog struct{ at atomic.Int64 } // Unix ns; 0 until then

func (h *linkLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *linkLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "peer link up" {
		h.at.CompareAndSwap(0, r.Time.UnixNano())
	}
	return nil
}

func (h *linkLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *linkLog) WithGroup(string) slog.Handler      { return h }

func (h *linkLog) time() time.Time {
	if ns := h.at.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// linkUp is when the peer link was up on both sides, or zero.
func (tr *chaosTransfer) linkUp() time.Time {
	s, r := tr.sendLink.time(), tr.recvLink.time()
	if s.IsZero() || r.IsZero() {
		return time.Time{}
	}
	if s.After(r) {
		return s
	}
	return r
}

// chaosSession is what the test knows of one session at the end: its
// record in the store (nil: none) and its events in stream order.
type chaosSession struct {
	id     string
	record *api.Session
	events []streamEvent
}

// streamEvent is an event as the stream holds it.
type streamEvent struct {
	seq uint64
	ev  api.Event
}

// snapshot waits until every session's expiry is chaosGrace behind, or
// every transfer returned, whichever is later, then reads every session's
// record and events. Sessions are those the senders were told of, those
// the stream names and those the store lists for the users.
func (l *chaosLoad) snapshot(data, natsURL string) map[string]*chaosSession {
	t := l.t
	t.Helper()
	done := make(chan struct{})
	go func() { // ends when the transfers have, which stopClients forces
		l.wg.Wait()
		close(done)
	}()
	// No session of this test outlives its TTL past the last start; the
	// snapshot then waits for those that were created late.
	select {
	case <-done:
	case <-time.After(time.Until(l.begin.Add(chaosTransfers*chaosSpacing + chaosTTL + chaosGrace))):
	}
	for {
		sessions := l.read(data, natsURL)
		var last time.Time
		for _, s := range sessions {
			if s.record != nil && s.record.ExpiresAt.After(last) {
				last = s.record.ExpiresAt
			}
			if len(s.events) > 0 && s.events[0].ev.At.Add(chaosTTL).After(last) {
				last = s.events[0].ev.At.Add(chaosTTL)
			}
		}
		if wait := time.Until(last.Add(chaosGrace)); wait > 0 {
			t.Logf("waiting %s: the last session expires at %s", wait.Round(time.Second), last.Format(time.TimeOnly))
			time.Sleep(wait)
			continue
		}
		for _, tr := range l.transfers {
			tr.hung = !tr.done.Load()
		}
		return sessions
	}
}

// read reads every session's record from the store and the whole event
// stream, as the session service's NATS identity.
func (l *chaosLoad) read(data, natsURL string) map[string]*chaosSession {
	t := l.t
	t.Helper()
	ctx := t.Context()
	sessions := map[string]*chaosSession{}
	get := func(id string) *chaosSession {
		if sessions[id] == nil {
			sessions[id] = &chaosSession{id: id}
		}
		return sessions[id]
	}
	for _, tr := range l.transfers {
		if id := tr.session(); id != "" {
			get(id)
		}
	}
	for _, u := range l.users {
		all, err := l.st.ListSessions(ctx, u)
		if err != nil {
			t.Fatalf("list the sessions of %s in the store: %v", u, err)
		}
		for _, s := range all {
			get(s.ID)
		}
	}

	nc := sessionConn(t, data, natsURL)
	defer nc.Close()
	for _, se := range readStream(t, nc) {
		s := get(se.ev.Session)
		s.events = append(s.events, se)
	}

	for id, s := range sessions {
		rec, _, err := l.st.GetSession(ctx, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			t.Fatalf("read session %s from the store: %v", id, err)
		default:
			s.record = rec
		}
	}
	for _, tr := range l.transfers {
		if s := sessions[tr.session()]; s != nil {
			for _, se := range s.events {
				if se.ev.Type == api.EventJoined && tr.joined.IsZero() {
					tr.joined = se.ev.At
				}
			}
		}
	}
	return sessions
}

// sessionConn connects to NATS as the session service.
func sessionConn(t *testing.T, data, natsURL string) *nats.Conn {
	t.Helper()
	nc, err := broker.Connect(t.Context(), broker.ConnOptions{
		URL: natsURL, CAFile: data + "/pki/ca.pem", Name: "chaos-test",
		Service: broker.ServiceSession, NKey: serviceKeys(t, data)[broker.ServiceSession],
	})
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

// checkSchedulesFired fails if the timer stream still holds an expiry
// schedule once every session is past its expiry: each must have fired,
// through the kills, on the three-replica stream.
func checkSchedulesFired(t *testing.T, data, natsURL string) {
	t.Helper()
	nc := sessionConn(t, data, natsURL)
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(t.Context(), "SFT_TIMERS")
	if err != nil {
		t.Fatalf("timer stream: %v", err)
	}
	info, err := st.Info(t.Context(), jetstream.WithSubjectFilter("sft.v1.timers.at.>"))
	if err != nil {
		t.Fatalf("timer stream: %v", err)
	}
	if info.Config.Replicas != 3 || len(info.State.Subjects) != 0 {
		t.Errorf("timer stream on %d replicas holds %d expiry schedules past their time, want 3 and none",
			info.Config.Replicas, len(info.State.Subjects))
	}
}

// readStream reads every event of the event stream, in stream order.
func readStream(t *testing.T, nc *nats.Conn) []streamEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, api.EventStream)
	if err != nil {
		t.Fatalf("event stream: %v", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatalf("event stream: %v", err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("event stream: %v", err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		t.Fatalf("event stream: %v", err)
	}
	defer msgs.Stop()
	var out []streamEvent
	for seq := uint64(0); info.State.Msgs > 0 && seq < info.State.LastSeq; {
		msg, err := msgs.Next(jetstream.NextContext(ctx))
		if err != nil {
			t.Fatalf("read the event stream at %d of %d: %v", seq, info.State.LastSeq, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		seq = md.Sequence.Stream
		ev, err := events.Decode(msg.Data())
		if err != nil {
			t.Errorf("event stream message %d: %v", seq, err)
			continue
		}
		out = append(out, streamEvent{seq: seq, ev: ev})
	}
	return out
}

// report logs what happened as tables and fails the test on every
// transfer, session or event history that broke a promise.
func (l *chaosLoad) report(kills []chaosKill, sessions map[string]*chaosSession, svcs map[string]*proc) {
	t := l.t
	t.Helper()
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	section := func(title string) {
		tw.Flush()
		fmt.Fprintf(&b, "\n%s\n", title)
	}

	section("Kills")
	fmt.Fprintln(tw, "after transfer\tat\tkilled")
	for _, k := range kills {
		fmt.Fprintf(tw, "%d\t+%s\t%s\n", k.at, k.when.Sub(l.begin).Round(100*time.Millisecond), k.what)
	}

	// Transfers: what each failed one said, and which broke a promise.
	var broken []string
	completed := 0
	errs := map[string][]string{} // error, with ids and addresses blanked → the transfers that gave it
	for _, tr := range l.transfers {
		label := fmt.Sprintf("t%03d (session %s, +%s to +%s)", tr.i, cmp.Or(tr.id, "none"), l.since(tr.start), l.since(tr.end))
		var rec *api.Session
		if s := sessions[tr.id]; s != nil {
			rec = s.record
		}
		if tr.sendErr == nil && tr.recvErr == nil && tr.received {
			switch {
			case !tr.sameBytes:
				broken = append(broken, label+": the received file differs from the one sent")
			case rec == nil || rec.State != api.StateCompleted:
				broken = append(broken, label+": both sides succeeded, the session is "+stateOf(rec))
			default:
				completed++
			}
			continue
		}
		for side, err := range map[string]error{"send": tr.sendErr, "recv": tr.recvErr} {
			if err != nil {
				key := side + ": " + blank(err.Error())
				errs[key] = append(errs[key], label)
			}
		}
		why := ""
		switch {
		case tr.hung:
			why = "still running when every session had expired; stopped by the test"
		case tr.id == "":
		case rec == nil:
			why = "its session has no record in the store"
		case !rec.State.Terminal():
			why = "failed, its session still " + string(rec.State)
		case rec.State == api.StateCompleted:
			why = "a side failed although the session completed"
		}
		if why != "" {
			broken = append(broken, fmt.Sprintf("%s: %s; %s", label, why, tr.errors()))
		}
	}
	section(fmt.Sprintf("Transfers: %d of %d completed with identical bytes; distinct errors of the others", completed, len(l.transfers)))
	fmt.Fprintln(tw, "count\terror\texamples")
	for _, e := range sortedByCount(errs) {
		fmt.Fprintf(tw, "%d\t%s\t%s\n", len(errs[e]), e, strings.Join(errs[e][:min(3, len(errs[e]))], "; "))
	}

	// Sessions: final states, and the event history of each.
	byID := map[string]*chaosTransfer{}
	for _, tr := range l.transfers {
		if tr.id != "" {
			byID[tr.id] = tr
		}
	}
	states := map[string]int{}
	histories := map[string]int{}
	var open, badEvents []string
	for _, id := range slices.Sorted(maps.Keys(sessions)) {
		s := sessions[id]
		states[stateOf(s.record)]++
		var types []string
		for _, se := range s.events {
			types = append(types, string(se.ev.Type))
		}
		histories[strings.Join(types, " ")]++
		if s.record != nil && !s.record.State.Terminal() {
			open = append(open, fmt.Sprintf("%s: %s, expired at %s; events: %s", id, s.record.State,
				s.record.ExpiresAt.Format(time.TimeOnly), strings.Join(types, " ")))
		}
		for _, p := range eventProblems(s) {
			line := fmt.Sprintf("%s: %s (events: %s)", id, p, strings.Join(types, " "))
			if tr := byID[id]; tr != nil {
				line += fmt.Sprintf("; t%03d, %s", tr.i, tr.errors())
			}
			badEvents = append(badEvents, line)
		}
	}
	section(fmt.Sprintf("Sessions: %d, read from the store once every expiry was %s behind", len(sessions), chaosGrace))
	fmt.Fprintln(tw, "final state\tsessions")
	for _, st := range slices.Sorted(maps.Keys(states)) {
		fmt.Fprintf(tw, "%s\t%d\n", st, states[st])
	}
	section("Event histories in the stream")
	fmt.Fprintln(tw, "sessions\tevents")
	for _, h := range slices.SortedFunc(maps.Keys(histories), func(a, b string) int { return cmp.Compare(histories[b], histories[a]) }) {
		fmt.Fprintf(tw, "%d\t%s\n", histories[h], cmp.Or(h, "(none)"))
	}

	// Setup latency is from the sender's first request (client.Send: it
	// lists the sender's sessions, then creates one) until the peer link
	// is up on both sides (each side's "peer link up", once the link's
	// handshake completed), which takes the receiver's connection with its
	// token, its join and both sides' key requests. create→joined ends at
	// the time of the joined event, as the session service wrote it.
	section(fmt.Sprintf("Setup latency: sender's first request to the peer link up on both sides (create→joined: to the joined event); "+
		"during a kill = the %d transfers started after it", chaosDuring))
	fmt.Fprintln(tw, "phase\tstarted\ttransfers\tlinked\tsetup p50\tsetup p99\tcreate→joined p50\tcreate→joined p99")
	for _, ph := range l.phases(kills) {
		var setup, joined []time.Duration
		var first, last time.Time
		n := 0
		for _, tr := range l.transfers {
			if l.phaseOf(tr.i, kills) != ph {
				continue
			}
			n++
			if !tr.start.IsZero() && (first.IsZero() || tr.start.Before(first)) {
				first = tr.start
			}
			if tr.start.After(last) {
				last = tr.start
			}
			if up := tr.linkUp(); !up.IsZero() && !tr.start.IsZero() {
				setup = append(setup, up.Sub(tr.start))
			}
			if !tr.joined.IsZero() && !tr.start.IsZero() {
				joined = append(joined, tr.joined.Sub(tr.start))
			}
		}
		if n == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t+%s to +%s\t%d\t%d\t%s\t%s\t%s\t%s\n", ph, l.since(first), l.since(last), n, len(setup),
			percentile(setup, 50), percentile(setup, 99), percentile(joined, 50), percentile(joined, 99))
	}

	section("Warnings and errors the services logged")
	fmt.Fprintln(tw, "process\tcount\tlevel and message")
	for _, name := range slices.Sorted(maps.Keys(svcs)) {
		msgs := logProblems(svcs[name].output())
		for _, m := range sortedByCount(msgs) {
			fmt.Fprintf(tw, "%s\t%d\t%s\n", name, len(msgs[m]), m)
		}
	}
	tw.Flush()
	t.Log(b.String())

	if len(broken) > 0 {
		t.Errorf("%d of %d transfers failed without an error of their own and an ended session:\n%s",
			len(broken), len(l.transfers), strings.Join(broken, "\n"))
	}
	if len(open) > 0 {
		t.Errorf("%d sessions not ended %s after their expiry (want 0):\n%s", len(open), chaosGrace, strings.Join(open, "\n"))
	}
	if len(badEvents) > 0 {
		t.Errorf("%d problems in the sessions' events (want every history complete, in order, once each):\n%s",
			len(badEvents), strings.Join(badEvents, "\n"))
	}
}

// errors says how each side of tr ended.
func (tr *chaosTransfer) errors() string {
	say := func(err error) string {
		if err == nil {
			return "ok"
		}
		return fmt.Sprintf("%q", err)
	}
	recv := say(tr.recvErr)
	if tr.id == "" {
		recv = "not started"
	}
	return fmt.Sprintf("send: %s, recv: %s", say(tr.sendErr), recv)
}

// since is t as seconds since the first start, or "?" for zero.
func (l *chaosLoad) since(t time.Time) string {
	if t.IsZero() {
		return "?"
	}
	return fmt.Sprintf("%.1fs", t.Sub(l.begin).Seconds())
}

// phases are the latency table's rows, in order.
func (l *chaosLoad) phases(kills []chaosKill) []string {
	out := []string{"before any kill"}
	for _, k := range kills {
		out = append(out, "during "+k.name, "after "+k.name)
	}
	return out
}

// phaseOf places transfer i: the chaosDuring transfers started right
// after a kill are during it, the later ones after it.
func (l *chaosLoad) phaseOf(i int, kills []chaosKill) string {
	ph := "before any kill"
	for _, k := range kills {
		switch {
		case i >= k.at+chaosDuring:
			ph = "after " + k.name
		case i >= k.at:
			ph = "during " + k.name
		}
	}
	return ph
}

// eventProblems says what is wrong with one session's events: they must
// start with created, follow the session's state machine (api.State) with
// each event once, end in one terminal event, and end as the store's
// record did. A session with no record may only have failed at creation.
func eventProblems(s *chaosSession) []string {
	var probs []string
	if len(s.events) == 0 {
		return []string{"no events in the stream (the record is " + stateOf(s.record) + ")"}
	}
	seen := map[string]uint64{}
	reported := map[api.Role]bool{}
	var state api.State // "" before created
	var end *api.Event
	for _, se := range s.events {
		ev := se.ev
		if first, dup := seen[ev.ID]; dup {
			probs = append(probs, fmt.Sprintf("event %s stored twice (stream seq %d and %d)", ev.ID, first, se.seq))
			continue
		}
		seen[ev.ID] = se.seq
		if end != nil {
			probs = append(probs, fmt.Sprintf("%s (seq %d) after the session %s", ev.Type, se.seq, end.State))
			continue
		}
		var ok bool
		switch ev.Type {
		case api.EventCreated:
			ok = state == ""
			state = api.StateWaiting
		case api.EventJoined:
			ok = state == api.StateWaiting
			state = api.StateJoined
		case api.EventDeclined:
			ok = state == api.StateWaiting
		case api.EventResumed:
			ok = state == api.StateWaiting || state == api.StateJoined
		case api.EventReported:
			ok = state == api.StateJoined && !reported[ev.Role]
			reported[ev.Role] = true
		case api.EventCompleted:
			ok = state == api.StateJoined && reported[api.RoleInitiator] && reported[api.RoleResponder]
		case api.EventFailed, api.EventCancelled, api.EventExpired:
			ok = state != ""
		}
		if ev.State.Terminal() && ev.Type != api.EventReported {
			end = &ev
		}
		if !ok {
			probs = append(probs, fmt.Sprintf("%s (seq %d) out of order", ev.Type, se.seq))
		}
	}
	switch {
	case end == nil:
		probs = append(probs, "no terminal event; the record is "+stateOf(s.record))
	case s.record == nil && (end.Type != api.EventFailed || len(s.events) != 2):
		probs = append(probs, "no record in the store, yet the events are not those of a failed creation (created, failed)")
	case s.record != nil && s.record.State != end.State:
		probs = append(probs, fmt.Sprintf("the events end %s, the record is %s", end.State, s.record.State))
	}
	return probs
}

func stateOf(rec *api.Session) string {
	if rec == nil {
		return "(no record)"
	}
	return string(rec.State)
}

// percentile is the p-th percentile of ds (nearest rank), or "-".
func percentile(ds []time.Duration, p int) string {
	if len(ds) == 0 {
		return "-"
	}
	ds = slices.Sorted(slices.Values(ds))
	i := max((len(ds)*p+99)/100-1, 0)
	return ds[i].Round(time.Millisecond).String()
}

var (
	sessionIDs = regexp.MustCompile(`\b[a-z2-7]{16}\b`)
	addrs      = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\]):\d+`)
	clock      = regexp.MustCompile(`\d\d:\d\d:\d\d(\.\d+)?`)
	chaosUsers = regexp.MustCompile(`\b(sender|receiver)-\d\d\b`)
	logLine    = regexp.MustCompile(`level=(WARN|ERROR) msg=("(?:[^"\\]|\\.)*"|\S+)(.*)`)
	logErr     = regexp.MustCompile(`\berr=("(?:[^"\\]|\\.)*"|\S+)`)
)

// blank hides what differs between occurrences of one error (session ids,
// addresses, times), so equal errors count together.
func blank(s string) string {
	s = sessionIDs.ReplaceAllString(s, "<session>")
	s = addrs.ReplaceAllString(s, "<addr>")
	s = chaosUsers.ReplaceAllString(s, "<$1>")
	return clock.ReplaceAllString(s, "<time>")
}

// logProblems counts a service's WARN and ERROR lines by level, message
// and error.
func logProblems(out string) map[string][]string {
	msgs := map[string][]string{}
	for line := range strings.Lines(out) {
		m := logLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key := m[1] + " " + m[2]
		if e := logErr.FindStringSubmatch(m[3]); e != nil {
			key += " err=" + blank(e[1])
		}
		msgs[key] = append(msgs[key], line)
	}
	return msgs
}

// sortedByCount is m's keys, the most frequent first.
func sortedByCount(m map[string][]string) []string {
	return slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		return cmp.Or(cmp.Compare(len(m[b]), len(m[a])), cmp.Compare(a, b))
	})
}
