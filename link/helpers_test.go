package link

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/internal/syncbuf"
)

// env is one session: a key, an id, a listener on loopback and a
// destination directory.
type env struct {
	t    *testing.T
	key  []byte
	sid  string
	ln   net.Listener
	dir  string
	logs *syncbuf.Buffer
	opts Options
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	logs := &syncbuf.Buffer{}
	return &env{
		t:    t,
		key:  randomKey(t),
		sid:  "sess-" + t.Name(),
		ln:   ln,
		dir:  t.TempDir(),
		logs: logs,
		opts: Options{
			HandshakeTimeout: 5 * time.Second,
			Logger:           slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		},
	}
}

func (e *env) addr() string { return e.ln.Addr().String() }

// relisten gives e a new listener: Accept closes the one it used.
func (e *env) relisten() {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ln.Close() })
	e.ln = ln
}

func randomKey(t testing.TB) []byte {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

func manifest(name string, size int) api.Manifest {
	return api.Manifest{Files: []api.File{{Name: name, Size: int64(size)}}}
}

type outcome struct {
	res  Result
	path string
	err  error
}

// pair accepts on e's listener and dials dialAddr (e's listener or a proxy
// in front of it), then runs onAccept and onDial on the two connections at
// once. An Accept or Dial failure becomes that side's outcome.
func (e *env) pair(ctx context.Context, dialAddr string, dialKey []byte, dialSID string,
	onAccept, onDial func(*Conn) outcome) (accepted, dialed outcome) {
	e.t.Helper()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := Accept(ctx, e.ln, e.key, e.sid, e.opts)
		if err != nil {
			accepted = outcome{err: err}
			return
		}
		defer c.Close()
		accepted = onAccept(c)
	}()
	c, err := Dial(ctx, dialAddr, dialKey, dialSID, e.opts)
	if err != nil {
		dialed = outcome{err: err}
	} else {
		dialed = onDial(c)
		c.Close()
	}
	wg.Wait()
	return accepted, dialed
}

// receiveAsync accepts on e's listener and receives what m describes into
// e's directory, on a goroutine; the outcome arrives on the channel.
func (e *env) receiveAsync(ctx context.Context, m api.Manifest) <-chan outcome {
	done := make(chan outcome, 1)
	go func() {
		c, err := Accept(ctx, e.ln, e.key, e.sid, e.opts)
		if err != nil {
			done <- outcome{err: err}
			return
		}
		defer c.Close()
		done <- recvSide(ctx, m, e.dir, ReceiveOptions{})(c)
	}()
	return done
}

// one opens r as the only entry of a manifest.
func one(r io.Reader) Opener {
	return func(i int) (io.ReadCloser, error) {
		if i != 0 {
			return nil, fmt.Errorf("no entry %d", i)
		}
		return io.NopCloser(r), nil
	}
}

func sendSide(ctx context.Context, m api.Manifest, r io.Reader) func(*Conn) outcome {
	return func(c *Conn) outcome {
		res, err := c.Send(ctx, m, one(r), SendOptions{})
		return outcome{res: res, err: err}
	}
}

func recvSide(ctx context.Context, expect api.Manifest, dir string, ro ReceiveOptions) func(*Conn) outcome {
	return func(c *Conn) outcome {
		res, err := c.Receive(ctx, expect, dir, ro)
		o := outcome{res: res, err: err}
		if err == nil && len(expect.Files) > 0 {
			o.path = filepath.Join(dir, filepath.FromSlash(expect.Files[0].Name))
		}
		return o
	}
}

// transfer runs a whole transfer with the receiver accepting and the sender
// dialing dialAddr.
func (e *env) transfer(ctx context.Context, dialAddr string, m, expect api.Manifest, src io.Reader, ro ReceiveOptions) (recv, send outcome) {
	e.t.Helper()
	return e.pair(ctx, dialAddr, e.key, e.sid, recvSide(ctx, expect, e.dir, ro), sendSide(ctx, m, src))
}

// assertEmpty fails unless dir holds no entry at all: no file, no temp file.
func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("unexpected entry left in destination: %s", e.Name())
	}
}

// assertOnlyPartial fails unless dir holds nothing but what a resumable
// failure keeps: partial files and their state, never a final name.
func assertOnlyPartial(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), partialPrefix) {
			t.Errorf("unexpected entry left in destination: %s", e.Name())
		}
	}
}

// hub is an in-test TCP server on loopback. It owns the connections and
// goroutines of what it serves; the test's cleanup closes the ones and
// waits for the others.
type hub struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

// startHub listens and runs serve until the listener closes.
func startHub(t *testing.T, serve func(h *hub)) *hub {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hub{ln: ln}
	h.wg.Go(func() { serve(h) })
	t.Cleanup(func() {
		ln.Close()
		h.mu.Lock()
		for _, c := range h.conns {
			c.Close()
		}
		h.mu.Unlock()
		h.wg.Wait()
	})
	return h
}

func (h *hub) addr() string { return h.ln.Addr().String() }

func (h *hub) track(c net.Conn) net.Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.conns = append(h.conns, c)
	return c
}

func (h *hub) accept() (net.Conn, error) {
	c, err := h.ln.Accept()
	if err != nil {
		return nil, err
	}
	return h.track(c), nil
}

func (h *hub) dial(addr string) (net.Conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return h.track(c), nil
}

// join forwards bytes both ways between a and b; the end of one direction
// is passed on as a half-close, as a relay does.
func (h *hub) join(a, b net.Conn) {
	one := func(dst, src net.Conn) {
		io.Copy(dst, src)
		dst.(*net.TCPConn).CloseWrite()
	}
	h.wg.Go(func() { one(a, b) })
	h.wg.Go(func() { one(b, a) })
}

// proxy forwards one TCP connection to target. In the client-to-target
// direction it can flip one bit at a byte offset or cut both connections
// after a number of bytes.
type proxy struct {
	*hub
	flipAt   int64 // -1: never
	cutAfter int64 // -1: never
}

func startProxy(t *testing.T, target string, flipAt, cutAfter int64) *proxy {
	t.Helper()
	p := &proxy{flipAt: flipAt, cutAfter: cutAfter}
	p.hub = startHub(t, func(h *hub) { p.serve(h, target) })
	return p
}

func (p *proxy) serve(h *hub, target string) {
	client, err := h.accept()
	if err != nil {
		return
	}
	server, err := h.dial(target)
	if err != nil {
		client.Close()
		return
	}
	h.wg.Go(func() {
		io.Copy(client, server)
		client.Close()
	})
	h.wg.Go(func() {
		p.forward(server, client)
		server.Close()
		client.Close()
	})
}

func (p *proxy) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	var off int64
	for {
		n, err := src.Read(buf)
		chunk := buf[:n]
		if p.flipAt >= off && p.flipAt < off+int64(n) {
			chunk[p.flipAt-off] ^= 0x01
		}
		cut := p.cutAfter >= 0 && off+int64(n) >= p.cutAfter
		if cut {
			chunk = chunk[:p.cutAfter-off]
		}
		if _, werr := dst.Write(chunk); werr != nil {
			return
		}
		off += int64(len(chunk))
		if cut || err != nil {
			return
		}
	}
}

// blockingReader yields data, then blocks until release is closed, then
// fails.
type blockingReader struct {
	data    io.Reader
	release chan struct{}
}

func (r *blockingReader) Read(p []byte) (int, error) {
	n, err := r.data.Read(p)
	if err != io.EOF {
		return n, err
	}
	<-r.release
	return 0, io.ErrClosedPipe
}

// patternReader yields n bytes of a repeating pattern without allocating.
type patternReader struct {
	pattern []byte
	n, off  int64
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	if rest := r.n - r.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	total := 0
	for total < len(p) {
		i := int((r.off + int64(total)) % int64(len(r.pattern)))
		total += copy(p[total:], r.pattern[i:])
	}
	r.off += int64(total)
	return total, nil
}
