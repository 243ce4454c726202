package devstack

import (
	"context"
	"errors"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/launch"
	"github.com/sftproject/sft/services/store"
)

// routedStore sends each call to the store of the service that owns the
// data: with the JetStream store, each of those runs on its service's
// connection and may reach only that service's buckets.
type routedStore struct {
	users, sessions, keys launch.Store
}

var _ launch.Store = routedStore{}

func (r routedStore) GetUser(ctx context.Context, name string) (*store.User, error) {
	return r.users.GetUser(ctx, name)
}

func (r routedStore) CreateUser(ctx context.Context, u *store.User) error {
	return r.users.CreateUser(ctx, u)
}

func (r routedStore) UpdateUser(ctx context.Context, u *store.User) error {
	return r.users.UpdateUser(ctx, u)
}

func (r routedStore) CreateSession(ctx context.Context, s *api.Session, ttl time.Duration) (uint64, error) {
	return r.sessions.CreateSession(ctx, s, ttl)
}

func (r routedStore) GetSession(ctx context.Context, id string) (*api.Session, uint64, error) {
	return r.sessions.GetSession(ctx, id)
}

func (r routedStore) UpdateSession(ctx context.Context, s *api.Session, rev uint64, ttl time.Duration) (uint64, error) {
	return r.sessions.UpdateSession(ctx, s, rev, ttl)
}

func (r routedStore) ListSessions(ctx context.Context, user string) ([]*api.Session, error) {
	return r.sessions.ListSessions(ctx, user)
}

func (r routedStore) OpenSessions(ctx context.Context, user string, now time.Time) (int, error) {
	return r.sessions.OpenSessions(ctx, user, now)
}

func (r routedStore) OpenCounts(ctx context.Context, now time.Time) (map[api.State]int, error) {
	return r.sessions.OpenCounts(ctx, now)
}

// Ping asks the store of each service.
func (r routedStore) Ping(ctx context.Context) error {
	return errors.Join(r.users.Ping(ctx), r.sessions.Ping(ctx), r.keys.Ping(ctx))
}

func (r routedStore) CreateKey(ctx context.Context, sessionID string, sealed []byte, ttl time.Duration) error {
	return r.keys.CreateKey(ctx, sessionID, sealed, ttl)
}

func (r routedStore) GetKey(ctx context.Context, sessionID string) ([]byte, error) {
	return r.keys.GetKey(ctx, sessionID)
}

func (r routedStore) DeleteKey(ctx context.Context, sessionID string) error {
	return r.keys.DeleteKey(ctx, sessionID)
}

// Close does nothing: the stack closes the stores it opened.
func (routedStore) Close() error { return nil }
