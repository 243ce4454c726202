package session

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/store"
)

// Limits bound what one user can make the service do. A zero field takes
// its default (DefaultLimits).
type Limits struct {
	OpenSessions      int   // live sessions a user has started
	SessionsPerMinute int   // creations per user per minute, per replica
	RequestBytes      int   // largest request body
	ManifestEntries   int   // most files in a manifest
	ManifestBytes     int64 // largest declared total size
}

// DefaultLimits are the limits of a zero Limits field.
var DefaultLimits = Limits{
	OpenSessions:      16,
	SessionsPerMinute: 60,
	RequestBytes:      64 << 10,
	ManifestEntries:   10000,
	ManifestBytes:     1 << 40,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.OpenSessions <= 0 {
		l.OpenSessions = d.OpenSessions
	}
	if l.SessionsPerMinute <= 0 {
		l.SessionsPerMinute = d.SessionsPerMinute
	}
	if l.RequestBytes <= 0 {
		l.RequestBytes = d.RequestBytes
	}
	if l.ManifestEntries <= 0 {
		l.ManifestEntries = d.ManifestEntries
	}
	if l.ManifestBytes <= 0 {
		l.ManifestBytes = d.ManifestBytes
	}
	return l
}

// maxBuckets bounds the rate limiter's memory. Buckets that refilled are
// forgotten first; past that, the table starts over, which errs towards
// letting users through rather than locking everyone out.
const maxBuckets = 10000

// rateLimiter is a token bucket per user: burst tokens, refilled at burst
// per minute.
type rateLimiter struct {
	mu      sync.Mutex
	burst   float64
	perSec  float64
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newRateLimiter(perMinute int) *rateLimiter {
	return &rateLimiter{burst: float64(perMinute), perSec: float64(perMinute) / 60, buckets: map[string]*bucket{}}
}

// allow takes a token for user at now; if there is none, it says how long
// until there is.
func (r *rateLimiter) allow(user string, now time.Time) (bool, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.buckets[user]
	if !ok {
		if len(r.buckets) >= maxBuckets {
			r.forgetFull(now)
		}
		b = &bucket{tokens: r.burst, at: now}
		r.buckets[user] = b
	}
	b.tokens = math.Min(r.burst, b.tokens+now.Sub(b.at).Seconds()*r.perSec)
	b.at = now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / r.perSec * float64(time.Second))
	}
	b.tokens--
	return true, 0
}

// forgetFull drops the buckets that have refilled, which behave like
// absent ones; if every bucket is in use, it drops them all.
func (r *rateLimiter) forgetFull(now time.Time) {
	for u, b := range r.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*r.perSec >= r.burst {
			delete(r.buckets, u)
		}
	}
	if len(r.buckets) >= maxBuckets {
		clear(r.buckets)
	}
}

// checkManifest applies the manifest rules: the caps first, so an
// oversized manifest is refused for what it is, then the peer link's rules
// for the entries.
func (s *Service) checkManifest(m api.Manifest) error {
	l := s.o.Limits
	if len(m.Files) > l.ManifestEntries {
		return api.Errorf(api.CodeInvalid, "manifest lists %d files; the limit is %d", len(m.Files), l.ManifestEntries)
	}
	var total int64
	for _, f := range m.Files {
		if f.Size > l.ManifestBytes-total {
			return api.Errorf(api.CodeInvalid, "manifest declares more than %d bytes in all, the limit", l.ManifestBytes)
		}
		total += max(f.Size, 0)
	}
	if err := s.o.CheckManifest(m); err != nil {
		return api.Errorf(api.CodeInvalid, "manifest: %v", err)
	}
	return nil
}

// OpenCounter is a store that keeps count of each user's open sessions
// (the live ones they initiated, up to their expiry), so that creating a
// session reads one count instead of listing every session the user is in,
// ended ones included while they are retained. Both state stores are; a
// Store that is not is asked for the list.
type OpenCounter interface {
	OpenSessions(ctx context.Context, user string, now time.Time) (int, error)
}

// CheckedCreator is a store that checks a new session and stores it in
// one step (the Redis store): no two creates can both pass the open
// sessions' limit, and it takes one round trip. It counts open sessions as
// OpenCounter does; a refused session is not stored, and open and
// responderExists say why.
type CheckedCreator interface {
	CreateChecked(ctx context.Context, sess *api.Session, ttl time.Duration, maxOpen int) (rev uint64, open int, responderExists bool, err error)
}

// createChecks reads the open sessions initiator started and whether
// responder exists, at once.
func (s *Service) createChecks(ctx context.Context, initiator, responder string) (open int, responderExists bool, err error) {
	var (
		userErr error
		read    sync.WaitGroup
	)
	read.Go(func() { _, userErr = s.o.Store.GetUser(ctx, responder) })
	open, err = s.openSessions(ctx, initiator)
	read.Wait()
	switch {
	case err != nil:
		return 0, false, err
	case errors.Is(userErr, store.ErrNotFound):
		return open, false, nil
	case userErr != nil:
		return 0, false, fmt.Errorf("read user: %w", userErr)
	}
	return open, true, nil
}

// openSessions counts the live sessions user started.
func (s *Service) openSessions(ctx context.Context, user string) (int, error) {
	now := s.now()
	if c, ok := s.o.Store.(OpenCounter); ok {
		n, err := c.OpenSessions(ctx, user, now)
		if err != nil {
			return 0, fmt.Errorf("count open sessions: %w", err)
		}
		return n, nil
	}
	sessions, err := s.o.Store.ListSessions(ctx, user)
	if err != nil {
		return 0, fmt.Errorf("list sessions: %w", err)
	}
	open := 0
	for _, sess := range sessions {
		if sess.Initiator == user && !sess.State.Terminal() && now.Before(sess.ExpiresAt) {
			open++
		}
	}
	return open, nil
}

// refuseCreate refuses a new session to a user who already started as
// many live ones as allowed, and one to a responder who does not exist.
// Sessions others started with the user as responder do not count, so
// nobody can use up someone else's allowance.
func (s *Service) refuseCreate(open int, responder string, responderExists bool) error {
	if open >= s.o.Limits.OpenSessions {
		sessions := "sessions"
		if open == 1 {
			sessions = "session"
		}
		return api.Errorf(api.CodeThrottled, "you have %d open %s, the limit: finish or cancel one (`sft-cli ls`, `sft-cli cancel`) first", open, sessions)
	}
	if !responderExists {
		return api.Errorf(api.CodeNotFound, "no user named %q", responder)
	}
	return nil
}
