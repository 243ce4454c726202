package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RevokedBucket is the JetStream KV bucket of revoked token ids. Every auth
// replica reads it when a token connects, so a logout counts everywhere.
const RevokedBucket = "SFT_REVOKED_TOKENS"

// revocations records revoked token ids until the tokens would have
// expired anyway: the bucket's TTL is the longest a token lives.
type revocations struct {
	kv jetstream.KeyValue
}

func openRevocations(ctx context.Context, nc *nats.Conn, tokenTTL time.Duration) (*revocations, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      RevokedBucket,
		Description: "revoked SFT login tokens (token id -> expiry)",
		History:     1,
		// A token outlives its TTL by the verifier's leeway at most.
		TTL:     tokenTTL + time.Minute,
		Storage: jetstream.FileStorage,
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

// revoked reports whether id was revoked; an unreadable bucket is an error,
// which the caller treats as a refusal.
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
