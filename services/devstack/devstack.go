// Package devstack runs the whole of SFT in one process: an embedded NATS
// server (TLS, JetStream), the state store, and the auth, session and key
// services. It is `sftd dev`, and the stack the end-to-end tests start.
package devstack

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/launch"
	"github.com/sftproject/sft/services/metrics"
	"github.com/sftproject/sft/services/rpc"
	"github.com/sftproject/sft/services/secrets"
)

// Stack is a running all-in-one SFT.
type Stack struct {
	URL string // TLS client URL of the embedded NATS server, for this machine
	// RemoteURLs are the URLs clients on other machines can use: one per
	// address (and dev.hosts name) the server listens on beyond loopback;
	// none when it listens on loopback only.
	RemoteURLs []string
	CAFile     string // CA clients must trust
	// RelayAddrs are the relay addresses the session service offers.
	RelayAddrs []string
	// Store reaches every kind of state, each through the connection of
	// the service that owns it (users: auth, sessions: session, keys:
	// key), as tests and `sftd user` need.
	Store launch.Store
	// Metrics is the process's registry; MetricsAddr is where it, health
	// and readiness are served (nil unless metrics.listen is set).
	Metrics     *metrics.Metrics
	MetricsAddr net.Addr

	cancel context.CancelFunc
	srv    *broker.Embedded
	conns  []*nats.Conn
	stores []launch.Store
	svcs   []*launch.Running
	relay  *launch.RunningRelay
	http   *metrics.Server
}

// startRelay runs the relay on the host NATS listens on, at the NATS port
// + 1 (a free port when NATS has one), and returns its addresses for
// clients: those of remote, the hosts other machines reach NATS at, then
// the one it listens at.
func (st *Stack) startRelay(ctx context.Context, cfg config.Config, host string, natsPort int, remote []string, log *slog.Logger) ([]string, error) {
	port := 0
	if natsPort != 0 {
		port = natsPort + 1
	}
	cfg.Relay.Listen = net.JoinHostPort(host, strconv.Itoa(port))
	rr, err := launch.Relay(ctx, cfg, log, st.Metrics)
	if err != nil {
		return nil, err
	}
	st.relay = rr
	bound := rr.Addr.(*net.TCPAddr)
	var addrs []string
	for _, h := range remote {
		addrs = append(addrs, net.JoinHostPort(h, strconv.Itoa(bound.Port)))
	}
	if !bound.IP.IsUnspecified() {
		addrs = append(addrs, bound.String())
	} else {
		addrs = append(addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(bound.Port)))
	}
	return slices.Compact(addrs), nil
}

// Start brings the stack up; ctx bounds start-up, Close stops it. Missing
// keys and certificates are created under cfg.DataDir.
func Start(ctx context.Context, cfg config.Config, log *slog.Logger) (st *Stack, err error) {
	host, portStr, err := net.SplitHostPort(cfg.Dev.Listen)
	if err != nil {
		return nil, fmt.Errorf("dev.listen %q: %w", cfg.Dev.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("dev.listen %q: bad port", cfg.Dev.Listen)
	}
	r, err := reachOf(host, cfg.Dev.Hosts)
	if err != nil {
		return nil, err
	}
	// The embedded server is one node: more copies than servers could not
	// be placed.
	cfg.NATS.Replicas = 1
	// A certificate from an earlier start that misses a name needed now is
	// reissued by the same CA, so the CA file clients hold stays valid.
	pki, err := broker.EnsureDevPKI(filepath.Join(cfg.DataDir, "pki"), r.names...)
	if err != nil {
		return nil, err
	}
	sec, err := secrets.Ensure(cfg.SecretsPath())
	if err != nil {
		return nil, err
	}
	calloutIssuer, calloutXKey, err := sec.Callout.Public()
	if err != nil {
		return nil, err
	}
	serviceKeys, err := sec.ServicePublicKeys()
	if err != nil {
		return nil, err
	}
	if cfg.NATS.VerifyClients {
		// The services here connect in process, without TLS, but replicas
		// started with `sftd auth|session|key` and `sftd user` come over
		// TLS and now need a certificate: make theirs, as `sftd certs` does.
		if err := secrets.EnsureServiceCerts(cfg.SecretsPath(), filepath.Dir(pki.CAFile)); err != nil {
			return nil, err
		}
	}
	srv, err := broker.StartEmbedded(ctx, broker.EmbeddedOptions{
		Host: host, Port: port,
		StoreDir:      filepath.Join(cfg.DataDir, "jetstream"),
		PKI:           pki,
		VerifyClients: cfg.NATS.VerifyClients,
		ServiceKeys:   serviceKeys,
		CalloutIssuer: calloutIssuer, CalloutXKey: calloutXKey,
		Logger: log.With("component", "nats"),
	})
	if err != nil {
		return nil, err
	}
	// The services' own context: it outlives ctx (start-up only) and ends in Close.
	svcCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	st = &Stack{URL: srv.ClientURL(), CAFile: pki.CAFile, srv: srv, cancel: cancel, Metrics: metrics.NewMetrics()}
	for _, h := range r.remote {
		st.RemoteURLs = append(st.RemoteURLs, "tls://"+net.JoinHostPort(h, strconv.Itoa(srv.Port())))
	}
	// The stack as built so far: a failing return sets st to nil before
	// this runs.
	defer func(built *Stack) {
		if err != nil {
			built.Close()
		}
	}(st)
	if len(cfg.Relay.Addrs) == 0 {
		// No relay named elsewhere: run one here, beside NATS.
		if cfg.Relay.Addrs, err = st.startRelay(svcCtx, cfg, host, port, r.remote, log.With("service", "relay")); err != nil {
			return nil, err
		}
	}
	st.RelayAddrs = cfg.Relay.Addrs
	// Each service on a connection of its own identity, with its own view
	// of the store: what it may reach is what its permissions allow.
	stores := map[string]launch.Store{}
	type started struct {
		name string
		nc   *nats.Conn
		st   launch.Store
		r    *launch.Running
	}
	var all []started
	for _, name := range broker.Services() {
		nc, err := srv.InProcessConn(ctx, name, sec.ServiceKeys[name], "sftd-dev-"+name)
		if err != nil {
			return nil, err
		}
		st.conns = append(st.conns, nc)
		s, err := launch.OpenStore(ctx, cfg, nc, log.With("component", "store", "service", name))
		if err != nil {
			return nil, fmt.Errorf("%s service: %w", name, err)
		}
		st.stores = append(st.stores, s)
		s = launch.Observe(st.Metrics, name, nc, s)
		stores[name] = s
		r, err := launch.Services[name](svcCtx, cfg, nc, s, log.With("service", name), st.Metrics)
		if err != nil {
			return nil, fmt.Errorf("start %s service: %w", name, err)
		}
		st.svcs = append(st.svcs, r)
		all = append(all, started{name, nc, s, r})
	}
	if st.http, st.MetricsAddr, err = launch.Metrics(svcCtx, cfg, st.Metrics, log.With("component", "metrics")); err != nil {
		return nil, err
	}
	for _, s := range all {
		launch.Ready(st.http, s.name, s.nc, s.st, s.r)
	}
	if st.relay != nil {
		launch.ReadyRelay(st.http, st.relay)
	}
	st.Store = routedStore{users: stores[broker.ServiceAuth], sessions: stores[broker.ServiceSession], keys: stores[broker.ServiceKey]}
	log.Info("sft dev stack ready", "url", st.URL, "remote_urls", st.RemoteURLs, "ca_file", st.CAFile, "data_dir", cfg.DataDir, "store", cfg.Store.Backend,
		"verify_clients", cfg.NATS.VerifyClients)
	return st, nil
}

// Close stops the services, letting requests under way finish, then the
// server.
func (st *Stack) Close() {
	for _, r := range st.svcs {
		r.Stop()
	}
	// Let requests already delivered finish and their replies go out
	// before the services' context ends.
	var wg sync.WaitGroup
	for _, nc := range st.conns {
		wg.Go(func() { drain(nc) })
	}
	wg.Wait()
	st.cancel()
	for _, r := range st.svcs {
		r.Wait()
	}
	for _, s := range st.stores {
		_ = s.Close()
	}
	if st.relay != nil {
		_ = st.relay.Wait() // its context ended with the services'
	}
	if st.http != nil {
		_ = st.http.Wait() // likewise
	}
	st.srv.Shutdown()
}

// drain flushes and closes nc, waiting at most rpc.Timeout.
func drain(nc *nats.Conn) {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err == nil {
		select {
		case <-closed:
		case <-time.After(rpc.Timeout):
		}
	}
	nc.Close()
}
