package launch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/key"
	"github.com/sftproject/sft/services/metrics"
	"github.com/sftproject/sft/services/session"
	"github.com/sftproject/sft/services/store"
)

// Metrics starts the HTTP server of metrics.listen with m's registry: it
// serves until ctx ends. It returns nil and no error when metrics.listen
// is empty; the server's readiness checks are added by Ready.
func Metrics(ctx context.Context, cfg config.Config, m *metrics.Metrics, log *slog.Logger) (*metrics.Server, net.Addr, error) {
	if cfg.Metrics.Listen == "" {
		return nil, nil, nil
	}
	srv := metrics.New(metrics.Options{Listen: cfg.Metrics.Listen, Metrics: m, Logger: log})
	addr, err := srv.Start(ctx)
	if err != nil {
		return nil, nil, err
	}
	log.Info("metrics, health and readiness", "listen", addr.String())
	return srv, addr, nil
}

// Ready adds the readiness of one running service to srv (nil: none):
// its NATS connection is up, its store answers, and its endpoints are
// registered.
func Ready(srv *metrics.Server, service string, nc *nats.Conn, st Store, r *Running) {
	if srv == nil {
		return
	}
	srv.AddCheck(service+" nats", func(context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("NATS connection %s", nc.Status())
		}
		return nil
	})
	srv.AddCheck(service+" store", st.Ping)
	srv.AddCheck(service+" endpoints", func(context.Context) error {
		if r.Service.Stopped() || len(r.Service.Info().Endpoints) == 0 {
			return errors.New("no endpoints registered")
		}
		return nil
	})
}

// ReadyRelay adds the relay's readiness to srv (nil: none): it listens.
func ReadyRelay(srv *metrics.Server, r *RunningRelay) {
	if srv == nil {
		return
	}
	srv.AddCheck("relay", func(context.Context) error {
		select {
		case <-r.done:
			return errors.New("relay stopped listening")
		default:
			return nil
		}
	})
}

// observedStore times every store operation of one service into the
// metrics and counts its failures; not found, already exists and
// revision conflicts are answers, not failures.
type observedStore struct {
	Store
	m       *metrics.Metrics
	service string
}

// Observe reports service's NATS connection nc in m and returns st with
// its operations recorded in m as service's: what every service process
// (sftd dev, auth, session, key) records besides the service's own.
func Observe(m *metrics.Metrics, service string, nc *nats.Conn, st Store) Store {
	if m == nil {
		return st
	}
	m.NATS(service, nc)
	o := observedStore{Store: st, m: m, service: service}
	if ot, ok := st.(oneTrip); ok {
		return observedOneTrip{o, ot}
	}
	return o
}

// oneTrip is what the Redis store adds: reads and writes that take one
// round trip where the others take several.
type oneTrip interface {
	key.Sessions
	session.CheckedCreator
	session.DueIndex
}

func (o observedStore) done(op string, start time.Time, err error) {
	failed := err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrExists) && !errors.Is(err, store.ErrConflict)
	o.m.StoreOp(o.service, op, time.Since(start), failed)
}

func (o observedStore) GetUser(ctx context.Context, name string) (*store.User, error) {
	start := time.Now()
	v, err := o.Store.GetUser(ctx, name)
	o.done("get_user", start, err)
	return v, err
}

func (o observedStore) CreateUser(ctx context.Context, u *store.User) error {
	start := time.Now()
	err := o.Store.CreateUser(ctx, u)
	o.done("create_user", start, err)
	return err
}

func (o observedStore) UpdateUser(ctx context.Context, u *store.User) error {
	start := time.Now()
	err := o.Store.UpdateUser(ctx, u)
	o.done("update_user", start, err)
	return err
}

func (o observedStore) CreateSession(ctx context.Context, sess *api.Session, ttl time.Duration) (uint64, error) {
	start := time.Now()
	v, err := o.Store.CreateSession(ctx, sess, ttl)
	o.done("create_session", start, err)
	return v, err
}

func (o observedStore) UpdateSession(ctx context.Context, sess *api.Session, rev uint64, ttl time.Duration) (uint64, error) {
	start := time.Now()
	v, err := o.Store.UpdateSession(ctx, sess, rev, ttl)
	o.done("update_session", start, err)
	return v, err
}

func (o observedStore) ListSessions(ctx context.Context, user string) ([]*api.Session, error) {
	start := time.Now()
	v, err := o.Store.ListSessions(ctx, user)
	o.done("list_sessions", start, err)
	return v, err
}

func (o observedStore) OpenSessions(ctx context.Context, user string, now time.Time) (int, error) {
	start := time.Now()
	v, err := o.Store.OpenSessions(ctx, user, now)
	o.done("open_sessions", start, err)
	return v, err
}

func (o observedStore) OpenCounts(ctx context.Context, now time.Time) (map[api.State]int, error) {
	start := time.Now()
	v, err := o.Store.OpenCounts(ctx, now)
	o.done("open_counts", start, err)
	return v, err
}

func (o observedStore) CreateKey(ctx context.Context, sessionID string, sealed []byte, ttl time.Duration) error {
	start := time.Now()
	err := o.Store.CreateKey(ctx, sessionID, sealed, ttl)
	o.done("create_key", start, err)
	return err
}

func (o observedStore) GetKey(ctx context.Context, sessionID string) ([]byte, error) {
	start := time.Now()
	v, err := o.Store.GetKey(ctx, sessionID)
	o.done("get_key", start, err)
	return v, err
}

func (o observedStore) DeleteKey(ctx context.Context, sessionID string) error {
	start := time.Now()
	err := o.Store.DeleteKey(ctx, sessionID)
	o.done("delete_key", start, err)
	return err
}

func (o observedStore) GetSession(ctx context.Context, id string) (*api.Session, uint64, error) {
	start := time.Now()
	sess, rev, err := o.Store.GetSession(ctx, id)
	o.done("get_session", start, err)
	return sess, rev, err
}

// observedOneTrip is observedStore over a store that also takes one round
// trip where the others take several (oneTrip).
type observedOneTrip struct {
	observedStore
	ot oneTrip
}

func (o observedOneTrip) CreateChecked(ctx context.Context, sess *api.Session, ttl time.Duration, maxOpen int) (uint64, int, bool, error) {
	start := time.Now()
	rev, open, exists, err := o.ot.CreateChecked(ctx, sess, ttl, maxOpen)
	o.done("create_checked", start, err)
	return rev, open, exists, err
}

func (o observedOneTrip) IssueKey(ctx context.Context, id, user string, sealed []byte, grace time.Duration) (*api.Session, []byte, bool, error) {
	start := time.Now()
	sess, enc, created, err := o.ot.IssueKey(ctx, id, user, sealed, grace)
	o.done("issue_key", start, err)
	return sess, enc, created, err
}

func (o observedOneTrip) ClaimDue(ctx context.Context, n int, lease time.Duration) ([]string, error) {
	start := time.Now()
	ids, err := o.ot.ClaimDue(ctx, n, lease)
	o.done("claim_due", start, err)
	return ids, err
}

func (o observedOneTrip) DoneDue(ctx context.Context, ids ...string) error {
	start := time.Now()
	err := o.ot.DoneDue(ctx, ids...)
	o.done("done_due", start, err)
	return err
}
