package client_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/sftproject/sft/services/devstack/devstacktest"
)

// TestNoSecretInLogs runs a whole transfer with every log, the services',
// the broker's and both clients', at debug level, and looks for the
// passwords, the tokens and the session key in any common encoding.
func TestNoSecretInLogs(t *testing.T) {
	logs := &syncbuf.Buffer{}
	h := devstacktest.Start(t, nil, devstacktest.WithLog(logs, slog.LevelDebug))
	clientLog := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	alice, bob := h.Login("alice"), h.Login("bob")

	// Large enough (28 MB) that the transfer outlasts the poll below, which
	// catches the key between the join and the session's end.
	src := filepath.Join(t.TempDir(), "secret-plans.txt")
	if err := os.WriteFile(src, bytes.Repeat([]byte("file contents "), 2_000_000), 0o600); err != nil {
		t.Fatal(err)
	}
	// Alice fetches the session key once bob joined, as Send does, to know
	// what to look for.
	var (
		wg  sync.WaitGroup
		key []byte
		id  string
	)
	sent := make(chan error, 1)
	sessions := make(chan string, 1)
	sources, err := client.FilesFrom([]string{src})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := alice.Send(ctx, client.SendOptions{
			To: "bob", Sources: sources, Peer: client.PeerOptions{Listen: "127.0.0.1:0", Timeout: 30 * time.Second}, Logger: clientLog,
			OnSession: func(s *api.Session, _ bool) { sessions <- s.ID },
		})
		sent <- err
	}()
	id = <-sessions
	out, err := bob.Receive(ctx, client.ReceiveOptions{
		SessionID: id, Dir: t.TempDir(), Peer: client.PeerOptions{Timeout: 30 * time.Second}, Logger: clientLog,
		OnSession: func(*api.Session, bool) {
			wg.Go(func() {
				for ctx.Err() == nil {
					if k, err := alice.Key(ctx, id); err == nil {
						key = k
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			})
		},
	})
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("send: %v", err)
	}
	wg.Wait()
	if out.Session.State != api.StateCompleted || len(key) != 32 {
		t.Fatalf("transfer %s, key of %d bytes", out.Session.State, len(key))
	}

	all := logs.String()
	if !strings.Contains(all, id) || !strings.Contains(all, "level=DEBUG") {
		t.Fatalf("the capture missed the transfer's logs:\n%s", all)
	}
	secrets := map[string]string{
		"alice's password": devstacktest.Password("alice"),
		"bob's password":   devstacktest.Password("bob"),
		"file contents":    "file contents file contents",
	}
	for who, c := range map[string]*client.Client{"alice": alice, "bob": bob} {
		tok := c.Token()
		secrets[who+"'s token"] = tok
		secrets[who+"'s token signature"] = tok[strings.LastIndex(tok, ".")+1:]
	}
	for enc, s := range map[string]string{
		"raw": string(key), "hex": hex.EncodeToString(key), "HEX": strings.ToUpper(hex.EncodeToString(key)),
		"base64": base64.StdEncoding.EncodeToString(key), "base64url": base64.RawURLEncoding.EncodeToString(key),
	} {
		secrets["session key ("+enc+")"] = s
	}
	for what, s := range secrets {
		if s == "" {
			t.Fatalf("%s is empty", what)
		}
		if strings.Contains(all, s) {
			t.Errorf("%s appears in the logs", what)
		}
	}
}
