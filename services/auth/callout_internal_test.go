package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/services/store"
)

// users is a fixed user table: the decision logic under test reads only
// GetUser (the NATS path is covered in TestConnectAuthorization).
type users map[string]*store.User

func (u users) GetUser(_ context.Context, name string) (*store.User, error) {
	if x, ok := u[name]; ok {
		return x, nil
	}
	return nil, store.ErrNotFound
}

// Password attempts are throttled per client address as well as per name:
// guessing one password each for many names from one address runs into
// the address's limit, which does not hold back other addresses.
func TestAuthorizeThrottlesPerAddress(t *testing.T) {
	tab := users{}
	for i := range 25 {
		name := fmt.Sprintf("u%d", i)
		hash, err := HashPassword("pw-"+name, cheap)
		if err != nil {
			t.Fatal(err)
		}
		tab[name] = &store.User{Name: name, PasswordHash: hash, Role: "user"}
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Users: tab, SigningKey: key, TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	try := func(name, pw, host string) error {
		_, err := s.authorize(ctx, broker.Credentials{User: name, Password: pw, Host: host})
		return err
	}
	if err := try("u24", "pw-u24", "10.0.0.1"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	free := s.addrThrottle.free
	for i := range free {
		if err := try(fmt.Sprintf("u%d", i), "guess", "10.0.0.1"); err == nil {
			t.Fatal("a wrong password was accepted")
		}
	}
	// Every name has failed once only, but the address is spent: even a
	// right password from it is refused for now...
	if err := try("u23", "pw-u23", "10.0.0.1"); err == nil {
		t.Fatalf("right password accepted from an address with %d failures", free)
	}
	// ... and the same user from elsewhere gets in.
	g, err := s.authorize(ctx, broker.Credentials{User: "u23", Password: "pw-u23", Host: "10.0.0.2"})
	if err != nil {
		t.Fatalf("right password from another address: %v", err)
	}
	if g.User != "u23" || !g.LoginOnly {
		t.Errorf("grant %+v, want a login-only grant for u23", g)
	}
}

// No credentials, or a user name without a password, get nothing.
func TestAuthorizeNeedsCredentials(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Users: users{}, SigningKey: key, TokenTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []broker.Credentials{{}, {User: "alice"}, {Password: "x"}, {User: "Not Valid", Password: "x"}} {
		if _, err := s.authorize(t.Context(), c); err == nil {
			t.Errorf("%+v admitted", c)
		}
	}
}
