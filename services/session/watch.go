package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/events"
	"github.com/sftproject/sft/services/rpc"
)

// Clients may not read the event stream directly (the broker forbids it),
// so the service relays: it reads the stream with an ordered consumer,
// keeps only what the caller may see, and publishes it into the caller's
// reply inbox. A heartbeat request tells the relay when the watcher is gone.
const (
	maxWatchesUser = 16
	maxWatches     = 10_000
)

// Heartbeat timing of the relay. Variables so tests can shorten them; they
// are set before any service starts and never change afterwards.
var (
	heartbeatEvery   = api.HeartbeatEvery
	heartbeatTimeout = 3 * time.Second
)

type watchSet struct {
	mu      sync.Mutex
	total   int
	perUser map[string]int
}

func (w *watchSet) acquire(user string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.total >= maxWatches || w.perUser[user] >= maxWatchesUser {
		return false
	}
	w.total++
	w.perUser[user]++
	return true
}

func (w *watchSet) release(user string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.total--
	if w.perUser[user]--; w.perUser[user] <= 0 {
		delete(w.perUser, user)
	}
}

func (s *Service) watch(ctx context.Context, c rpc.Caller, r *api.WatchRequest) (*api.WatchReply, error) {
	// The relay publishes only into the caller's own inbox (the token
	// names the caller; the broker lets only that user hear there), as one
	// token after the prefix: never onto a subject a caller chose freely.
	prefix := api.InboxPrefix(c.User) + "."
	if id, ok := strings.CutPrefix(r.Deliver, prefix); !ok || id == "" || strings.ContainsAny(id, ".*> \t") || len(r.Deliver) > 256 {
		return nil, api.Errorf(api.CodeInvalid, "deliver must be a subject %s<id> (your own inbox)", prefix)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{api.AllEvents}, DeliverPolicy: jetstream.DeliverNewPolicy}
	if r.SessionID != "" {
		if err := s.mayWatchSession(ctx, c, r.SessionID); err != nil {
			return nil, err
		}
		cfg = jetstream.OrderedConsumerConfig{FilterSubjects: []string{api.SessionEvents(r.SessionID)}, DeliverPolicy: jetstream.DeliverAllPolicy}
	}
	after, resume := r.AfterSeq, r.Resume || r.AfterSeq > 0
	if !resume && r.SessionID == "" {
		// "From now on" is after the stream's last event, which the reply
		// names so the watcher can resume from there.
		st, err := s.js.Stream(ctx, api.EventStream)
		if err != nil {
			return nil, fmt.Errorf("watch: event stream: %w", err)
		}
		after, resume = st.CachedInfo().State.LastSeq, true
	}
	if resume {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, after+1
	}
	if !s.watches.acquire(c.User) {
		return nil, api.Errorf(api.CodeThrottled, "too many open watches; close some and retry")
	}
	cons, err := s.js.OrderedConsumer(ctx, api.EventStream, cfg)
	if err != nil {
		s.watches.release(c.User)
		return nil, fmt.Errorf("watch: ordered consumer: %w", err)
	}
	id := api.NewID()
	s.o.Logger.Debug("watch started", "watch", id, "user", c.User, "session", r.SessionID, "after_seq", after)
	s.wg.Go(func() {
		defer s.watches.release(c.User)
		reason := s.relay(ctx, c, r, cons)
		end := nats.NewMsg(r.Deliver)
		end.Header.Set(api.WatchEndHeader, reason)
		if ctx.Err() != nil || reason == reasonStalled {
			// This replica stops, or its consumer went silent (a cluster
			// node died under it): the watcher asks again, from its last
			// event, and a new consumer takes over.
			end.Header.Set(api.WatchResumeHeader, "1")
		}
		_ = s.nc.PublishMsg(end)
		s.o.Logger.Debug("watch ended", "watch", id, "user", c.User, "reason", reason)
	})
	reply := &api.WatchReply{WatchID: id}
	if r.SessionID == "" {
		reply.AfterSeq = after
	}
	return reply, nil
}

// How a relay's consumer pulls: a pull lasts consumerExpiry and the server
// sends a heartbeat every consumerHeartbeat while it has nothing; two
// missed heartbeats end the relay as stalled.
const (
	consumerExpiry    = 10 * time.Second
	consumerHeartbeat = 2 * time.Second
)

// relay forwards events until the watcher goes away, its token expires, the
// watched session ends, or the service stops. It returns why it stopped.
// reasonStalled ends a relay whose consumer stopped hearing from the server.
const reasonStalled = "event stream stalled"

func (s *Service) relay(ctx context.Context, c rpc.Caller, r *api.WatchRequest, cons jetstream.Consumer) string {
	msgs := make(chan jetstream.Msg, 64)
	stalled := make(chan struct{}, 1)
	done := make(chan struct{})
	defer close(done)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-done:
		}
	},
		// A consumer whose server died stops sending its heartbeats: at
		// these settings that is noticed within seconds, not the default
		// half-minute, and the watcher resumes through a new one.
		jetstream.PullExpiry(consumerExpiry), jetstream.PullHeartbeat(consumerHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				select {
				case stalled <- struct{}{}:
				default:
				}
			}
		}))
	if err != nil {
		s.o.Logger.Warn("watch consume failed", "err", err)
		return "internal error"
	}
	defer cc.Stop()

	// A consumer made before this replica's connection moved to another
	// node (its node died) may never hear from the stream again, and
	// heartbeats do not always tell: after a reconnect the relay ends
	// as stalled and the watcher resumes from its last event.
	reconnects := s.nc.Stats().Reconnects
	hb := time.NewTicker(heartbeatEvery)
	defer hb.Stop()
	expiry := time.NewTimer(time.Until(c.ExpiresAt))
	defer expiry.Stop()
	for {
		select {
		case <-ctx.Done():
			return "service stopping"
		case <-expiry.C:
			return "token expired: log in again"
		case <-stalled:
			return reasonStalled
		case <-hb.C:
			if s.nc.Stats().Reconnects != reconnects {
				return reasonStalled
			}
			ping := nats.NewMsg(r.Deliver)
			ping.Header.Set(api.HeartbeatHeader, "1")
			if _, err := s.nc.RequestMsg(ping, heartbeatTimeout); err != nil {
				return "watcher gone"
			}
		case m := <-msgs:
			ev, err := events.Decode(m.Data())
			if err != nil {
				s.o.Logger.Error("undecodable event in stream", "subject", m.Subject(), "err", err)
				continue
			}
			if !mayWatch(c, ev) {
				continue
			}
			if md, err := m.Metadata(); err == nil {
				ev.Seq = md.Sequence.Stream
			}
			b, err := json.Marshal(ev)
			if err != nil {
				continue
			}
			if err := s.nc.Publish(r.Deliver, b); err != nil {
				return "publish failed"
			}
			if r.SessionID != "" && ev.State.Terminal() && ev.Type != api.EventReported {
				return "session " + string(ev.State)
			}
		}
	}
}

// mayWatchSession checks that the caller may watch one session: its
// members, and admins (who may watch everything).
func (s *Service) mayWatchSession(ctx context.Context, c rpc.Caller, id string) error {
	if c.Role != "admin" {
		_, _, _, err := s.member(ctx, c, id)
		return err
	}
	if err := api.ValidSessionID(id); err != nil {
		return err
	}
	_, _, err := s.load(ctx, id)
	return err
}

// mayWatch reports whether the caller may see ev: members see their
// sessions' events, admins see all.
func mayWatch(c rpc.Caller, ev api.Event) bool {
	return c.Role == "admin" || ev.Initiator == c.User || ev.Responder == c.User
}
