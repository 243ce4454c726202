package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/services/jsretry"
)

// RevokedBucket is the JetStream KV bucket of revoked token ids (token id
// -> the token's expiry). The auth service writes it on logout and reads
// it when a token connects; every service watches it (RevocationList), so
// a logout counts everywhere, on connections opened before it too.
const RevokedBucket = broker.RevokedTokensBucket

// revokedBucketConfig keeps revoked ids until the tokens would have
// expired anyway: the bucket's TTL is the longest a token lives. It is
// kept on replicas servers of a cluster.
func revokedBucketConfig(tokenTTL time.Duration, replicas int) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      RevokedBucket,
		Description: "revoked SFT login tokens (token id -> expiry)",
		History:     1,
		// A token outlives its TTL by the verifier's leeway at most.
		TTL:      tokenTTL + time.Minute,
		Storage:  jetstream.FileStorage,
		Replicas: max(replicas, 1),
	}
}

// revocations is the auth service's side of the bucket: it writes it, and
// it is the configuration's owner.
type revocations struct {
	kv jetstream.KeyValue
}

// openRevocations creates or updates the bucket: a replica count changed
// in the configuration applies to the existing bucket too.
func openRevocations(ctx context.Context, nc *nats.Conn, tokenTTL time.Duration, replicas int) (*revocations, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := jsretry.Do(ctx, func() (jetstream.KeyValue, error) {
		return js.CreateOrUpdateKeyValue(ctx, revokedBucketConfig(tokenTTL, replicas))
	})
	if err != nil {
		return nil, fmt.Errorf("open the %s bucket: %w", RevokedBucket, err)
	}
	return &revocations{kv: kv}, nil
}

func (r *revocations) revoke(ctx context.Context, id string, expires time.Time) error {
	if _, err := r.kv.Put(ctx, id, []byte(expires.UTC().Format(time.RFC3339))); err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	return nil
}

// revoked reports whether id was revoked, asking the bucket itself: a
// connect must see a logout that happened an instant before on another
// replica. An unreadable bucket is an error, which the caller treats as a
// refusal.
func (r *revocations) revoked(ctx context.Context, id string) (bool, error) {
	_, err := r.kv.Get(ctx, id)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("read revoked tokens: %w", err)
	}
}

// RevocationList is a service's local copy of the revoked token ids, kept
// current by a watch of the bucket, so each request is checked without a
// round trip to the store (see rpc.CheckRevoked). It is safe for
// concurrent use.
type RevocationList struct {
	mu      sync.RWMutex
	ids     map[string]time.Time // token id -> token expiry; zero when unreadable
	applied chan struct{}        // closed and replaced after each applied update
	now     func() time.Time
	log     *slog.Logger
	nc      *nats.Conn
	done    chan struct{} // closed when the watch has stopped
}

// revocationSweep is how often ids of tokens that expired anyway are
// dropped (the bucket drops them itself, without telling watchers).
const revocationSweep = 10 * time.Minute

// WatchRevocations loads the revoked token ids and keeps them current
// until ctx ends; Wait then returns once the watch has stopped. It creates
// the bucket when no auth service has yet (with tokenTTL and replicas as
// the auth service would), so services may start in any order. It returns once the
// ids revoked so far are loaded: a service never answers from a partial
// list.
func WatchRevocations(ctx context.Context, nc *nats.Conn, tokenTTL time.Duration, replicas int, log *slog.Logger) (*RevocationList, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := jsretry.Do(ctx, func() (jetstream.KeyValue, error) {
		kv, err := js.KeyValue(ctx, RevokedBucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(ctx, revokedBucketConfig(tokenTTL, replicas))
			if errors.Is(err, jetstream.ErrBucketExists) {
				// Made meanwhile, by an auth service with another TTL.
				kv, err = js.KeyValue(ctx, RevokedBucket)
			}
		}
		return kv, err
	})
	if err != nil {
		return nil, fmt.Errorf("open the %s bucket: %w", RevokedBucket, err)
	}
	wctx, stop := context.WithCancel(ctx)
	w, err := kv.WatchAll(wctx)
	if err != nil {
		stop()
		return nil, fmt.Errorf("watch the %s bucket: %w", RevokedBucket, err)
	}
	l := &RevocationList{
		ids: map[string]time.Time{}, applied: make(chan struct{}),
		now: time.Now, log: log, nc: nc, done: make(chan struct{}),
	}
	loaded := make(chan struct{})
	go func() {
		defer close(l.done)
		defer stop()
		defer func() { _ = w.Stop() }()
		l.run(wctx, w, loaded)
	}()
	select {
	case <-loaded:
		return l, nil
	case <-l.done:
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("load revoked tokens: %w", err)
		}
		return nil, fmt.Errorf("watch the %s bucket: it ended before the revoked tokens were loaded", RevokedBucket)
	case <-ctx.Done():
		<-l.done
		return nil, fmt.Errorf("load revoked tokens: %w", ctx.Err())
	}
}

func (l *RevocationList) run(ctx context.Context, w jetstream.KeyWatcher, loaded chan<- struct{}) {
	sweep := time.NewTicker(revocationSweep)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sweep.C:
			l.sweep()
		case e, ok := <-w.Updates():
			switch {
			case !ok:
				// Ending with the connection is a shutdown, not a failure.
				if ctx.Err() == nil && !l.nc.IsClosed() && !l.nc.IsDraining() {
					l.log.Error("revoked-token watch ended: revocations after this are not seen", "bucket", RevokedBucket)
				}
				return
			case e == nil: // everything stored so far has been delivered
				if loaded != nil {
					close(loaded)
					loaded = nil
				}
			default:
				l.apply(e)
			}
		}
	}
}

func (l *RevocationList) apply(e jetstream.KeyValueEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e.Operation() == jetstream.KeyValuePut {
		// An unreadable expiry keeps the id until the next restart rather
		// than letting the token through.
		exp, _ := time.Parse(time.RFC3339, string(e.Value()))
		l.ids[e.Key()] = exp
	} else {
		delete(l.ids, e.Key())
	}
	close(l.applied)
	l.applied = make(chan struct{})
}

// sweep forgets ids whose tokens expired anyway (with the verifier's
// leeway), bounding the list's memory.
func (l *RevocationList) sweep() {
	cutoff := l.now().Add(-time.Minute)
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, exp := range l.ids {
		if !exp.IsZero() && exp.Before(cutoff) {
			delete(l.ids, id)
		}
	}
}

// Revoked reports whether the token with this id was revoked.
func (l *RevocationList) Revoked(id string) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	_, ok := l.ids[id]
	return ok
}

// waitFor blocks until id is in the list or ctx ends.
func (l *RevocationList) waitFor(ctx context.Context, id string) error {
	for {
		l.mu.RLock()
		_, ok := l.ids[id]
		applied := l.applied
		l.mu.RUnlock()
		if ok {
			return nil
		}
		select {
		case <-applied:
		case <-l.done:
			return errors.New("revoked-token watch stopped")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Wait blocks until the watch has stopped, after the context given to
// WatchRevocations ended.
func (l *RevocationList) Wait() { <-l.done }
