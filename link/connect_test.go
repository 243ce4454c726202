package link

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// hang is a candidate's Dial that never connects, as to an address where
// packets are dropped: it returns when ctx ends.
func hang(ctx context.Context) (net.Conn, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// refusedAddr is a loopback address where nothing listens.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// testRelay stands in for the relay service: it pairs the connections made
// to it two by two, tells each it is paired with one byte, and forwards
// bytes between them. Its dial returns once the connection is paired, as
// the relay client's does.
type testRelay struct {
	*hub
	dials atomic.Int32
}

func startRelay(t *testing.T) *testRelay {
	t.Helper()
	r := &testRelay{}
	r.hub = startHub(t, func(h *hub) {
		for {
			a, err := h.accept()
			if err != nil {
				return
			}
			b, err := h.accept()
			if err != nil {
				return
			}
			a.Write([]byte{1})
			b.Write([]byte{1})
			h.join(a, b)
		}
	})
	return r
}

func (r *testRelay) dial(ctx context.Context) (net.Conn, error) {
	r.dials.Add(1)
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", r.addr())
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { nc.SetReadDeadline(aLongTimeAgo) })
	_, err = io.ReadFull(nc, make([]byte, 1))
	if !stop() {
		nc.Close()
		return nil, ctx.Err()
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("relay: %w", err)
	}
	return nc, nil
}

func (r *testRelay) candidate() Candidate {
	return Candidate{Path: PathRelay, Addr: r.addr(), Dial: r.dial}
}

// startCutter forwards connections to target, except that it closes the
// first cut of them as soon as their first handshake message arrived, as
// a listener that made room for others does.
func startCutter(t *testing.T, target string, cut int) *hub {
	return startHub(t, func(h *hub) {
		for n := 0; ; n++ {
			c, err := h.accept()
			if err != nil {
				return
			}
			if n < cut {
				io.ReadFull(c, make([]byte, handshake1Len))
				c.Close()
				continue
			}
			server, err := h.dial(target)
			if err != nil {
				c.Close()
				continue
			}
			h.join(c, server)
		}
	})
}

// linkGoroutines lists the goroutines that run Connect's or Accept's
// machinery.
func linkGoroutines(markers ...string) []string {
	if len(markers) == 0 {
		markers = []string{"link.(*dialer)", "link.(*acceptor)", "link.initiate(", "link.respond("}
	}
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, m := range markers {
			if strings.Contains(g, m) {
				found = append(found, g)
				break
			}
		}
	}
	return found
}

// checkNoLeak fails if goroutines of Connect or Accept are still running;
// call it once both returned. A goroutine that signalled its end may take
// a moment to be gone, hence the wait.
func checkNoLeak(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := linkGoroutines()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d goroutines of Connect or Accept outlived them:\n%s", len(left), strings.Join(left, "\n\n"))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// linkRun is one Accept against one Connect, and a transfer over the
// connection they agreed on.
type linkRun struct {
	recv, send               outcome
	acceptPath, acceptAddr   string
	connectPath, connectAddr string
	took                     time.Duration // Connect's
}

// connectTransfer runs Accept on ln (nil: relay only) with aopts as the
// receiver and Connect to cands with dopts as the sender of data. If
// Connect fails, Accept is cancelled.
func (e *env) connectTransfer(ln net.Listener, aopts Options, cands []Candidate, dopts Options, data []byte) linkRun {
	e.t.Helper()
	ctx, cancel := context.WithCancel(e.t.Context())
	defer cancel()
	m := manifest("file.bin", len(data))
	var (
		r  linkRun
		wg sync.WaitGroup
	)
	wg.Go(func() {
		c, err := Accept(ctx, ln, e.key, e.sid, aopts)
		if err != nil {
			r.recv = outcome{err: err}
			return
		}
		defer c.Close()
		r.acceptPath, r.acceptAddr = c.Path(), c.PeerAddr()
		r.recv = recvSide(ctx, m, e.dir, ReceiveOptions{})(c)
	})
	start := time.Now()
	c, err := Connect(ctx, cands, e.key, e.sid, dopts)
	r.took = time.Since(start)
	if err != nil {
		r.send = outcome{err: err}
		cancel()
	} else {
		r.connectPath, r.connectAddr = c.Path(), c.PeerAddr()
		r.send = sendSide(ctx, m, bytes.NewReader(data))(c)
		c.Close()
	}
	wg.Wait()
	return r
}

// delivered fails unless the run's transfer put exactly data in place.
func (r linkRun) delivered(t *testing.T, dir string, data []byte) {
	t.Helper()
	if r.send.err != nil || r.recv.err != nil {
		t.Fatalf("connect and send: %v; accept and receive: %v", r.send.err, r.recv.err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "file.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("received %d bytes that differ from the %d sent", len(got), len(data))
	}
}

func TestConnectCandidates(t *testing.T) {
	tests := []struct {
		name     string
		listen   bool // the accepting side listens (else relay only)
		relay    bool // the accepting side also waits through the relay
		cands    func(e *env, r *testRelay) []Candidate
		tune     func(dial, accept *Options)
		wantPath string
	}{
		{
			name:   "two blackholed addresses before the working one",
			listen: true,
			cands: func(e *env, _ *testRelay) []Candidate {
				return []Candidate{
					{Path: PathDirect, Addr: "198.51.100.2:40001", Dial: hang},
					{Path: PathDirect, Addr: "203.0.113.5:40001", Dial: hang},
					{Path: PathDirect, Addr: e.addr()},
				}
			},
			tune:     func(d, _ *Options) { d.DialTimeout = time.Minute },
			wantPath: PathDirect,
		},
		{
			// With an hour's stagger, only the failure can start the next.
			name:   "a refused address does not wait for the stagger",
			listen: true,
			cands: func(e *env, _ *testRelay) []Candidate {
				return []Candidate{{Path: PathDirect, Addr: refusedAddr(e.t)}, {Path: PathDirect, Addr: e.addr()}}
			},
			tune:     func(d, _ *Options) { d.Stagger = time.Hour },
			wantPath: PathDirect,
		},
		{
			name: "direct wins over relay when both work", listen: true, relay: true,
			cands: func(e *env, r *testRelay) []Candidate {
				return []Candidate{r.candidate(), {Path: PathDirect, Addr: e.addr()}}
			},
			wantPath: PathDirect,
		},
		{
			// With an hour's relay delay, only the failure can start the relay.
			name: "relay at once when every direct address refuses", listen: true, relay: true,
			cands: func(e *env, r *testRelay) []Candidate {
				return []Candidate{{Path: PathDirect, Addr: refusedAddr(e.t)}, r.candidate()}
			},
			tune:     func(d, a *Options) { d.RelayDelay, a.RelayDelay = time.Hour, 50*time.Millisecond },
			wantPath: PathRelay,
		},
		{
			name: "relay after the delay when the direct address hangs", relay: true,
			cands: func(e *env, r *testRelay) []Candidate {
				return []Candidate{{Path: PathDirect, Addr: "198.51.100.2:40001", Dial: hang}, r.candidate()}
			},
			tune:     func(d, _ *Options) { d.RelayDelay, d.DialTimeout = 200*time.Millisecond, time.Minute },
			wantPath: PathRelay,
		},
		{
			name: "relay only", relay: true,
			cands:    func(e *env, r *testRelay) []Candidate { return []Candidate{r.candidate()} },
			wantPath: PathRelay,
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			r := startRelay(t)
			dopts, aopts := e.opts, e.opts
			var ln net.Listener
			if tc.listen {
				ln = e.ln
			}
			if tc.relay {
				aopts.Relay, aopts.RelayAddr = r.dial, "relay.example:443"
			}
			if tc.tune != nil {
				tc.tune(&dopts, &aopts)
			}
			data := randomBytes(300_000, uint64(i))
			run := e.connectTransfer(ln, aopts, tc.cands(e, r), dopts, data)
			t.Logf("Connect took %s", run.took)
			run.delivered(t, e.dir, data)
			if run.connectPath != tc.wantPath || run.acceptPath != tc.wantPath {
				t.Errorf("paths: Connect %s, Accept %s; want %s on both", run.connectPath, run.acceptPath, tc.wantPath)
			}
			switch tc.wantPath {
			case PathDirect:
				if run.connectAddr != e.addr() || hostOf(tcpAddr(t, run.acceptAddr)) != "127.0.0.1" {
					t.Errorf("peer addresses: Connect %q, Accept %q", run.connectAddr, run.acceptAddr)
				}
				if tc.relay && r.dials.Load() != 0 {
					t.Errorf("the relay was dialled %d times though the direct path won before the relay delay", r.dials.Load())
				}
			case PathRelay:
				if run.connectAddr != r.addr() || run.acceptAddr != "relay.example:443" {
					t.Errorf("peer addresses: Connect %q, Accept %q", run.connectAddr, run.acceptAddr)
				}
			}
			if run.took > 15*time.Second {
				t.Errorf("Connect took %s: attempts that hang held up the one that works", run.took)
			}
			checkNoLeak(t)
		})
	}
}

func tcpAddr(t *testing.T, s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatalf("peer address %q: %v", s, err)
	}
	return a
}

// When both paths complete the handshake at about the same time, both ends
// must still keep the same connection.
func TestBothEndsAgree(t *testing.T) {
	chosen := map[string]int{}
	for i := range 30 {
		e := newEnv(t)
		r := startRelay(t)
		aopts, dopts := e.opts, e.opts
		aopts.Relay, aopts.RelayDelay = r.dial, -1
		dopts.RelayDelay = -1
		// Shift the race a little each round, so either path can win.
		delay := func(d time.Duration, dial func(context.Context) (net.Conn, error)) func(context.Context) (net.Conn, error) {
			return func(ctx context.Context) (net.Conn, error) {
				time.Sleep(d)
				return dial(ctx)
			}
		}
		var nd net.Dialer
		direct := func(ctx context.Context) (net.Conn, error) { return nd.DialContext(ctx, "tcp", e.addr()) }
		cands := []Candidate{
			{Path: PathDirect, Addr: e.addr(), Dial: delay(time.Duration(i%5)*time.Millisecond, direct)},
			{Path: PathRelay, Addr: r.addr(), Dial: delay(time.Duration(4-i%5)*time.Millisecond, r.dial)},
		}
		data := randomBytes(20_000, uint64(i))
		run := e.connectTransfer(e.ln, aopts, cands, dopts, data)
		run.delivered(t, e.dir, data)
		if run.connectPath != run.acceptPath {
			t.Fatalf("round %d: Connect kept the %s connection, Accept the %s one", i, run.connectPath, run.acceptPath)
		}
		chosen[run.connectPath]++
	}
	t.Logf("connections chosen: %v", chosen)
	checkNoLeak(t)
}

// A dialer whose connect is refused, or whose handshake the other end cuts,
// tries again within its deadline.
func TestConnectRetries(t *testing.T) {
	t.Run("handshake cut", func(t *testing.T) {
		e := newEnv(t)
		cutter := startCutter(t, e.addr(), 2)
		data := randomBytes(100_000, 1)
		run := e.connectTransfer(e.ln, e.opts, []Candidate{{Path: PathDirect, Addr: cutter.addr()}}, e.opts, data)
		t.Logf("Connect took %s", run.took)
		run.delivered(t, e.dir, data)
		if n := strings.Count(e.logs.String(), "attempt failed"); n != 2 {
			t.Errorf("%d failed attempts logged, want the 2 cut ones:\n%s", n, e.logs)
		}
		checkNoLeak(t)
	})
	t.Run("refused until the listener is up", func(t *testing.T) {
		e := newEnv(t)
		addr := e.addr()
		e.ln.Close()
		ctx := t.Context()
		accepted := make(chan error, 1)
		go func() {
			time.Sleep(300 * time.Millisecond)
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				accepted <- err
				return
			}
			c, err := Accept(ctx, ln, e.key, e.sid, e.opts)
			if err == nil {
				c.Close()
			}
			accepted <- err
		}()
		start := time.Now()
		c, err := Dial(ctx, addr, e.key, e.sid, e.opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Dial took %s", time.Since(start))
		c.Close()
		if err := <-accepted; err != nil {
			t.Fatal(err)
		}
		checkNoLeak(t)
	})
}

func TestConnectErrors(t *testing.T) {
	relayDown := func(ctx context.Context) (net.Conn, error) { return nil, errors.New("relay refused: no such ticket") }
	tests := []struct {
		name  string
		cands func(e *env) []Candidate
		peer  string
		want  string // the error's text; {refused} and {cut} stand for those addresses
		is    []error
	}{
		{
			name: "no answer and refused",
			cands: func(e *env) []Candidate {
				return []Candidate{{Path: PathDirect, Addr: "198.51.100.2:40001", Dial: hang}, {Path: PathDirect, Addr: e.addr()}}
			},
			peer: "bob's peer",
			want: "cannot reach bob's peer at 198.51.100.2:40001 (no answer), {refused} (connection refused); no relay",
			is:   []error{syscall.ECONNREFUSED, os.ErrDeadlineExceeded},
		},
		{
			name: "relay down too",
			cands: func(e *env) []Candidate {
				return []Candidate{{Path: PathDirect, Addr: e.addr()}, {Path: PathRelay, Addr: "relay.example:443", Dial: relayDown}}
			},
			want: "cannot reach the peer at {refused} (connection refused); relay relay.example:443 (relay refused: no such ticket)",
			is:   []error{syscall.ECONNREFUSED},
		},
		{
			name: "relay only",
			cands: func(e *env) []Candidate {
				return []Candidate{{Path: PathRelay, Addr: "relay.example:443", Dial: relayDown}}
			},
			want: "cannot reach the peer through the relay at relay.example:443 (relay refused: no such ticket)",
		},
		{
			name: "handshake always cut",
			cands: func(e *env) []Candidate {
				return []Candidate{{Path: PathDirect, Addr: e.ln.Addr().String()}}
			},
			want: "cannot reach the peer at {cut} (peer handshake failed: the peer closed the connection during the handshake; it does not hold this session's key, or waits for another session); no relay",
			is:   []error{ErrHandshake},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			refused := e.addr()
			cut := refused
			if strings.Contains(tc.want, "{cut}") {
				e.ln = startCutter(t, "", 1<<30).ln
				cut = e.addr()
			} else {
				e.ln.Close()
			}
			o := e.opts
			o.DialTimeout, o.PeerName = 500*time.Millisecond, tc.peer
			_, err := Connect(t.Context(), tc.cands(e), e.key, e.sid, o)
			want := strings.NewReplacer("{refused}", refused, "{cut}", cut).Replace(tc.want)
			if err == nil || err.Error() != want {
				t.Errorf("error:\n%v\nwant:\n%s", err, want)
			}
			for _, target := range tc.is {
				if !errors.Is(err, target) {
					t.Errorf("error does not match %v", target)
				}
			}
			checkNoLeak(t)
		})
	}
	t.Run("cancelled", func(t *testing.T) {
		e := newEnv(t)
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(100*time.Millisecond, cancel)
		_, err := Connect(ctx, []Candidate{{Path: PathDirect, Addr: "198.51.100.2:40001", Dial: hang}}, e.key, e.sid, e.opts)
		if !errors.Is(err, context.Canceled) || err.Error() != "cannot reach the peer at 198.51.100.2:40001 (no answer); no relay: context canceled" {
			t.Errorf("error = %v", err)
		}
		checkNoLeak(t)
	})
	t.Run("bad candidates", func(t *testing.T) {
		e := newEnv(t)
		for _, cands := range [][]Candidate{nil, {{Path: "carrier pigeon", Addr: "x"}}, {{Path: PathDirect}}} {
			if _, err := Connect(t.Context(), cands, e.key, e.sid, e.opts); err == nil {
				t.Errorf("Connect accepted %+v", cands)
			}
		}
	})
}

func TestAcceptRelay(t *testing.T) {
	t.Run("retries until the relay pairs", func(t *testing.T) {
		e := newEnv(t)
		r := startRelay(t)
		var calls atomic.Int32
		aopts := e.opts
		aopts.Relay = func(ctx context.Context) (net.Conn, error) {
			if calls.Add(1) <= 2 {
				return nil, errors.New("the other side is not there yet")
			}
			return r.dial(ctx)
		}
		data := randomBytes(10_000, 2)
		run := e.connectTransfer(nil, aopts, []Candidate{r.candidate()}, e.opts, data)
		run.delivered(t, e.dir, data)
		if calls.Load() < 3 || run.acceptPath != PathRelay {
			t.Errorf("Relay called %d times, path %s", calls.Load(), run.acceptPath)
		}
		if run.acceptAddr != r.addr() {
			t.Errorf("PeerAddr without RelayAddr = %q, want the relay connection's remote address %s", run.acceptAddr, r.addr())
		}
		checkNoLeak(t)
	})
	t.Run("gives up with the relay's error", func(t *testing.T) {
		e := newEnv(t)
		aopts := e.opts
		aopts.Relay = func(ctx context.Context) (net.Conn, error) { return nil, errors.New("relay refused: no such ticket") }
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		_, err := Accept(ctx, nil, e.key, e.sid, aopts)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "the relay failed: relay refused: no such ticket") {
			t.Errorf("error = %v", err)
		}
		checkNoLeak(t)
	})
	t.Run("needs a source", func(t *testing.T) {
		e := newEnv(t)
		if _, err := Accept(t.Context(), nil, e.key, e.sid, e.opts); err == nil {
			t.Error("Accept without listener or relay did not fail")
		}
	})
}

// firstMessage is a valid first handshake message for e's session.
func firstMessage(t *testing.T, e *env) []byte {
	hs, err := newHandshake(e.key, e.sid, true)
	if err != nil {
		t.Fatal(err)
	}
	out, _, _, err := hs.WriteMessage(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{byte(len(out) >> 8), byte(len(out))}, out...)
}

// A listener under attack still lets the peer through. Each attack runs
// while Accept waits; ongoing ones keep going until the transfer is done.
func TestListenerUnderAttack(t *testing.T) {
	type attack func(t *testing.T, e *env, a *attacker)
	silent := func(n int) attack {
		return func(t *testing.T, e *env, a *attacker) {
			for range n {
				a.open()
			}
		}
	}
	tests := []struct {
		name    string
		before  attack // done before the peer dials
		ongoing attack // runs while the peer dials and sends
		warmup  int    // connections the ongoing attack makes before the peer dials
	}{
		{name: "port scan", before: func(t *testing.T, e *env, a *attacker) {
			for range 100 {
				a.open().Close()
			}
		}},
		{name: "port scan while the peer dials", warmup: 300, ongoing: func(t *testing.T, e *env, a *attacker) {
			for a.live() {
				a.open().Close()
			}
		}},
		{name: "garbage", before: func(t *testing.T, e *env, a *attacker) {
			for i := range 40 {
				junk := [][]byte{
					[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
					{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc}, // a TLS ClientHello's start
					append([]byte{0, 48}, randomBytes(48, uint64(i))...),
					{0xff, 0xff},
					randomBytes(1000, uint64(i)),
				}[i%5]
				a.open().Write(junk)
			}
		}},
		{name: "silent connections, more than fit", before: silent(maxPending + 36)},
		{name: "silent connections while the peer dials", warmup: 300, ongoing: func(t *testing.T, e *env, a *attacker) {
			for a.live() {
				a.open()
			}
		}},
		{name: "slow-loris, a byte a second", before: func(t *testing.T, e *env, a *attacker) {
			for range maxPending + 8 {
				a.open().Write([]byte{0})
			}
		}, ongoing: func(t *testing.T, e *env, a *attacker) {
			// The frame header says 48 bytes, a first message's length.
			for b := byte(48); a.sleep(time.Second); b = 0 {
				for _, c := range a.opened() {
					c.Write([]byte{b})
				}
			}
		}},
		{name: "half-open after a valid first message", before: func(t *testing.T, e *env, a *attacker) {
			for range maxPending + 8 {
				a.open().Write(firstMessage(t, e))
			}
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			data := randomBytes(200_000, uint64(i))
			m := manifest("file.bin", len(data))
			received := e.receiveAsync(ctx, m)
			a := newAttacker(t, e.addr())
			if tc.before != nil {
				tc.before(t, e, a)
				if a.err != nil {
					t.Fatalf("attacking connection refused while Accept waits: %v", a.err)
				}
			}
			var wg sync.WaitGroup
			if tc.ongoing != nil {
				wg.Go(func() { tc.ongoing(t, e, a) })
				for a.count() < tc.warmup && a.sleep(time.Millisecond) {
				}
			}
			a.sample()
			// Shorter than the first-message timeout: the peer must get
			// in past the attack, not wait until it times out.
			dopts := e.opts
			dopts.DialTimeout = 3 * time.Second
			start := time.Now()
			c, err := Dial(ctx, e.addr(), e.key, e.sid, dopts)
			if err != nil {
				a.stop()
				wg.Wait()
				t.Fatalf("the peer could not connect: %v", err)
			}
			t.Logf("the peer connected after %s, %d attacking connections so far", time.Since(start), a.count())
			send := sendSide(ctx, m, bytes.NewReader(data))(c)
			c.Close()
			a.sample()
			a.stop()
			wg.Wait()
			run := linkRun{send: send, recv: <-received}
			run.delivered(t, e.dir, data)
			t.Logf("%d attacking connections in all; up to %d handshakes at once", a.count(), a.most)
			// A goroutine that freed its place may not have returned yet.
			if a.most > maxPending+4 {
				t.Errorf("up to %d connections in their handshake at once, want at most %d", a.most, maxPending)
			}
			checkNoLeak(t)
		})
	}
}

// attacker opens connections to a listener, keeping at most a window of
// them open, and samples how many Accept serves at once.
type attacker struct {
	t     *testing.T
	addr  string
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	conns []net.Conn
	total int
	most  int   // the most handshake goroutines seen at once
	err   error // the first failure to connect
}

// attackWindow bounds the attacker's open connections (and descriptors).
const attackWindow = 300

func newAttacker(t *testing.T, addr string) *attacker {
	a := &attacker{t: t, addr: addr, done: make(chan struct{})}
	t.Cleanup(func() {
		a.stop()
		for _, c := range a.opened() {
			c.Close()
		}
	})
	return a
}

// open makes one more connection. Once the listener is gone (Accept
// returned), connecting fails and the attack ends.
func (a *attacker) open() net.Conn {
	c, err := net.Dial("tcp", a.addr)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.err = cmp.Or(a.err, err)
		a.once.Do(func() { close(a.done) })
		return &net.TCPConn{} // writes and Close fail harmlessly
	}
	a.total++
	a.conns = append(a.conns, c)
	if len(a.conns) > attackWindow {
		a.conns[0].Close()
		a.conns = a.conns[1:]
	}
	if a.total%50 == 0 {
		a.sampleLocked()
	}
	return c
}

func (a *attacker) opened() []net.Conn {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]net.Conn(nil), a.conns...)
}

func (a *attacker) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

func (a *attacker) sample() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sampleLocked()
}

func (a *attacker) sampleLocked() {
	a.most = max(a.most, len(linkGoroutines("link.(*acceptor).serve")))
}

func (a *attacker) stop() { a.once.Do(func() { close(a.done) }) }

func (a *attacker) live() bool {
	select {
	case <-a.done:
		return false
	default:
		return a.count() < 5000
	}
}

// sleep waits d and reports whether the attack goes on.
func (a *attacker) sleep(d time.Duration) bool {
	select {
	case <-a.done:
		return false
	case <-time.After(d):
		return true
	}
}
