// Package redistest runs a real redis-server for tests: on a free loopback
// port, with its data in t.TempDir(), persisting every write to the
// append-only file before acknowledging it, so tests can restart or kill it
// and check what survived.
package redistest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sftproject/sft/internal/syncbuf"
)

// Timeouts for the server's lifecycle. Generous: the machine may be busy
// with parallel tests, and none of them bound a test that passes.
const (
	readyTimeout = 15 * time.Second
	stopTimeout  = 10 * time.Second
)

// EnvRequire names the variable that turns a missing redis-server from a
// skip into a failure, so CI cannot pass by silently skipping.
const EnvRequire = "SFT_REQUIRE_REDIS"

// Options configure Start.
type Options struct {
	// Password, when set, becomes the server's requirepass.
	Password string
	// TLS, when set, makes the server speak only TLS (URL then returns
	// rediss://). Start skips the test when redis-server was built without
	// TLS support.
	TLS *TLS
	// ReplicaOf, when set (host:port), makes the server a replica of that
	// primary, which it authenticates to with Password.
	ReplicaOf string
}

// TLS names the PEM files of a TLS-only server. Clients are not asked for
// certificates.
type TLS struct {
	CertFile, KeyFile string
	// CAFile is the CA that signed CertFile; Start uses it to check the
	// server is ready.
	CAFile string
}

// Server is a running redis-server. Its methods may be called from any
// goroutine.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	opts Options
	log  *syncbuf.Buffer

	// conf renders the config file (default: Server.config); args follow
	// it on the command line.
	conf func() string
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start runs redis-server on a free 127.0.0.1 port in t.TempDir() and stops
// it when the test ends. It skips the test, with how to install it, when
// redis-server is not on PATH, unless SFT_REQUIRE_REDIS=1.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	s := newServer(t, o)
	s.launch()
	return s
}

// newServer prepares a Server; launch starts it.
func newServer(t testing.TB, o Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server not found on PATH; install it (Debian/Ubuntu: apt-get install redis-server) to run this test"
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%s (%s=1 requires it)", msg, EnvRequire)
		}
		t.Skip(msg)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), opts: o, log: &syncbuf.Buffer{}}
	s.conf = s.config
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("redis-server %s log:\n%s", s.Addr(), s.log.String())
		}
	})
	return s
}

// launch starts s on a free port, or fails the test.
func (s *Server) launch() {
	t, o, bin := s.t, s.opts, s.bin
	t.Helper()
	// Another process may grab the port between probing and binding;
	// a few attempts make that race harmless.
	for attempt := 0; ; attempt++ {
		s.port = freePort(t)
		err := s.start()
		if err == nil {
			return
		}
		if o.TLS != nil && noTLSSupport(s.log.String()) {
			t.Skipf("redis-server at %s was built without TLS support: %v", bin, err)
		}
		if attempt == 2 || !strings.Contains(s.log.String(), "in use") {
			t.Fatalf("redistest: %v\nredis-server log:\n%s", err, s.log.String())
		}
	}
}

// URL is the address in the form redisstore.Options.URL takes.
func (s *Server) URL() string {
	u := url.URL{Scheme: "redis", Host: s.Addr(), Path: "/0"}
	if s.opts.TLS != nil {
		u.Scheme = "rediss"
	}
	if s.opts.Password != "" {
		u.User = url.UserPassword("", s.opts.Password)
	}
	return u.String()
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Dir is the server's working directory, which holds its append-only files.
func (s *Server) Dir() string { return s.dir }

// Stop shuts the server down with SIGTERM (it flushes the append-only file
// first) and waits for it to exit. Stopping a stopped server does nothing.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

// Kill ends the server with SIGKILL, as a crash would, and waits for it.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

// Restart stops the server if it runs, starts it again on the same port and
// directory, so it reloads its data from the append-only file, and waits
// until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart: %v\nredis-server log:\n%s", err, s.log.String())
	}
}

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(stopTimeout):
		_ = cmd.Process.Kill()
		<-done
		s.t.Errorf("redistest: redis-server ignored %v for %v; killed it", sig, stopTimeout)
	}
}

// start launches the server and waits until it answers PING. On failure
// the process is gone and the error says why.
func (s *Server) start() error {
	conf := filepath.Join(s.dir, "redis.conf")
	if err := os.WriteFile(conf, []byte(s.conf()), 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	cmd := exec.Command(s.bin, append([]string{conf}, s.args...)...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = s.log, s.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { // owned by the Server: ends when the process does
		waitErr = cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	deadline := time.Now().Add(readyTimeout)
	for {
		err := s.ping()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			return fmt.Errorf("redis-server exited before answering (%v): %v", waitErr, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("redis-server not ready within %v: %w", readyTimeout, err)
		}
	}
}

// config renders redis.conf: durable (every write fsynced to the AOF before
// the reply), no RDB snapshots, loopback only.
func (s *Server) config() string {
	var b strings.Builder
	line := func(args ...string) { b.WriteString(strings.Join(args, " ") + "\n") }
	line("bind", "127.0.0.1")
	line("protected-mode", "yes")
	line("dir", quote(s.dir))
	line("appendonly", "yes")
	line("appendfsync", "always")
	line("save", `""`)
	line("daemonize", "no")
	line("logfile", `""`)
	if s.opts.Password != "" {
		line("requirepass", quote(s.opts.Password))
		// A primary may become a replica after a failover.
		line("masterauth", quote(s.opts.Password))
	}
	// A replica joining should not wait for others to share a transfer.
	line("repl-diskless-sync-delay", "0")
	if s.opts.ReplicaOf != "" {
		host, port, _ := net.SplitHostPort(s.opts.ReplicaOf)
		line("replicaof", host, port)
	}
	if t := s.opts.TLS; t != nil {
		line("port", "0")
		line("tls-port", strconv.Itoa(s.port))
		line("tls-cert-file", quote(t.CertFile))
		line("tls-key-file", quote(t.KeyFile))
		line("tls-ca-cert-file", quote(t.CAFile))
		line("tls-auth-clients", "no")
	} else {
		line("port", strconv.Itoa(s.port))
	}
	return b.String()
}

// ping sends AUTH (when needed) and PING on a fresh connection. A server
// still loading its AOF answers -LOADING, which counts as not ready.
func (s *Server) ping() error {
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if t := s.opts.TLS; t != nil {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("no certificates in %s", t.CAFile)
		}
		tc := tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
		defer tc.Close()
		conn = tc
	}
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	r := bufio.NewReader(conn)
	if s.opts.Password != "" {
		if err := roundTrip(conn, r, "+OK", "AUTH", s.opts.Password); err != nil {
			return err
		}
	}
	return roundTrip(conn, r, "+PONG", "PING")
}

func roundTrip(conn net.Conn, r *bufio.Reader, want string, args ...string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write(b.Bytes()); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if got := strings.TrimRight(line, "\r\n"); got != want {
		return fmt.Errorf("%s: got %q", args[0], got)
	}
	return nil
}

// noTLSSupport recognises the log of a redis-server built without TLS,
// which rejects the tls-* directives.
func noTLSSupport(log string) bool {
	return strings.Contains(log, "tls-port") &&
		(strings.Contains(log, "Bad directive") || strings.Contains(log, "not supported"))
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// quote renders a redis.conf string argument.
func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`)
	return `"` + r.Replace(s) + `"`
}
