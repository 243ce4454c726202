package rpc

import (
	"crypto/ed25519"
	"crypto/rand"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sftproject/sft/services/token"
)

// counting counts the verifications that reach the real verifier.
type counting struct {
	v Verifier
	n atomic.Int64
}

func (c *counting) Verify(raw string) (token.Claims, error) {
	c.n.Add(1)
	return c.v.Verify(raw)
}

func TestCacheVerified(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss := token.NewIssuer(priv, time.Hour)
	real := &counting{v: token.NewVerifier(pub)}
	c := CacheVerified(real, 2).(*verifiedCache)
	now := time.Now()
	c.now = func() time.Time { return now }

	alice, _, err := iss.Issue("alice", "user")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		cl, err := c.Verify(alice)
		if err != nil || cl.User != "alice" {
			t.Fatalf("Verify(alice) = %+v, %v", cl, err)
		}
	}
	if n := real.n.Load(); n != 1 {
		t.Errorf("a token presented 3 times was verified %d times, want 1", n)
	}

	// A refused token is refused every time, never remembered.
	forged := alice[:len(alice)-4] + "AAAA"
	for range 2 {
		if _, err := c.Verify(forged); err == nil {
			t.Fatal("forged token accepted")
		}
	}
	if n := real.n.Load(); n != 3 {
		t.Errorf("%d verifications after two forged tokens, want 3", n)
	}

	// Past its expiry, a cached token goes back to the real verifier
	// (which reads the real clock, so accepts it here).
	now = now.Add(2 * time.Hour)
	_, _ = c.Verify(alice)
	if n := real.n.Load(); n != 4 {
		t.Errorf("a token past its expiry was answered from the cache")
	}
	now = now.Add(-2 * time.Hour)

	// The cache stays within its size.
	for _, u := range []string{"bob", "carol", "dave"} {
		tok, _, err := iss.Issue(u, "user")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Verify(tok); err != nil {
			t.Fatal(err)
		}
		if len(c.m) > 2 {
			t.Fatalf("%d tokens cached, want at most 2", len(c.m))
		}
	}
}
