package key_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/devstack/devstacktest"
	"github.com/sftproject/sft/services/key"
	"github.com/sftproject/sft/services/metrics/metricstest"
	"github.com/sftproject/sft/services/rpc"
	"github.com/sftproject/sft/services/secrets"
	"github.com/sftproject/sft/services/store"
	"github.com/sftproject/sft/services/store/redisstore/redistest"
)

func wantCode(t *testing.T, err error, code api.Code) {
	t.Helper()
	if got := api.CodeOf(err); got != code {
		t.Fatalf("error = %v, want code %q", err, code)
	}
}

func create(t *testing.T, c *client.Client, responder string) *api.Session {
	t.Helper()
	s, err := c.Create(t.Context(), api.CreateRequest{
		Responder: responder,
		Manifest:  api.Manifest{Files: []api.File{{Name: "report.pdf", Size: 3}}},
		PeerAddrs: []string{"127.0.0.1:9"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// keyBoth fetches the session key as both members at once.
func keyBoth(t *testing.T, a, b *client.Client, id string) (ka, kb []byte) {
	t.Helper()
	var wg sync.WaitGroup
	var ea, eb error
	start := make(chan struct{})
	wg.Go(func() { <-start; ka, ea = a.Key(t.Context(), id) })
	wg.Go(func() { <-start; kb, eb = b.Key(t.Context(), id) })
	close(start)
	wg.Wait()
	if err := errors.Join(ea, eb); err != nil {
		t.Fatal(err)
	}
	return ka, kb
}

// TestSessionKeys runs on both stores: with JetStream the key service asks
// the session service for a caller's session, with Redis it reads the
// record itself (launch.Key); the answers must not differ.
func TestSessionKeys(t *testing.T) {
	for _, tc := range []struct {
		backend string
		asks    bool // whether the key service asks the session service
	}{
		{"jetstream", true},
		{"redis", false},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			var url string
			if tc.backend == "redis" {
				url = redistest.Start(t, redistest.Options{}).URL()
			}
			h := devstacktest.Start(t, func(c *config.Config) {
				c.Metrics.Listen = "127.0.0.1:0"
				if url != "" {
					c.Store.Backend, c.Redis.URL = "redis", url
				}
			})
			before := metricstest.Scrape(t, h.Stack.MetricsAddr)
			testSessionKeys(t, h)
			const asked = `sft_requests_total{code="ok",subject="` + api.SubjectSessionGet + `"}`
			if n := metricstest.Scrape(t, h.Stack.MetricsAddr).Delta(before, asked); (n > 0) != tc.asks {
				t.Errorf("the session service answered %v session look-ups; want some: %v", n, tc.asks)
			}
		})
	}
}

func testSessionKeys(t *testing.T, h *devstacktest.Harness) {
	alice, bob, carol := h.Login("alice"), h.Login("bob"), h.Login("carol")
	sec, err := secrets.Ensure(h.Cfg.SecretsPath()) // the stack's KEK, to read the store as the service does
	if err != nil {
		t.Fatal(err)
	}

	t.Run("members get one key, issued once", func(t *testing.T) {
		seen := map[string]bool{}
		// A few sessions, so the create-once race is run more than once.
		for range 4 {
			s := create(t, alice, "bob")
			if _, err := bob.Join(t.Context(), s.ID, nil); err != nil {
				t.Fatal(err)
			}
			ka, kb := keyBoth(t, alice, bob, s.ID)
			if len(ka) != key.Size || !bytes.Equal(ka, kb) {
				t.Fatalf("session %s: members got different keys (%d and %d bytes)", s.ID, len(ka), len(kb))
			}
			if again, err := bob.Key(t.Context(), s.ID); err != nil || !bytes.Equal(again, ka) {
				t.Fatalf("second fetch: %v; same key: %v", err, bytes.Equal(again, ka))
			}
			if seen[string(ka)] {
				t.Fatal("two sessions share a key")
			}
			seen[string(ka)] = true

			stored, err := h.Stack.Store.GetKey(t.Context(), s.ID)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(stored, ka) {
				t.Fatal("the store holds the plaintext key")
			}
			// At rest: AES-256-GCM under the KEK, nonce first, bound to the session id.
			block, err := aes.NewCipher(sec.KEK)
			if err != nil {
				t.Fatal(err)
			}
			gcm, err := cipher.NewGCM(block)
			if err != nil {
				t.Fatal(err)
			}
			n := gcm.NonceSize()
			plain, err := gcm.Open(nil, stored[:n], stored[n:], []byte(s.ID))
			if err != nil || !bytes.Equal(plain, ka) {
				t.Fatalf("stored key does not decrypt under the KEK to the issued key: %v", err)
			}
		}
	})

	t.Run("refusals", func(t *testing.T) {
		s := create(t, alice, "bob")
		_, err := alice.Key(t.Context(), s.ID)
		wantCode(t, err, api.CodeConflict) // not joined yet
		_, err = bob.Key(t.Context(), s.ID)
		wantCode(t, err, api.CodeConflict)
		if _, err := h.Stack.Store.GetKey(t.Context(), s.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a key exists before the join: %v", err)
		}
		if _, err := bob.Join(t.Context(), s.ID, nil); err != nil {
			t.Fatal(err)
		}

		_, err = carol.Key(t.Context(), s.ID)
		wantCode(t, err, api.CodeForbidden)
		if _, err := h.Stack.Store.GetKey(t.Context(), s.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a non-member's request made a key: %v", err)
		}
		_, err = alice.Key(t.Context(), "not-a-session-id")
		wantCode(t, err, api.CodeInvalid)
		_, err = alice.Key(t.Context(), "aaaaaaaaaaaaaaaa")
		wantCode(t, err, api.CodeNotFound)
		_, err = client.New(h.Conn(), "alice", "").Key(t.Context(), s.ID)
		wantCode(t, err, api.CodeUnauthorized)

		for _, replyKey := range [][]byte{nil, []byte("garbage")} {
			var rep api.KeyReply
			err := rpc.Call(t.Context(), h.Conn(), api.SubjectKeyGet, alice.Token(), api.KeyRequest{SessionID: s.ID, ReplyKey: replyKey}, &rep)
			wantCode(t, err, api.CodeInvalid)
		}
		ka, kb := keyBoth(t, alice, bob, s.ID)
		if !bytes.Equal(ka, kb) {
			t.Fatal("members disagree")
		}
	})

	t.Run("cancel deletes the key", func(t *testing.T) {
		s := create(t, alice, "bob")
		if _, err := bob.Join(t.Context(), s.ID, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Key(t.Context(), s.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Stack.Store.GetKey(t.Context(), s.ID); err != nil {
			t.Fatalf("no stored key after issue: %v", err)
		}
		if _, err := bob.Cancel(t.Context(), s.ID, "changed my mind"); err != nil {
			t.Fatal(err)
		}
		waitGone(t, h, s.ID)
		for _, c := range []*client.Client{alice, bob} {
			_, err := c.Key(t.Context(), s.ID)
			wantCode(t, err, api.CodeConflict)
		}
		if _, err := h.Stack.Store.GetKey(t.Context(), s.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a key request after cancel recreated the key: %v", err)
		}
	})
}

func waitGone(t *testing.T, h *devstacktest.Harness, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		_, err := h.Stack.Store.GetKey(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("key of session %s still stored 10s after cancel (last: %v)", id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
