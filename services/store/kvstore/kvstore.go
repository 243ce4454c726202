// Package kvstore implements SFT's state store on NATS JetStream key-value
// buckets.
//
// Sessions and session keys expire through per-message TTLs, which need
// nats-server 2.11 or later and buckets created with a limit-marker TTL; Open
// creates the buckets that way. Layout of the sessions bucket:
//
//	s.<session-id>        the JSON session record
//	m.<user>.<session-id> empty index entry, one per member
//	o.<user>              the user's open sessions: JSON {id: expiry in Unix ms}
//
// The member index is what lets ListSessions find a user's sessions without
// scanning every record; its entries never expire before the record.
// ListSessions reads them with one direct get of the last message of each
// m.<user>.* key, which the server answers from its per-subject index; a
// consumer filtered on m.<user>.* would instead walk the stream from the
// user's oldest entry to the newest, past every record written in between,
// since each key is a subject of its own. A
// live session's later writes keep its record's expiry or bring it forward,
// so the store rewrites the entries only when a write takes the record past
// the expiry it last gave them.
//
// The open-session record is what lets OpenSessions answer with one read:
// a session enters it when created live and leaves it when written in an
// ended state; entries past their expiry are not counted and are dropped at
// the next write, and the record expires with its last entry. The same
// records answer OpenCounts, with the sessions' own records for their state.
package kvstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/jsretry"
	"github.com/sftproject/sft/services/store"
)

// Default bucket names and limits.
const (
	DefaultSessionsBucket = "SFT_SESSIONS"
	DefaultUsersBucket    = "SFT_USERS"
	DefaultKeysBucket     = "SFT_KEYS"
	DefaultMarkerTTL      = time.Minute

	undoTimeout = 5 * time.Second
)

// Options configure Open. Zero values take the defaults.
type Options struct {
	SessionsBucket string
	UsersBucket    string
	KeysBucket     string
	// Replicas is the buckets' replica count (default 1). An existing
	// bucket with another count is moved to it, so a configuration change
	// applies at the next start.
	Replicas int
	// MarkerTTL is how long the server keeps the delete marker it writes
	// when a record expires or is deleted (at least 1s, whole seconds).
	MarkerTTL time.Duration
	// Logger receives warnings about index maintenance (default
	// slog.Default()).
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.SessionsBucket == "" {
		o.SessionsBucket = DefaultSessionsBucket
	}
	if o.UsersBucket == "" {
		o.UsersBucket = DefaultUsersBucket
	}
	if o.KeysBucket == "" {
		o.KeysBucket = DefaultKeysBucket
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MarkerTTL <= 0 {
		o.MarkerTTL = DefaultMarkerTTL
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Store is the JetStream KV state store. It is safe for concurrent use.
type Store struct {
	js         jetstream.JetStream
	sessions   jetstream.KeyValue
	users      jetstream.KeyValue
	keys       jetstream.KeyValue
	sessPre    string // "$KV.<sessions bucket>." for the publishes KeyValue cannot express
	sessStream string // the sessions bucket's stream, for what KeyValue cannot ask
	directGet  string // the sessions stream's direct-get subject, for reads KeyValue cannot express
	markerTTL  time.Duration
	log        *slog.Logger
	indexed    indexExpiries
}

// Open creates the buckets, or binds to them when they exist. It fails when
// the server is too old for per-key TTLs or an existing TTL bucket was made
// without a limit-marker TTL.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	opts.setDefaults()
	markerTTL, err := wholeSeconds(opts.MarkerTTL)
	if err != nil {
		return nil, fmt.Errorf("kvstore: marker TTL: %w", err)
	}
	s := &Store{js: js, markerTTL: markerTTL, log: opts.Logger}
	if s.sessions, err = openBucket(ctx, js, opts.SessionsBucket, opts.Replicas, markerTTL, s.log); err != nil {
		return nil, err
	}
	if s.users, err = openBucket(ctx, js, opts.UsersBucket, opts.Replicas, 0, s.log); err != nil {
		return nil, err
	}
	if s.keys, err = openBucket(ctx, js, opts.KeysBucket, opts.Replicas, markerTTL, s.log); err != nil {
		return nil, err
	}
	s.sessPre = "$KV." + opts.SessionsBucket + "."
	s.sessStream = "KV_" + opts.SessionsBucket
	s.directGet = apiPrefix(js.Options()) + "DIRECT.GET.KV_" + opts.SessionsBucket
	return s, nil
}

// openBucket binds to bucket or creates it, with replicas copies. markerTTL
// > 0 asks for per-key TTL support.
func openBucket(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, markerTTL time.Duration, log *slog.Logger) (jetstream.KeyValue, error) {
	kv, err := jsretry.Do(ctx, func() (jetstream.KeyValue, error) {
		kv, err := js.KeyValue(ctx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket:         bucket,
				Description:    "SFT state store",
				History:        1,
				Storage:        jetstream.FileStorage,
				Replicas:       replicas,
				LimitMarkerTTL: markerTTL,
			})
			if errors.Is(err, jetstream.ErrBucketExists) {
				// Another replica created it first, with a different config.
				kv, err = js.KeyValue(ctx, bucket)
			}
		}
		return kv, err
	})
	switch {
	case errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported):
		return nil, fmt.Errorf("kvstore: bucket %s: per-key TTL needs nats-server 2.11 or later: %w", bucket, err)
	case err != nil:
		return nil, fmt.Errorf("kvstore: open bucket %s: %w", bucket, err)
	}
	st, err := jsretry.Do(ctx, func() (jetstream.KeyValueStatus, error) { return kv.Status(ctx) })
	if err != nil {
		return nil, fmt.Errorf("kvstore: bucket %s status: %w", bucket, err)
	}
	changed, err := fitReplicas(ctx, js, st, replicas, log)
	if err != nil {
		return nil, fmt.Errorf("kvstore: bucket %s: %w", bucket, err)
	}
	if changed {
		// The handle chose direct or leader reads from the old config.
		if kv, err = jsretry.Do(ctx, func() (jetstream.KeyValue, error) { return js.KeyValue(ctx, bucket) }); err != nil {
			return nil, fmt.Errorf("kvstore: open bucket %s: %w", bucket, err)
		}
	}
	if markerTTL > 0 {
		if st.LimitMarkerTTL() <= 0 {
			return nil, fmt.Errorf("kvstore: bucket %s exists without a limit-marker TTL, so keys cannot expire; "+
				"delete it or recreate it with one", bucket)
		}
	}
	return kv, nil
}

// fitReplicas moves a bucket made with another replica count (before the
// store joined a cluster, or with another nats.replicas) to replicas: only
// that and the read path of its stream change, so its data and limits
// stay. On more than one replica, reads go to the stream's leader: direct
// reads may be answered by a follower that has not applied the latest
// write yet, and a session just created would look missing. It reports
// whether it changed the stream.
func fitReplicas(ctx context.Context, js jetstream.JetStream, st jetstream.KeyValueStatus, replicas int, log *slog.Logger) (bool, error) {
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return false, nil
	}
	cfg := bs.StreamInfo().Config
	direct := cfg.AllowDirect && replicas == 1 // only ever turned off
	if cfg.Replicas == replicas && cfg.AllowDirect == direct {
		return false, nil
	}
	log.Info("fitting a KV bucket to the replica count", "bucket", st.Bucket(), "from", cfg.Replicas, "to", replicas, "direct_reads", direct)
	from := cfg.Replicas
	cfg.Replicas, cfg.AllowDirect = replicas, direct
	if _, err := jsretry.Do(ctx, func() (jetstream.Stream, error) { return js.UpdateStream(ctx, cfg) }); err != nil {
		return false, fmt.Errorf("change its replica count from %d to nats.replicas %d (does the cluster have that many JetStream servers?): %w", from, replicas, err)
	}
	return true, nil
}

// Ping checks that JetStream answers for the store: it reads the user
// bucket's configuration, which every service may.
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.users.Status(ctx); err != nil {
		return fmt.Errorf("kvstore: %w", err)
	}
	return nil
}

// Close releases nothing today: the NATS connection belongs to the caller.
func (s *Store) Close() error { return nil }

func sessionKey(id string) string      { return "s." + id }
func memberKey(user, id string) string { return "m." + user + "." + id }
func memberPrefix(user string) string  { return "m." + user + "." }

// CreateSession stores a new session that expires after ttl.
func (s *Store) CreateSession(ctx context.Context, sess *api.Session, ttl time.Duration) (uint64, error) {
	if err := store.CheckSession(sess); err != nil {
		return 0, err
	}
	ttl, err := wholeSeconds(ttl)
	if err != nil {
		return 0, fmt.Errorf("create session %s: %w", sess.ID, err)
	}
	data, err := json.Marshal(sess)
	if err != nil {
		return 0, fmt.Errorf("create session %s: encode: %w", sess.ID, err)
	}
	// A live session is counted as open before its record exists, so two
	// creations racing past a caller's limit check err towards counting
	// one too many, never too few.
	live := !sess.State.Terminal()
	if live {
		if err := s.setOpen(ctx, sess.Initiator, sess.ID, sess.ExpiresAt); err != nil {
			return 0, fmt.Errorf("create session %s: open-session index: %w", sess.ID, err)
		}
	}
	// The undo must run even when ctx is what failed.
	undoOpen := func() {
		if !live {
			return
		}
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		if err := s.setOpen(uctx, sess.Initiator, sess.ID, time.Time{}); err != nil {
			s.log.Warn("kvstore: session not stored but still counted as open until it would have expired",
				"session", sess.ID, "error", err)
		}
	}
	rev, err := s.sessions.Create(ctx, sessionKey(sess.ID), data, jetstream.KeyTTL(ttl))
	if err != nil {
		if !errors.Is(mapCreateErr(err), store.ErrExists) {
			undoOpen() // an existing session keeps its entry
		}
		return 0, fmt.Errorf("create session %s: %w", sess.ID, mapCreateErr(err))
	}
	if err := s.putIndex(ctx, sess, ttl); err != nil {
		// Without its index the session would be invisible to ListSessions;
		// undo so the caller's error means "nothing was stored".
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		if derr := s.sessions.Purge(uctx, sessionKey(sess.ID), jetstream.LastRevision(rev),
			jetstream.PurgeTTL(s.markerTTL)); derr != nil {
			s.log.Warn("kvstore: could not undo session after index failure",
				"session", sess.ID, "error", derr)
		} else {
			undoOpen()
		}
		return 0, fmt.Errorf("create session %s: index: %w", sess.ID, err)
	}
	return rev, nil
}

// GetSession returns the session and its revision.
func (s *Store) GetSession(ctx context.Context, id string) (*api.Session, uint64, error) {
	if err := store.ValidateName("session id", id); err != nil {
		return nil, 0, err
	}
	e, err := s.sessions.Get(ctx, sessionKey(id))
	if err != nil {
		return nil, 0, fmt.Errorf("get session %s: %w", id, mapGetErr(err))
	}
	var sess api.Session
	if err := json.Unmarshal(e.Value(), &sess); err != nil {
		return nil, 0, fmt.Errorf("get session %s: decode record: %w", id, err)
	}
	return &sess, e.Revision(), nil
}

// UpdateSession writes sess only if its stored revision is still rev, and
// gives it a fresh ttl.
//
// KeyValue.Update cannot set a TTL (and clears the old one), so this
// publishes to the key's subject with the same expectations Update uses,
// plus a Nats-TTL header.
func (s *Store) UpdateSession(ctx context.Context, sess *api.Session, rev uint64, ttl time.Duration) (uint64, error) {
	if err := store.CheckSession(sess); err != nil {
		return 0, err
	}
	ttl, err := wholeSeconds(ttl)
	if err != nil {
		return 0, fmt.Errorf("update session %s: %w", sess.ID, err)
	}
	if rev == 0 {
		// An expected last sequence of 0 means "no message yet": the
		// publish would resurrect a missing session instead of failing.
		return 0, fmt.Errorf("update session %s: %w", sess.ID, s.whyRejected(ctx, sess.ID))
	}
	data, err := json.Marshal(sess)
	if err != nil {
		return 0, fmt.Errorf("update session %s: encode: %w", sess.ID, err)
	}
	msg := &nats.Msg{Subject: s.sessPre + sessionKey(sess.ID), Header: nats.Header{}, Data: data}
	ack, err := s.js.PublishMsg(ctx, msg,
		jetstream.WithExpectLastSequencePerSubject(rev),
		jetstream.WithMsgTTL(ttl))
	expiry := time.Now().Add(ttl) // the record's, or a little later
	if err != nil {
		if isWrongLastSeq(err) {
			return 0, fmt.Errorf("update session %s at revision %d: %w", sess.ID, rev, s.whyRejected(ctx, sess.ID))
		}
		return 0, fmt.Errorf("update session %s: %w", sess.ID, err)
	}
	// The update itself is stored; failing in what follows would make the
	// caller retry a write that already happened, so failures are logged.
	if !s.indexed.covers(sess.ID, expiry) {
		if err := s.putIndex(ctx, sess, ttl); err != nil {
			// The session may drop out of ListSessions before it expires.
			s.log.Warn("kvstore: session updated but its index TTL was not refreshed",
				"session", sess.ID, "error", err)
		}
	}
	if sess.State.Terminal() {
		if err := s.setOpen(ctx, sess.Initiator, sess.ID, time.Time{}); err != nil {
			// Counted as open until its expiry: errs towards the limit.
			s.log.Warn("kvstore: session ended but still counted as open until its expiry",
				"session", sess.ID, "error", err)
		}
	}
	return ack.Sequence, nil
}

func openKey(user string) string { return "o." + user }

// openSet is the stored form of a user's open sessions: id → expiry in
// Unix milliseconds.
type openSet map[string]int64

// OpenSessions counts the sessions user initiated that are not ended and
// whose expiry is after now. now should be close to the store's clock:
// entries past their expiry may be forgotten at any time.
func (s *Store) OpenSessions(ctx context.Context, user string, now time.Time) (int, error) {
	if err := store.ValidateName("user", user); err != nil {
		return 0, err
	}
	set, _, err := s.readOpen(ctx, user)
	if err != nil {
		return 0, fmt.Errorf("open sessions of %s: %w", user, err)
	}
	n := 0
	for _, exp := range set {
		if exp > now.UnixMilli() {
			n++
		}
	}
	return n, nil
}

// OpenCounts counts every user's sessions that are not ended and whose
// expiry is after now, by state (waiting, joined).
//
// It asks the stream which users have an open-session record (one stream
// info, which the server answers from its per-subject index), reads those
// records, then each open session's record for its state: two round trips
// and one per user with open sessions and per open session. The
// open-session records hold only expiries; keeping the state there too
// would add a write to every join, while this runs only on a scrape or an
// admin status. Every request goes to the stream's leader on a cluster
// (direct gets are off there), so a session just written is counted.
func (s *Store) OpenCounts(ctx context.Context, now time.Time) (map[api.State]int, error) {
	ids, err := s.openIDs(ctx, now)
	if err != nil {
		return nil, fmt.Errorf("count open sessions: %w", err)
	}
	out := map[api.State]int{api.StateWaiting: 0, api.StateJoined: 0}
	for _, id := range ids {
		sess, _, err := s.GetSession(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue // expired since its open-session record was read
		}
		if err != nil {
			return nil, fmt.Errorf("count open sessions: %w", err)
		}
		if _, ok := out[sess.State]; ok { // it may have ended since
			out[sess.State]++
		}
	}
	return out, nil
}

// openIDs lists the sessions in every user's open-session record whose
// expiry is after now.
func (s *Store) openIDs(ctx context.Context, now time.Time) ([]string, error) {
	// A consumer (as KeyValue's watch uses) could be placed on a follower
	// that has not applied the latest write; stream info comes from the
	// leader.
	st, err := s.js.Stream(ctx, s.sessStream)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(s.sessPre+openKey("*")))
	if err != nil {
		return nil, err
	}
	var ids []string
	for subj := range info.State.Subjects {
		user, ok := strings.CutPrefix(subj, s.sessPre+openKey(""))
		if !ok {
			continue
		}
		set, _, err := s.readOpen(ctx, user) // none when only its expiry marker is left
		if err != nil {
			return nil, fmt.Errorf("open sessions of %s: %w", user, err)
		}
		for id, exp := range set {
			if exp > now.UnixMilli() {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}

// readOpen returns user's open-session set and its revision (0: none).
func (s *Store) readOpen(ctx context.Context, user string) (openSet, uint64, error) {
	e, err := s.sessions.Get(ctx, openKey(user))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return openSet{}, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	set := openSet{}
	if err := json.Unmarshal(e.Value(), &set); err != nil {
		return nil, 0, fmt.Errorf("decode open-session record: %w", err)
	}
	return set, e.Revision(), nil
}

// setOpen adds id to user's open sessions with expiry exp, or removes it
// when exp is zero, with compare-and-set against concurrent writers. The
// record lives until its latest expiry.
func (s *Store) setOpen(ctx context.Context, user, id string, exp time.Time) error {
	for {
		set, rev, err := s.readOpen(ctx, user)
		if err != nil {
			return err
		}
		now := time.Now()
		_, had := set[id]
		if exp.IsZero() && !had {
			return nil
		}
		for k, e := range set {
			if e <= now.UnixMilli() {
				delete(set, k)
			}
		}
		if exp.IsZero() {
			delete(set, id)
		} else {
			set[id] = exp.UnixMilli()
		}
		last := now.UnixMilli()
		for _, e := range set {
			last = max(last, e)
		}
		ttl, _ := wholeSeconds(max(time.Duration(last-now.UnixMilli())*time.Millisecond, time.Second))
		data, err := json.Marshal(set)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = s.sessions.Create(ctx, openKey(user), data, jetstream.KeyTTL(ttl))
			if err != nil && errors.Is(mapCreateErr(err), store.ErrExists) {
				continue
			}
			return err
		}
		msg := &nats.Msg{Subject: s.sessPre + openKey(user), Header: nats.Header{}, Data: data}
		_, err = s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(ttl))
		if isWrongLastSeq(err) {
			if err := ctx.Err(); err != nil {
				return err
			}
			continue
		}
		return err
	}
}

// whyRejected tells a lost compare-and-set from a session that is gone.
func (s *Store) whyRejected(ctx context.Context, id string) error {
	_, err := s.sessions.Get(ctx, sessionKey(id))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return store.ErrNotFound
	case err != nil:
		return fmt.Errorf("%w (and re-reading failed: %w)", store.ErrConflict, err)
	}
	return store.ErrConflict
}

// putIndex writes (or refreshes) the member index entries with ttl. They
// are written after the record, so they never expire before it.
func (s *Store) putIndex(ctx context.Context, sess *api.Session, ttl time.Duration) error {
	start := time.Now() // the entries expire ttl after this, or later
	// Both entries are in flight at once: one round trip, not two.
	users := members(sess)
	acks := make([]jetstream.PubAckFuture, 0, len(users))
	for _, user := range users {
		subj := s.sessPre + memberKey(user, sess.ID)
		f, err := s.js.PublishMsgAsync(&nats.Msg{Subject: subj, Header: nats.Header{}}, jetstream.WithMsgTTL(ttl))
		if err != nil {
			return fmt.Errorf("index entry for %s: %w", user, err)
		}
		acks = append(acks, f)
	}
	for i, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("index entry for %s: %w", users[i], err)
		case <-ctx.Done():
			return fmt.Errorf("index entry for %s: %w", users[i], ctx.Err())
		}
	}
	s.indexed.set(sess.ID, start.Add(ttl))
	return nil
}

// indexExpiries remembers, per session, the earliest time the member
// index entries this process last wrote can expire. It only saves writes:
// a session it does not know (written by another replica, or forgotten)
// gets its entries rewritten, which is always safe.
type indexExpiries struct {
	mu    sync.Mutex
	until map[string]time.Time
	swept time.Time
}

// indexSweepAt is the size past which set drops entries already expired.
const indexSweepAt = 4096

func (x *indexExpiries) covers(id string, expiry time.Time) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	u, ok := x.until[id]
	return ok && !u.Before(expiry)
}

func (x *indexExpiries) set(id string, until time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.until == nil {
		x.until = map[string]time.Time{}
	}
	now := time.Now()
	if len(x.until) >= indexSweepAt && now.Sub(x.swept) > time.Second {
		for k, u := range x.until {
			if u.Before(now) {
				delete(x.until, k)
			}
		}
		x.swept = now
	}
	x.until[id] = until
}

func members(sess *api.Session) []string {
	if sess.Initiator == sess.Responder {
		return []string{sess.Initiator}
	}
	return []string{sess.Initiator, sess.Responder}
}

// listAttempt bounds one scan of a user's session index. On a cluster
// that just lost a node, the scan's consumer may be placed on that node and
// never deliver; a new scan is placed again.
const listAttempt = 3 * time.Second

// sessionIDs reads the index for the sessions of user, once: with a
// direct get where the server can answer one, else by a scan.
func (s *Store) sessionIDs(ctx context.Context, user string) ([]string, error) {
	lctx, cancel := context.WithTimeout(ctx, listAttempt)
	defer cancel()
	ids, err := s.directIDs(lctx, user)
	if errors.Is(err, errNoDirect) {
		return s.scanIDs(lctx, user)
	}
	return ids, err
}

// errNoDirect is a direct get the server did not answer in full: direct
// gets are off for the bucket, no replica serves them now, or the user has
// more index entries than one direct get returns (1024, or the server's
// max_pending in bytes).
var errNoDirect = errors.New("no direct get")

// directIDs reads the user's index entries with one multi-last direct get
// (nats-server 2.11+): the last message of each m.<user>.* key, found
// through the stream's per-subject index, so that the records of other
// users are never read.
func (s *Store) directIDs(ctx context.Context, user string) ([]string, error) {
	nc := s.js.Conn()
	pre := s.sessPre + memberPrefix(user)
	req, err := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
	}{[]string{pre + "*"}})
	if err != nil {
		return nil, err
	}
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(s.directGet, inbox, req); err != nil {
		return nil, err
	}
	var ids []string
	for {
		m, err := sub.NextMsgWithContext(ctx)
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return nil, errNoDirect
		case err != nil:
			return nil, err
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "204": // end of the batch; what it could not hold is pending
			if n := m.Header.Get("Nats-Num-Pending"); n != "0" {
				return nil, fmt.Errorf("%w: %s entries left out of the batch", errNoDirect, n)
			}
			return ids, nil
		case "404": // no entries
			return nil, nil
		default:
			return nil, fmt.Errorf("%w: status %s %s", errNoDirect, status, m.Header.Get("Description"))
		}
		if deleted(m.Header) {
			continue
		}
		if id, ok := strings.CutPrefix(m.Header.Get(jetstream.SubjectHeader), pre); ok && id != "" {
			ids = append(ids, id)
		}
	}
}

// deleted tells a delete or purge marker, or the marker the server leaves
// where a message expired, from a value, as KeyValue does.
func deleted(h nats.Header) bool {
	switch h.Get("KV-Operation") {
	case "DEL", "PURGE":
		return true
	}
	return h.Get(jetstream.MarkerReasonHeader) != ""
}

// apiPrefix is the JetStream API prefix js sends its requests with.
func apiPrefix(o jetstream.JetStreamOptions) string {
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	}
	return jetstream.DefaultAPIPrefix
}

// scanIDs lists the user's index entries with a consumer filtered on
// m.<user>.*, which reads its way through the stream from their oldest.
func (s *Store) scanIDs(lctx context.Context, user string) ([]string, error) {
	// The lister's goroutine blocks until its channel is drained or lctx
	// ends; the caller cancels it on every return path so it cannot leak.
	kl, err := s.sessions.ListKeysFiltered(lctx, memberPrefix(user)+"*")
	if err != nil {
		return nil, err
	}
	defer func() { _ = kl.Stop() }()
	seen := map[string]bool{}
	var ids []string
	for k := range kl.Keys() {
		id, ok := strings.CutPrefix(k, memberPrefix(user))
		if ok && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	// The channel also closes on cancellation; don't pass off a partial
	// list as complete.
	return ids, lctx.Err()
}

// ListSessions returns the live sessions user is a member of.
func (s *Store) ListSessions(ctx context.Context, user string) ([]*api.Session, error) {
	if err := store.ValidateName("user", user); err != nil {
		return nil, err
	}
	var ids []string
	for {
		var err error
		ids, err = s.sessionIDs(ctx, user)
		if err == nil {
			break
		}
		if ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("list sessions of %s: %w", user, err)
		}
		s.log.Warn("listing sessions stalled; trying again", "user", user)
	}
	out := make([]*api.Session, 0, len(ids))
	for _, id := range ids {
		sess, _, err := s.GetSession(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue // expired between the index scan and now
		}
		if err != nil {
			return nil, fmt.Errorf("list sessions of %s: %w", user, err)
		}
		if _, ok := sess.RoleOf(user); !ok {
			continue // never trust the index over the record
		}
		out = append(out, sess)
	}
	return out, nil
}

// CreateUser stores a new user.
func (s *Store) CreateUser(ctx context.Context, u *store.User) error {
	data, err := store.EncodeUser(u)
	if err != nil {
		return err
	}
	if _, err := s.users.Create(ctx, u.Name, data); err != nil {
		return fmt.Errorf("create user %s: %w", u.Name, mapCreateErr(err))
	}
	return nil
}

// GetUser returns the named user.
func (s *Store) GetUser(ctx context.Context, name string) (*store.User, error) {
	if err := store.ValidateName("user", name); err != nil {
		return nil, err
	}
	e, err := s.users.Get(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("get user %s: %w", name, mapGetErr(err))
	}
	var u store.User
	if err := json.Unmarshal(e.Value(), &u); err != nil {
		return nil, fmt.Errorf("get user %s: decode record: %w", name, err)
	}
	return &u, nil
}

// UpdateUser replaces an existing user record.
func (s *Store) UpdateUser(ctx context.Context, u *store.User) error {
	data, err := store.EncodeUser(u)
	if err != nil {
		return err
	}
	// Compare-and-set against the revision just read, so a user deleted
	// in between is not silently recreated; retry when another writer
	// slipped in (last writer wins, as the method promises).
	for {
		e, err := s.users.Get(ctx, u.Name)
		if err != nil {
			return fmt.Errorf("update user %s: %w", u.Name, mapGetErr(err))
		}
		_, err = s.users.Update(ctx, u.Name, data, e.Revision())
		if err == nil {
			return nil
		}
		if !isWrongLastSeq(err) {
			return fmt.Errorf("update user %s: %w", u.Name, err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("update user %s: %w", u.Name, err)
		}
	}
}

// CreateKey stores a sealed session key; the first writer wins.
func (s *Store) CreateKey(ctx context.Context, sessionID string, sealed []byte, ttl time.Duration) error {
	if err := store.ValidateName("session id", sessionID); err != nil {
		return err
	}
	if len(sealed) == 0 {
		return fmt.Errorf("%w: empty sealed key for session %s", store.ErrInvalid, sessionID)
	}
	ttl, err := wholeSeconds(ttl)
	if err != nil {
		return fmt.Errorf("create key for session %s: %w", sessionID, err)
	}
	if _, err := s.keys.Create(ctx, sessionID, sealed, jetstream.KeyTTL(ttl)); err != nil {
		return fmt.Errorf("create key for session %s: %w", sessionID, mapCreateErr(err))
	}
	return nil
}

// GetKey returns the sealed key of a session.
func (s *Store) GetKey(ctx context.Context, sessionID string) ([]byte, error) {
	if err := store.ValidateName("session id", sessionID); err != nil {
		return nil, err
	}
	e, err := s.keys.Get(ctx, sessionID)
	if err != nil {
		return nil, fmt.Errorf("get key for session %s: %w", sessionID, mapGetErr(err))
	}
	return e.Value(), nil
}

// DeleteKey removes a session key; an absent key is not an error.
func (s *Store) DeleteKey(ctx context.Context, sessionID string) error {
	if err := store.ValidateName("session id", sessionID); err != nil {
		return err
	}
	// Purge drops the value itself (a plain delete would keep it behind a
	// marker), and the marker's TTL keeps deleted keys from piling up.
	if err := s.keys.Purge(ctx, sessionID, jetstream.PurgeTTL(s.markerTTL)); err != nil {
		return fmt.Errorf("delete key for session %s: %w", sessionID, err)
	}
	return nil
}

// wholeSeconds validates a TTL and rounds it up to whole seconds: the server
// refuses TTLs under a second and truncates the rest, which would make a
// record expire earlier than asked.
func wholeSeconds(ttl time.Duration) (time.Duration, error) {
	if ttl < time.Second {
		return 0, fmt.Errorf("%w: TTL %v is under the 1s minimum", store.ErrInvalid, ttl)
	}
	return ((ttl + time.Second - 1) / time.Second) * time.Second, nil
}

func mapGetErr(err error) error {
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return store.ErrNotFound
	}
	return err
}

func mapCreateErr(err error) error {
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSeq(err) {
		return store.ErrExists
	}
	return err
}

// isWrongLastSeq reports a lost compare-and-set. Replicated streams report
// it with a different code than single-replica ones.
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
