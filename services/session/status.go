package session

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/rpc"
)

// statusWindow is how long a status request gathers discovery replies.
// Replicas answer from memory, so a healthy one answers well within it;
// one that does not is as good as absent to an operator.
const statusWindow = 500 * time.Millisecond

// status answers an admin with every service replica on the bus and the
// open sessions.
func (s *Service) status(ctx context.Context, c rpc.Caller, _ *api.StatusRequest) (*api.StatusReply, error) {
	if c.Role != "admin" {
		return nil, api.Errorf(api.CodeForbidden, "the status of the system is for admins (`sftd user set-role %s admin` makes one, from the next login)", c.User)
	}
	stats, err := gather(ctx, s.nc, rpc.StatsSubject, statusWindow)
	if err != nil {
		return nil, err
	}
	open, err := s.OpenSessions(ctx)
	if err != nil {
		return nil, err
	}
	// A replica's entry is about 1.5 KB: a reply of a hundred fits in the
	// broker's 256 KB messages.
	return &api.StatusReply{At: s.now().UTC(), Services: replicas(stats), OpenSessions: open}, nil
}

// gather publishes one request to every replica and collects the replies
// that arrive within window (or until ctx ends).
func gather(ctx context.Context, nc *nats.Conn, subject string, window time.Duration) ([]rpc.ReplicaStats, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("status: subscribe: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, fmt.Errorf("status: ask %s: %w", subject, err)
	}
	ctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	var out []rpc.ReplicaStats
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			// The window ended: what arrived is the answer.
			return out, nil
		}
		var st rpc.ReplicaStats
		if json.Unmarshal(m.Data, &st) == nil && st.Name != "" {
			out = append(out, st)
		}
	}
}

// replicas turns the replicas' answers into the reply's entries, sorted
// by name and start; a replica that answered twice (its reply was
// delivered twice) is listed once.
func replicas(stats []rpc.ReplicaStats) []api.ServiceStatus {
	byKey := map[string]*api.ServiceStatus{}
	var order []string
	for _, st := range stats {
		replica := cmp.Or(st.Metadata[rpc.MetaReplica], st.ID)
		key := st.Name + "/" + replica
		if byKey[key] != nil {
			continue
		}
		r := &api.ServiceStatus{
			Name: st.Name, Version: st.Version, Replica: replica, Host: st.Metadata[rpc.MetaHost],
			Instances: st.Instances, Started: st.Started,
		}
		for _, e := range st.Endpoints {
			if e != nil {
				r.Endpoints = append(r.Endpoints, api.EndpointStatus{
					Name: e.Name, Subject: e.Subject, Requests: e.NumRequests, Errors: e.NumErrors, AverageLatency: e.AverageProcessingTime,
				})
			}
		}
		slices.SortFunc(r.Endpoints, func(a, b api.EndpointStatus) int { return cmp.Compare(a.Name, b.Name) })
		byKey[key] = r
		order = append(order, key)
	}
	out := make([]api.ServiceStatus, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	slices.SortFunc(out, func(a, b api.ServiceStatus) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), a.Started.Compare(b.Started), cmp.Compare(a.Replica, b.Replica))
	})
	return out
}
