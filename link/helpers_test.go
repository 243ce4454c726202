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

// proxy forwards one TCP connection to target. In the client-to-target
// direction it can flip one bit at a byte offset or cut both connections
// after a number of bytes.
type proxy struct {
	ln       net.Listener
	target   string
	flipAt   int64 // -1: never
	cutAfter int64 // -1: never
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func startProxy(t *testing.T, target string, flipAt, cutAfter int64) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, flipAt: flipAt, cutAfter: cutAfter}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.conns = append(p.conns, c)
}

func (p *proxy) serve() {
	defer p.wg.Done()
	client, err := p.ln.Accept()
	if err != nil {
		return
	}
	p.track(client)
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.track(server)
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		io.Copy(client, server)
		client.Close()
	}()
	go func() {
		defer p.wg.Done()
		p.forward(server, client)
		server.Close()
		client.Close()
	}()
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
