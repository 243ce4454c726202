// Package devstack runs the whole of SFT in one process: an embedded NATS
// server (TLS, JetStream), the JetStream KV state store, and the auth,
// session and key services. It is `sftd dev`, and the stack the end-to-end
// tests start.
package devstack

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/link"
	"github.com/sftproject/sft/services/auth"
	"github.com/sftproject/sft/services/key"
	"github.com/sftproject/sft/services/rpc"
	"github.com/sftproject/sft/services/session"
	"github.com/sftproject/sft/services/store/kvstore"
	"github.com/sftproject/sft/services/token"
)

// Stack is a running all-in-one SFT.
type Stack struct {
	URL    string // TLS client URL of the embedded NATS server
	CAFile string // CA clients must trust
	Store  *kvstore.Store

	cancel  context.CancelFunc
	srv     *broker.Embedded
	nc      *nats.Conn
	svcs    []micro.Service
	waiters []func()
}

// Start brings the stack up; ctx bounds start-up, Close stops it.
func Start(ctx context.Context, cfg config.Config, log *slog.Logger) (st *Stack, err error) {
	host, portStr, err := net.SplitHostPort(cfg.Dev.Listen)
	if err != nil {
		return nil, fmt.Errorf("dev.listen %q: %w", cfg.Dev.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("dev.listen %q: bad port", cfg.Dev.Listen)
	}
	pki, err := broker.EnsureDevPKI(filepath.Join(cfg.DataDir, "pki"))
	if err != nil {
		return nil, err
	}
	sec, err := LoadSecrets(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	srv, err := broker.StartEmbedded(ctx, broker.EmbeddedOptions{
		Host: host, Port: port,
		StoreDir:    filepath.Join(cfg.DataDir, "jetstream"),
		PKI:         pki,
		ServiceUser: ServiceUser, ServicePassword: sec.ServicePassword,
		Logger: log.With("component", "nats"),
	})
	if err != nil {
		return nil, err
	}
	// The services' own context: it outlives ctx (start-up only) and ends in Close.
	svcCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	st = &Stack{URL: srv.ClientURL(), CAFile: pki.CAFile, srv: srv, cancel: cancel}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	st.nc, err = srv.InProcessConn(ctx, ServiceUser, sec.ServicePassword, "sftd-dev-services")
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(st.nc)
	if err != nil {
		return nil, err
	}
	st.Store, err = kvstore.Open(ctx, js, kvstore.Options{Logger: log.With("component", "store")})
	if err != nil {
		return nil, err
	}
	verifier := token.NewVerifier(sec.SigningKey.Public().(ed25519.PublicKey))

	authSvc, err := auth.New(auth.Options{
		Users: st.Store, SigningKey: sec.SigningKey, SealKey: sec.SealKey,
		TokenTTL: cfg.Auth.TokenTTL, Logger: log.With("service", "auth"),
	})
	if err != nil {
		return nil, err
	}
	sessSvc := session.New(session.Options{
		Store: st.Store, Verifier: verifier, CheckName: link.SafeName,
		TTL: cfg.Session.TTL, Retention: cfg.Session.Retention,
		Logger: log.With("service", "session"),
	})
	keySvc, err := key.New(key.Options{Store: st.Store, Verifier: verifier, KEK: sec.KEK, Logger: log.With("service", "key")})
	if err != nil {
		return nil, err
	}
	for _, start := range []func(context.Context, *nats.Conn) (micro.Service, error){authSvc.Start, sessSvc.Start, keySvc.Start} {
		svc, err := start(svcCtx, st.nc)
		if err != nil {
			return nil, err
		}
		st.svcs = append(st.svcs, svc)
	}
	st.waiters = append(st.waiters, sessSvc.Wait, keySvc.Wait)
	log.Info("sft dev stack ready", "url", st.URL, "ca_file", st.CAFile, "data_dir", cfg.DataDir, "store", "jetstream-kv")
	return st, nil
}

// Close stops the services (draining in-flight requests), then the server.
func (st *Stack) Close() {
	for _, svc := range st.svcs {
		_ = svc.Stop()
	}
	if st.nc != nil {
		// Let requests already delivered finish and their replies go out
		// before the services' context ends.
		closed := make(chan struct{})
		st.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if err := st.nc.Drain(); err == nil {
			select {
			case <-closed:
			case <-time.After(rpc.Timeout):
			}
		}
		st.nc.Close()
	}
	st.cancel()
	for _, wait := range st.waiters {
		wait()
	}
	st.srv.Shutdown()
}
