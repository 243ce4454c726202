package key

import (
	"bytes"
	"crypto/rand"
	"log/slog"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/rpc"
	"github.com/sftproject/sft/services/seal"
	"github.com/sftproject/sft/services/store/redisstore"
	"github.com/sftproject/sft/services/store/redisstore/redistest"
	"github.com/sftproject/sft/services/token"
)

// onRedis is a key service on a Redis of its own, reading sessions there
// itself (Options.Sessions), with a random key-encryption key.
func onRedis(t *testing.T) (*Service, *redisstore.Store) {
	t.Helper()
	st, err := redisstore.Open(t.Context(), redisstore.Options{URL: redistest.Start(t, redistest.Options{}).URL(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Store: st, Sessions: st, KEK: kek, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s, st
}

// TestSessionsFromStore checks the key service's own reading of session
// records (Options.Sessions) against what the session service would
// answer: the key goes to members of a joined session only, and a live
// session past its expiry, whose timer has not fired, is expired.
func TestSessionsFromStore(t *testing.T) {
	ctx := t.Context()
	s, st := onRedis(t)

	now := time.Now().UTC()
	put := func(id string, state api.State, expires time.Time) {
		t.Helper()
		sess := &api.Session{ID: id, State: state, Initiator: "alice", Responder: "bob", CreatedAt: now, UpdatedAt: now, ExpiresAt: expires}
		if _, err := st.CreateSession(ctx, sess, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	put("livelivelivelive", api.StateJoined, now.Add(time.Hour))
	put("pastpastpastpast", api.StateJoined, now.Add(-time.Second))
	put("waitwaitwaitwait", api.StateWaiting, now.Add(time.Hour))
	put("donedonedonedone", api.StateCompleted, now.Add(time.Hour))

	for _, tc := range []struct {
		name, user, id string
		want           api.Code // "" for a key
	}{
		{"initiator of a joined session", "alice", "livelivelivelive", ""},
		{"responder of a joined session", "bob", "livelivelivelive", ""},
		{"not a member", "carol", "livelivelivelive", api.CodeForbidden},
		{"no such session", "alice", "nonenonenonenone", api.CodeNotFound},
		{"past its expiry, timer not fired", "alice", "pastpastpastpast", api.CodeExpired},
		{"not joined yet", "bob", "waitwaitwaitwait", api.CodeConflict},
		{"ended", "bob", "donedonedonedone", api.CodeConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reply, err := seal.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			caller := rpc.Caller{Claims: token.Claims{User: tc.user}}
			rep, err := s.get(ctx, caller, &api.KeyRequest{SessionID: tc.id, ReplyKey: reply.PublicKey()})
			if got := api.CodeOf(err); got != tc.want {
				t.Fatalf("error %v (code %q), want code %q", err, got, tc.want)
			}
			if tc.want != "" {
				return
			}
			k, err := reply.Open(seal.SessionKeyInfo(tc.id), rep.SealedKey)
			if err != nil || len(k) != Size {
				t.Fatalf("sealed key does not open to %d bytes: %v", Size, err)
			}
			stored, err := st.GetKey(ctx, tc.id)
			if err != nil {
				t.Fatal(err)
			}
			if plain, err := s.decrypt(tc.id, stored); err != nil || !bytes.Equal(plain, k) {
				t.Fatalf("the stored key is not the one issued: %v", err)
			}
		})
	}
}

// TestKeyOfSessionThatEnded: a session that ended while its key was being
// made (read as joined, read again as ended once the key exists) gets no
// key, and the key made is deleted, so none outlives its session.
func TestKeyOfSessionThatEnded(t *testing.T) {
	ctx := t.Context()
	s, st := onRedis(t)
	now := time.Now().UTC()
	ended := &api.Session{ID: "endedendedended1", State: api.StateCancelled, Initiator: "alice", Responder: "bob", CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if _, err := st.CreateSession(ctx, ended, time.Hour); err != nil {
		t.Fatal(err)
	}
	asRead := *ended
	asRead.State = api.StateJoined
	reread := func() (*api.Session, error) {
		sess, _, err := st.GetSession(ctx, ended.ID)
		return sess, err
	}
	k, err := s.makeKey(ctx, &asRead, reread)
	if api.CodeOf(err) != api.CodeConflict || k != nil {
		t.Fatalf("makeKey = %x, %v; want a conflict", k, err)
	}
	if _, err := st.GetKey(ctx, ended.ID); err == nil {
		t.Error("the key made for a session that ended is still stored")
	}
}

// TestKeyAtExpiry: a key the store kept for a session it found live, which
// is past its expiry by the key service's clock, is refused and deleted.
func TestKeyAtExpiry(t *testing.T) {
	ctx := t.Context()
	s, st := onRedis(t)
	now := time.Now().UTC()
	sess := &api.Session{ID: "edgeedgeedgeedge", State: api.StateJoined, Initiator: "alice", Responder: "bob", CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if _, err := st.CreateSession(ctx, sess, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return time.Now().Add(time.Hour + time.Minute) }
	if k, err := s.issue(ctx, rpc.Caller{Claims: token.Claims{User: "alice"}}, sess.ID); api.CodeOf(err) != api.CodeExpired || k != nil {
		t.Fatalf("issue = %x, %v; want expired", k, err)
	}
	if _, err := st.GetKey(ctx, sess.ID); err == nil {
		t.Error("the key kept at the session's expiry is still stored")
	}
}
