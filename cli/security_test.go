package cli_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/services/api"
	"github.com/sftproject/sft/services/seal"
)

// tap records every message on the bus, as an eavesdropper with the widest
// view (the services' own credentials) would see it.
type tap struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func (tp *tap) contains(secret []byte) string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	forms := [][]byte{secret, []byte(base64.StdEncoding.EncodeToString(secret)), []byte(base64.RawURLEncoding.EncodeToString(secret)), []byte(hex.EncodeToString(secret))}
	for _, m := range tp.msgs {
		for _, f := range forms {
			if bytes.Contains(m.Data, f) {
				return m.Subject
			}
			for _, vs := range m.Header {
				for _, v := range vs {
					if strings.Contains(v, string(f)) {
						return m.Subject + " (header)"
					}
				}
			}
		}
	}
	return ""
}

func TestNoSecretOnTheBus(t *testing.T) {
	h := start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	spy := h.ServiceConn()
	var tp tap
	if _, err := spy.Subscribe(">", func(m *nats.Msg) { tp.mu.Lock(); tp.msgs = append(tp.msgs, m); tp.mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}

	// Carol is an ordinary client: she may listen on _INBOX.>, so she sees
	// the replies meant for alice and bob.
	carolConn := clientConn(t, h)
	var mu sync.Mutex
	var carolSaw []*nats.Msg
	if _, err := carolConn.Subscribe("_INBOX.>", func(m *nats.Msg) { mu.Lock(); carolSaw = append(carolSaw, m); mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	if err := carolConn.Flush(); err != nil {
		t.Fatal(err)
	}

	alice, bob := h.as("alice").client(), h.as("bob").client()
	s, err := alice.Create(ctx, api.CreateRequest{Responder: "bob", PeerAddr: "127.0.0.1:9", Manifest: api.Manifest{Files: []api.File{{Name: "x", Size: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Join(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	key, err := bob.Key(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Key(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the taps drain

	for name, secret := range map[string][]byte{
		"session key":    key,
		"alice password": []byte("pw-alice"),
		"bob password":   []byte("pw-bob"),
		"alice token":    []byte(alice.Token()),
		"bob token":      []byte(bob.Token()),
	} {
		if subj := tp.contains(secret); subj != "" {
			// Tokens authenticate requests, so they do travel in request
			// headers; those subjects are readable by services only.
			if strings.HasSuffix(name, "token") && strings.HasSuffix(subj, "(header)") && !strings.HasPrefix(subj, "_INBOX") {
				continue
			}
			t.Errorf("%s crossed the bus in clear on %s", name, subj)
		}
	}

	// Carol saw the sealed key and login replies; she cannot open them.
	mu.Lock()
	defer mu.Unlock()
	carolKey, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var sealedKeys, sealedTokens int
	for _, m := range carolSaw {
		var kr api.KeyReply
		if json.Unmarshal(m.Data, &kr) == nil && len(kr.SealedKey) > 0 {
			sealedKeys++
			if _, err := carolKey.Open(seal.SessionKeyInfo(s.ID), kr.SealedKey); !errors.Is(err, seal.ErrOpen) {
				t.Errorf("carol opened a key reply: %v", err)
			}
		}
		var lr api.LoginReply
		if json.Unmarshal(m.Data, &lr) == nil && len(lr.SealedToken) > 0 {
			sealedTokens++
			if _, err := carolKey.Open(seal.LoginTokenInfo("alice"), lr.SealedToken); !errors.Is(err, seal.ErrOpen) {
				t.Errorf("carol opened a login reply: %v", err)
			}
		}
		if bytes.Contains(m.Data, key) || bytes.Contains(m.Data, []byte(bob.Token())) {
			t.Errorf("carol saw a secret in clear on %s", m.Subject)
		}
	}
	if sealedKeys < 2 || sealedTokens < 2 {
		t.Fatalf("carol saw %d key and %d login replies; the test expects to see them sealed", sealedKeys, sealedTokens)
	}
}

func TestClientCannotListenToRequests(t *testing.T) {
	h := start(t, nil)
	for _, subj := range []string{"sft.v1.>", api.SubjectSessionCreate, api.SubjectKeyGet, api.SubjectAuthLogin, api.AllEvents, "$SYS.>", "$JS.API.>"} {
		t.Run(subj, func(t *testing.T) {
			errs := make(chan error, 1)
			nc := h.Conn()
			nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				select {
				case errs <- err:
				default:
				}
			})
			if _, err := nc.SubscribeSync(subj); err != nil {
				t.Fatal(err)
			}
			_ = nc.Flush()
			select {
			case err := <-errs:
				if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
					t.Fatalf("err = %v, want a permissions violation", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("subscribing to %s was not refused", subj)
			}
		})
	}
}
