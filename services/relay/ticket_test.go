package relay

import (
	"crypto/ed25519"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/token"
)

func TestIssueVerify(t *testing.T) {
	key := newKey(t)
	iss := NewIssuer(key)
	v := NewVerifier(key.Public().(ed25519.PublicKey))
	want := Ticket{Session: "abcdefghijklmnop", Role: api.RoleResponder, ExpiresAt: time.Now().Add(time.Hour).Truncate(time.Second), MaxBytes: 1 << 30}

	s, err := iss.Issue(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(s)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(got.ID) {
		t.Errorf("ID %q: want 128 random bits in hex", got.ID)
	}
	want.ID = got.ID
	if got != want {
		t.Errorf("Verify = %+v, want %+v", got, want)
	}
	again, _ := iss.Issue(Ticket{Session: want.Session, Role: want.Role, ExpiresAt: want.ExpiresAt, MaxBytes: 1})
	if g, _ := v.Verify(again); g.ID == got.ID {
		t.Error("two tickets share an ID")
	}
	named, _ := iss.Issue(Ticket{Session: want.Session, Role: api.RoleInitiator, ExpiresAt: want.ExpiresAt, MaxBytes: 1, ID: "given"})
	if g, err := v.Verify(named); err != nil || g.ID != "given" {
		t.Errorf("a given ID: %+v, %v", g, err)
	}
}

// Issue refuses what Verify would refuse for its content, so the session
// service cannot hand out a useless ticket.
func TestIssueRefuses(t *testing.T) {
	iss := NewIssuer(newKey(t))
	ok := Ticket{Session: "abcdefghijklmnop", Role: api.RoleInitiator, ExpiresAt: time.Now().Add(time.Hour), MaxBytes: 1}
	for name, tc := range map[string]struct {
		edit   func(*Ticket)
		reason string
	}{
		"no session":     {func(t *Ticket) { t.Session = "" }, "session id"},
		"bad session":    {func(t *Ticket) { t.Session = "ABCDEFGHIJKLMNOP" }, "session id"},
		"no role":        {func(t *Ticket) { t.Role = "" }, "role"},
		"admin role":     {func(t *Ticket) { t.Role = "admin" }, "role"},
		"zero max bytes": {func(t *Ticket) { t.MaxBytes = 0 }, "max bytes"},
		"no expiry":      {func(t *Ticket) { t.ExpiresAt = time.Time{} }, "no expiry"},
		"long id":        {func(t *Ticket) { t.ID = strings.Repeat("x", maxTicketID+1) }, "id"},
	} {
		t.Run(name, func(t *testing.T) {
			tk := ok
			tc.edit(&tk)
			_, err := iss.Issue(tk)
			var te *TicketError
			if !errors.As(err, &te) || !strings.HasPrefix(te.Reason, tc.reason) {
				t.Fatalf("Issue = %v, want a refusal for %q", err, tc.reason)
			}
		})
	}
}

func TestVerifyRefuses(t *testing.T) {
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	v := NewVerifier(pub)
	ok := Ticket{Session: "abcdefghijklmnop", Role: api.RoleInitiator, ExpiresAt: time.Now().Add(time.Hour), MaxBytes: 1}
	good, err := NewIssuer(key).Issue(ok)
	if err != nil {
		t.Fatal(err)
	}
	expired := ok
	expired.ExpiresAt = time.Now().Add(-time.Minute)
	// sign signs claims with the relay's own key, as a compromised or
	// buggy issuer could.
	sign := func(c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	claims := func(edit func(jwt.MapClaims)) string {
		c := jwt.MapClaims{"iss": ticketIssuer, "aud": ticketAudience, "sub": ok.Session, "role": "initiator",
			"max_bytes": 1, "jti": "x", "exp": time.Now().Add(time.Hour).Unix()}
		edit(c)
		return sign(c)
	}
	hs, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": ticketIssuer, "aud": ticketAudience}).SignedString([]byte(pub))
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"iss": ticketIssuer, "aud": ticketAudience}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	// A login token is an Ed25519 JWT too; signed with the same key it
	// still names another audience.
	login, _, err := token.NewIssuer(key, time.Hour).Issue("alice", "user")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	more := ok
	more.MaxBytes = 1 << 40
	bigger := must(NewIssuer(key).Issue(more))

	for _, tc := range []struct {
		name, ticket, reason string
	}{
		{"empty", "", "malformed"},
		{"garbage", "not.a.ticket", "malformed"},
		{"expired", must(NewIssuer(key).Issue(expired)), "expired"},
		{"forged", must(NewIssuer(newKey(t)).Issue(ok)), "signature invalid"},
		{"swapped claims", parts[0] + "." + strings.Split(bigger, ".")[1] + "." + parts[2], "signature invalid"},
		{"alg none", none, "signature invalid"},
		{"hs256 keyed with the public key", hs, "signature invalid"},
		{"login token", login, "audience"},
		{"other audience", claims(func(c jwt.MapClaims) { c["aud"] = "sft" }), "audience"},
		{"no audience", claims(func(c jwt.MapClaims) { delete(c, "aud") }), "audience"},
		{"other issuer", claims(func(c jwt.MapClaims) { c["iss"] = "sft-auth" }), "issuer"},
		{"no expiry", claims(func(c jwt.MapClaims) { delete(c, "exp") }), "no expiry"},
		{"not yet valid", claims(func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() }), "not valid yet"},
		{"bad role", claims(func(c jwt.MapClaims) { c["role"] = "admin" }), "role"},
		{"no role", claims(func(c jwt.MapClaims) { delete(c, "role") }), "role"},
		{"bad session", claims(func(c jwt.MapClaims) { c["sub"] = "../../etc" }), "session id"},
		{"zero max bytes", claims(func(c jwt.MapClaims) { c["max_bytes"] = 0 }), "max bytes"},
		{"negative max bytes", claims(func(c jwt.MapClaims) { c["max_bytes"] = -5 }), "max bytes"},
		{"no id", claims(func(c jwt.MapClaims) { delete(c, "jti") }), "id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(tc.ticket)
			var te *TicketError
			if !errors.Is(err, ErrInvalidTicket) || !errors.As(err, &te) || !strings.HasPrefix(te.Reason, tc.reason) {
				t.Fatalf("Verify = %v, want a refusal for %q", err, tc.reason)
			}
			if len(tc.ticket) > 8 && strings.Contains(err.Error(), tc.ticket[len(tc.ticket)-8:]) {
				t.Errorf("error %q quotes the ticket", err)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	key := newKey(f)
	issued := Ticket{Session: "abcdefghijklmnop", Role: api.RoleResponder, ExpiresAt: time.Now().Add(time.Hour).Truncate(time.Second), MaxBytes: 42, ID: "fuzz"}
	f.Add(must(NewIssuer(key).Issue(issued)))
	v := NewVerifier(key.Public().(ed25519.PublicKey))
	f.Fuzz(func(t *testing.T, s string) {
		// Whatever is accepted says exactly what was signed: base64
		// malleability may let another spelling through, never other claims.
		got, err := v.Verify(s)
		if err == nil && got != issued {
			t.Fatalf("accepted a ticket that was never issued: %+v", got)
		}
		if err != nil && !errors.Is(err, ErrInvalidTicket) {
			t.Fatalf("error %v does not wrap ErrInvalidTicket", err)
		}
	})
}
