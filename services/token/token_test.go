package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func newKey(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestIssueVerify(t *testing.T) {
	key := newKey(t)
	iss := NewIssuer(key, time.Hour)
	v := NewVerifier(key.Public().(ed25519.PublicKey))

	tok, claims, err := iss.Issue("alice", "user")
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if got.User != "alice" || got.Role != "user" || got.ID != claims.ID || !got.ExpiresAt.Equal(claims.ExpiresAt) {
		t.Fatalf("claims = %+v, want %+v", got, claims)
	}

	expired := NewIssuer(key, time.Hour)
	expired.now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	expTok, _, err := expired.Issue("alice", "user")
	if err != nil {
		t.Fatal(err)
	}
	forged, _, err := NewIssuer(newKey(t), time.Hour).Issue("alice", "user")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "iss": issuer, "aud": audience, "exp": time.Now().Add(time.Hour).Unix(), "jti": "x"})
	noneTok, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "iss": issuer, "aud": audience, "exp": time.Now().Add(time.Hour).Unix(), "jti": "x"})
	hsTok, err := hs.SignedString([]byte(key.Public().(ed25519.PublicKey)))
	if err != nil {
		t.Fatal(err)
	}

	for name, bad := range map[string]string{
		"empty":           "",
		"garbage":         "not.a.token",
		"expired":         expTok,
		"forged":          forged,
		"alg none":        noneTok,
		"hs256 confusion": hsTok,
		"swapped payload": parts[0] + "." + strings.Split(forged, ".")[1] + "." + parts[2],
		"truncated sig":   tok[:len(tok)-4],
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := v.Verify(bad); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Verify = %v, want ErrInvalid", err)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	key := newKey(f)
	tok, issued, _ := NewIssuer(key, time.Hour).Issue("alice", "user")
	f.Add(tok)
	f.Add("a.b.c")
	v := NewVerifier(key.Public().(ed25519.PublicKey))
	f.Fuzz(func(t *testing.T, s string) {
		// Whatever is accepted must say exactly what was signed: base64
		// malleability may let another spelling through, but never other claims.
		c, err := v.Verify(s)
		if err == nil && (c.User != issued.User || c.ID != issued.ID || !c.ExpiresAt.Equal(issued.ExpiresAt)) {
			t.Fatalf("accepted claims that were never issued: %q (%+v)", s, c)
		}
	})
}
