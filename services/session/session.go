// Package session is the session service: it owns the session state
// machine, enforces who may do what to a session, publishes every change as
// an event, expires sessions that outlive their TTL, and relays events to
// watching clients.
package session

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/events"
	"github.com/sftproject/sft/services/rpc"
	"github.com/sftproject/sft/services/store"
)

// Store is the part of the state store the session service uses.
type Store interface {
	CreateSession(ctx context.Context, s *api.Session, ttl time.Duration) (uint64, error)
	GetSession(ctx context.Context, id string) (*api.Session, uint64, error)
	UpdateSession(ctx context.Context, s *api.Session, rev uint64, ttl time.Duration) (uint64, error)
	ListSessions(ctx context.Context, user string) ([]*api.Session, error)
	GetUser(ctx context.Context, name string) (*store.User, error)
	// OpenCounts counts every user's sessions not ended whose expiry is
	// after now, by state (waiting, joined).
	OpenCounts(ctx context.Context, now time.Time) (map[api.State]int, error)
}

// Options are the session service's dependencies and settings.
type Options struct {
	Store    Store
	Verifier rpc.Verifier
	// CheckManifest validates a manifest's entries by the peer link's
	// rules, so a manifest the receiver would refuse never gets a session.
	CheckManifest func(api.Manifest) error
	TTL           time.Duration // creation to end
	Retention     time.Duration // how long ended sessions stay readable
	Limits        Limits
	Logger        *slog.Logger
	// Instances is how many requests of one endpoint this process serves
	// at once (rpc.AddService); 0 means 1.
	Instances int
	// Relay, when it has addresses, is offered to members whose peers
	// cannot reach each other directly.
	Relay Relay
	// Metrics records requests, session changes and lost publishes (nil:
	// none are recorded).
	Metrics Metrics
	// Replicas is the replica count of the streams the service creates
	// (the event and timer streams); 0 means 1.
	Replicas int
}

// Metrics is what the session service records (services/metrics.Metrics).
type Metrics interface {
	rpc.Recorder
	// Session counts a state change this replica wrote, by event type.
	Session(event string)
	// Transferred adds the confirmed bytes of a completed session.
	Transferred(bytes int64)
	// PublishFailed counts a JetStream publish to stream that failed.
	PublishFailed(stream string)
}

type noMetrics struct{}

func (noMetrics) Request(string, string, time.Duration) {}
func (noMetrics) Session(string)                        {}
func (noMetrics) Transferred(int64)                     {}
func (noMetrics) PublishFailed(string)                  {}

// Relay is where the relay is and how to admit a member to it.
type Relay struct {
	Addrs []string // host:port, best first
	// Issue signs an admission ticket: one connection of role in session,
	// until expires, carrying at most maxBytes (services/relay.Issuer).
	Issue func(session string, role api.Role, expires time.Time, maxBytes int64) (string, error)
}

// Service answers sft.v1.session.*.
type Service struct {
	o      Options
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream // the event stream
	now    func() time.Time

	watches   watchSet
	creates   *rateLimiter
	published *published
	recent    *recent
	locks     *sessionLocks
	timers    jetstream.Stream
	due       DueIndex       // the store's, when it has one (see timers.go)
	endedIDs  chan string    // sessions whose expiry timers or due entries to drop (ended)
	wg        sync.WaitGroup // background work: timers, relays
}

// New builds the service.
func New(o Options) *Service {
	o.Limits = o.Limits.withDefaults()
	if o.Metrics == nil {
		o.Metrics = noMetrics{}
	}
	return &Service{
		o: o, now: time.Now, watches: watchSet{perUser: map[string]int{}},
		creates: newRateLimiter(o.Limits.SessionsPerMinute), published: newPublished(republishBlindly),
		recent: newRecent(recentKeep, recentMax), locks: newSessionLocks(), endedIDs: make(chan string, endedBacklog),
	}
}

// Start registers the endpoints and starts the expiry timer consumer. It
// serves until ctx ends; then Wait returns once background work stopped.
// Requests run under ctx too: to stop without failing the ones already
// delivered, stop the returned service and drain nc before ending ctx.
func (s *Service) Start(ctx context.Context, nc *nats.Conn) (micro.Service, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("session service: jetstream: %w", err)
	}
	s.nc, s.js = nc, js
	if s.stream, err = events.EnsureStream(ctx, js, s.o.Replicas); err != nil {
		return nil, err
	}
	if err := s.startTimers(ctx); err != nil {
		return nil, err
	}
	svc, err := rpc.AddService(nc, micro.Config{
		Name:        "sft-session",
		Version:     "1.0.0",
		Description: "SFT transfer sessions: state machine, events, watch relay",
		QueueGroup:  api.QueueGroup,
	}, s.o.Instances)
	if err != nil {
		return nil, fmt.Errorf("start session service: %w", err)
	}
	h := rpc.Handler{Ctx: ctx, Verifier: s.o.Verifier, Log: s.o.Logger, MaxBody: s.o.Limits.RequestBytes, Metrics: s.o.Metrics}
	if err := errors.Join(
		svc.AddEndpoint("create", rpc.Authed(h, s.create), micro.WithEndpointSubject(api.SubjectSessionCreate)),
		svc.AddEndpoint("join", rpc.Authed(h, s.join), micro.WithEndpointSubject(api.SubjectSessionJoin)),
		svc.AddEndpoint("resume", rpc.Authed(h, s.resume), micro.WithEndpointSubject(api.SubjectSessionResume)),
		svc.AddEndpoint("get", rpc.Authed(h, s.get), micro.WithEndpointSubject(api.SubjectSessionGet)),
		svc.AddEndpoint("list", rpc.Authed(h, s.list), micro.WithEndpointSubject(api.SubjectSessionList)),
		svc.AddEndpoint("report", rpc.Authed(h, s.report), micro.WithEndpointSubject(api.SubjectSessionReport)),
		svc.AddEndpoint("cancel", rpc.Authed(h, s.cancel), micro.WithEndpointSubject(api.SubjectSessionCancel)),
		svc.AddEndpoint("relay", rpc.Authed(h, s.relayTicket), micro.WithEndpointSubject(api.SubjectSessionRelay)),
		svc.AddEndpoint("decline", rpc.Authed(h, s.decline), micro.WithEndpointSubject(api.SubjectSessionDecline)),
		svc.AddEndpoint("status", rpc.Authed(h, s.status), micro.WithEndpointSubject(api.SubjectSessionStatus)),
		svc.AddEndpoint("watch", rpc.Authed(h, func(_ context.Context, c rpc.Caller, r *api.WatchRequest) (*api.WatchReply, error) {
			// The relay outlives the request, so it hangs off the service context.
			return s.watch(ctx, c, r)
		}), micro.WithEndpointSubject(api.SubjectSessionWatch)),
	); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("start session service: %w", err)
	}
	return svc, nil
}

// Wait blocks until the background work started by Start has stopped (after
// Start's context ended).
func (s *Service) Wait() { s.wg.Wait() }

func (s *Service) create(ctx context.Context, c rpc.Caller, r *api.CreateRequest) (*api.Session, error) {
	if err := api.ValidUserName(r.Responder); err != nil {
		return nil, err
	}
	if r.Responder == c.User {
		return nil, api.Errorf(api.CodeInvalid, "cannot send to yourself: --to names another user")
	}
	if err := s.checkManifest(r.Manifest); err != nil {
		return nil, err
	}
	if err := checkPeer(r.PeerAddrs, r.PeerHost); err != nil {
		return nil, err
	}
	if ok, wait := s.creates.allow(c.User, s.now()); !ok {
		return nil, api.Errorf(api.CodeThrottled, "more than %d new sessions in a minute: retry in %s",
			s.o.Limits.SessionsPerMinute, wait.Round(time.Second)+time.Second)
	}
	// The client's request id becomes the session's id, so a create sent
	// again after its answer was lost finds its session instead of making
	// a second one.
	id := c.RequestID
	if id == "" {
		id = api.NewID()
	}
	now := s.now().UTC()
	sess := &api.Session{
		ID: id, State: api.StateWaiting,
		Initiator: c.User, Responder: r.Responder,
		Manifest: r.Manifest, Listener: api.RoleInitiator, PeerAddrs: r.PeerAddrs, PeerHost: r.PeerHost,
		CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(s.o.TTL),
		LastEvent: api.EventCreated, LastRole: api.RoleInitiator, Request: c.RequestID,
	}
	sess.Outbox = []api.Event{s.event(sess, 0, 0, api.Event{Type: api.EventCreated, Actor: c.User})}
	rev, err := s.insert(ctx, sess)
	switch {
	case errors.Is(err, store.ErrExists) && c.RequestID != "":
		return s.createdBefore(ctx, c, r)
	case errors.Is(err, store.ErrExists):
		return nil, fmt.Errorf("store session: %w", err)
	case err != nil:
		return nil, err
	}
	s.recent.put(s.now(), sess, rev)
	// The created event goes out after the record is stored: a member's
	// request that finds the record first publishes it first (flush), so
	// its own event never overtakes this one.
	s.o.Metrics.Session(string(api.EventCreated))
	if err := s.publish(ctx, sess.Outbox...); err != nil {
		return nil, err
	}
	s.o.Logger.Info("session created", "session", id, "initiator", c.User, "responder", r.Responder)
	return sess.Public(), nil
}

// insert checks a new session against its initiator's open sessions and
// its responder, and stores it with its expiry: in one step on a store that
// can (CheckedCreator, with a due index), else the checks, the expiry
// timer and the record one after the other.
func (s *Service) insert(ctx context.Context, sess *api.Session) (uint64, error) {
	ttl := recordTTL(s.o.TTL + s.o.Retention)
	if cc, ok := s.o.Store.(CheckedCreator); ok && s.due != nil {
		rev, open, responderExists, err := cc.CreateChecked(ctx, sess, ttl, s.o.Limits.OpenSessions)
		switch {
		case errors.Is(err, store.ErrExists):
			return 0, err
		case err != nil:
			return 0, fmt.Errorf("store session: %w", err)
		case rev == 0:
			if err := s.refuseCreate(open, sess.Responder, responderExists); err != nil {
				return 0, err
			}
			return 0, fmt.Errorf("store session: refused with %d open sessions and responder found", open)
		}
		return rev, nil
	}
	open, responderExists, err := s.createChecks(ctx, sess.Initiator, sess.Responder)
	if err != nil {
		return 0, err
	}
	if err := s.refuseCreate(open, sess.Responder, responderExists); err != nil {
		return 0, err
	}
	// The expiry timer first: a timer without its record finds nothing
	// and is dropped, but a record without its timer would never end.
	if err := s.scheduleExpiry(ctx, sess); err != nil {
		return 0, err
	}
	rev, err := s.o.Store.CreateSession(ctx, sess, ttl)
	if err != nil && !errors.Is(err, store.ErrExists) {
		return 0, fmt.Errorf("store session: %w", err)
	}
	return rev, err
}

// createdBefore answers a create sent again: the session its first attempt
// stored, if the caller made it with this request, after publishing what
// that attempt may not have.
func (s *Service) createdBefore(ctx context.Context, c rpc.Caller, r *api.CreateRequest) (*api.Session, error) {
	sess, rev, err := s.load(ctx, c.RequestID)
	if err != nil {
		return nil, err
	}
	// Its id is this request's; later writes (a join, a report) may have
	// followed, so the record is matched by what the request asked for.
	if sess.Initiator != c.User || sess.Responder != r.Responder || !sameManifest(sess.Manifest, r.Manifest) {
		return nil, api.Errorf(api.CodeConflict, "request id %s names another session: send the request with a new id", c.RequestID)
	}
	if err := s.flush(ctx, sess, rev); err != nil {
		return nil, err
	}
	return sess.Public(), nil
}

// sameManifest compares manifests by their encoding, which a stored
// record's round trip keeps (a struct compare would tell an empty list
// from a missing one).
func sameManifest(a, b api.Manifest) bool {
	x, errA := json.Marshal(a)
	y, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(x, y)
}

// maxPeerHost bounds the listener's opaque host identifier.
const maxPeerHost = 64

// checkPeer validates a listener's candidate addresses and host id. The
// list may be empty: a listener reachable only through a relay.
func checkPeer(addrs []string, host string) error {
	if len(addrs) > api.MaxPeerAddrs {
		return api.Errorf(api.CodeInvalid, "peer_addrs: %d addresses, at most %d", len(addrs), api.MaxPeerAddrs)
	}
	for _, a := range addrs {
		if err := checkPeerAddr(a); err != nil {
			return err
		}
	}
	if len(host) > maxPeerHost || strings.Trim(host, "0123456789abcdef") != "" {
		return api.Errorf(api.CodeInvalid, "peer_host must be at most %d lower-case hex digits", maxPeerHost)
	}
	return nil
}

func checkPeerAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return api.Errorf(api.CodeInvalid, "peer address %q is not host:port: %v", addr, err)
	}
	p, err := strconv.Atoi(port)
	if host == "" || len(host) > 255 || err != nil || p < 1 || p > 65535 {
		return api.Errorf(api.CodeInvalid, "peer address %q needs a host and a port from 1 to 65535", addr)
	}
	return nil
}

// base is the record a change of the caller's builds on: the one this
// replica stored last, when remembered is set and it has it (the write's
// compare-and-set refuses it if it moved on), else the store's. fromStore
// tells which.
func (s *Service) base(ctx context.Context, c rpc.Caller, id string, remembered bool) (sess *api.Session, rev uint64, role api.Role, fromStore bool, err error) {
	if remembered {
		if sess, rev, ok := s.recent.get(s.now(), id); ok {
			if role, ok := sess.RoleOf(c.User); ok {
				return sess, rev, role, false, nil
			}
		}
	}
	sess, rev, role, err = s.member(ctx, c, id)
	return sess, rev, role, true, err
}

// member loads a session the caller belongs to.
func (s *Service) member(ctx context.Context, c rpc.Caller, id string) (*api.Session, uint64, api.Role, error) {
	if err := api.ValidSessionID(id); err != nil {
		return nil, 0, "", err
	}
	sess, rev, err := s.load(ctx, id)
	if err != nil {
		return nil, 0, "", err
	}
	role, ok := sess.RoleOf(c.User)
	if !ok {
		return nil, 0, "", api.Errorf(api.CodeForbidden, "you are not a member of session %s", id)
	}
	return sess, rev, role, nil
}

// load reads a session, first moving it to expired if its time is up, so
// every reader sees the same truth whether or not the timer fired yet.
func (s *Service) load(ctx context.Context, id string) (*api.Session, uint64, error) {
	for range 10 {
		sess, rev, err := s.o.Store.GetSession(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil, 0, api.Errorf(api.CodeNotFound, "no session %s (it may have ended and been removed)", id)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("read session: %w", err)
		}
		if sess.State.Terminal() || s.now().Before(sess.ExpiresAt) {
			return sess, rev, nil
		}
		// The events of the last write first, in case its writer died
		// before it published them: a watcher must see them before this.
		if err := s.flush(ctx, sess, rev); err != nil {
			return nil, 0, err
		}
		sess.State = api.StateExpired
		sess.Reason = fmt.Sprintf("session expired after %s without completing", s.o.TTL)
		s.setOutbox(sess, rev, "", api.Event{Type: api.EventExpired, Reason: sess.Reason})
		sess.LastRole = ""
		newRev, err := s.write(ctx, sess, rev)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		s.o.Metrics.Session(string(api.EventExpired))
		if err := s.publish(ctx, sess.Outbox...); err != nil {
			return nil, 0, err
		}
		s.ended(id)
		return sess, newRev, nil
	}
	return nil, 0, api.Errorf(api.CodeConflict, "session %s is changing too fast; retry", id)
}

// errDone is what a change returns when the request's effect is already in
// the record (a retry whose answer was lost, after another write): the
// answer is the session as it is, and nothing is written.
var errDone = errors.New("already done")

// mutate applies change to the caller's session with compare-and-set,
// retrying on a concurrent write. The events change returns are stored
// with the write (the outbox) and then published; the previous write's
// events are published first, in case their writer died before it could,
// so that every event reaches the stream, in order.
func (s *Service) mutate(ctx context.Context, c rpc.Caller, id string, change func(*api.Session, api.Role) ([]api.Event, error)) (*api.Session, error) {
	if err := api.ValidSessionID(id); err != nil {
		return nil, err
	}
	unlock, err := s.locks.lock(ctx, id)
	if err != nil {
		return nil, api.Errorf(api.CodeUnavailable, "session %s is busy with another change; retry", id)
	}
	defer unlock()
	remembered := true // the first attempt may build on the record this replica stored last
	for range 10 {
		sess, rev, role, fromStore, err := s.base(ctx, c, id, remembered)
		remembered = false
		if err != nil {
			return nil, err
		}
		if err := s.flush(ctx, sess, rev); err != nil {
			return nil, err
		}
		if c.RequestID != "" && sess.Request == c.RequestID {
			if !fromStore {
				continue // answered from the store only: it may have moved on
			}
			// Sent again after its answer was lost: it was applied.
			return sess.Public(), nil
		}
		evs, err := change(sess, role)
		if err != nil && !fromStore {
			continue // refused (or done) on the stored record only
		}
		if errors.Is(err, errDone) {
			return sess.Public(), nil
		}
		if err != nil {
			return nil, err
		}
		for i := range evs {
			evs[i].Actor = c.User
		}
		s.setOutbox(sess, rev, c.RequestID, evs...)
		if len(evs) > 0 {
			sess.LastRole = role
		}
		newRev, err := s.write(ctx, sess, rev)
		if errors.Is(err, store.ErrConflict) || (!fromStore && errors.Is(err, store.ErrNotFound)) {
			continue
		}
		if err != nil {
			s.recent.forget(id)
			return nil, err
		}
		s.recent.put(s.now(), sess, newRev)
		s.count(sess, evs)
		if err := s.publish(ctx, sess.Outbox...); err != nil {
			return nil, err
		}
		if sess.State.Terminal() {
			s.ended(id)
		}
		return sess.Public(), nil
	}
	return nil, api.Errorf(api.CodeConflict, "session %s is changing too fast; retry", id)
}

// setOutbox makes evs the outbox of the write that builds on revision rev,
// made by request (may be empty).
func (s *Service) setOutbox(sess *api.Session, rev uint64, request string, evs ...api.Event) {
	out := make([]api.Event, len(evs))
	for i, ev := range evs {
		out[i] = s.event(sess, rev, i, ev)
	}
	sess.Outbox, sess.Request = out, request
	if len(evs) > 0 {
		// Read by replicas that predate the outbox (recentEvents).
		sess.LastEvent = evs[0].Type
	}
}

// flush publishes the events of sess's latest write that may not be in
// the stream yet. Within the stream's de-duplication window a second copy
// is dropped by the stream, so they are simply published again; past it,
// each is looked up first. A record written before the outbox existed has
// its latest event rebuilt (recentEvents).
func (s *Service) flush(ctx context.Context, sess *api.Session, rev uint64) error {
	evs := sess.Outbox
	if s.published.has(evs) {
		return nil // this replica wrote them, and published them
	}
	if len(evs) == 0 {
		evs = s.past(s.recentEvents(sess, rev))
	}
	if len(evs) == 0 {
		return nil
	}
	if s.now().Sub(sess.UpdatedAt) > republishBlindly {
		var err error
		if evs, err = s.unpublished(ctx, evs); err != nil {
			return err
		}
	}
	return s.publish(ctx, evs...)
}

// republishBlindly is how long after a write its events may be published
// again without a look at the stream: well inside the stream's
// de-duplication window (events.DedupWindow).
const republishBlindly = events.DedupWindow / 2

// unpublished keeps the events the stream does not hold. The events of the
// latest write are the session's latest of their type, so each is in the
// stream if and only if it is the last message on its subject; and they
// are published in order, stopping at the first that fails
// (events.Publish), so when the last is there all are: one look-up in the
// common case.
func (s *Service) unpublished(ctx context.Context, evs []api.Event) ([]api.Event, error) {
	stored := func(ev api.Event) (bool, error) {
		m, err := s.stream.GetLastMsgForSubject(ctx, api.EventSubject(ev.Session, ev.Type))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("look up %s event of session %s: %w", ev.Type, ev.Session, err)
		}
		return m.Header.Get(jetstream.MsgIDHeader) == ev.ID, nil
	}
	if ok, err := stored(evs[len(evs)-1]); ok || err != nil {
		return nil, err
	}
	out := []api.Event{evs[len(evs)-1]}
	for i := len(evs) - 2; i >= 0; i-- {
		ok, err := stored(evs[i])
		if err != nil {
			return nil, err
		}
		if ok {
			break // and so are the ones before it
		}
		out = append([]api.Event{evs[i]}, out...)
	}
	return out, nil
}

// count records the state changes of one write in the metrics; a
// completed session adds the bytes both members confirmed.
func (s *Service) count(sess *api.Session, evs []api.Event) {
	for _, ev := range evs {
		switch ev.Type {
		case api.EventJoined, api.EventFailed, api.EventCancelled:
			s.o.Metrics.Session(string(ev.Type))
		case api.EventCompleted:
			s.o.Metrics.Session(string(ev.Type))
			s.o.Metrics.Transferred(sess.Reports[api.RoleInitiator].Bytes)
		}
	}
}

// pastEvent is an event of an earlier write, with the session as that
// write left it.
type pastEvent struct {
	sess api.Session
	seq  uint64
	ev   api.Event
}

// republishWithin is how recent a write without an outbox must be for its
// event to be rebuilt: past it, the request that wrote has certainly
// published (it is bounded by rpc.Timeout).
const republishWithin = 2 * rpc.Timeout

// recentEvents rebuilds the event of the write that left a live session
// at revision rev, for a record written by a replica that predates the
// outbox, if that write is recent: a join, a resume or a first report. The
// id is the one that replica gave it, so the stream keeps one copy.
func (s *Service) recentEvents(sess *api.Session, rev uint64) []pastEvent {
	if sess.State.Terminal() || s.now().Sub(sess.UpdatedAt) > republishWithin {
		// Ended: the caller's change is refused, so nothing builds on it.
		return nil
	}
	typ, role := sess.LastEvent, sess.LastRole
	if typ == "" {
		typ, role = legacyLastEvent(sess)
	}
	snap := *sess
	snap.Reports = nil // the event needs none, and the caller's change may alter the map
	ev := api.Event{Type: typ, Actor: memberName(sess, role), At: sess.UpdatedAt}
	switch typ {
	case api.EventJoined:
	case api.EventResumed:
		ev.Role = role
	case api.EventReported:
		rep, ok := sess.Reports[role]
		if !ok {
			return nil
		}
		ev.Role, ev.Report, ev.At = role, &rep, rep.At
	default:
		// Created: published before the record was stored. Declined: no
		// later event depends on it, and its reason is not kept.
		return nil
	}
	return []pastEvent{{snap, rev * 8, ev}}
}

// legacyLastEvent infers the latest write of a record stored by a replica
// that did not record it (LastEvent empty); such replicas only join and
// report: a joined session with a report was last written by that report.
func legacyLastEvent(sess *api.Session) (api.EventType, api.Role) {
	if sess.State != api.StateJoined {
		return api.EventCreated, api.RoleInitiator
	}
	for role := range sess.Reports { // at most one while joined
		return api.EventReported, role
	}
	return api.EventJoined, api.RoleResponder
}

// memberName is the user who plays role in sess.
func memberName(sess *api.Session, role api.Role) string {
	switch role {
	case api.RoleInitiator:
		return sess.Initiator
	case api.RoleResponder:
		return sess.Responder
	}
	return ""
}

// listener is the role that listens for sess's peer link; records from
// before the field existed always had the initiator listen.
func listener(sess *api.Session) api.Role {
	if sess.Listener == "" {
		return api.RoleInitiator
	}
	return sess.Listener
}

// dialer is the role that dials sess's peer link.
func dialer(sess *api.Session) api.Role {
	if listener(sess) == api.RoleInitiator {
		return api.RoleResponder
	}
	return api.RoleInitiator
}

// past makes the events of earlier writes.
func (s *Service) past(evs []pastEvent) []api.Event {
	out := make([]api.Event, 0, len(evs))
	for _, p := range evs {
		p.ev.ID = fmt.Sprintf("%s.%d.%s", p.sess.ID, p.seq, p.ev.Type) // the older replicas' id
		out = append(out, s.event(&p.sess, 0, 0, p.ev))
	}
	return out
}

// write stores sess if it still has revision rev. A live session keeps its
// record until its expiry plus retention; an ended one for the retention.
func (s *Service) write(ctx context.Context, sess *api.Session, rev uint64) (uint64, error) {
	now := s.now().UTC()
	sess.UpdatedAt = now
	ttl := s.o.Retention
	if !sess.State.Terminal() {
		ttl += sess.ExpiresAt.Sub(now)
	}
	newRev, err := s.o.Store.UpdateSession(ctx, sess, rev, recordTTL(ttl))
	if err != nil && !errors.Is(err, store.ErrConflict) {
		return 0, fmt.Errorf("update session: %w", err)
	}
	return newRev, err
}

// recordTTL keeps a record's lifetime at or above the one second JetStream
// can express: a sub-second retention, or a write in the instant a session
// reaches its expiry, would otherwise be refused by the store.
func recordTTL(d time.Duration) time.Duration { return max(d, time.Second) }

// event fills in what every event of sess carries: the event the i-th of
// the write that builds on revision rev. The id, the stream's
// de-duplication id, is unique because only one write can build on a
// revision (compare-and-set).
func (s *Service) event(sess *api.Session, rev uint64, i int, ev api.Event) api.Event {
	if ev.ID == "" {
		ev.ID = fmt.Sprintf("%s.%d.%d.%s", sess.ID, rev, i, ev.Type)
	}
	ev.Session, ev.State = sess.ID, sess.State
	ev.Initiator, ev.Responder = sess.Initiator, sess.Responder
	if ev.Reason == "" && sess.State.Terminal() {
		ev.Reason = sess.Reason
	}
	if ev.At.IsZero() {
		ev.At = s.now().UTC()
	}
	return ev
}

// publish sends the events of a write that is stored. When they cannot be
// sent, the caller is told to retry: the change is kept, its events wait in
// the record's outbox, and the retry (same request id) publishes them.
func (s *Service) publish(ctx context.Context, evs ...api.Event) error {
	if err := events.Publish(ctx, s.js, evs...); err != nil {
		s.o.Metrics.PublishFailed(api.EventStream)
		s.o.Logger.Warn("events not published yet; kept in the session's outbox", "err", err)
		return api.Errorf(api.CodeUnavailable, "the change is recorded, but the event stream did not answer; retry")
	}
	s.published.stored(s.now(), evs)
	return nil
}

func notLive(sess *api.Session) error {
	if sess.State == api.StateExpired {
		return api.Errorf(api.CodeExpired, "session %s expired at %s", sess.ID, sess.ExpiresAt.Format(time.RFC3339))
	}
	msg := fmt.Sprintf("session %s is already %s", sess.ID, sess.State)
	if sess.Reason != "" {
		msg += ": " + sess.Reason
	}
	return &api.Error{Code: api.CodeConflict, Message: msg}
}

// join makes the responder a party to a waiting session. With a peer
// address the responder listens there and the initiator dials it.
func (s *Service) join(ctx context.Context, c rpc.Caller, r *api.JoinRequest) (*api.Session, error) {
	if err := checkPeer(r.PeerAddrs, r.PeerHost); err != nil {
		return nil, err
	}
	return s.mutate(ctx, c, r.SessionID, func(sess *api.Session, role api.Role) ([]api.Event, error) {
		if err := responderWaiting(sess, role, "join", "to re-attach after a dropped link, resume it"); err != nil {
			return nil, err
		}
		sess.State = api.StateJoined
		if len(r.PeerAddrs) > 0 {
			sess.Listener, sess.PeerAddrs, sess.PeerHost = api.RoleResponder, r.PeerAddrs, r.PeerHost
		}
		return []api.Event{{Type: api.EventJoined}}, nil
	})
}

// responderWaiting refuses what only the responder may do (verb), and only
// to a waiting session; instead says what to do once it has been joined.
func responderWaiting(sess *api.Session, role api.Role, verb, instead string) error {
	switch {
	case role != api.RoleResponder:
		return api.Errorf(api.CodeForbidden, "only the responder (%s) may %s session %s", sess.Responder, verb, sess.ID)
	case sess.State == api.StateJoined:
		return api.Errorf(api.CodeConflict, "session %s was already joined (%s)", sess.ID, instead)
	case sess.State != api.StateWaiting:
		return notLive(sess)
	}
	return nil
}

// resume re-attaches a member whose peer link dropped or whose process
// restarted. The listening member gives the addresses it listens at now
// (none: only through the relay), which replace the recorded ones; the
// dialing member reads them from the session once it sees the listener's
// resumed event.
func (s *Service) resume(ctx context.Context, c rpc.Caller, r *api.ResumeRequest) (*api.Session, error) {
	if err := checkPeer(r.PeerAddrs, r.PeerHost); err != nil {
		return nil, err
	}
	return s.mutate(ctx, c, r.SessionID, func(sess *api.Session, role api.Role) ([]api.Event, error) {
		switch {
		case sess.State == api.StateWaiting && role == api.RoleResponder:
			return nil, api.Errorf(api.CodeConflict, "you have not joined session %s yet: join it instead of resuming", sess.ID)
		case sess.State != api.StateWaiting && sess.State != api.StateJoined:
			return nil, notLive(sess)
		}
		if role == listener(sess) {
			sess.PeerAddrs, sess.PeerHost = r.PeerAddrs, r.PeerHost
		} else if len(r.PeerAddrs) > 0 {
			return nil, api.Errorf(api.CodeInvalid, "the %s listens for session %s's peer link and you (the %s) dial it: resume without peer_addrs", listener(sess), sess.ID, role)
		}
		return []api.Event{{Type: api.EventResumed, Role: role}}, nil
	})
}

func (s *Service) get(ctx context.Context, c rpc.Caller, r *api.SessionRequest) (*api.Session, error) {
	sess, _, _, err := s.member(ctx, c, r.SessionID)
	if err != nil {
		return nil, err
	}
	return sess.Public(), nil
}

func (s *Service) list(ctx context.Context, c rpc.Caller, r *api.ListRequest) (*api.ListReply, error) {
	all, err := s.o.Store.ListSessions(ctx, c.User)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	now := s.now()
	out := make([]api.Session, 0, len(all))
	for _, sess := range all {
		if !sess.State.Terminal() && !now.Before(sess.ExpiresAt) {
			// The expiry timer writes this soon; show the truth already.
			sess.State = api.StateExpired
		}
		if r.State == "" || sess.State == r.State {
			out = append(out, *sess.Public())
		}
	}
	slices.SortFunc(out, func(a, b api.Session) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return fitList(out, s.replyBudget())
}

// replyBudget is the largest reply body the broker carries, less room for
// headers.
func (s *Service) replyBudget() int {
	const headroom = 4 << 10
	return max(int(s.nc.MaxPayload())-headroom, headroom)
}

// fitList keeps the newest sessions whose encoding fits in budget bytes and
// counts the rest as omitted, so a user with many large manifests still
// gets an answer rather than a reply the broker refuses.
func fitList(sessions []api.Session, budget int) (*api.ListReply, error) {
	used := len(`{"sessions":[],"omitted":1234567890}`)
	for i, sess := range sessions {
		b, err := json.Marshal(sess)
		if err != nil {
			return nil, fmt.Errorf("encode session %s: %w", sess.ID, err)
		}
		if used += len(b) + 1; used > budget {
			return &api.ListReply{Sessions: sessions[:i], Omitted: len(sessions) - i}, nil
		}
	}
	return &api.ListReply{Sessions: sessions}, nil
}

// maxReason bounds free text a client puts into a session and its events.
const maxReason = 300

// cleanText keeps client-supplied text printable, on one line and short, so
// it cannot smuggle terminal escapes, line breaks or bidirectional overrides
// (which reorder what the other user reads) into another user's output.
func cleanText(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0), // C0, DEL, C1 (8-bit CSI)
			r == 0x2028 || r == 0x2029,                             // line and paragraph separators
			r == 0x061c || r == 0x200e || r == 0x200f,              // bidi marks
			r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069: // bidi embeddings, overrides, isolates
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	s = strings.TrimSpace(s)
	if len(s) > maxReason {
		s = strings.ToValidUTF8(s[:maxReason], "") + "…"
	}
	return s
}

func (s *Service) report(ctx context.Context, c rpc.Caller, r *api.ReportRequest) (*api.Session, error) {
	rep := r.Report
	if rep.Bytes < 0 {
		return nil, api.Errorf(api.CodeInvalid, "report: negative byte count")
	}
	if rep.OK && (len(rep.SHA256) != 64 || strings.Trim(rep.SHA256, "0123456789abcdef") != "") {
		return nil, api.Errorf(api.CodeInvalid, "report: sha256 must be 64 lower-case hex digits")
	}
	if !rep.Path.Valid() {
		return nil, api.Errorf(api.CodeInvalid, "report: path must be %q or %q", api.PathDirect, api.PathRelay)
	}
	if rep.Via != "" {
		if err := checkPeerAddr(rep.Via); err != nil {
			return nil, err
		}
	}
	rep.Error = cleanText(rep.Error)
	if !rep.OK && rep.Error == "" {
		return nil, api.Errorf(api.CodeInvalid, "report: a failed report needs an error")
	}
	rep.At = s.now().UTC()
	return s.mutate(ctx, c, r.SessionID, func(sess *api.Session, role api.Role) ([]api.Event, error) {
		if prev, done := sess.Reports[role]; done && sameOutcome(prev, rep) {
			// This report, sent again after its answer was lost; the
			// session may have ended since (the other member's report).
			return nil, errDone
		}
		switch {
		case sess.State == api.StateWaiting:
			return nil, api.Errorf(api.CodeConflict, "session %s has not been joined yet: nothing to report", sess.ID)
		case sess.State != api.StateJoined:
			return nil, notLive(sess)
		}
		if _, done := sess.Reports[role]; done {
			return nil, api.Errorf(api.CodeConflict, "the %s already reported on session %s", role, sess.ID)
		}
		if sess.Reports == nil {
			sess.Reports = map[api.Role]api.Report{}
		}
		sess.Reports[role] = rep
		evs := []api.Event{{Type: api.EventReported, Role: role, Report: &rep}}
		if !rep.OK {
			sess.State = api.StateFailed
			sess.Reason = fmt.Sprintf("%s (%s) failed: %s", role, c.User, rep.Error)
			return append(evs, api.Event{Type: api.EventFailed}), nil
		}
		a, okA := sess.Reports[api.RoleInitiator]
		b, okB := sess.Reports[api.RoleResponder]
		if !okA || !okB {
			return evs, nil
		}
		if a.Bytes == b.Bytes && a.CRC32C == b.CRC32C && a.SHA256 == b.SHA256 {
			sess.State = api.StateCompleted
			// The dialing member knows the address it reached.
			how := sess.Reports[dialer(sess)]
			return append(evs, api.Event{Type: api.EventCompleted, Path: how.Path, Via: how.Via}), nil
		}
		sess.State = api.StateFailed
		sess.Reason = fmt.Sprintf("check mismatch: initiator sent %d bytes crc32c=%08x, responder got %d bytes crc32c=%08x",
			a.Bytes, a.CRC32C, b.Bytes, b.CRC32C)
		return append(evs, api.Event{Type: api.EventFailed}), nil
	})
}

// sameOutcome tells whether two reports say the same (their times aside).
func sameOutcome(a, b api.Report) bool {
	a.At, b.At = time.Time{}, time.Time{}
	return a == b
}

func (s *Service) cancel(ctx context.Context, c rpc.Caller, r *api.CancelRequest) (*api.Session, error) {
	return s.mutate(ctx, c, r.SessionID, func(sess *api.Session, role api.Role) ([]api.Event, error) {
		if sess.State.Terminal() {
			return nil, notLive(sess)
		}
		sess.State = api.StateCancelled
		sess.Reason = fmt.Sprintf("cancelled by %s (%s)", c.User, role)
		if why := cleanText(r.Reason); why != "" {
			sess.Reason += ": " + why
		}
		return []api.Event{{Type: api.EventCancelled}}, nil
	})
}

// relayOverhead is what the peer link adds to the file bytes on the wire
// (handshake, manifest, offsets, record headers and tags, end records and
// the ack), with room to spare; a ticket's byte budget is the manifest's
// size plus this, so the relay cannot serve as a general tunnel.
func relayOverhead(size int64) int64 { return size/256 + 4<<20 }

// relayTicket hands a member of a joined session the relay addresses and a
// ticket for one connection to one of them.
func (s *Service) relayTicket(ctx context.Context, c rpc.Caller, r *api.RelayRequest) (*api.RelayReply, error) {
	if len(s.o.Relay.Addrs) == 0 || s.o.Relay.Issue == nil {
		return nil, api.Errorf(api.CodeUnavailable, "this server offers no relay: the peers must reach each other directly")
	}
	sess, _, role, err := s.member(ctx, c, r.SessionID)
	if err != nil {
		return nil, err
	}
	switch {
	case sess.State == api.StateWaiting:
		return nil, api.Errorf(api.CodeConflict, "session %s has not been joined yet: no relay before both members are in", sess.ID)
	case sess.State != api.StateJoined:
		return nil, notLive(sess)
	}
	size := sess.Manifest.TotalSize()
	if sess.Manifest.Streamed() {
		size = s.o.Limits.ManifestBytes
	}
	ticket, err := s.o.Relay.Issue(sess.ID, role, sess.ExpiresAt, size+relayOverhead(size))
	if err != nil {
		return nil, fmt.Errorf("issue relay ticket: %w", err)
	}
	return &api.RelayReply{Addrs: s.o.Relay.Addrs, Ticket: ticket}, nil
}

// decline is the responder's refusal of a waiting session. Without End the
// session keeps waiting, unchanged but for the write that orders the
// event, and the declined event tells the initiator why the responder
// cannot receive now; with End it is cancelled.
func (s *Service) decline(ctx context.Context, c rpc.Caller, r *api.DeclineRequest) (*api.Session, error) {
	why := cleanText(r.Reason)
	return s.mutate(ctx, c, r.SessionID, func(sess *api.Session, role api.Role) ([]api.Event, error) {
		if err := responderWaiting(sess, role, "decline", "to stop it, cancel it"); err != nil {
			return nil, err
		}
		if !r.End {
			return []api.Event{{Type: api.EventDeclined, Reason: why}}, nil
		}
		sess.State = api.StateCancelled
		sess.Reason = c.User + " declined"
		if why != "" {
			sess.Reason += ": " + why
		}
		return []api.Event{{Type: api.EventCancelled}}, nil
	})
}
