package auth_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/services/auth"
	"github.com/sftproject/sft/services/devstack/devstacktest"
	"github.com/sftproject/sft/services/secrets"
	"github.com/sftproject/sft/services/token"
)

// A logout counts on connections opened before it: the broker checks a
// token only when a connection opens, so every service checks each
// request's token against the revoked ones: auth at once, the others as
// soon as their watch of the revocations delivers it.
func TestRevokedTokenRefusedPerRequest(t *testing.T) {
	h := devstacktest.Start(t, nil)
	alice := h.Login("alice") // connection 1, opened before the logout
	bob := h.Login("bob")
	s, err := alice.Create(t.Context(), api.CreateRequest{
		Responder: "bob", PeerAddrs: []string{"127.0.0.1:9"}, Manifest: api.Manifest{Files: []api.File{{Name: "x", Size: 1}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Join(t.Context(), s.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Key(t.Context(), s.ID); err != nil {
		t.Fatalf("key before the logout: %v", err)
	}

	// Connection 2, same token, logs out.
	other, err := h.TokenConn("alice", alice.Token())
	if err != nil {
		t.Fatal(err)
	}
	if err := client.New(other, "alice", alice.Token()).Logout(t.Context()); err != nil {
		t.Fatalf("logout: %v", err)
	}

	// Connection 1's very next request to each service is refused.
	for name, call := range map[string]func() error{
		"session": func() error { _, err := alice.List(t.Context(), ""); return err },
		"key":     func() error { _, err := alice.Key(t.Context(), s.ID); return err },
		"auth":    func() error { return alice.Logout(t.Context()) },
	} {
		t.Run(name, func(t *testing.T) {
			// Auth answers the logout once its own copy has the token;
			// the other services' copies follow through their watches
			// within moments, so allow them that.
			err := call()
			for deadline := time.Now().Add(5 * time.Second); err == nil && name != "auth" && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
				err = call()
			}
			e := apiErr(t, err, api.CodeUnauthorized)
			if !strings.Contains(e.Message, "revoked") || !strings.Contains(e.Message, "sft-cli login") {
				t.Fatalf("request with the revoked token: %q, want it to say the token was revoked and to log in", e.Message)
			}
		})
	}

	// Only that token: bob, and alice's next login, are served.
	if _, err := bob.Get(t.Context(), s.ID); err != nil {
		t.Errorf("another user's request: %v", err)
	}
	if _, err := h.Login("alice").List(t.Context(), ""); err != nil {
		t.Errorf("a new login of alice's: %v", err)
	}
}

// A service's copy of the revoked tokens starts with those revoked before
// it started, follows later logouts, and stops with its context.
func TestRevocationList(t *testing.T) {
	h := devstacktest.Start(t, nil)
	v := tokenVerifier(t, h)
	early := h.Login("alice")
	if err := early.Logout(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	list, err := auth.WatchRevocations(ctx, h.ServiceConnAs(broker.ServiceKey), time.Hour, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !list.Revoked(tokenID(t, v, early.Token())) {
		t.Error("a token revoked before the list was made is not in it")
	}
	late := h.Login("alice")
	lateID := tokenID(t, v, late.Token())
	if list.Revoked(lateID) {
		t.Fatal("a live token is listed as revoked")
	}
	if err := late.Logout(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { return list.Revoked(lateID) })
	cancel()
	list.Wait() // returns: the watch stopped with its context
}

func tokenVerifier(t *testing.T, h *devstacktest.Harness) *token.Verifier {
	t.Helper()
	pub, err := secrets.TokenPublicKey(h.Cfg.SecretsPath())
	if err != nil {
		t.Fatal(err)
	}
	return token.NewVerifier(pub)
}

func tokenID(t *testing.T, v *token.Verifier, tok string) string {
	t.Helper()
	c, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	return c.ID
}

// eventually polls cond for up to ten seconds (a bound on a hang, not a
// speed requirement).
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
