// Package token issues and verifies SFT access tokens: Ed25519-signed JWTs
// naming a user. The auth service holds the signing key; every other service
// verifies tokens locally with the public key, so no request needs a round
// trip to the auth service.
package token

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	issuer   = "sft-auth"
	audience = "sft"
)

// ErrInvalid covers every way a token can be unacceptable: malformed,
// forged, expired, or for someone else. Callers answer "unauthorized".
var ErrInvalid = errors.New("invalid token")

// Claims is what a verified token says.
type Claims struct {
	User      string
	Role      string
	ID        string
	ExpiresAt time.Time
}

type jwtClaims struct {
	Role string `json:"role,omitempty"`
	jwt.RegisteredClaims
}

// Issuer signs tokens.
type Issuer struct {
	key ed25519.PrivateKey
	ttl time.Duration
	now func() time.Time
}

// NewIssuer returns an Issuer signing with key; tokens live for ttl.
func NewIssuer(key ed25519.PrivateKey, ttl time.Duration) *Issuer {
	return &Issuer{key: key, ttl: ttl, now: time.Now}
}

// Issue returns a signed token for user.
func (i *Issuer) Issue(user, role string) (string, Claims, error) {
	now := i.now()
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", Claims{}, fmt.Errorf("token id: %w", err)
	}
	c := Claims{User: user, Role: role, ID: hex.EncodeToString(id[:]), ExpiresAt: now.Add(i.ttl).Truncate(time.Second)}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwtClaims{
		Role: role,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    issuer,
			Subject:   user,
			Audience:  jwt.ClaimStrings{audience},
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)), // tolerate small clock skew
			ID:        c.ID,
		},
	})
	s, err := t.SignedString(i.key)
	if err != nil {
		return "", Claims{}, fmt.Errorf("sign token: %w", err)
	}
	return s, c, nil
}

// Verifier checks tokens.
type Verifier struct {
	pub    ed25519.PublicKey
	parser *jwt.Parser
}

// NewVerifier returns a Verifier for tokens signed by pub's private key.
func NewVerifier(pub ed25519.PublicKey) *Verifier {
	return &Verifier{pub: pub, parser: Parser(issuer, audience)}
}

// Parser returns the JWT parser SFT's Ed25519-signed JWTs are checked
// with: only EdDSA signatures, the given issuer and audience, an expiry
// required (5 seconds of clock skew tolerated).
func Parser(issuer, audience string) *jwt.Parser {
	return jwt.NewParser(
		// Pinning the method stops algorithm-confusion attacks ("none", HS256 keyed with the public key).
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(issuer),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(Leeway),
	)
}

// Leeway is the clock skew Parser tolerates on a JWT's times.
const Leeway = 5 * time.Second

// Verify returns the claims of a valid token, or an error wrapping ErrInvalid.
func (v *Verifier) Verify(s string) (Claims, error) {
	var c jwtClaims
	_, err := v.parser.ParseWithClaims(s, &c, func(*jwt.Token) (any, error) { return v.pub, nil })
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return Claims{}, fmt.Errorf("%w: expired, log in again", ErrInvalid)
		}
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if c.Subject == "" || c.ID == "" {
		return Claims{}, fmt.Errorf("%w: missing subject or id", ErrInvalid)
	}
	return Claims{User: c.Subject, Role: c.Role, ID: c.ID, ExpiresAt: c.ExpiresAt.Time}, nil
}
