// Package key is the key service: it makes one random 256-bit key per
// session, hands it only to the session's two members once the responder
// joined, sealed to a one-time public key of the caller's, and deletes it
// when the session ends.
//
// The service is trusted by design: it sees session keys. What limits the
// damage of a compromise is that keys exist only while a session is live,
// are encrypted at rest under a key-encryption key the store never sees, and
// that the peer link's Noise handshake adds ephemeral X25519, so recorded
// link traffic stays safe once a key is deleted.
package key

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/services/events"
	"github.com/sftproject/sft/services/jsretry"
	"github.com/sftproject/sft/services/rpc"
	"github.com/sftproject/sft/services/seal"
	"github.com/sftproject/sft/services/store"
)

// Size is the session key length in bytes (AES-256, Noise PSK).
const Size = 32

// Store is the part of the state store the key service uses. It only ever
// sees keys encrypted under the KEK.
type Store interface {
	CreateKey(ctx context.Context, sessionID string, sealed []byte, ttl time.Duration) error
	GetKey(ctx context.Context, sessionID string) ([]byte, error)
	DeleteKey(ctx context.Context, sessionID string) error
}

// Options are the key service's dependencies and settings.
type Options struct {
	Store    Store
	Verifier rpc.Verifier
	// KEK encrypts keys at rest (AES-256-GCM, session id as associated data).
	KEK    []byte
	Logger *slog.Logger
	// MaxRequestBytes bounds a request body; 0 means rpc.MaxBody.
	MaxRequestBytes int
	// Instances is how many requests this process serves at once
	// (rpc.AddService); 0 means 1.
	Instances int
	// Metrics counts and times requests (nil: not recorded).
	Metrics rpc.Recorder
	// Replicas is the replica count of the event stream when this service
	// creates it; 0 means 1.
	Replicas int
	// Sessions, when set, is where the service reads a caller's session
	// itself, with the session's key in the same round trip; nil means it
	// asks the session service on the caller's behalf (a request and its
	// reply through the broker, and the session service's work, for each
	// look-up) and Store for the key. Set it only where the service's store
	// credentials reach session records anyway (Redis, whose one user every
	// service shares), never to widen what a service may read.
	Sessions Sessions
}

// Sessions is a store that holds sessions and their keys side by side: it
// serves a key request in one round trip, and deletes a session's key
// with the write that ends the session, so no reaper is needed.
type Sessions interface {
	// IssueKey reads the session (it need only hold its id, members,
	// state and expiry) and its sealed key, and first stores sealed as
	// that key when the session has none, is joined and not past its
	// expiry, and user is one of its members; created tells whether it
	// did. A stored key lasts until the session's expiry plus grace, and
	// whatever ends the session after it was stored deletes it.
	IssueKey(ctx context.Context, id, user string, sealed []byte, grace time.Duration) (sess *api.Session, key []byte, created bool, err error)
}

// Service answers sft.v1.key.get and, unless its store ends keys with
// their sessions (Options.Sessions), reaps keys of ended sessions.
type Service struct {
	o     Options
	nc    *nats.Conn
	kek   cipher.AEAD
	wg    sync.WaitGroup
	now   func() time.Time
	grace time.Duration // extra key lifetime past session expiry, for clock skew
}

// New builds the service.
func New(o Options) (*Service, error) {
	if len(o.KEK) != 32 {
		return nil, fmt.Errorf("key service: key-encryption key must be 32 bytes, got %d", len(o.KEK))
	}
	block, err := aes.NewCipher(o.KEK)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Service{o: o, kek: aead, now: time.Now, grace: time.Minute}, nil
}

// reaperConsumer is named in the key service's NATS permissions.
const reaperConsumer = broker.KeyReaperConsumer

// reapers is how many terminal events a replica handles at once. One at a
// time, each waiting for its store round trip, falls behind the sessions
// that end under load (at a few hundred a second), and their keys outlive
// them for as long as the backlog lasts.
const reapers = 16

// Start registers the endpoint and the reaper; both stop when ctx ends.
func (s *Service) Start(ctx context.Context, nc *nats.Conn) (micro.Service, error) {
	s.nc = nc
	// A store that ends keys with their sessions needs no reaper.
	if s.o.Sessions == nil {
		if err := s.startReaper(ctx, nc); err != nil {
			return nil, err
		}
	}
	svc, err := rpc.AddService(nc, micro.Config{
		Name:        "sft-key",
		Version:     "1.0.0",
		Description: "SFT session keys, sealed to each member",
		QueueGroup:  api.QueueGroup,
	}, s.o.Instances)
	if err != nil {
		return nil, fmt.Errorf("start key service: %w", err)
	}
	h := rpc.Handler{Ctx: ctx, Verifier: s.o.Verifier, Log: s.o.Logger, MaxBody: s.o.MaxRequestBytes, Metrics: s.o.Metrics}
	if err := svc.AddEndpoint("get", rpc.Authed(h, s.get), micro.WithEndpointSubject(api.SubjectKeyGet)); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("start key service: %w", err)
	}
	return svc, nil
}

// startReaper deletes the key of each session that ends, as its terminal
// event arrives; it stops when ctx ends.
func (s *Service) startReaper(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("key service: jetstream: %w", err)
	}
	st, err := events.EnsureStream(ctx, js, s.o.Replicas)
	if err != nil {
		return err
	}
	// A durable consumer shared by all replicas: each terminal event is
	// handled once, and events that arrive while no replica runs wait.
	ccfg := jetstream.ConsumerConfig{
		Durable:        reaperConsumer,
		FilterSubjects: events.TerminalSubjects(),
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverNewPolicy,
		AckWait:        30 * time.Second,
	}
	cons, err := jsretry.Do(ctx, func() (jetstream.Consumer, error) { return st.CreateOrUpdateConsumer(ctx, ccfg) })
	if err != nil {
		return fmt.Errorf("key service: reaper consumer: %w", err)
	}
	work := make(chan jetstream.Msg)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case work <- m:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return fmt.Errorf("key service: consume events: %w", err)
	}
	for range reapers {
		s.wg.Go(func() {
			for {
				select {
				case m := <-work:
					s.reap(ctx, m)
				case <-ctx.Done():
					return
				}
			}
		})
	}
	s.wg.Go(func() {
		<-ctx.Done()
		cc.Stop()
	})

	return nil
}

// Wait blocks until background work stopped after Start's context ended.
func (s *Service) Wait() { s.wg.Wait() }

func (s *Service) get(ctx context.Context, c rpc.Caller, r *api.KeyRequest) (*api.KeyReply, error) {
	if err := api.ValidSessionID(r.SessionID); err != nil {
		return nil, err
	}
	if len(r.ReplyKey) == 0 {
		return nil, api.Errorf(api.CodeInvalid, "reply_key is required: the key is only sent sealed")
	}
	var (
		k   []byte
		err error
	)
	if s.o.Sessions != nil {
		k, err = s.issue(ctx, c, r.SessionID)
	} else {
		k, err = s.sessionKey(ctx, c, r.SessionID)
	}
	if err != nil {
		return nil, err
	}
	defer clear(k)
	sealed, err := seal.Seal(r.ReplyKey, seal.SessionKeyInfo(r.SessionID), k)
	if err != nil {
		return nil, api.Errorf(api.CodeInvalid, "reply_key is not a valid public key: %v", err)
	}
	s.o.Logger.Info("key issued", "session", r.SessionID, "user", c.User)
	return &api.KeyReply{SealedKey: sealed}, nil
}

// issuable refuses a key to anyone but a member of a joined session.
func issuable(sess *api.Session, user string) error {
	if _, ok := sess.RoleOf(user); !ok {
		return api.Errorf(api.CodeForbidden, "you are not a member of session %s", sess.ID)
	}
	switch sess.State {
	case api.StateJoined:
		return nil
	case api.StateWaiting:
		return api.Errorf(api.CodeConflict, "session %s has not been joined yet: the key is issued once %s joins", sess.ID, sess.Responder)
	case api.StateExpired:
		return api.Errorf(api.CodeExpired, "session %s expired", sess.ID)
	default:
		return api.Errorf(api.CodeConflict, "session %s is %s: its key is gone", sess.ID, sess.State)
	}
}

// issue returns the key of the caller's session from a store that holds
// sessions beside their keys (Options.Sessions), in one round trip: every
// request brings a key of its own, which the store keeps only when the
// session has none yet and the caller may have it.
func (s *Service) issue(ctx context.Context, c rpc.Caller, id string) ([]byte, error) {
	k := make([]byte, Size)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	sess, enc, created, err := s.o.Sessions.IssueKey(ctx, id, c.User, s.encrypt(id, k), s.grace)
	if err != nil {
		clear(k)
		return nil, sessionError(id, err)
	}
	if err := issuable(s.expire(sess), c.User); err != nil {
		clear(k)
		if created {
			// Stored in the instant of the session's expiry by the
			// store's clock, past it by ours: no key outlives its session.
			if derr := s.o.Store.DeleteKey(ctx, id); derr != nil {
				s.o.Logger.Warn("delete key of ended session failed", "session", id, "err", derr)
			}
		}
		return nil, err
	}
	if created {
		return k, nil
	}
	clear(k)
	if enc == nil {
		// Joined and live by our clock, past its expiry by the store's.
		return nil, api.Errorf(api.CodeExpired, "session %s expired", id)
	}
	return s.decrypt(id, enc)
}

// sessionKey returns the key of the caller's session, asking the session
// service for the session and the store for the key, and makes the key if
// the session has none yet.
func (s *Service) sessionKey(ctx context.Context, c rpc.Caller, id string) ([]byte, error) {
	sess, err := s.askSession(ctx, c, id)
	if err != nil {
		return nil, err
	}
	if err := issuable(sess, c.User); err != nil {
		return nil, err
	}
	enc, err := s.o.Store.GetKey(ctx, id)
	switch {
	case err == nil:
		return s.decrypt(id, enc)
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("read key: %w", err)
	}
	return s.makeKey(ctx, sess, func() (*api.Session, error) { return s.askSession(ctx, c, id) })
}

// makeKey makes the session's key, or returns the one another request
// made first, so both members get the same key. The session may have
// ended while the key was being made, and its reaper may then have run
// before the key existed: a key this request stored is checked against the
// session as it is after (reread), so no key outlives its session. A key
// found already made was checked this way by the request that made it, and
// the reaper deletes it at the end.
func (s *Service) makeKey(ctx context.Context, sess *api.Session, reread func() (*api.Session, error)) ([]byte, error) {
	k := make([]byte, Size)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	prior, err := s.createKey(ctx, sess.ID, s.encrypt(sess.ID, k), sess.ExpiresAt.Sub(s.now())+s.grace)
	var after *api.Session
	if err == nil && prior == nil {
		after, err = reread()
	}
	if err != nil {
		// Not known to have ended: a key made stays for a retry (the
		// reaper or its own expiry removes it if the session ended).
		clear(k)
		return nil, err
	}
	if prior != nil {
		clear(k)
		return s.decrypt(sess.ID, prior)
	}
	if after = s.expire(after); after.State != api.StateJoined {
		clear(k)
		if derr := s.o.Store.DeleteKey(ctx, sess.ID); derr != nil {
			s.o.Logger.Warn("delete key of ended session failed", "session", sess.ID, "err", derr)
		}
		return nil, api.Errorf(api.CodeConflict, "session %s ended while its key was being issued", sess.ID)
	}
	return k, nil
}

// createKey stores enc as the session's key unless it has one; it returns
// the key stored before (nil: enc was stored).
func (s *Service) createKey(ctx context.Context, id string, enc []byte, ttl time.Duration) ([]byte, error) {
	for range 3 {
		err := s.o.Store.CreateKey(ctx, id, enc, ttl)
		if err == nil {
			return nil, nil
		}
		if !errors.Is(err, store.ErrExists) {
			return nil, fmt.Errorf("store key: %w", err)
		}
		prior, err := s.o.Store.GetKey(ctx, id)
		if err == nil {
			return prior, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("read key: %w", err)
		}
	}
	return nil, api.Errorf(api.CodeConflict, "key for session %s is being replaced; retry", id)
}

// sessionAsk bounds the question to the session service, well inside the
// client's own wait for this request (so the client hears "unavailable"
// rather than nothing, and asks again).
const sessionAsk = 4 * time.Second

// askSession asks the session service for a session on the caller's
// behalf (it refuses a caller who is not a member; get checks membership
// either way).
func (s *Service) askSession(ctx context.Context, c rpc.Caller, id string) (*api.Session, error) {
	ctx, cancel := context.WithTimeout(ctx, sessionAsk)
	defer cancel()
	var sess api.Session
	if err := rpc.Call(ctx, s.nc, api.SubjectSessionGet, c.Token, api.SessionRequest{SessionID: id}, &sess); err != nil {
		var e *api.Error
		if errors.As(err, &e) {
			return nil, e
		}
		return nil, api.Errorf(api.CodeUnavailable, "the session service did not answer (%v); retry", err)
	}
	return &sess, nil
}

// sessionError is what a caller hears when the store could not give a
// session.
func sessionError(id string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return api.Errorf(api.CodeNotFound, "no session %s (it may have ended and been removed)", id)
	}
	return fmt.Errorf("read session: %w", err)
}

// expire makes a live session read from the store past its expiry read as
// expired, as the session service would already answer: its expiry timer
// has not fired yet.
func (s *Service) expire(sess *api.Session) *api.Session {
	if !sess.State.Terminal() && !s.now().Before(sess.ExpiresAt) {
		sess.State = api.StateExpired
	}
	return sess
}

func (s *Service) encrypt(id string, k []byte) []byte {
	nonce := make([]byte, s.kek.NonceSize(), s.kek.NonceSize()+len(k)+s.kek.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return s.kek.Seal(nonce, nonce, k, []byte(id))
}

func (s *Service) decrypt(id string, enc []byte) ([]byte, error) {
	n := s.kek.NonceSize()
	if len(enc) < n {
		return nil, fmt.Errorf("stored key for session %s is corrupt", id)
	}
	k, err := s.kek.Open(nil, enc[:n], enc[n:], []byte(id))
	if err != nil {
		return nil, fmt.Errorf("stored key for session %s does not decrypt (wrong key-encryption key?): %w", id, err)
	}
	return k, nil
}

func (s *Service) reap(ctx context.Context, m jetstream.Msg) {
	ev, err := events.Decode(m.Data())
	if err != nil || api.ValidSessionID(ev.Session) != nil {
		_ = m.Term()
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.o.Store.DeleteKey(ctx, ev.Session); err != nil {
		s.o.Logger.Warn("delete key failed; will retry", "session", ev.Session, "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	s.o.Logger.Info("key deleted", "session", ev.Session, "reason", ev.Type)
	_ = m.Ack()
}
