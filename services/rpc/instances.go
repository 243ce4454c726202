package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/nats-io/nuid"
)

// AddService starts n instances of the micro service cfg describes on nc,
// all in cfg's queue group, and returns them as one micro.Service.
//
// micro delivers one endpoint's requests one at a time, and a request may
// only be answered on the goroutine that received it, so a handler that
// waits on the store or another service holds up every request behind it.
// Each instance has its own subscriptions, hence its own goroutine: n
// instances serve up to n requests of an endpoint at once. The server
// spreads requests over the group's members at random, as it does over
// replicas in other processes. The count is configuration (instances).
//
// Every instance carries the same replica id and host in its metadata
// (MetaReplica, MetaHost), and the replica answers StatsSubject once with
// the sum of its instances' statistics.
func AddService(nc *nats.Conn, cfg micro.Config, n int) (micro.Service, error) {
	if n < 1 {
		n = 1
	}
	cfg.Metadata = maps.Clone(cfg.Metadata)
	if cfg.Metadata == nil {
		cfg.Metadata = map[string]string{}
	}
	cfg.Metadata[MetaReplica] = nuid.Next()
	if host, err := os.Hostname(); err == nil {
		cfg.Metadata[MetaHost] = host
	}
	// The stats subscription goes when the service stops.
	var statsSub atomic.Pointer[nats.Subscription]
	unsubscribe := sync.OnceFunc(func() {
		if sub := statsSub.Load(); sub != nil {
			_ = sub.Unsubscribe()
		}
	})
	done := cfg.DoneHandler
	cfg.DoneHandler = func(s micro.Service) {
		unsubscribe()
		if done != nil {
			done(s)
		}
	}
	all := make(Instances, 0, n)
	for range n {
		svc, err := micro.AddService(nc, cfg)
		if err != nil {
			_ = all.Stop()
			return nil, fmt.Errorf("start %s: %w", cfg.Name, err)
		}
		all = append(all, svc)
	}
	var svc micro.Service = all
	if n == 1 {
		svc = all[0]
	}
	sub, err := nc.Subscribe(StatsSubject, func(m *nats.Msg) {
		b, err := json.Marshal(ReplicaStats{Stats: svc.Stats(), Instances: len(all)})
		if err == nil {
			_ = m.Respond(b)
		}
	})
	if err != nil {
		_ = all.Stop()
		return nil, fmt.Errorf("start %s: stats: %w", cfg.Name, err)
	}
	statsSub.Store(sub)
	return svc, nil
}

// StatsSubject is where every replica started by AddService answers with
// its ReplicaStats. micro's own $SRV.STATS has each instance answer, and
// the broker lets a connection answer a message it received only once
// (response permissions), so a replica of n instances could not; here
// each replica has one subscription. It lies under $SRV, which clients
// may not reach; the session service asks on an admin's behalf.
const StatsSubject = micro.APIPrefix + ".SFT.STATS"

// ReplicaStats is one replica's answer on StatsSubject: the identity of
// its first instance and each endpoint's figures summed over all.
type ReplicaStats struct {
	micro.Stats
	Instances int `json:"instances"`
}

// Metadata keys AddService sets on every instance.
const (
	MetaReplica = "replica" // the same for the instances started together
	MetaHost    = "host"    // the machine's (or container's) host name
)

// Instances are instances of one service that act as one: endpoints are
// added to each, Stop stops each, and Stats sums each endpoint's figures.
type Instances []micro.Service

var _ micro.Service = Instances(nil)

// AddEndpoint adds the endpoint to every instance.
func (s Instances) AddEndpoint(name string, h micro.Handler, opts ...micro.EndpointOpt) error {
	for _, svc := range s {
		if err := svc.AddEndpoint(name, h, opts...); err != nil {
			return err
		}
	}
	return nil
}

// AddGroup returns a group whose endpoints are added to every instance.
func (s Instances) AddGroup(name string, opts ...micro.GroupOpt) micro.Group {
	g := make(groups, len(s))
	for i, svc := range s {
		g[i] = svc.AddGroup(name, opts...)
	}
	return g
}

type groups []micro.Group

func (g groups) AddEndpoint(name string, h micro.Handler, opts ...micro.EndpointOpt) error {
	for _, x := range g {
		if err := x.AddEndpoint(name, h, opts...); err != nil {
			return err
		}
	}
	return nil
}

func (g groups) AddGroup(name string, opts ...micro.GroupOpt) micro.Group {
	out := make(groups, len(g))
	for i, x := range g {
		out[i] = x.AddGroup(name, opts...)
	}
	return out
}

// Info describes the first instance; all have the same endpoints.
func (s Instances) Info() micro.Info {
	if len(s) == 0 {
		return micro.Info{}
	}
	return s[0].Info()
}

// Stats are the first instance's, with each endpoint's counts and times
// summed over all instances.
func (s Instances) Stats() micro.Stats {
	if len(s) == 0 {
		return micro.Stats{}
	}
	st := s[0].Stats()
	byName := map[string]*micro.EndpointStats{}
	for _, e := range st.Endpoints {
		byName[e.Name] = e
	}
	for _, svc := range s[1:] {
		for _, e := range svc.Stats().Endpoints {
			sum := byName[e.Name]
			if sum == nil {
				continue
			}
			sum.NumRequests += e.NumRequests
			sum.NumErrors += e.NumErrors
			sum.ProcessingTime += e.ProcessingTime
			if e.LastError != "" {
				sum.LastError = e.LastError
			}
		}
	}
	for _, e := range st.Endpoints {
		if e.NumRequests > 0 {
			e.AverageProcessingTime = e.ProcessingTime / time.Duration(e.NumRequests)
		}
	}
	return st
}

// Reset resets every instance's statistics.
func (s Instances) Reset() {
	for _, svc := range s {
		svc.Reset()
	}
}

// Stop stops every instance; requests under way finish (micro drains the
// subscriptions).
func (s Instances) Stop() error {
	var errs []error
	for _, svc := range s {
		errs = append(errs, svc.Stop())
	}
	return errors.Join(errs...)
}

// Stopped reports whether every instance stopped.
func (s Instances) Stopped() bool {
	for _, svc := range s {
		if !svc.Stopped() {
			return false
		}
	}
	return true
}
