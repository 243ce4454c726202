// Package launch assembles the SFT services from configuration: it opens
// the configured state store and starts the auth, session and key services
// with the keys each one needs. Each service runs on a connection of its
// own NATS identity (broker.ServicePermissions) and checks every request's
// token against the revoked tokens. `sftd dev` starts all three in one
// process; `sftd auth`, `sftd session` and `sftd key` start one each. The
// relay (`sftd relay`) needs neither NATS nor the store: only the public
// key of the relay tickets.
package launch

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/link"
	"github.com/sftproject/sft/services/auth"
	"github.com/sftproject/sft/services/key"
	"github.com/sftproject/sft/services/metrics"
	"github.com/sftproject/sft/services/relay"
	"github.com/sftproject/sft/services/rpc"
	"github.com/sftproject/sft/services/secrets"
	"github.com/sftproject/sft/services/session"
	"github.com/sftproject/sft/services/store"
	"github.com/sftproject/sft/services/store/kvstore"
	"github.com/sftproject/sft/services/store/redisstore"
	"github.com/sftproject/sft/services/token"
)

// Connect connects to the broker at cfg.NATS.URL as service, with its NATS
// identity from the secrets directory and, when nats.cert_file is set, the
// client certificate a broker that verifies clients (mTLS) asks for. The
// certificate adds to the identity; it never stands in for it.
func Connect(ctx context.Context, cfg config.Config, service, name string, log *slog.Logger) (*nats.Conn, error) {
	key, err := secrets.ServiceKey(cfg.SecretsPath(), service)
	if err != nil {
		return nil, err
	}
	return broker.Connect(ctx, broker.ConnOptions{
		URL: cfg.NATS.URL, CAFile: cfg.CAFile(),
		Service: service, NKey: key,
		CertFile: cfg.NATS.CertFile, KeyFile: cfg.NATS.KeyFile,
		Name: name, Logger: log,
	})
}

// Store is every state-store method the three services, sftd's user
// commands and the readiness check use.
type Store interface {
	auth.Users
	session.Store
	session.OpenCounter
	key.Store
	CreateUser(ctx context.Context, u *store.User) error
	UpdateUser(ctx context.Context, u *store.User) error
	// Ping checks the store answers (readiness).
	Ping(ctx context.Context) error
	Close() error
}

// OpenStore opens the backend cfg.Store.Backend names. The JetStream one
// lives on nc's server; Redis is reached at cfg.Redis.
func OpenStore(ctx context.Context, cfg config.Config, nc *nats.Conn, log *slog.Logger) (Store, error) {
	switch cfg.Store.Backend {
	case "redis":
		o := redisstore.Options{
			URL: cfg.Redis.URL, Username: cfg.Redis.Username, CAFile: cfg.Redis.CAFile, Logger: log,
			SentinelMaster: cfg.Redis.SentinelMaster, SentinelAddrs: cfg.Redis.SentinelAddrs,
		}
		var err error
		if o.Password, err = readSecret("redis.password_file", cfg.Redis.PasswordFile); err != nil {
			return nil, err
		}
		if o.SentinelPassword, err = readSecret("redis.sentinel_password_file", cfg.Redis.SentinelPasswordFile); err != nil {
			return nil, err
		}
		st, err := redisstore.Open(ctx, o)
		if err != nil {
			return nil, err
		}
		if o.SentinelMaster != "" {
			log.Info("state store: redis via sentinel", "master", o.SentinelMaster, "sentinels", o.SentinelAddrs)
		} else {
			log.Info("state store: redis", "url", redactURL(cfg.Redis.URL))
		}
		return st, nil
	default:
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, err
		}
		// The bucket names are those the services' NATS permissions name.
		st, err := kvstore.Open(ctx, js, kvstore.Options{
			SessionsBucket: broker.SessionsBucket, UsersBucket: broker.UsersBucket, KeysBucket: broker.KeysBucket,
			Replicas: cfg.NATS.Replicas, Logger: log,
		})
		if err != nil {
			return nil, err
		}
		log.Info("state store: jetstream kv")
		return st, nil
	}
}

// readSecret reads the secret in the file key names; no file, no secret.
func readSecret(key, file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func redactURL(u string) string {
	if at := strings.LastIndex(u, "@"); at >= 0 {
		if scheme := strings.Index(u, "://"); scheme >= 0 && scheme < at {
			return u[:scheme+3] + "…@" + u[at+1:]
		}
	}
	return u
}

// Running is one started service.
type Running struct {
	Service micro.Service
	wait    func() // background work, ends after the start context
}

// Stop stops taking requests; the ones under way finish (their
// subscriptions drain). Cancel the start context afterwards, then Wait.
func (r *Running) Stop() { _ = r.Service.Stop() }

// Wait blocks until the service's background work ended; call it after
// cancelling the context the service was started with.
func (r *Running) Wait() {
	if r.wait != nil {
		r.wait()
	}
}

// Auth starts the auth service. It needs the signing and seal keys and the
// NATS auth callout keys: it decides every client connection.
func Auth(ctx context.Context, cfg config.Config, nc *nats.Conn, st Store, log *slog.Logger, m *metrics.Metrics) (*Running, error) {
	dir := cfg.SecretsPath()
	signing, err := secrets.SigningKey(dir)
	if err != nil {
		return nil, err
	}
	sealKey, err := secrets.SealKey(dir)
	if err != nil {
		return nil, err
	}
	callout, err := secrets.CalloutKeys(dir)
	if err != nil {
		return nil, err
	}
	svc, err := auth.New(auth.Options{
		Users: st, SigningKey: signing, SealKey: sealKey, TokenTTL: cfg.Auth.TokenTTL, Callout: &callout,
		AddressFailures: cfg.Limits.LoginFailuresPerAddress, Logger: log, Metrics: m, Replicas: cfg.NATS.Replicas,
	})
	if err != nil {
		return nil, err
	}
	ms, err := svc.Start(ctx, nc)
	if err != nil {
		return nil, err
	}
	return &Running{Service: ms, wait: svc.Wait}, nil
}

// verifier checks a request's token: its signature and expiry, and that
// it was not revoked, against a copy of the revoked tokens that lives until
// ctx ends (wait returns once it stopped).
func verifier(ctx context.Context, cfg config.Config, nc *nats.Conn, log *slog.Logger) (v rpc.Verifier, wait func(), err error) {
	pub, err := secrets.TokenPublicKey(cfg.SecretsPath())
	if err != nil {
		return nil, nil, err
	}
	revoked, err := auth.WatchRevocations(ctx, nc, cfg.Auth.TokenTTL, cfg.NATS.Replicas, log)
	if err != nil {
		return nil, nil, err
	}
	return rpc.CheckRevoked(rpc.CacheVerified(token.NewVerifier(pub), 0), revoked), revoked.Wait, nil
}

// Session starts the session service. It needs the token public key.
func Session(ctx context.Context, cfg config.Config, nc *nats.Conn, st Store, log *slog.Logger, m *metrics.Metrics) (*Running, error) {
	v, waitRevoked, err := verifier(ctx, cfg, nc, log)
	if err != nil {
		return nil, err
	}
	offer, err := relayOffer(cfg)
	if err != nil {
		return nil, err
	}
	svc := session.New(session.Options{
		Store: st, Verifier: v, CheckManifest: link.CheckManifest, Relay: offer,
		TTL: cfg.Session.TTL, Retention: cfg.Session.Retention, Logger: log,
		Instances: cfg.Instances, Metrics: m, Replicas: cfg.NATS.Replicas,
		Limits: session.Limits{
			OpenSessions: cfg.Limits.OpenSessions, SessionsPerMinute: cfg.Limits.SessionsPerMinute,
			RequestBytes:    cfg.Limits.RequestBytes,
			ManifestEntries: cfg.Limits.ManifestEntries, ManifestBytes: cfg.Limits.ManifestBytes,
		},
	})
	ms, err := svc.Start(ctx, nc)
	if err != nil {
		return nil, err
	}
	m.Gauge("sft_sessions_open", "Sessions not ended yet, by state (waiting, joined), across every replica, as the state store counts them.", "state",
		openGauge(ctx, svc, log))
	return &Running{Service: ms, wait: func() { svc.Wait(); waitRevoked() }}, nil
}

// openGauge reads the open sessions for the sft_sessions_open gauge, from
// the store at each scrape. A scrape cannot fail, so when the store does
// not answer the gauge keeps the last count read: falling to zero would
// look like an idle system, and dropping the series would break the
// dashboards' max over replicas. The failure is logged once until a count
// succeeds again, and counted in sft_store_errors_total (op open_counts).
func openGauge(ctx context.Context, svc *session.Service, log *slog.Logger) func() map[string]float64 {
	var (
		mu      sync.Mutex
		last    map[string]float64
		failing bool
	)
	return func() map[string]float64 {
		counts, err := svc.OpenSessions(ctx)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if !failing {
				log.Warn("sft_sessions_open shows the last count read until the state store answers again", "err", err)
			}
			failing = true
			return last
		}
		if failing {
			log.Info("sft_sessions_open is counted again")
		}
		failing = false
		last = map[string]float64{}
		for st, n := range counts {
			last[string(st)] = float64(n)
		}
		return last
	}
}

// relayOffer is the relay the session service hands to clients: none
// unless relay.addrs names some, and then it needs the ticket signing key.
func relayOffer(cfg config.Config) (session.Relay, error) {
	if len(cfg.Relay.Addrs) == 0 {
		return session.Relay{}, nil
	}
	key, err := secrets.RelayTicketKey(cfg.SecretsPath())
	if err != nil {
		return session.Relay{}, err
	}
	iss := relay.NewIssuer(key)
	return session.Relay{
		Addrs: cfg.Relay.Addrs,
		Issue: func(sid string, role api.Role, expires time.Time, maxBytes int64) (string, error) {
			return iss.Issue(relay.Ticket{Session: sid, Role: role, ExpiresAt: expires, MaxBytes: maxBytes})
		},
	}, nil
}

// Key starts the key service. It needs the token public key and the KEK.
// With the Redis store it reads callers' sessions there itself.
func Key(ctx context.Context, cfg config.Config, nc *nats.Conn, st Store, log *slog.Logger, m *metrics.Metrics) (*Running, error) {
	kek, err := secrets.KEK(cfg.SecretsPath())
	if err != nil {
		return nil, err
	}
	v, waitRevoked, err := verifier(ctx, cfg, nc, log)
	if err != nil {
		return nil, err
	}
	o := key.Options{
		Store: st, Verifier: v, KEK: kek, Logger: log, MaxRequestBytes: cfg.Limits.RequestBytes, Instances: cfg.Instances,
		Metrics: m, Replicas: cfg.NATS.Replicas,
	}
	// With Redis every service shares one Redis user, so reading session
	// records there grants the key service nothing it lacks, and saves a
	// request to the session service per look-up. With the JetStream
	// store the broker keeps the session bucket from the key service's
	// identity, and the key service asks the session service instead.
	if sk, ok := st.(key.Sessions); ok && cfg.Store.Backend == "redis" {
		o.Sessions = sk
	}
	svc, err := key.New(o)
	if err != nil {
		return nil, err
	}
	ms, err := svc.Start(ctx, nc)
	if err != nil {
		return nil, err
	}
	return &Running{Service: ms, wait: func() { svc.Wait(); waitRevoked() }}, nil
}

// Starter starts one service; its metrics go to m (nil: none).
type Starter func(ctx context.Context, cfg config.Config, nc *nats.Conn, st Store, log *slog.Logger, m *metrics.Metrics) (*Running, error)

// Services names the starters, as the sftd subcommands do.
var Services = map[string]Starter{"auth": Auth, "session": Session, "key": Key}

// RunningRelay is a started relay.
type RunningRelay struct {
	Server *relay.Server
	Addr   net.Addr // where it listens
	done   chan struct{}
	err    error
}

// Wait blocks until the relay stopped, after its start context ended, and
// returns what Serve returned.
func (r *RunningRelay) Wait() error {
	<-r.done
	return r.err
}

// Relay starts the relay on relay.listen with the limits of cfg.Relay. It
// reads only the relay ticket public key and needs no NATS connection. It
// serves until ctx ends, which closes every connection; Server.Drain first
// lets the relayed sessions finish.
func Relay(ctx context.Context, cfg config.Config, log *slog.Logger, m *metrics.Metrics) (*RunningRelay, error) {
	pub, err := secrets.RelayTicketPublicKey(cfg.SecretsPath())
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Relay.Listen)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	srv := relay.New(relay.Options{
		TicketKey:   pub,
		MaxSessions: cfg.Relay.MaxSessions, MaxWaiting: cfg.Relay.MaxWaiting, RatePerSession: cfg.Relay.Rate,
		IdleTimeout: cfg.Relay.IdleTimeout, PairTimeout: cfg.Relay.PairTimeout, AdmissionTimeout: cfg.Relay.AdmissionTimeout,
		Logger: log, Metrics: m,
	})
	if m != nil {
		stat := func(f func(relay.Stats) float64) func() map[string]float64 {
			return func() map[string]float64 { return map[string]float64{"": f(srv.Stats())} }
		}
		m.Gauge("sft_relay_pairs_active", "Sessions the relay carries now.", "", stat(func(s relay.Stats) float64 { return float64(s.ActivePairs) }))
		m.Gauge("sft_relay_waiting", "Admitted relay connections waiting for their peer.", "", stat(func(s relay.Stats) float64 { return float64(s.Waiting) }))
		m.Counter("sft_relay_bytes_total", "Bytes the relay copied, both directions.", "", stat(func(s relay.Stats) float64 { return float64(s.BytesRelayed) }))
	}
	r := &RunningRelay{Server: srv, Addr: ln.Addr(), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = srv.Serve(ctx, ln)
	}()
	return r, nil
}
