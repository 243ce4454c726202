// Package devstacktest starts the embedded SFT stack inside a test, on
// random ports in t.TempDir(), with users ready to log in.
package devstacktest

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/auth"
	"github.com/sftproject/sft/services/devstack"
	"github.com/sftproject/sft/services/secrets"
	"github.com/sftproject/sft/services/store"
)

// Users are created by Start; each one's password is Password(name).
var Users = []string{"alice", "bob", "carol"}

// Admin is a user with the admin role, also created by Start.
const Admin = "root"

// Password is the test password of user.
func Password(user string) string { return "pw-" + user }

// Harness is a running stack.
type Harness struct {
	T     testing.TB
	Stack *devstack.Stack
	Cfg   config.Config
}

// Start runs the stack until the test ends. tweak may adjust the config
// (TTLs, timeouts) before start.
func Start(t testing.TB, tweak func(*config.Config)) *Harness {
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
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := devstack.Start(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	for _, u := range append(Users, Admin) {
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
	return &Harness{T: t, Stack: st, Cfg: cfg}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Conn is a new client-user connection (TLS, no credentials), closed when
// the test ends.
func (h *Harness) Conn() *nats.Conn {
	h.T.Helper()
	nc, err := broker.Connect(context.Background(), broker.ConnOptions{URL: h.Stack.URL, CAFile: h.Stack.CAFile})
	if err != nil {
		h.T.Fatal(err)
	}
	h.T.Cleanup(nc.Close)
	return nc
}

// ServiceConn is a connection with the services' credentials.
func (h *Harness) ServiceConn() *nats.Conn {
	h.T.Helper()
	pw, err := secrets.ServicePassword(h.Cfg.SecretsPath())
	if err != nil {
		h.T.Fatal(err)
	}
	nc, err := broker.Connect(context.Background(), broker.ConnOptions{URL: h.Stack.URL, CAFile: h.Stack.CAFile, User: h.Cfg.NATS.User, Password: pw})
	if err != nil {
		h.T.Fatal(err)
	}
	h.T.Cleanup(nc.Close)
	return nc
}

// Login returns a client logged in as user on its own connection.
func (h *Harness) Login(user string) *client.Client {
	h.T.Helper()
	c := client.New(h.Conn(), "", "")
	if _, err := c.Login(context.Background(), user, Password(user)); err != nil {
		h.T.Fatalf("login %s: %v", user, err)
	}
	return c
}

// Env is the environment sft-cli needs to act as user against this stack
// (its own HOME, so its own token cache).
func (h *Harness) Env(user string) []string {
	return []string{
		"HOME=" + h.T.TempDir(),
		"SFT_NATS_URL=" + h.Stack.URL,
		"SFT_NATS_CA_FILE=" + h.Stack.CAFile,
		"SFT_USER=" + user,
		"SFT_PASSWORD=" + Password(user),
	}
}
