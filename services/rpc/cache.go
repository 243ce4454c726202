package rpc

import (
	"sync"
	"time"

	"github.com/sftproject/sft/services/token"
)

// DefaultVerifiedTokens bounds the tokens CacheVerified remembers.
const DefaultVerifiedTokens = 4096

// CacheVerified returns a Verifier that remembers the tokens v accepted,
// each until it expires, so a client's token, presented on every request
// it makes, has its signature checked once rather than each time (a
// signature check is a large part of a small request's cost). A hit needs
// the exact token v accepted; what v refuses is never remembered. At most
// size tokens are kept (DefaultVerifiedTokens if size < 1). Wrap the
// result in CheckRevoked, so revocation is still asked on every request.
func CacheVerified(v Verifier, size int) Verifier {
	if size < 1 {
		size = DefaultVerifiedTokens
	}
	return &verifiedCache{v: v, size: size, now: time.Now, m: map[string]token.Claims{}}
}

type verifiedCache struct {
	v    Verifier
	size int
	now  func() time.Time
	mu   sync.Mutex
	m    map[string]token.Claims
}

func (c *verifiedCache) Verify(raw string) (token.Claims, error) {
	now := c.now()
	c.mu.Lock()
	claims, ok := c.m[raw]
	c.mu.Unlock()
	if ok && now.Before(claims.ExpiresAt) {
		return claims, nil
	}
	claims, err := c.v.Verify(raw)
	if err != nil {
		return token.Claims{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.size {
		for k, cl := range c.m {
			if !now.Before(cl.ExpiresAt) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.size {
			// Every entry is live: start over rather than grow.
			clear(c.m)
		}
	}
	c.m[raw] = claims
	return claims, nil
}
