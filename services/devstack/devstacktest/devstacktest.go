// Package devstacktest starts the embedded SFT stack inside a test, on
// random ports in t.TempDir(), with users ready to log in.
package devstacktest

import (
	"context"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/internal/hermetic"
	"github.com/sftproject/sft/services/auth"
	"github.com/sftproject/sft/services/devstack"
	"github.com/sftproject/sft/services/launch"
	"github.com/sftproject/sft/services/metrics"
	"github.com/sftproject/sft/services/secrets"
	"github.com/sftproject/sft/services/store"
)

// Users are created by Start; each one's password is Password(name).
var Users = []string{"alice", "bob", "carol"}

// Admin is a user with the admin role, also created by Start.
const Admin = "root"

// Tester is the user of Conn, also created by Start (role user).
const Tester = "tester"

// Password is the test password of user.
func Password(user string) string { return "pw-" + user }

// Harness is a running stack.
type Harness struct {
	T     testing.TB
	Stack *devstack.Stack // nil while stopped
	Cfg   config.Config

	started config.Config // what the stack was started with
	listen  string        // where it listens, also after a restart
	log     *slog.Logger
}

// Option adjusts how Start runs the stack.
type Option func(*options)

type options struct {
	logTo    io.Writer
	logLevel slog.Level
}

// WithLog sends the services' and broker's logs to w at level, instead of
// the test log at warn (to check what the logs contain).
func WithLog(w io.Writer, level slog.Level) Option {
	return func(o *options) { o.logTo, o.logLevel = w, level }
}

// Start runs the stack until the test ends. tweak may adjust the config
// (TTLs, timeouts) before start. With nats.verify_clients on and no
// nats.cert_file, Start issues a client certificate that the harness's
// client connections and Env use.
func Start(t testing.TB, tweak func(*config.Config), opts ...Option) *Harness {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Load([]string{"HOME=" + dir}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Dev.Listen = "127.0.0.1:0"
	if tweak != nil {
		tweak(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := options{logTo: testWriter{t}, logLevel: slog.LevelWarn}
	for _, opt := range opts {
		opt(&o)
	}
	h := &Harness{T: t, Cfg: cfg, started: cfg, log: slog.New(slog.NewTextHandler(o.logTo, &slog.HandlerOptions{Level: o.logLevel}))}
	h.startAt(cfg.Dev.Listen)
	t.Cleanup(func() {
		if h.Stack != nil {
			h.Stack.Close()
		}
	})
	st := h.Stack
	u, err := url.Parse(st.URL)
	if err != nil {
		t.Fatal(err)
	}
	h.listen = u.Host
	if cfg.NATS.VerifyClients && cfg.NATS.CertFile == "" {
		// The server wants a client certificate from everyone: the test
		// clients (and sft-cli, through Env) present this one.
		cfg.NATS.CertFile, cfg.NATS.KeyFile = filepath.Join(dir, "client", "test-client.crt"), filepath.Join(dir, "client", "test-client.key")
		if err := broker.EnsureClientCert(filepath.Dir(st.CAFile), "test-client", cfg.NATS.CertFile, cfg.NATS.KeyFile); err != nil {
			t.Fatal(err)
		}
		h.Cfg = cfg
	}
	for _, u := range append(Users, Admin, Tester) {
		// Cheap hash parameters: tests exercise the flow, not the cost.
		hash, err := auth.HashPassword(Password(u), auth.HashParams{Memory: 8 << 10, Time: 1, Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		role := "user"
		if u == Admin {
			role = "admin"
		}
		if err := st.Store.CreateUser(ctx, &store.User{Name: u, PasswordHash: hash, Role: role, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

// startAt starts the stack, listening at listen.
func (h *Harness) startAt(listen string) {
	h.T.Helper()
	cfg := h.started
	cfg.Dev.Listen = listen
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := devstack.Start(ctx, cfg, h.log)
	if err != nil {
		h.T.Fatal(err)
	}
	h.Stack = st
}

// Stop stops the stack as a stopped `sftd dev` stops: its clients lose
// the server; its data (users, sessions, events, keys) stays for Restart.
func (h *Harness) Stop() {
	h.T.Helper()
	if h.Stack == nil {
		h.T.Fatal("Stop: the stack is not running")
	}
	h.Stack.Close()
	h.Stack = nil
}

// Restart starts the stopped stack again on the same address and data:
// clients that lost it reconnect by themselves.
func (h *Harness) Restart() { h.RestartAt(h.listen) }

// RestartAt starts the stopped stack on its data at another address
// (127.0.0.1:0: any free port), where its clients cannot find it: what
// happens there happens while they are away. Stop it, and Restart.
func (h *Harness) RestartAt(listen string) {
	h.T.Helper()
	if h.Stack != nil {
		h.T.Fatal("Restart: the stack is running")
	}
	h.startAt(listen)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// ConnOptions is where and how a client reaches the stack, with the client
// certificate of Cfg when there is one; the credentials are added by
// client.DialPassword or client.DialToken.
func (h *Harness) ConnOptions() broker.ConnOptions {
	return broker.ConnOptions{
		URL: h.Stack.URL, CAFile: h.Stack.CAFile, Name: "test-client",
		CertFile: h.Cfg.NATS.CertFile, KeyFile: h.Cfg.NATS.KeyFile,
	}
}

// Conn is a new connection of Tester, closed when the test ends: for
// requests whose token says who acts (the services go by the token; the
// broker only keeps each connection to its own user's inbox).
func (h *Harness) Conn() *nats.Conn {
	h.T.Helper()
	return h.Login(Tester).Conn()
}

// ConnFor is a new connection with c's token, so with c's user's inbox:
// what a watch of c's needs. Closed when the test ends.
func (h *Harness) ConnFor(c *client.Client) *nats.Conn {
	h.T.Helper()
	nc, err := h.TokenConn(c.User(), c.Token())
	if err != nil {
		h.T.Fatalf("connect as %s: %v", c.User(), err)
	}
	return nc
}

// PasswordConn is a new connection authenticated with user's password: it
// may only log in. Closed when the test ends.
func (h *Harness) PasswordConn(user string) *nats.Conn {
	h.T.Helper()
	nc, err := client.DialPassword(context.Background(), h.ConnOptions(), user, Password(user))
	if err != nil {
		h.T.Fatalf("password connection for %s: %v", user, err)
	}
	h.T.Cleanup(nc.Close)
	return nc
}

// TokenConn connects with token as user; it fails when the broker refuses.
func (h *Harness) TokenConn(user, token string) (*nats.Conn, error) {
	nc, err := client.DialToken(context.Background(), h.ConnOptions(), user, token)
	if err == nil {
		h.T.Cleanup(nc.Close)
	}
	return nc, err
}

// ServiceConn is a connection with the session service's identity, closed
// when the test ends: for reading the event stream and running extra
// session replicas.
func (h *Harness) ServiceConn() *nats.Conn {
	h.T.Helper()
	return h.ServiceConnAs(broker.ServiceSession)
}

// ServiceConnAs is a connection with service's identity (broker.ServiceAuth,
// ...), closed when the test ends.
func (h *Harness) ServiceConnAs(service string) *nats.Conn {
	h.T.Helper()
	key, err := secrets.ServiceKey(h.Cfg.SecretsPath(), service)
	if err != nil {
		h.T.Fatal(err)
	}
	o := broker.ConnOptions{URL: h.Stack.URL, CAFile: h.Stack.CAFile, Service: service, NKey: key, Name: "test-" + service}
	if h.Cfg.NATS.VerifyClients {
		// The service's own certificate, which the stack made.
		dir := h.Cfg.SecretsPath()
		o.CertFile, o.KeyFile = filepath.Join(dir, secrets.ServiceCertFile(service)), filepath.Join(dir, secrets.ServiceCertKeyFile(service))
	}
	nc, err := broker.Connect(context.Background(), o)
	if err != nil {
		h.T.Fatal(err)
	}
	h.T.Cleanup(nc.Close)
	return nc
}

// Login logs user in, as sft-cli does (password connection, then a new
// connection with the token), and returns the client on the token
// connection, closed when the test ends.
func (h *Harness) Login(user string) *client.Client {
	h.T.Helper()
	c, _, err := client.LogIn(context.Background(), h.ConnOptions(), user, Password(user))
	if err != nil {
		h.T.Fatalf("login %s: %v", user, err)
	}
	h.T.Cleanup(c.Conn().Close)
	return c
}

// Env is the whole environment sft-cli needs to act as user against this
// stack: a new home with its own config directory (so its own token cache)
// and the server's address. In process, pass it as sft-cli's environment;
// a child process gets hermetic.Environ(Env(user)...), so that nothing of
// the developer's shell (XDG_CONFIG_HOME, SFT_*) joins in.
func (h *Harness) Env(user string) []string {
	env := append(hermetic.Home(h.T.TempDir()),
		"SFT_NATS_URL="+h.Stack.URL,
		"SFT_NATS_CA_FILE="+h.Stack.CAFile,
		"SFT_USER="+user,
		"SFT_PASSWORD="+Password(user),
	)
	if h.Cfg.NATS.CertFile != "" {
		env = append(env, "SFT_NATS_CERT_FILE="+h.Cfg.NATS.CertFile, "SFT_NATS_KEY_FILE="+h.Cfg.NATS.KeyFile)
	}
	return env
}

// Replica starts one more replica of service (broker.ServiceAuth, ...)
// beside the stack's, as another `sftd <service>` process would: its own
// connection, store and metrics. It stops when the test ends.
func (h *Harness) Replica(service string) *launch.Running {
	h.T.Helper()
	nc := h.ServiceConnAs(service)
	ctx, cancel := context.WithCancel(context.Background())
	st, err := launch.OpenStore(ctx, h.Cfg, nc, h.log)
	if err != nil {
		cancel()
		h.T.Fatal(err)
	}
	r, err := launch.Services[service](ctx, h.Cfg, nc, st, h.log.With("service", service, "replica", "extra"), metrics.NewMetrics())
	if err != nil {
		cancel()
		_ = st.Close()
		h.T.Fatalf("start a %s replica: %v", service, err)
	}
	h.T.Cleanup(func() {
		r.Stop()
		cancel()
		r.Wait()
		_ = st.Close()
	})
	return r
}
