package redistest

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// MasterName is the name the sentinels of StartSentinel monitor.
const MasterName = "sft"

// failoverTimeout bounds a failover, from the primary's death until every
// sentinel names the new one. Generous, like readyTimeout: it bounds a test
// that hangs, not one that passes.
const failoverTimeout = 30 * time.Second

// SentinelOptions configure StartSentinel.
type SentinelOptions struct {
	// Password is the data servers' requirepass (and masterauth).
	Password string
	// SentinelPassword is the sentinels' own requirepass.
	SentinelPassword string
}

// Sentinel is a Redis Sentinel topology: a primary, one replica and three
// sentinels (quorum 2) on free loopback ports, each in its own t.TempDir().
// The sentinels declare a server down after one second, so a failover takes
// a few seconds.
type Sentinel struct {
	t         testing.TB
	opts      SentinelOptions
	Servers   [2]*Server // the first started as primary, the second as its replica
	Sentinels [3]*Server

	mu      sync.Mutex
	clients map[*Server]any // of the helpers' checks, by server
}

// StartSentinel starts the topology and returns once the replica is in
// sync and every sentinel knows the replica and the other sentinels, so a
// failover can happen. Everything stops when the test ends.
func StartSentinel(t testing.TB, o SentinelOptions) *Sentinel {
	t.Helper()
	st := &Sentinel{t: t, opts: o}
	st.Servers[0] = Start(t, Options{Password: o.Password})
	st.Servers[1] = Start(t, Options{Password: o.Password, ReplicaOf: st.Servers[0].Addr()})
	st.waitFor("the replica to sync", func(ctx context.Context) bool {
		info, err := st.client(st.Servers[0]).Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "connected_slaves:1") && strings.Contains(info, "state=online")
	})
	for i := range st.Sentinels {
		s := newServer(t, Options{Password: o.SentinelPassword})
		s.conf = func() string { return st.sentinelConfig(s) }
		s.args = []string{"--sentinel"}
		s.launch()
		st.Sentinels[i] = s
	}
	for _, s := range st.Sentinels {
		st.waitFor("sentinel "+s.Addr()+" to see the replica and its peers", func(ctx context.Context) bool {
			m, err := st.sentinel(s).Master(ctx, MasterName).Result()
			return err == nil && m["num-slaves"] == "1" && m["num-other-sentinels"] == "2"
		})
	}
	return st
}

// Addrs are the sentinels' host:port addresses.
func (st *Sentinel) Addrs() []string {
	out := make([]string, len(st.Sentinels))
	for i, s := range st.Sentinels {
		out[i] = s.Addr()
	}
	return out
}

// URL is a data URL with the password and database; under Sentinel its
// host is not used.
func (st *Sentinel) URL() string { return st.Servers[0].URL() }

// Primary is the data server every sentinel names as primary now.
func (st *Sentinel) Primary() *Server {
	st.t.Helper()
	var primary *Server
	st.waitFor("the sentinels to agree on a primary", func(ctx context.Context) bool {
		primary = st.agreed(ctx)
		return primary != nil
	})
	return primary
}

// WaitFailover waits, after old (the primary) died, until every sentinel
// names the other server and that server has taken the primary role.
func (st *Sentinel) WaitFailover(old *Server) {
	st.t.Helper()
	st.waitFor("a failover to promote the replica", func(ctx context.Context) bool {
		p := st.agreed(ctx)
		if p == nil || p == old {
			return false
		}
		role, err := st.client(p).Do(ctx, "ROLE").Slice()
		return err == nil && len(role) > 0 && role[0] == "master"
	})
}

// agreed returns the server all sentinels name as primary, or nil.
func (st *Sentinel) agreed(ctx context.Context) *Server {
	var addr string
	for i, s := range st.Sentinels {
		hp, err := st.sentinel(s).GetMasterAddrByName(ctx, MasterName).Result()
		if err != nil || len(hp) != 2 || (i > 0 && hp[0]+":"+hp[1] != addr) {
			return nil
		}
		addr = hp[0] + ":" + hp[1]
	}
	for _, s := range st.Servers {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// sentinelConfig renders a sentinel's config file. Sentinel rewrites it
// with what it learns, so it lives in the sentinel's own directory.
func (st *Sentinel) sentinelConfig(s *Server) string {
	var b strings.Builder
	line := func(args ...string) { b.WriteString(strings.Join(args, " ") + "\n") }
	line("bind", "127.0.0.1")
	line("port", strconv.Itoa(s.port))
	line("dir", quote(s.dir))
	line("daemonize", "no")
	line("logfile", `""`)
	if st.opts.SentinelPassword != "" {
		line("requirepass", quote(st.opts.SentinelPassword))
	}
	host, port, _ := strings.Cut(st.Servers[0].Addr(), ":")
	line("sentinel", "monitor", MasterName, host, port, "2")
	line("sentinel", "down-after-milliseconds", MasterName, "1000")
	line("sentinel", "failover-timeout", MasterName, "10000")
	if st.opts.Password != "" {
		line("sentinel", "auth-pass", MasterName, quote(st.opts.Password))
	}
	return b.String()
}

// waitFor polls cond until it holds, or fails the test after
// failoverTimeout.
func (st *Sentinel) waitFor(what string, cond func(ctx context.Context) bool) {
	st.t.Helper()
	deadline := time.Now().Add(failoverTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ok := cond(ctx)
		cancel()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			st.t.Fatalf("redistest: waited %v for %s", failoverTimeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// client is a plain client of a data server, for the helpers' checks.
func (st *Sentinel) client(s *Server) *redis.Client {
	return cached(st, s, func(o *redis.Options) *redis.Client {
		o.Password = st.opts.Password
		return redis.NewClient(o)
	})
}

// sentinel is a client of a sentinel.
func (st *Sentinel) sentinel(s *Server) *redis.SentinelClient {
	return cached(st, s, func(o *redis.Options) *redis.SentinelClient {
		o.Password = st.opts.SentinelPassword
		return redis.NewSentinelClient(o)
	})
}

// cached returns the client of s that mk made the first time, so polling
// does not pile up connections; the test closes them when it ends.
func cached[C interface{ Close() error }](st *Sentinel, s *Server, mk func(*redis.Options) C) C {
	st.mu.Lock()
	defer st.mu.Unlock()
	if c, ok := st.clients[s].(C); ok {
		return c
	}
	c := mk(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	if st.clients == nil {
		st.clients = map[*Server]any{}
	}
	st.clients[s] = c
	st.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Rejoin restarts a server killed before WaitFailover as a replica of the
// new primary, as an operator would (the sentinels would convert it too,
// but only after many seconds), and waits until it is in sync, so writes
// can reach a replica again.
func (st *Sentinel) Rejoin(killed *Server) {
	st.t.Helper()
	primary := st.Primary()
	killed.opts.ReplicaOf = primary.Addr()
	killed.Restart()
	st.waitFor("the restarted server to replicate the primary", func(ctx context.Context) bool {
		info, err := st.client(primary).Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "connected_slaves:1") && strings.Contains(info, "state=online")
	})
}
