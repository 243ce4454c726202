// Package redisstore implements SFT's state store on Redis, with the same
// semantics as kvstore so services can run on either.
//
// Key layout, under a configurable prefix (default "sft:"):
//
//	s:<session-id>  hash {rev, data, view}: revision, JSON record, and what a key
//	                request needs of it ("rev|state|initiator|responder|expires ms",
//	                valid only while its rev is the record's); expires with the session
//	m:<user>        sorted set of the user's session ids, scored by a time (Unix ms) at
//	                or past their records' expiry (see indexSlack); the set itself
//	                expires with the last of them
//	o:<user>        sorted set of the live sessions the user initiated, scored by
//	                the session's ExpiresAt (Unix ms); an ended one leaves it
//	open:waiting    sorted sets of every user's live sessions by state, scored by
//	open:joined     ExpiresAt (Unix ms); a session is in the one of its state, an
//	                ended one in neither; each expires with its last entry
//	u:<user>        JSON user record, no expiry
//	k:<session-id>  sealed session key, expires with its TTL and is deleted by
//	                the write that ends its session
//	due             sorted set of the sessions a replica must look at, scored by
//	                when (Unix ms): each from its creation, due at its expiry, until
//	                a replica confirms it ended and its events are published; a
//	                claimed one is due again when its lease runs out (ClaimDue)
//	rev             revision counter shared by all sessions
//
// Revisions come from one counter rather than per record, so a session that
// expired and was created again under the same id never reuses a revision a
// stale reader may still hold. Every multi-key write is one Lua script, so it
// is atomic, and scripts read the server's clock, so client clock skew does
// not shift expiries.
//
// With Sentinel (Options.SentinelMaster), the store follows the primary
// Sentinel names, and every write waits (WAIT) until a replica holds it
// before it succeeds: Redis acknowledges a write before it replicates it,
// so a write acknowledged by the primary alone may vanish when a replica is
// promoted. A write no replica acknowledged in time fails with
// store.ErrUnavailable; it may or may not survive a failover.
package redisstore

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/store"
)

// DefaultPrefix is the key prefix when Options.Prefix is empty.
const DefaultPrefix = "sft:"

const (
	// connectTimeout bounds Open's first round trip unless ctx is shorter.
	connectTimeout = 5 * time.Second
	dialTimeout    = 3 * time.Second
	// DefaultReplicaTimeout is how long a write waits for a replica when
	// Options.ReplicaTimeout is zero.
	DefaultReplicaTimeout = 2 * time.Second
)

// Options configure Open.
type Options struct {
	// URL is redis://[user:password@]host:port/db or rediss://… for TLS,
	// in the form go-redis ParseURL reads. skip_verify is refused.
	URL string
	// Username and Password override the URL's when set.
	Username, Password string
	// CAFile is a PEM file of the CAs that may sign a rediss:// server's
	// certificate. Empty means the system roots.
	CAFile string
	// Prefix starts every key, so stores can share a database (default
	// "sft:").
	Prefix string
	// Logger receives connection and configuration warnings (default
	// slog.Default()).
	Logger *slog.Logger

	// SentinelMaster, when set, names the primary the sentinels at
	// SentinelAddrs watch; the store connects to whichever server they
	// name and follows failovers. URL then gives only the scheme, user,
	// password and database; its host is not used.
	SentinelMaster string
	SentinelAddrs  []string
	// SentinelPassword is the sentinels' requirepass, if any.
	SentinelPassword string
	// ReplicaTimeout bounds how long a write waits for a replica to hold
	// it under Sentinel (default DefaultReplicaTimeout).
	ReplicaTimeout time.Duration
}

// Store is the Redis state store. It is safe for concurrent use.
type Store struct {
	rdb    *redis.Client
	prefix string
	log    *slog.Logger
	// replicas is how many replicas must hold a write before it succeeds
	// (0: none, without Sentinel), waiting at most replicaTimeout.
	replicas       int
	replicaTimeout time.Duration
}

// Open connects to Redis and checks it answers. Its errors name the address
// and what to fix, and never contain the password.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	ro, err := clientOptions(opts)
	if err != nil {
		return nil, redact(err, opts)
	}
	routeClientLog()
	rdb, addr := newClient(ro, opts)
	pctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		// The socket deadline can fire just before ctx's own timer, so
		// tell whose deadline ran out from the deadlines themselves.
		ctxErr := ctx.Err()
		if dl, ok := ctx.Deadline(); ok && ctxErr == nil && isTimeout(err) && !time.Now().Before(dl) {
			ctxErr = context.DeadlineExceeded
		}
		return nil, redact(connectError(addr, err, ctxErr), opts, ro.Password, opts.SentinelPassword)
	}
	s := &Store{rdb: rdb, prefix: opts.Prefix, log: opts.Logger}
	if opts.SentinelMaster != "" {
		s.replicas, s.replicaTimeout = 1, cmp.Or(opts.ReplicaTimeout, DefaultReplicaTimeout)
	}
	s.log.Debug("redisstore: connected", "addr", addr, "db", ro.DB, "tls", ro.TLSConfig != nil)
	s.checkConfig(pctx, addr)
	s.checkReplicas(pctx, addr)
	return s, nil
}

// newClient returns a client of the single server ro names, or, with
// Sentinel, of the primary the sentinels name, and the address to show in
// messages.
func newClient(ro *redis.Options, opts Options) (*redis.Client, string) {
	if opts.SentinelMaster == "" {
		return redis.NewClient(ro), ro.Addr
	}
	// The same no-retry, context-bound settings as a single server: a
	// write is never replayed, including across a failover.
	rdb := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:            opts.SentinelMaster,
		SentinelAddrs:         opts.SentinelAddrs,
		SentinelPassword:      opts.SentinelPassword,
		Username:              ro.Username,
		Password:              ro.Password,
		DB:                    ro.DB,
		TLSConfig:             ro.TLSConfig,
		DialTimeout:           ro.DialTimeout,
		ReadTimeout:           ro.ReadTimeout,
		WriteTimeout:          ro.WriteTimeout,
		MaxRetries:            ro.MaxRetries,
		ContextTimeoutEnabled: ro.ContextTimeoutEnabled,
		PoolSize:              ro.PoolSize,
		Protocol:              ro.Protocol,
	})
	return rdb, fmt.Sprintf("master %q of sentinels %s", opts.SentinelMaster, strings.Join(opts.SentinelAddrs, ","))
}

// clientOptions turns Options into go-redis options.
func clientOptions(opts Options) (*redis.Options, error) {
	if opts.SentinelMaster != "" && len(opts.SentinelAddrs) == 0 {
		return nil, fmt.Errorf("redisstore: %w: Sentinel master %q given without sentinel addresses", store.ErrInvalid, opts.SentinelMaster)
	}
	if opts.URL == "" {
		return nil, fmt.Errorf("redisstore: %w: no Redis URL given (redis://host:port/db or rediss://…)", store.ErrInvalid)
	}
	// Parse first ourselves: url.Parse's error quotes the whole URL,
	// password included.
	u, err := url.Parse(opts.URL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("redisstore: %w: Redis URL: %w", store.ErrInvalid, err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("redisstore: %w: Redis URL scheme %q: want redis:// or rediss://", store.ErrInvalid, u.Scheme)
	}
	if u.Query().Has("skip_verify") {
		return nil, fmt.Errorf("redisstore: %w: Redis URL: skip_verify is not supported; "+
			"give the CA that signed the server's certificate with CAFile", store.ErrInvalid)
	}
	ro, err := redis.ParseURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("redisstore: %w: Redis URL: %w", store.ErrInvalid, err)
	}
	if opts.Username != "" {
		ro.Username = opts.Username
	}
	if opts.Password != "" {
		ro.Password = opts.Password
	}
	if opts.CAFile != "" {
		if ro.TLSConfig == nil {
			return nil, fmt.Errorf("redisstore: %w: CAFile %s given for a plain redis:// URL; use rediss:// for TLS",
				store.ErrInvalid, opts.CAFile)
		}
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redisstore: Redis CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redisstore: %w: Redis CA file %s holds no PEM certificate", store.ErrInvalid, opts.CAFile)
		}
		ro.TLSConfig.RootCAs = pool
	}
	if ro.TLSConfig != nil {
		ro.TLSConfig.InsecureSkipVerify = false
		ro.TLSConfig.MinVersion = max(ro.TLSConfig.MinVersion, tls.VersionTLS12)
	}
	if ro.DialTimeout == 0 {
		ro.DialTimeout = dialTimeout
	}
	// No automatic retries unless the URL asks: a write whose reply was
	// lost would be replayed and report ErrExists or ErrConflict against
	// itself. Callers see the network error and decide.
	if ro.MaxRetries == 0 {
		ro.MaxRetries = -1
	}
	// Without this, a deadline on ctx does not bound socket reads, and
	// Open could hang on a server that accepts but never answers.
	ro.ContextTimeoutEnabled = true
	// Cluster maintenance notifications are a Redis Enterprise feature;
	// probing for them on every connection only adds noise.
	ro.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	// RESP2 unless the URL asks (?protocol=3): the store uses nothing of
	// RESP3's (pushed messages, client-side caching), and under RESP2 no
	// reply is first searched for pushed messages.
	if ro.Protocol == 0 {
		ro.Protocol = 2
	}
	return ro, nil
}

// connectError says in one line why the first PING failed. ctxErr is the
// caller's context error, which takes precedence over our own timeout.
func connectError(addr string, err, ctxErr error) error {
	if ctxErr != nil {
		return &openError{fmt.Sprintf("redisstore: cannot reach Redis at %s: %v", addr, ctxErr),
			errors.Join(ctxErr, err)}
	}
	var (
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		redErr  redis.Error
	)
	reason := err.Error()
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		reason = "connection refused"
	case errors.As(err, &dnsErr):
		reason = "unknown host " + dnsErr.Name
	case errors.As(err, &certErr):
		why := certErr.Err.Error()
		if errors.As(certErr.Err, new(x509.UnknownAuthorityError)) {
			why = "signed by an unknown authority"
		}
		reason = "TLS certificate not trusted (" + why + "); set CAFile to the CA that signed it"
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		reason = fmt.Sprintf("no answer within %v", connectTimeout)
	case errors.As(err, &redErr):
		msg := redErr.Error()
		switch {
		case strings.HasPrefix(msg, "WRONGPASS"), strings.Contains(msg, "invalid password"):
			return &openError{fmt.Sprintf("redisstore: Redis at %s refused the username or password (%s)", addr, msg), err}
		case strings.HasPrefix(msg, "NOAUTH"):
			return &openError{fmt.Sprintf("redisstore: Redis at %s needs a password: put it in the URL "+
				"(redis://:PASSWORD@host:port) or in the password option", addr), err}
		}
		return &openError{fmt.Sprintf("redisstore: Redis at %s: %s", addr, msg), err}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF):
		reason = "the server closed the connection (if it only speaks TLS, use rediss://)"
	}
	// Errors joined from several sentinels come one a line; keep one line.
	reason = strings.ReplaceAll(reason, "\n", "; ")
	return &openError{fmt.Sprintf("redisstore: cannot reach Redis at %s: %s", addr, reason), err}
}

var routeLogOnce sync.Once

// routeClientLog sends go-redis's own log lines, which it writes to stderr
// by default, to slog at debug level: they repeat what the returned errors
// already say. go-redis has one logger per process, so this is done once.
func routeClientLog() {
	routeLogOnce.Do(func() { redis.SetLogger(slogAdapter{}) })
}

type slogAdapter struct{}

func (slogAdapter) Printf(ctx context.Context, format string, v ...any) {
	slog.Default().DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// openError is a one-line message for the user that still unwraps to the
// underlying error.
type openError struct {
	msg string
	err error
}

func (e *openError) Error() string { return e.msg }
func (e *openError) Unwrap() error { return e.err }

// redact keeps a password out of an error's text, whatever layer put it
// there.
func redact(err error, opts Options, more ...string) error {
	secrets := append([]string{opts.Password, opts.SentinelPassword}, more...)
	if u, perr := url.Parse(opts.URL); perr == nil && u.User != nil {
		if p, ok := u.User.Password(); ok {
			secrets = append(secrets, p, url.QueryEscape(p), url.PathEscape(p))
		}
	}
	msg := err.Error()
	changed := false
	for _, sec := range secrets {
		if sec != "" && strings.Contains(msg, sec) {
			msg, changed = strings.ReplaceAll(msg, sec, "[redacted]"), true
		}
	}
	if !changed {
		return err
	}
	return &openError{msg, err}
}

// checkConfig warns about server settings that lose SFT's records. Managed
// services often refuse CONFIG; then there is nothing to say.
func (s *Store) checkConfig(ctx context.Context, addr string) {
	cfg, err := s.rdb.ConfigGet(ctx, "*").Result()
	if err != nil {
		return
	}
	if p := cfg["maxmemory-policy"]; strings.HasPrefix(p, "allkeys-") {
		s.log.Warn("redisstore: Redis may evict user records when memory runs out; set maxmemory-policy to noeviction or volatile-*",
			"addr", addr, "maxmemory-policy", p)
	}
	if cfg["appendonly"] == "no" {
		s.log.Warn("redisstore: Redis has appendonly off, so a restart loses recent writes",
			"addr", addr, "save", cfg["save"])
	}
}

// checkReplicas warns, under Sentinel, when the primary has no replica in
// sync: until one is, every write fails.
func (s *Store) checkReplicas(ctx context.Context, addr string) {
	if s.replicas == 0 {
		return
	}
	info, err := s.rdb.Info(ctx, "replication").Result()
	if err != nil || strings.Contains(info, "state=online") {
		return
	}
	s.log.Warn("redisstore: the Redis primary has no replica in sync, so every write fails as unavailable until one is",
		"addr", addr)
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", unavailable(err))
	}
	return nil
}

// Close closes the connection pool.
func (s *Store) Close() error { return s.rdb.Close() }

func (s *Store) sessionKey(id string) string  { return s.prefix + "s:" + id }
func (s *Store) memberKey(user string) string { return s.prefix + "m:" + user }
func (s *Store) userKey(name string) string   { return s.prefix + "u:" + name }
func (s *Store) keyKey(id string) string      { return s.prefix + "k:" + id }
func (s *Store) revKey() string               { return s.prefix + "rev" }
func (s *Store) dueKey() string               { return s.prefix + "due" }
func (s *Store) openKey(user string) string   { return s.prefix + "o:" + user }

// stateKey is the set of every live session in state (waiting, joined).
func (s *Store) stateKey(state api.State) string { return s.prefix + "open:" + string(state) }

// indexSlack is how far past its record, as a fraction of the record's
// TTL (1/indexSlack), a member-set entry is kept when it is pushed out, so
// that the writes that follow need not push it again; ListSessions skips
// an entry whose record is gone.
const indexSlack = 8

// luaClock starts every script: the server's clock in ms, and integers
// formatted without exponents.
const luaClock = `
local function now()
	local t = redis.call('TIME')
	return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(x) return string.format('%d', x) end
`

// luaPrelude starts the scripts that write sessions: luaClock, and the
// record and index updates.
var luaPrelude = luaClock + `
local indexSlackDivisor = ` + strconv.Itoa(indexSlack) + `
-- put stores the record ARGV[1] as revision rev of KEYS[1], expiring at
-- exp, with its view ARGV[6] stamped with rev.
local function put(rev, exp)
	redis.call('HSET', KEYS[1], 'rev', int(rev), 'data', ARGV[1], 'view', int(rev) .. '|' .. ARGV[6])
	redis.call('PEXPIREAT', KEYS[1], int(exp))
end
-- index keeps id in the member sets KEYS[first..] until at least exp,
-- when its record expires. An entry is pushed out only when the record
-- would outlive it, and then to exp + slack: the writes that follow within
-- slack (a session's whole life, usually) leave the sets alone. A pushed
-- set drops entries that expired and expires with its last entry.
local function index(first, id, exp, slack, t)
	for i = first, #KEYS do
		local cur = redis.call('ZSCORE', KEYS[i], id)
		if not cur or tonumber(cur) < exp then
			redis.call('ZADD', KEYS[i], int(exp + slack), id)
			redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. int(t))
			local top = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
			redis.call('PEXPIREAT', KEYS[i], int(tonumber(top[2])))
		end
	end
end
-- keep puts id in the sorted set key with score, or takes it out when
-- score is nil. An entry put in drops the entries past their expiry and
-- makes the set expire with its last entry; taking one out does neither
-- (it cannot make the set outlive an entry, and an empty set is gone). A
-- write that changes nothing (the id already there with that score) stops
-- there: most writes leave the state sets as they were.
local function keep(key, id, score, t)
	if not score then
		redis.call('ZREM', key, id)
		return
	end
	if redis.call('ZADD', key, 'CH', score, id) == 0 then return end
	redis.call('ZREMRANGEBYSCORE', key, '-inf', int(t))
	local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
	if top[2] then redis.call('PEXPIREAT', key, int(tonumber(top[2]))) end
end
-- open keeps the open-session sets, scored by expires (Unix ms): the
-- initiator's KEYS[3] while the session is live, and the global set of its
-- state, KEYS[4] (waiting) or KEYS[5] (joined). state is '' once it ended.
-- A session that ended takes its key, KEYS[6], with it.
local function open(id, state, expires, t)
	keep(KEYS[3], id, state ~= '' and expires or nil, t)
	keep(KEYS[4], id, state == 'waiting' and expires or nil, t)
	keep(KEYS[5], id, state == 'joined' and expires or nil, t)
	if state == '' then redis.call('DEL', KEYS[6]) end
end
`

// luaCreate stores a new session at time t whose member sets start at
// KEYS[first] (see createScript), and returns its revision.
const luaCreate = `
local function create(t, first)
	local rev = redis.call('INCR', KEYS[2])
	local exp = t + tonumber(ARGV[2])
	put(rev, exp)
	open(ARGV[3], ARGV[4], ARGV[5], t)
	redis.call('ZADD', KEYS[7], ARGV[5], ARGV[3])
	index(first, ARGV[3], exp, math.floor(tonumber(ARGV[2]) / indexSlackDivisor), t)
	return rev
end
`

// createScript: KEYS = session, revision counter, initiator's open set,
// waiting set, joined set, session key, due set, member sets; ARGV =
// record, TTL ms, id, state (empty once ended), ExpiresAt (Unix ms), view
// (keyView). Returns the new revision, or 0 if the session exists.
var createScript = redis.NewScript(luaPrelude + luaCreate + `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
return create(now(), 8)
`)

// createCheckedScript: as createScript with the responder's user record
// before the member sets, and ARGV[7] = how many open sessions the
// initiator may have. Returns {status, n}: {1, revision} stored, {0, 0} the
// session exists, {2, open sessions} too many open, {3, open sessions} no
// such responder.
var createCheckedScript = redis.NewScript(luaPrelude + luaCreate + `
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 0} end
local t = now()
local open = redis.call('ZCOUNT', KEYS[3], '(' .. int(t), '+inf')
if open >= tonumber(ARGV[7]) then return {2, open} end
if redis.call('EXISTS', KEYS[8]) == 0 then return {3, open} end
return {1, create(t, 9)}
`)

// updateScript: as createScript, plus ARGV[7] = expected revision.
// Returns the new revision, 0 on a revision mismatch, -1 if the session is
// gone.
var updateScript = redis.NewScript(luaPrelude + `
local cur = redis.call('HGET', KEYS[1], 'rev')
if not cur then return -1 end
if cur ~= ARGV[7] then return 0 end
local rev = redis.call('INCR', KEYS[2])
local t = now()
local exp = t + tonumber(ARGV[2])
put(rev, exp)
open(ARGV[3], ARGV[4], ARGV[5], t)
index(8, ARGV[3], exp, math.floor(tonumber(ARGV[2]) / indexSlackDivisor), t)
return rev
`)

// openArgs are the open-set arguments of createScript and updateScript.
func openArgs(sess *api.Session) (state string, expires int64) {
	if sess.State.Terminal() {
		return "", 0
	}
	return string(sess.State), sess.ExpiresAt.UnixMilli()
}

// listScript: KEYS = member set. Drops expired entries and returns the
// rest. (An entry scored exactly now is still live, as is its record.)
var listScript = redis.NewScript(luaClock + `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. int(now()))
return redis.call('ZRANGE', KEYS[1], 0, -1)
`)

// scriptKeys are the KEYS of the scripts that write sess: extra goes
// before the member sets.
func (s *Store) scriptKeys(sess *api.Session, extra ...string) []string {
	keys := []string{s.sessionKey(sess.ID), s.revKey(), s.openKey(sess.Initiator),
		s.stateKey(api.StateWaiting), s.stateKey(api.StateJoined), s.keyKey(sess.ID), s.dueKey()}
	keys = append(keys, extra...)
	for _, m := range members(sess) {
		keys = append(keys, s.memberKey(m))
	}
	return keys
}

func members(sess *api.Session) []string {
	if sess.Initiator == sess.Responder {
		return []string{sess.Initiator}
	}
	return []string{sess.Initiator, sess.Responder}
}

// CreateSession stores a new session that expires after ttl.
func (s *Store) CreateSession(ctx context.Context, sess *api.Session, ttl time.Duration) (uint64, error) {
	args, err := writeArgs("create", sess, ttl)
	if err != nil {
		return 0, err
	}
	var rev int64
	err = s.write(ctx, func(c redis.Cmdable) (err error) {
		rev, err = createScript.Run(ctx, c, s.scriptKeys(sess), args...).Int64()
		return skipWait(rev > 0, err)
	})
	switch {
	case err != nil:
		return 0, fmt.Errorf("create session %s: %w", sess.ID, err)
	case rev == 0:
		return 0, fmt.Errorf("create session %s: %w", sess.ID, store.ErrExists)
	}
	return uint64(rev), nil
}

// writeArgs checks sess and returns the ARGV the scripts that write it
// start with (see createScript): record, TTL ms, id, state, ExpiresAt and
// view. verb names the write in errors.
func writeArgs(verb string, sess *api.Session, ttl time.Duration) ([]any, error) {
	if err := store.CheckSession(sess); err != nil {
		return nil, err
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return nil, fmt.Errorf("%s session %s: %w", verb, sess.ID, err)
	}
	data, err := json.Marshal(sess)
	if err != nil {
		return nil, fmt.Errorf("%s session %s: encode: %w", verb, sess.ID, err)
	}
	state, expires := openArgs(sess)
	return []any{data, ms, sess.ID, state, expires, view(sess)}, nil
}

// claimScript: KEYS = due set; ARGV = how many, lease ms. Returns up to
// that many sessions due by the server's clock, each made due again a
// lease later, so that one caller has it at a time.
var claimScript = redis.NewScript(luaClock + `
local t = now()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int(t), 'LIMIT', 0, tonumber(ARGV[1]))
if #ids == 0 then return ids end
local args = {}
for i, id in ipairs(ids) do
	args[2 * i - 1] = int(t + tonumber(ARGV[2]))
	args[2 * i] = id
end
redis.call('ZADD', KEYS[1], 'XX', unpack(args))
return ids
`)

// maxClaim bounds one ClaimDue: Lua's unpack takes a few thousand values.
const maxClaim = 1000

// ClaimDue hands out up to n sessions whose time has come by the server's
// clock (see the due set), each to one caller: it is due again after
// lease unless DoneDue takes it out first, so a session whose claimer
// died is claimed again.
func (s *Store) ClaimDue(ctx context.Context, n int, lease time.Duration) ([]string, error) {
	if n < 1 || n > maxClaim {
		return nil, fmt.Errorf("claim due sessions: %d at once, want 1 to %d", n, maxClaim)
	}
	ms, err := ttlMillis(lease)
	if err != nil {
		return nil, fmt.Errorf("claim due sessions: %w", err)
	}
	ids, err := claimScript.Run(ctx, s.rdb, []string{s.dueKey()}, n, ms).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("claim due sessions: %w", unavailable(err))
	}
	return ids, nil
}

// DoneDue takes sessions out of the due set: they ended and their events
// are published, or they are gone. Losing it to a failover costs one more
// look at each.
func (s *Store) DoneDue(ctx context.Context, ids ...string) error {
	if len(ids) == 0 {
		return nil
	}
	if err := s.rdb.ZRem(ctx, s.dueKey(), toAny(ids)...).Err(); err != nil {
		return fmt.Errorf("done with %d due sessions: %w", len(ids), unavailable(err))
	}
	return nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, v := range ss {
		out[i] = v
	}
	return out
}

// GetSession returns the session and its revision.
func (s *Store) GetSession(ctx context.Context, id string) (*api.Session, uint64, error) {
	if err := store.ValidateName("session id", id); err != nil {
		return nil, 0, err
	}
	vals, err := s.rdb.HMGet(ctx, s.sessionKey(id), "rev", "data").Result()
	if err != nil {
		return nil, 0, fmt.Errorf("get session %s: %w", id, unavailable(err))
	}
	sess, rev, err := decodeSession(vals[0], vals[1])
	if err != nil {
		return nil, 0, fmt.Errorf("get session %s: %w", id, err)
	}
	return sess, rev, nil
}

func decodeSession(revVal, dataVal any) (*api.Session, uint64, error) {
	revStr, ok1 := revVal.(string)
	data, ok2 := dataVal.(string)
	if !ok1 || !ok2 {
		return nil, 0, store.ErrNotFound
	}
	rev, err := strconv.ParseUint(revStr, 10, 64)
	if err != nil || rev == 0 {
		return nil, 0, fmt.Errorf("decode record: bad revision %q", revStr)
	}
	var sess api.Session
	if err := json.Unmarshal([]byte(data), &sess); err != nil {
		return nil, 0, fmt.Errorf("decode record: %w", err)
	}
	return &sess, rev, nil
}

// UpdateSession writes sess only if its stored revision is still rev, and
// gives it (and its index entries) a fresh ttl.
func (s *Store) UpdateSession(ctx context.Context, sess *api.Session, rev uint64, ttl time.Duration) (uint64, error) {
	args, err := writeArgs("update", sess, ttl)
	if err != nil {
		return 0, err
	}
	// Revisions are never 0, so "0" never matches a stored one.
	args = append(args, strconv.FormatUint(rev, 10))
	var newRev int64
	err = s.write(ctx, func(c redis.Cmdable) (err error) {
		newRev, err = updateScript.Run(ctx, c, s.scriptKeys(sess), args...).Int64()
		return skipWait(newRev > 0, err)
	})
	switch {
	case err != nil:
		return 0, fmt.Errorf("update session %s: %w", sess.ID, err)
	case newRev < 0:
		return 0, fmt.Errorf("update session %s: %w", sess.ID, store.ErrNotFound)
	case newRev == 0:
		return 0, fmt.Errorf("update session %s at revision %d: %w", sess.ID, rev, store.ErrConflict)
	}
	return uint64(newRev), nil
}

// ListSessions returns the live sessions user is a member of.
func (s *Store) ListSessions(ctx context.Context, user string) ([]*api.Session, error) {
	if err := store.ValidateName("user", user); err != nil {
		return nil, err
	}
	ids, err := listScript.Run(ctx, s.rdb, []string{s.memberKey(user)}).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("list sessions of %s: %w", user, unavailable(err))
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, s.sessionKey(id), "rev", "data")
	}
	if len(ids) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("list sessions of %s: %w", user, unavailable(err))
		}
	}
	out := make([]*api.Session, 0, len(ids))
	for i, cmd := range cmds {
		vals := cmd.Val()
		sess, _, err := decodeSession(vals[0], vals[1])
		if errors.Is(err, store.ErrNotFound) {
			continue // expired between the index read and now
		}
		if err != nil {
			return nil, fmt.Errorf("list sessions of %s: session %s: %w", user, ids[i], err)
		}
		if _, ok := sess.RoleOf(user); !ok {
			continue // never trust the index over the record
		}
		out = append(out, sess)
	}
	return out, nil
}

// OpenSessions counts the sessions user initiated that are not ended and
// whose expiry is after now. now should be close to the server's clock:
// entries past their expiry may be forgotten at any time.
func (s *Store) OpenSessions(ctx context.Context, user string, now time.Time) (int, error) {
	if err := store.ValidateName("user", user); err != nil {
		return 0, err
	}
	n, err := s.rdb.ZCount(ctx, s.openKey(user), "("+strconv.FormatInt(now.UnixMilli(), 10), "+inf").Result()
	if err != nil {
		return 0, fmt.Errorf("open sessions of %s: %w", user, unavailable(err))
	}
	return int(n), nil
}

// CreateChecked stores a new session as CreateSession does, in the same
// step as its checks, unless its initiator already has maxOpen open
// sessions (as OpenSessions counts them, by the server's clock) or its
// responder does not exist. A refused session (rev 0, no error) is not
// stored; open and responderExists then say why.
func (s *Store) CreateChecked(ctx context.Context, sess *api.Session, ttl time.Duration, maxOpen int) (rev uint64, open int, responderExists bool, err error) {
	args, err := writeArgs("create", sess, ttl)
	if err != nil {
		return 0, 0, false, err
	}
	args = append(args, maxOpen)
	var res []int64
	err = s.write(ctx, func(c redis.Cmdable) (err error) {
		res, err = createCheckedScript.Run(ctx, c, s.scriptKeys(sess, s.userKey(sess.Responder)), args...).Int64Slice()
		if err == nil && len(res) != 2 {
			return fmt.Errorf("create script answered %v", res)
		}
		return skipWait(err == nil && res[0] == 1, err)
	})
	switch {
	case err != nil:
		return 0, 0, false, fmt.Errorf("create session %s: %w", sess.ID, err)
	case res[0] == 0:
		return 0, 0, false, fmt.Errorf("create session %s: %w", sess.ID, store.ErrExists)
	case res[0] == 1:
		return uint64(res[1]), 0, true, nil
	}
	return 0, int(res[1]), res[0] != 3, nil
}

// OpenCounts counts every user's sessions that are not ended and whose
// expiry is after now, by state (waiting, joined), in one round trip. now
// should be close to the server's clock: entries past their expiry may be
// forgotten at any time.
func (s *Store) OpenCounts(ctx context.Context, now time.Time) (map[api.State]int, error) {
	after := "(" + strconv.FormatInt(now.UnixMilli(), 10)
	pipe := s.rdb.Pipeline()
	waiting := pipe.ZCount(ctx, s.stateKey(api.StateWaiting), after, "+inf")
	joined := pipe.ZCount(ctx, s.stateKey(api.StateJoined), after, "+inf")
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("count open sessions: %w", unavailable(err))
	}
	return map[api.State]int{api.StateWaiting: int(waiting.Val()), api.StateJoined: int(joined.Val())}, nil
}

// CreateUser stores a new user.
func (s *Store) CreateUser(ctx context.Context, u *store.User) error {
	data, err := store.EncodeUser(u)
	if err != nil {
		return err
	}
	var ok bool
	err = s.write(ctx, func(c redis.Cmdable) (err error) {
		ok, err = c.SetNX(ctx, s.userKey(u.Name), data, 0).Result()
		return skipWait(ok, err)
	})
	switch {
	case err != nil:
		return fmt.Errorf("create user %s: %w", u.Name, err)
	case !ok:
		return fmt.Errorf("create user %s: %w", u.Name, store.ErrExists)
	}
	return nil
}

// GetUser returns the named user.
func (s *Store) GetUser(ctx context.Context, name string) (*store.User, error) {
	if err := store.ValidateName("user", name); err != nil {
		return nil, err
	}
	data, err := s.rdb.Get(ctx, s.userKey(name)).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, fmt.Errorf("get user %s: %w", name, store.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("get user %s: %w", name, unavailable(err))
	}
	var u store.User
	if err := json.Unmarshal(data, &u); err != nil {
		return nil, fmt.Errorf("get user %s: decode record: %w", name, err)
	}
	return &u, nil
}

// UpdateUser replaces an existing user record; it never creates one.
func (s *Store) UpdateUser(ctx context.Context, u *store.User) error {
	data, err := store.EncodeUser(u)
	if err != nil {
		return err
	}
	var ok bool
	err = s.write(ctx, func(c redis.Cmdable) (err error) {
		ok, err = c.SetXX(ctx, s.userKey(u.Name), data, 0).Result()
		return skipWait(ok, err)
	})
	switch {
	case err != nil:
		return fmt.Errorf("update user %s: %w", u.Name, err)
	case !ok:
		return fmt.Errorf("update user %s: %w", u.Name, store.ErrNotFound)
	}
	return nil
}

// CreateKey stores a sealed session key; the first writer wins.
func (s *Store) CreateKey(ctx context.Context, sessionID string, sealed []byte, ttl time.Duration) error {
	if err := store.ValidateName("session id", sessionID); err != nil {
		return err
	}
	if len(sealed) == 0 {
		return fmt.Errorf("%w: empty sealed key for session %s", store.ErrInvalid, sessionID)
	}
	ms, err := ttlMillis(ttl)
	if err != nil {
		return fmt.Errorf("create key for session %s: %w", sessionID, err)
	}
	var ok bool
	err = s.write(ctx, func(c redis.Cmdable) (err error) {
		ok, err = c.SetNX(ctx, s.keyKey(sessionID), sealed, time.Duration(ms)*time.Millisecond).Result()
		return skipWait(ok, err)
	})
	switch {
	case err != nil:
		return fmt.Errorf("create key for session %s: %w", sessionID, err)
	case !ok:
		return fmt.Errorf("create key for session %s: %w", sessionID, store.ErrExists)
	}
	return nil
}

// GetKey returns the sealed key of a session.
func (s *Store) GetKey(ctx context.Context, sessionID string) ([]byte, error) {
	if err := store.ValidateName("session id", sessionID); err != nil {
		return nil, err
	}
	b, err := s.rdb.Get(ctx, s.keyKey(sessionID)).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, fmt.Errorf("get key for session %s: %w", sessionID, store.ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("get key for session %s: %w", sessionID, unavailable(err))
	}
	return b, nil
}

// keyScript: KEYS = session, session key; ARGV = user, sealed key, grace
// ms. Returns {0} when there is no session; {1, record, key} when the
// record has no view of its revision (written by a version before views);
// else {2, view, key}, or {3, view, sealed} when sealed was stored as the
// key: the session had none, is joined, not past its expiry by the
// server's clock, and user is one of its members. The key then lasts
// until the expiry plus grace, unless the write that ends the session
// deletes it first.
var keyScript = redis.NewScript(luaClock + `
local f = redis.call('HMGET', KEYS[1], 'rev', 'view')
if not f[1] then return {0} end
local rev, state, ini, resp, exp = string.match(f[2] or '', '^(%d+)|(%l+)|([^|]*)|([^|]*)|(-?%d+)$')
if rev ~= f[1] then
	return {1, redis.call('HGET', KEYS[1], 'data'), redis.call('GET', KEYS[2])}
end
local key = redis.call('GET', KEYS[2])
if key then return {2, f[2], key} end
local t = now()
exp = tonumber(exp)
if state == 'joined' and (ARGV[1] == ini or ARGV[1] == resp) and t < exp then
	redis.call('SET', KEYS[2], ARGV[2], 'PX', int(exp - t + tonumber(ARGV[3])))
	return {3, f[2], ARGV[2]}
end
return {2, f[2], false}
`)

// view is what a key request needs of a session, as the record's view
// field holds it (after its revision): state, members and expiry. User
// names hold no '|' (api.ValidUserName).
func view(sess *api.Session) string {
	return string(sess.State) + "|" + sess.Initiator + "|" + sess.Responder + "|" + strconv.FormatInt(sess.ExpiresAt.UnixMilli(), 10)
}

// IssueKey serves a key request of user's in one round trip: it reads the
// session (its id, members, state and expiry only) and its sealed key, and
// first stores sealed as that key when the session has none, is joined,
// is not past its expiry by the server's clock, and user is one of its
// members. created tells whether it did; the key then lasts until the
// session's expiry plus grace, unless the write that ends the session
// deletes it first. Whatever ends the session after the key is stored
// deletes it, so no key outlives its session. A record stored by a
// version before the view takes a second round trip.
func (s *Store) IssueKey(ctx context.Context, id, user string, sealed []byte, grace time.Duration) (sess *api.Session, key []byte, created bool, err error) {
	if err := errors.Join(store.ValidateName("session id", id), store.ValidateName("user", user)); err != nil {
		return nil, nil, false, err
	}
	if len(sealed) == 0 {
		return nil, nil, false, fmt.Errorf("%w: empty sealed key for session %s", store.ErrInvalid, id)
	}
	var reply []any
	err = s.write(ctx, func(c redis.Cmdable) (err error) {
		reply, err = keyScript.Run(ctx, c, []string{s.sessionKey(id), s.keyKey(id)}, user, sealed, grace.Milliseconds()).Slice()
		return skipWait(err == nil && len(reply) == 3 && reply[0] == int64(3), err)
	})
	if err != nil {
		return nil, nil, false, fmt.Errorf("key for session %s: %w", id, err)
	}
	status, _ := reply[0].(int64)
	if status == 0 {
		return nil, nil, false, fmt.Errorf("get session %s: %w", id, store.ErrNotFound)
	}
	if len(reply) != 3 {
		return nil, nil, false, fmt.Errorf("key for session %s: unexpected reply %v", id, reply)
	}
	if k, ok := reply[2].(string); ok {
		key = []byte(k)
	}
	text, _ := reply[1].(string)
	if status == 1 {
		return s.issueFromRecord(ctx, id, user, text, key, sealed, grace)
	}
	if sess, err = parseView(id, text); err != nil {
		return nil, nil, false, err
	}
	return sess, key, status == 3, nil
}

// parseView makes the session a view field describes; see view.
func parseView(id, v string) (*api.Session, error) {
	f := strings.Split(v, "|")
	if len(f) != 5 {
		return nil, fmt.Errorf("get session %s: bad view %q", id, v)
	}
	ms, err := strconv.ParseInt(f[4], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("get session %s: bad view %q", id, v)
	}
	return &api.Session{ID: id, State: api.State(f[1]), Initiator: f[2], Responder: f[3], ExpiresAt: time.UnixMilli(ms).UTC()}, nil
}

// issueFromRecord is IssueKey's second round trip for a record without a
// view: the session decoded from its data, and, when the key is missing
// and user may have one by this process's clock, sealed stored unless a
// key appeared meanwhile, with the session as it is once the key exists.
func (s *Store) issueFromRecord(ctx context.Context, id, user, data string, key, sealed []byte, grace time.Duration) (*api.Session, []byte, bool, error) {
	sess, err := decodeView(id, data)
	if err != nil || key != nil {
		return sess, key, false, err
	}
	if _, member := sess.RoleOf(user); !member || sess.State != api.StateJoined || !time.Now().Before(sess.ExpiresAt) {
		return sess, nil, false, nil
	}
	var (
		prior *redis.StatusCmd
		rec   *redis.StringCmd
	)
	ttl := time.Until(sess.ExpiresAt) + grace
	err = s.write(ctx, func(c redis.Cmdable) error {
		pipe := c.Pipeline()
		prior = pipe.SetArgs(ctx, s.keyKey(id), sealed, redis.SetArgs{Mode: "NX", Get: true, TTL: max(ttl, time.Millisecond)})
		rec = pipe.HGet(ctx, s.sessionKey(id), "data")
		_, err := pipe.Exec(ctx)
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		return skipWait(errors.Is(prior.Err(), redis.Nil), nil)
	})
	if err != nil {
		return nil, nil, false, fmt.Errorf("key for session %s: %w", id, err)
	}
	data, err = rec.Result()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, nil, false, fmt.Errorf("get session %s: %w", id, store.ErrNotFound)
	case err != nil:
		return nil, nil, false, fmt.Errorf("get session %s: %w", id, unavailable(err))
	}
	if sess, err = decodeView(id, data); err != nil {
		return nil, nil, false, err
	}
	if old, err := prior.Bytes(); err == nil {
		return sess, old, false, nil
	}
	return sess, sealed, true, nil
}

// decodeView decodes, from a session record's data, what a key request
// needs of it (keyView).
func decodeView(id, data string) (*api.Session, error) {
	var v keyView
	if err := json.Unmarshal([]byte(data), &v); err != nil {
		return nil, fmt.Errorf("get session %s: decode record: %w", id, err)
	}
	return &api.Session{ID: v.ID, State: v.State, Initiator: v.Initiator, Responder: v.Responder, ExpiresAt: v.ExpiresAt}, nil
}

// keyView is what a key request needs of a session record: who its
// members are, its state and its expiry. Decoding only these skips the
// manifest, the reports and the outbox, most of a record.
type keyView struct {
	ID        string    `json:"id"`
	State     api.State `json:"state"`
	Initiator string    `json:"initiator"`
	Responder string    `json:"responder"`
	ExpiresAt time.Time `json:"expires_at"`
}

// DeleteKey removes a session key; an absent key is not an error.
func (s *Store) DeleteKey(ctx context.Context, sessionID string) error {
	if err := store.ValidateName("session id", sessionID); err != nil {
		return err
	}
	err := s.write(ctx, func(c redis.Cmdable) error { return c.Del(ctx, s.keyKey(sessionID)).Err() })
	if err != nil {
		return fmt.Errorf("delete key for session %s: %w", sessionID, err)
	}
	return nil
}

// errNoChange tells write that fn changed nothing, so there is nothing to
// wait for.
var errNoChange = errors.New("no change")

// skipWait is what a write's fn returns: err, or errNoChange when the
// write was refused (the record exists, the revision moved on).
func skipWait(changed bool, err error) error {
	if err == nil && !changed {
		return errNoChange
	}
	return err
}

// write runs fn and then, under Sentinel, waits until a replica holds what
// it wrote. Both run on one connection, because WAIT counts the replicas
// that hold the writes of its own connection. Errors that a caller can
// retry after a while wrap store.ErrUnavailable; that includes a write the
// primary applied but no replica acknowledged in time.
func (s *Store) write(ctx context.Context, fn func(redis.Cmdable) error) error {
	if s.replicas == 0 {
		if err := fn(s.rdb); err != nil && !errors.Is(err, errNoChange) {
			return unavailable(err)
		}
		return nil
	}
	cn := s.rdb.Conn()
	defer cn.Close()
	switch err := fn(cn); {
	case errors.Is(err, errNoChange):
		return nil
	case err != nil:
		return unavailable(err)
	}
	n, err := cn.Wait(ctx, s.replicas, s.replicaTimeout).Result()
	switch {
	case err != nil:
		return fmt.Errorf("%w: applied on the primary, but waiting for a replica failed, so a failover may lose it: %w",
			store.ErrUnavailable, err)
	case n < int64(s.replicas):
		return fmt.Errorf("%w: applied on the primary, but no replica acknowledged it within %v, so a failover may lose it",
			store.ErrUnavailable, s.replicaTimeout)
	}
	return nil
}

// unavailable marks the errors a caller may retry after a while with
// store.ErrUnavailable: failures to reach the server or the sentinels (a
// connection cut by a failover among them), and the replies of a server
// that cannot take the command now. Replies about the request itself, and
// the caller's own cancellation, pass unchanged.
func unavailable(err error) error {
	switch {
	case err == nil, errors.Is(err, store.ErrUnavailable), errors.Is(err, redis.ErrClosed),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && !redis.IsReadOnlyError(err) && !redis.IsLoadingError(err) &&
		!redis.HasErrorPrefix(err, "MASTERDOWN") && !redis.HasErrorPrefix(err, "NOREPLICAS") && !redis.HasErrorPrefix(err, "TRYAGAIN") {
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
}

// ttlMillis validates a TTL and rounds it up to whole milliseconds, Redis's
// precision. TTLs under a second are refused as kvstore refuses them, so
// both backends accept the same requests.
func ttlMillis(ttl time.Duration) (int64, error) {
	if ttl < time.Second {
		return 0, fmt.Errorf("%w: TTL %v is under the 1s minimum", store.ErrInvalid, ttl)
	}
	ms := int64(ttl / time.Millisecond)
	if ttl%time.Millisecond != 0 {
		ms++
	}
	return ms, nil
}
