package cli_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
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
	ctx := within(t, time.Minute)

	// Each service identity's whole view: the requests it serves, its own
	// replies, and for auth the callout's exchange with the server (which
	// carries the passwords and tokens clients connect with).
	var tp tap
	for service, subjects := range map[string][]string{
		broker.ServiceAuth:    {"sft.v1.auth.>", "_SFT_SVC_INBOX.auth.>", "$SYS.REQ.USER.AUTH"},
		broker.ServiceSession: {"sft.v1.session.>", "_SFT_SVC_INBOX.session.>"},
		broker.ServiceKey:     {"sft.v1.key.>", "_SFT_SVC_INBOX.key.>"},
	} {
		spy := h.ServiceConnAs(service)
		for _, subj := range subjects {
			if _, err := spy.Subscribe(subj, func(m *nats.Msg) { tp.mu.Lock(); tp.msgs = append(tp.msgs, m); tp.mu.Unlock() }); err != nil {
				t.Fatal(err)
			}
		}
		if err := spy.Flush(); err != nil {
			t.Fatal(err)
		}
	}

	// Carol is an ordinary client: she may not listen on anyone's inbox
	// but her own.
	carolConn := h.ConnFor(h.Login("carol"))
	for _, subj := range []string{"_INBOX.>", "_INBOX.*.>", "_INBOX.alice.>", "_INBOX.bob.>"} {
		if _, err := carolConn.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		_ = carolConn.Flush()
		if err := carolConn.LastError(); err == nil || !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("carol subscribing to %s: %v, want a permissions violation", subj, err)
		}
	}

	// An eavesdropper with alice's own NATS identity (a stolen token)
	// hears her inbox: the key and login replies there are sealed to keys
	// only the requests held.
	eve := h.Login("alice").Conn()
	var mu sync.Mutex
	var eveSaw []*nats.Msg
	if _, err := eve.Subscribe("_INBOX.alice.>", func(m *nats.Msg) { mu.Lock(); eveSaw = append(eveSaw, m); mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	if err := eve.Flush(); err != nil {
		t.Fatal(err)
	}

	alice, bob := h.as("alice").client(), h.as("bob").client()
	s, err := alice.Create(ctx, api.CreateRequest{Responder: "bob", PeerAddrs: []string{"127.0.0.1:9"}, Manifest: api.Manifest{Files: []api.File{{Name: "x", Size: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Join(ctx, s.ID, nil); err != nil {
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

	tp.mu.Lock()
	callouts := 0
	for _, m := range tp.msgs {
		if m.Subject == "$SYS.REQ.USER.AUTH" {
			callouts++
		}
	}
	tp.mu.Unlock()
	if callouts == 0 {
		t.Fatal("the spy saw no auth callout request; the test expects to see them encrypted")
	}
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
			if strings.HasSuffix(name, "token") && strings.HasSuffix(subj, "(header)") && strings.HasPrefix(subj, "sft.v1.") {
				continue
			}
			t.Errorf("%s crossed the bus in clear on %s", name, subj)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	eveKey, err := seal.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var sealedKeys, sealedTokens int
	for _, m := range eveSaw {
		var kr api.KeyReply
		if json.Unmarshal(m.Data, &kr) == nil && len(kr.SealedKey) > 0 {
			sealedKeys++
			if _, err := eveKey.Open(seal.SessionKeyInfo(s.ID), kr.SealedKey); !errors.Is(err, seal.ErrOpen) {
				t.Errorf("eve opened a key reply: %v", err)
			}
		}
		var lr api.LoginReply
		if json.Unmarshal(m.Data, &lr) == nil && len(lr.SealedToken) > 0 {
			sealedTokens++
			if _, err := eveKey.Open(seal.LoginTokenInfo("alice"), lr.SealedToken); !errors.Is(err, seal.ErrOpen) {
				t.Errorf("eve opened a login reply: %v", err)
			}
		}
		if bytes.Contains(m.Data, key) || bytes.Contains(m.Data, []byte(alice.Token())) {
			t.Errorf("eve saw a secret in clear on %s", m.Subject)
		}
		if !strings.HasPrefix(m.Subject, "_INBOX.alice.") {
			t.Errorf("eve heard %s, outside alice's inbox", m.Subject)
		}
	}
	if sealedKeys < 1 || sealedTokens < 1 {
		t.Fatalf("eve saw %d key and %d login replies; the test expects to see them sealed", sealedKeys, sealedTokens)
	}
}

func TestClientCannotListenToRequests(t *testing.T) {
	h := start(t, nil)
	for _, subj := range []string{
		"sft.v1.>", api.SubjectSessionCreate, api.SubjectKeyGet, api.SubjectAuthLogin, api.AllEvents, api.SessionEvents("abcdefghijklmnop"),
		"$SYS.>", "$SYS.REQ.USER.AUTH", "$JS.API.>", "$KV.>", "_SFT_SVC_INBOX.>", "_INBOX.>", "_INBOX.alice.>",
	} {
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

// `sft-cli logout` revokes the cached token: a copy of it no longer
// connects, and the file is gone.
func TestLogoutRevokes(t *testing.T) {
	h := start(t, nil)
	dir := t.TempDir()
	e := &env{t: t, h: h.Harness, user: "alice", vars: append(h.Env("alice"), "SFT_CONFIG_DIR="+dir)}
	if _, _, err := e.run(t.Context(), "login"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "token.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cached struct{ Token string }
	if err := json.Unmarshal(b, &cached); err != nil || cached.Token == "" {
		t.Fatalf("token file %s: %v", b, err)
	}
	if _, err := h.TokenConn("alice", cached.Token); err != nil {
		t.Fatalf("the cached token before logout: %v", err)
	}
	if _, _, err := e.run(t.Context(), "logout"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "token.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("token file after logout: %v", err)
	}
	if _, err := h.TokenConn("alice", cached.Token); api.CodeOf(err) != api.CodeUnauthorized {
		t.Fatalf("the revoked token connects: %v", err)
	}
	if _, _, err := e.run(t.Context(), "ls"); err == nil || !strings.Contains(err.Error(), "sft-cli login") {
		t.Errorf("ls after logout: %v", err)
	}
	// Logging out twice is fine.
	if _, _, err := e.run(t.Context(), "logout"); err != nil {
		t.Errorf("second logout: %v", err)
	}
}
