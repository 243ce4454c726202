package auth_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/services/devstack/devstacktest"
	"github.com/sftproject/sft/services/rpc"
	"github.com/sftproject/sft/services/seal"
	"github.com/sftproject/sft/services/store"
	"github.com/sftproject/sft/services/token"
)

func authInfo(t *testing.T, nc *nats.Conn) api.AuthInfoReply {
	t.Helper()
	var info api.AuthInfoReply
	if err := rpc.Call(t.Context(), nc, api.SubjectAuthInfo, "", struct{}{}, &info); err != nil {
		t.Fatal(err)
	}
	return info
}

// apiErr asserts err is an *api.Error with code and returns it.
func apiErr(t *testing.T, err error, code api.Code) *api.Error {
	t.Helper()
	var e *api.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v, want an *api.Error with code %q", err, code)
	}
	if e.Code != code {
		t.Fatalf("error = %v, want code %q", err, code)
	}
	return e
}

func login(ctx context.Context, nc *nats.Conn, user, password string) error {
	_, err := client.New(nc, "", "").Login(ctx, user, password)
	return err
}

// One stack for every login test: starting it is the slow part. Subtests
// use distinct users because failed logins are throttled per name.
func TestLogin(t *testing.T) {
	h := devstacktest.Start(t, nil)
	nc := h.Conn()
	info := authInfo(t, nc)
	if len(info.SealKey) == 0 || len(info.TokenKey) != ed25519.PublicKeySize {
		t.Fatalf("auth info = %d-byte seal key, %d-byte token key", len(info.SealKey), len(info.TokenKey))
	}
	verifier := token.NewVerifier(ed25519.PublicKey(info.TokenKey))

	t.Run("good password", func(t *testing.T) {
		for _, tc := range []struct{ user, role string }{{"alice", "user"}, {devstacktest.Admin, "admin"}} {
			c := client.New(nc, "", "")
			rep, err := c.Login(t.Context(), tc.user, devstacktest.Password(tc.user))
			if err != nil {
				t.Fatal(err)
			}
			claims, err := verifier.Verify(c.Token())
			if err != nil {
				t.Fatalf("token from login does not verify: %v", err)
			}
			if claims.User != tc.user || claims.Role != tc.role {
				t.Errorf("claims = %+v, want user %s role %s", claims, tc.user, tc.role)
			}
			if !claims.ExpiresAt.Equal(rep.ExpiresAt) || !rep.ExpiresAt.After(time.Now()) {
				t.Errorf("reply expires_at %v, token %v", rep.ExpiresAt, claims.ExpiresAt)
			}
		}
	})

	t.Run("bad credentials look alike", func(t *testing.T) {
		wrong := apiErr(t, login(t.Context(), nc, "bob", "not-bobs-password"), api.CodeUnauthorized)
		unknown := apiErr(t, login(t.Context(), nc, "nobody", "whatever"), api.CodeUnauthorized)
		if *wrong != *unknown {
			t.Fatalf("wrong password -> %v, unknown user -> %v: they must be indistinguishable", wrong, unknown)
		}
		if strings.Contains(wrong.Message, "bob") {
			t.Errorf("message %q names the user", wrong.Message)
		}
	})

	t.Run("unreadable stored hash", func(t *testing.T) {
		err := h.Stack.Store.CreateUser(t.Context(), &store.User{Name: "broken", PasswordHash: "$argon2id$garbage", Role: "user", CreatedAt: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		e := apiErr(t, login(t.Context(), nc, "broken", "x"), api.CodeUnauthorized)
		if e.Message != "wrong user name or password" {
			t.Errorf("message = %q", e.Message)
		}
	})

	t.Run("throttled after three failures", func(t *testing.T) {
		for range 3 {
			apiErr(t, login(t.Context(), nc, "carol", "wrong"), api.CodeUnauthorized)
		}
		start := time.Now()
		// Even the right password is refused until the delay is over.
		e := apiErr(t, login(t.Context(), nc, "carol", devstacktest.Password("carol")), api.CodeThrottled)
		if !strings.Contains(e.Message, "retry in 1s") {
			t.Fatalf("throttled message %q has no retry hint", e.Message)
		}
		time.Sleep(time.Until(start.Add(1100 * time.Millisecond)))
		if err := login(t.Context(), nc, "carol", devstacktest.Password("carol")); err != nil {
			t.Fatalf("login after the delay: %v", err)
		}
		// The success reset the count: a wrong password is a plain refusal again.
		apiErr(t, login(t.Context(), nc, "carol", "wrong"), api.CodeUnauthorized)

		// Unknown names are throttled the same way, or the throttle would
		// reveal which names exist.
		for range 3 {
			apiErr(t, login(t.Context(), nc, "ghost", "wrong"), api.CodeUnauthorized)
		}
		apiErr(t, login(t.Context(), nc, "ghost", "wrong"), api.CodeThrottled)
	})

	raw := func(t *testing.T, req api.LoginRequest) error {
		var rep api.LoginReply
		err := rpc.Call(t.Context(), nc, api.SubjectAuthLogin, "", req, &rep)
		if err == nil && len(rep.SealedToken) == 0 {
			t.Error("login succeeded without a sealed token")
		}
		return err
	}
	replyKey, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sealPw := func(t *testing.T, pub []byte, info, pw string) []byte {
		b, err := seal.Seal(pub, info, []byte(pw))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	otherKey, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("raw request control", func(t *testing.T) {
		// The hand-built request works when nothing is wrong with it, so the
		// refusals below are about the one thing each changes.
		pw := sealPw(t, info.SealKey, seal.LoginPasswordInfo("alice"), devstacktest.Password("alice"))
		if err := raw(t, api.LoginRequest{User: "alice", SealedPassword: pw, ReplyKey: replyKey.PublicKey()}); err != nil {
			t.Fatal(err)
		}
	})

	for _, tc := range []struct {
		name string
		req  func(t *testing.T) api.LoginRequest
	}{
		{"password sealed for another user", func(t *testing.T) api.LoginRequest {
			// bob's sealed password replayed under alice's name.
			pw := sealPw(t, info.SealKey, seal.LoginPasswordInfo("bob"), devstacktest.Password("alice"))
			return api.LoginRequest{User: "alice", SealedPassword: pw, ReplyKey: replyKey.PublicKey()}
		}},
		{"password sealed as another kind of box", func(t *testing.T) api.LoginRequest {
			pw := sealPw(t, info.SealKey, seal.LoginTokenInfo("alice"), devstacktest.Password("alice"))
			return api.LoginRequest{User: "alice", SealedPassword: pw, ReplyKey: replyKey.PublicKey()}
		}},
		{"password sealed to another key", func(t *testing.T) api.LoginRequest {
			pw := sealPw(t, otherKey.PublicKey(), seal.LoginPasswordInfo("alice"), devstacktest.Password("alice"))
			return api.LoginRequest{User: "alice", SealedPassword: pw, ReplyKey: replyKey.PublicKey()}
		}},
		{"password not sealed", func(t *testing.T) api.LoginRequest {
			return api.LoginRequest{User: "alice", SealedPassword: []byte(devstacktest.Password("alice")), ReplyKey: replyKey.PublicKey()}
		}},
		{"reply key garbage", func(t *testing.T) api.LoginRequest {
			pw := sealPw(t, info.SealKey, seal.LoginPasswordInfo("alice"), devstacktest.Password("alice"))
			return api.LoginRequest{User: "alice", SealedPassword: pw, ReplyKey: []byte("not a public key")}
		}},
		{"reply key missing", func(t *testing.T) api.LoginRequest {
			pw := sealPw(t, info.SealKey, seal.LoginPasswordInfo("alice"), devstacktest.Password("alice"))
			return api.LoginRequest{User: "alice", SealedPassword: pw}
		}},
		{"sealed password missing", func(t *testing.T) api.LoginRequest {
			return api.LoginRequest{User: "alice", ReplyKey: replyKey.PublicKey()}
		}},
		{"bad user name", func(t *testing.T) api.LoginRequest {
			pw := sealPw(t, info.SealKey, seal.LoginPasswordInfo("Alice"), devstacktest.Password("alice"))
			return api.LoginRequest{User: "Alice", SealedPassword: pw, ReplyKey: replyKey.PublicKey()}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			apiErr(t, raw(t, tc.req(t)), api.CodeInvalid)
		})
	}

	t.Run("invalid requests are not counted as failures", func(t *testing.T) {
		// Several refused-as-invalid requests above were for alice; none
		// tested her password, so she is not throttled.
		if err := login(t.Context(), nc, "alice", devstacktest.Password("alice")); err != nil {
			t.Fatal(err)
		}
	})
}
