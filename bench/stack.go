package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/auth"
	"github.com/sftproject/sft/services/devstack"
	"github.com/sftproject/sft/services/store"
)

// cheapHash is for users whose login is not what is measured: the
// lifecycle load and the transfer sides log in once, outside the timings.
var cheapHash = auth.HashParams{Memory: 8 << 10, Time: 1, Threads: 1}

// unlimitedRate lifts the per-user session creation limit for the load.
const unlimitedRate = 1 << 30

func password(user string) string { return "bench-pw-" + user }

// target is a running control plane the clients connect to.
type target struct {
	url, caFile string
	store       interface {
		CreateUser(context.Context, *store.User) error
	}
}

func (t target) addUsers(ctx context.Context, p auth.HashParams, users ...string) error {
	for _, u := range users {
		hash, err := auth.HashPassword(password(u), p)
		if err != nil {
			return err
		}
		if err := t.storeUser(ctx, u, hash); err != nil {
			return err
		}
	}
	return nil
}

// storeUser adds a user whose password hash is made.
func (t target) storeUser(ctx context.Context, name, hash string) error {
	if err := t.store.CreateUser(ctx, &store.User{Name: name, PasswordHash: hash, Role: "user", CreatedAt: time.Now()}); err != nil {
		return fmt.Errorf("create user %s: %w", name, err)
	}
	return nil
}

// login logs user in as sft-cli does (a password connection, then a
// connection that presents the token) and returns the client.
func (t target) login(ctx context.Context, user string) (*client.Client, *nats.Conn, error) {
	c, _, err := client.LogIn(ctx, broker.ConnOptions{URL: t.url, CAFile: t.caFile, Name: "sft-bench"}, user, password(user))
	if err != nil {
		return nil, nil, fmt.Errorf("login %s: %w", user, err)
	}
	return c, c.Conn(), nil
}

// startEmbedded runs `sftd dev` in-process with its data under dir; tweak,
// when not nil, may change the configuration before the stack starts.
func startEmbedded(ctx context.Context, dir string, tweak func(*config.Config) error) (*devstack.Stack, target, error) {
	cfg, err := config.Load([]string{"HOME=" + dir}, "", nil)
	if err != nil {
		return nil, target{}, err
	}
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.Dev.Listen = "127.0.0.1:0"
	// The load is a few users creating sessions back to back, which the
	// per-user creation rate limit exists to stop.
	cfg.Limits.SessionsPerMinute = unlimitedRate
	if tweak != nil {
		if err := tweak(&cfg); err != nil {
			return nil, target{}, err
		}
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := devstack.Start(sctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, target{}, fmt.Errorf("start the embedded stack: %w", err)
	}
	return st, target{url: st.URL, caFile: st.CAFile, store: st.Store}, nil
}
