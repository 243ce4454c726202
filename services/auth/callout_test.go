package auth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/services/devstack/devstacktest"
	"github.com/sftproject/sft/services/secrets"
	"github.com/sftproject/sft/services/token"
)

// The broker admits a client only with what the auth service accepts: a
// valid, unexpired, unrevoked token, or (for logging in) the right
// password.
func TestConnectAuthorization(t *testing.T) {
	h := devstacktest.Start(t, nil)
	o := broker.ConnOptions{URL: h.Stack.URL, CAFile: h.Stack.CAFile}
	signing, err := secrets.SigningKey(h.Cfg.SecretsPath())
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(t *testing.T, key ed25519.PrivateKey, ttl time.Duration) string {
		tok, _, err := token.NewIssuer(key, ttl).Issue("alice", "user")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	refused := func(t *testing.T, err error) {
		t.Helper()
		if api.CodeOf(err) != api.CodeUnauthorized {
			t.Fatalf("connect: %v, want refused as unauthorized", err)
		}
	}

	t.Run("valid token", func(t *testing.T) {
		nc, err := client.DialToken(t.Context(), o, "alice", issue(t, signing, time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		nc.Close()
	})
	t.Run("forged token", func(t *testing.T) {
		_, err := client.DialToken(t.Context(), o, "alice", issue(t, otherKey, time.Hour))
		refused(t, err)
	})
	t.Run("expired token", func(t *testing.T) {
		_, err := client.DialToken(t.Context(), o, "alice", issue(t, signing, -time.Minute))
		refused(t, err)
	})
	t.Run("garbage token", func(t *testing.T) {
		_, err := client.DialToken(t.Context(), o, "alice", "not-a-jwt")
		refused(t, err)
	})
	t.Run("revoked token", func(t *testing.T) {
		c := h.Login("alice")
		if err := c.Logout(t.Context()); err != nil {
			t.Fatal(err)
		}
		_, err := client.DialToken(t.Context(), o, "alice", c.Token())
		refused(t, err)
		// Only that token: a new login works.
		h.Login("alice")
	})
	t.Run("logout needs a token", func(t *testing.T) {
		err := client.New(h.Conn(), "", "").Logout(t.Context())
		refused(t, err)
	})
	t.Run("wrong password", func(t *testing.T) {
		_, err := client.DialPassword(t.Context(), o, "bob", "not-bobs-password")
		refused(t, err)
		_, err = client.DialPassword(t.Context(), o, "nobody", "whatever")
		refused(t, err)
	})
	t.Run("password throttled per name", func(t *testing.T) {
		for range 3 {
			_, err := client.DialPassword(t.Context(), o, "carol", "wrong")
			refused(t, err)
		}
		// Even the right password is refused while the delay runs.
		_, err := client.DialPassword(t.Context(), o, "carol", devstacktest.Password("carol"))
		refused(t, err)
	})
	t.Run("password buys a login only", func(t *testing.T) {
		nc := h.PasswordConn("bob")
		// A refused publish gets no answer: the server reports the violation.
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		if _, err := client.New(nc, "bob", "").List(ctx, ""); err == nil {
			t.Fatal("a password connection listed sessions")
		}
		if err := nc.LastError(); err == nil || !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("last error %v, want a permissions violation", err)
		}
		// ... and the login itself works on it.
		if _, err := client.New(nc, "", "").Login(t.Context(), "bob", devstacktest.Password("bob")); err != nil {
			t.Fatal(err)
		}
	})
	// A service is its key: no client credential makes one, and a key
	// the server was not configured with is refused.
	t.Run("service identity", func(t *testing.T) {
		stranger, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		for name, so := range map[string]broker.ConnOptions{
			"unknown key":                {Service: broker.ServiceAuth, NKey: stranger},
			"service name and password":  {User: broker.ServiceAuth, Password: devstacktest.Password("alice")},
			"client password, no key":    {User: "alice", Password: devstacktest.Password("alice")},
			"token as the session inbox": {Token: h.Login("alice").Token(), InboxPrefix: broker.ServiceInbox(broker.ServiceSession)},
		} {
			t.Run(name, func(t *testing.T) {
				so.URL, so.CAFile = o.URL, o.CAFile
				nc, err := broker.Connect(t.Context(), so)
				if err != nil {
					if !strings.Contains(err.Error(), "authorization violation") {
						t.Errorf("refused with %v, want an authorization violation", err)
					}
					return
				}
				defer nc.Close()
				// Admitted as a client: it must not reach a service's inbox.
				if _, err := nc.SubscribeSync(broker.ServiceInbox(broker.ServiceSession) + ".>"); err != nil {
					t.Fatal(err)
				}
				if err := nc.Flush(); err != nil {
					t.Fatal(err)
				}
				if err := nc.LastError(); err == nil || !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
					t.Errorf("a client subscribed to a service's inbox (last error %v)", err)
				}
			})
		}
	})
}
