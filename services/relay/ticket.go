package relay

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/token"
)

const (
	ticketIssuer   = "sft-session"
	ticketAudience = "sft-relay"
	// maxTicketID bounds what the relay remembers per used ticket.
	maxTicketID = 64
)

// Ticket admits one member of one session to a relay: the session service
// issues one per member and connection, the relay verifies it with the
// public key alone.
type Ticket struct {
	Session   string    // the session id
	Role      api.Role  // which side of the session the holder is
	ExpiresAt time.Time // the relay admits the ticket until then (whole seconds)
	MaxBytes  int64     // the most a pair may relay, both directions together
	ID        string    // unique per ticket: the relay admits each ID once
}

// ErrInvalidTicket is wrapped by every error of Verify; errors.As with a
// *TicketError tells which check failed.
var ErrInvalidTicket = errors.New("invalid relay ticket")

// TicketError says which check a ticket failed, in words that never quote
// the ticket.
type TicketError struct {
	Reason string // e.g. "expired", "signature invalid", "audience"
}

func (e *TicketError) Error() string        { return "relay ticket: " + e.Reason }
func (e *TicketError) Is(target error) bool { return target == ErrInvalidTicket }

func ticketErr(format string, args ...any) error {
	return &TicketError{Reason: fmt.Sprintf(format, args...)}
}

type ticketClaims struct {
	Role     api.Role `json:"role"`
	MaxBytes int64    `json:"max_bytes"`
	jwt.RegisteredClaims
}

// check holds the rules every ticket obeys, so Issue cannot make one that
// Verify refuses for its content.
func (t Ticket) check() error {
	if err := api.ValidSessionID(t.Session); err != nil {
		return ticketErr("session id")
	}
	if t.Role != api.RoleInitiator && t.Role != api.RoleResponder {
		return ticketErr("role must be %s or %s", api.RoleInitiator, api.RoleResponder)
	}
	if t.MaxBytes <= 0 {
		return ticketErr("max bytes must be positive")
	}
	if t.ID == "" || len(t.ID) > maxTicketID {
		return ticketErr("id must have 1 to %d characters", maxTicketID)
	}
	return nil
}

// Issuer signs tickets; the session service holds it.
type Issuer struct {
	key ed25519.PrivateKey
	now func() time.Time
}

// NewIssuer returns an Issuer signing with key.
func NewIssuer(key ed25519.PrivateKey) *Issuer { return &Issuer{key: key, now: time.Now} }

// Issue signs t. An empty ID gets a random 128-bit one; ExpiresAt is
// required and is cut to whole seconds.
func (i *Issuer) Issue(t Ticket) (string, error) {
	if t.ID == "" {
		var id [16]byte
		if _, err := rand.Read(id[:]); err != nil {
			return "", fmt.Errorf("ticket id: %w", err)
		}
		t.ID = hex.EncodeToString(id[:])
	}
	if t.ExpiresAt.IsZero() {
		return "", ticketErr("no expiry")
	}
	if err := t.check(); err != nil {
		return "", err
	}
	now := i.now()
	s, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, ticketClaims{
		Role:     t.Role,
		MaxBytes: t.MaxBytes,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    ticketIssuer,
			Subject:   t.Session,
			Audience:  jwt.ClaimStrings{ticketAudience},
			ExpiresAt: jwt.NewNumericDate(t.ExpiresAt),
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)), // tolerate clock skew
			ID:        t.ID,
		},
	}).SignedString(i.key)
	if err != nil {
		return "", fmt.Errorf("sign relay ticket: %w", err)
	}
	return s, nil
}

// Verifier checks tickets; the relay holds it.
type Verifier struct {
	pub    ed25519.PublicKey
	parser *jwt.Parser
}

// NewVerifier returns a Verifier for tickets signed by pub's private key.
func NewVerifier(pub ed25519.PublicKey) *Verifier {
	return &Verifier{pub: pub, parser: token.Parser(ticketIssuer, ticketAudience)}
}

// Verify returns the ticket s carries, or a *TicketError (wrapping
// ErrInvalidTicket) naming the check it failed.
func (v *Verifier) Verify(s string) (Ticket, error) {
	var c ticketClaims
	_, err := v.parser.ParseWithClaims(s, &c, func(*jwt.Token) (any, error) { return v.pub, nil })
	if err != nil {
		return Ticket{}, &TicketError{Reason: jwtReason(err, &c)}
	}
	t := Ticket{Session: c.Subject, Role: c.Role, ExpiresAt: c.ExpiresAt.Time, MaxBytes: c.MaxBytes, ID: c.ID}
	if err := t.check(); err != nil {
		return Ticket{}, err
	}
	return t, nil
}

// jwtReason names the failed check in fixed words: the library's messages
// may quote parts of the input. Claims are checked only once the signature
// holds, so c is what was signed when a claim is at fault.
func jwtReason(err error, c *ticketClaims) string {
	if errors.Is(err, jwt.ErrTokenRequiredClaimMissing) {
		switch {
		case c.ExpiresAt == nil:
			return "no expiry"
		case len(c.Audience) == 0:
			return "audience"
		default:
			return "issuer"
		}
	}
	for _, r := range []struct {
		err    error
		reason string
	}{
		{jwt.ErrTokenExpired, "expired"},
		{jwt.ErrTokenNotValidYet, "not valid yet"},
		{jwt.ErrTokenUsedBeforeIssued, "issued in the future"},
		{jwt.ErrTokenInvalidAudience, "audience"},
		{jwt.ErrTokenInvalidIssuer, "issuer"},
		{jwt.ErrTokenSignatureInvalid, "signature invalid"},
		{jwt.ErrTokenUnverifiable, "signing method"},
		{jwt.ErrTokenMalformed, "malformed"},
	} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "claims"
}
