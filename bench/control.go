package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/internal/procstat"
	"github.com/sftproject/sft/services/auth"
)

func benchLifecycleEmbedded(ctx context.Context, o options, dir string) *Case {
	c := newCase(caseLifecycleEmbedded)
	st, tgt, err := startEmbedded(ctx, filepath.Join(dir, "stack-cp"), nil)
	if err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	defer st.Close()
	c.Notes["limits"] = "per-user session creation rate limit lifted for the load"
	return lifecycles(ctx, o, c, tgt, nil)
}

// pair is one simulated initiator and responder, each on its own connection.
type pair struct {
	a, b *client.Client
}

// lifecycles drives o.pairs pairs through create → join → key (both) →
// report (both) → completed for o.cpDuration per run, with no file bytes.
// It reports the CPU per lifecycle of every process involved: this one
// (the clients, and an embedded stack) and, with serverCPU (the CPU time
// each server process has used so far, by name, when the server side runs
// in processes of its own), the server side's, in all and by process, with
// the rate that CPU would allow on this machine's cores if the clients ran
// elsewhere.
func lifecycles(ctx context.Context, o options, c *Case, tgt target, serverCPU func() (map[string]time.Duration, error)) *Case {
	pairs := make([]pair, o.pairs)
	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	for i := range pairs {
		a, b := fmt.Sprintf("p%03da", i), fmt.Sprintf("p%03db", i)
		if err := tgt.addUsers(ctx, cheapHash, a, b); err != nil {
			return &Case{Name: c.Name, Skipped: err.Error()}
		}
		ca, nca, err := tgt.login(ctx, a)
		if err != nil {
			return &Case{Name: c.Name, Skipped: err.Error()}
		}
		cb, ncb, err := tgt.login(ctx, b)
		if err != nil {
			nca.Close()
			return &Case{Name: c.Name, Skipped: err.Error()}
		}
		conns = append(conns, nca, ncb)
		pairs[i] = pair{a: ca, b: cb}
	}
	c.Notes["load"] = fmt.Sprintf("%d concurrent pairs, %s per run", o.pairs, o.cpDuration)
	return repeat(o, c, func(measured bool) error {
		// Timed before the run and its CPU figures' window (see yardstick).
		var yard0 time.Duration
		if measured {
			var err error
			if yard0, err = yardstick(); err != nil {
				return err
			}
		}
		rctx, cancel := context.WithTimeout(ctx, o.cpDuration+30*time.Second)
		defer cancel()
		deadline := time.Now().Add(o.cpDuration)
		var (
			done    atomic.Int64
			mu      sync.Mutex
			setups  []time.Duration
			steps   stepTimes
			wg      sync.WaitGroup
			firstMu sync.Mutex
			first   error
		)
		var cpu0 map[string]time.Duration
		if serverCPU != nil {
			var err error
			if cpu0, err = serverCPU(); err != nil {
				return err
			}
		}
		self0, err := procstat.CPU(os.Getpid())
		if err != nil {
			return err
		}
		host0, steal0, err := procstat.HostTicks()
		if err != nil {
			return err
		}
		t0 := time.Now()
		for _, p := range pairs {
			wg.Go(func() {
				var (
					mine []time.Duration
					st   stepTimes
				)
				for time.Now().Before(deadline) {
					setup, err := lifecycle(rctx, p, &st)
					if err != nil {
						firstMu.Lock()
						if first == nil {
							first = err
						}
						firstMu.Unlock()
						return
					}
					mine = append(mine, setup)
					done.Add(1)
				}
				mu.Lock()
				setups = append(setups, mine...)
				steps.merge(&st)
				mu.Unlock()
			})
		}
		wg.Wait()
		elapsed := time.Since(t0)
		if first != nil {
			return first
		}
		if measured {
			c.add("lifecycles", "/s", float64(done.Load())/elapsed.Seconds())
			c.add("setup p50", "ms", percentile(setups, 0.50))
			c.add("setup p99", "ms", percentile(setups, 0.99))
			c.add("create p50", "ms", percentile(steps.create, 0.5))
			c.add("join p50", "ms", percentile(steps.join, 0.5))
			c.add("keys (both) p50", "ms", percentile(steps.keys, 0.5))
			c.add("reports (both) p50", "ms", percentile(steps.reports, 0.5))
			// What other tenants took of the machine: on a shared host the
			// CPU figures below rise with it.
			if host1, steal1, err := procstat.HostTicks(); err == nil && host1 > host0 {
				c.add("CPU stolen by the host", "%", 100*float64(steal1-steal0)/float64(host1-host0))
			}
			if n := done.Load(); n > 0 {
				self1, err := procstat.CPU(os.Getpid())
				if err != nil {
					return err
				}
				var server time.Duration
				if serverCPU != nil {
					cpu1, err := serverCPU()
					if err != nil {
						return err
					}
					for _, name := range slices.Sorted(maps.Keys(cpu1)) {
						d := cpu1[name] - cpu0[name]
						c.add("server CPU per lifecycle: "+name, "ms", float64(d)/1e6/float64(n))
						server += d
					}
				}
				c.add("CPU per lifecycle", "ms", float64(server+self1-self0)/1e6/float64(n))
				if serverCPU != nil {
					per := server / time.Duration(n)
					c.add("server CPU per lifecycle", "ms", float64(per)/1e6)
					c.add("server-side capacity", "/s", float64(runtime.NumCPU())*float64(time.Second)/float64(per))
				}
			}
			// How fast the host ran around the run: the CPU figures move
			// with it.
			yard1, err := yardstick()
			if err != nil {
				return err
			}
			c.add("host yardstick: one key seal", "µs", float64(yard0+yard1)/2/1e3)
		}
		return nil
	})
}

// lifecycle runs one session to completed and returns its setup latency
// (create → both keys in hand).
func lifecycle(ctx context.Context, p pair, st *stepTimes) (time.Duration, error) {
	t0 := time.Now()
	s, err := p.a.Create(ctx, api.CreateRequest{Responder: p.b.User(), PeerAddrs: []string{"127.0.0.1:9"},
		Manifest: api.Manifest{Files: []api.File{{Name: "nothing.bin", Size: 0}}}})
	if err != nil {
		return 0, fmt.Errorf("create: %w", err)
	}
	t1 := time.Now()
	st.create = append(st.create, t1.Sub(t0))
	if _, err := p.b.Join(ctx, s.ID, nil); err != nil {
		return 0, fmt.Errorf("join: %w", err)
	}
	t2 := time.Now()
	st.join = append(st.join, t2.Sub(t1))
	if err := both(func() error { _, err := p.a.Key(ctx, s.ID); return err }, func() error { _, err := p.b.Key(ctx, s.ID); return err }); err != nil {
		return 0, fmt.Errorf("key: %w", err)
	}
	setup := time.Since(t0)
	st.keys = append(st.keys, time.Since(t2))
	t3 := time.Now()
	// The SHA-256 of no bytes.
	r := api.Report{OK: true, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", At: time.Now()}
	var sa, sb *api.Session
	if err := both(func() (err error) { sa, err = p.a.Report(ctx, s.ID, r); return err }, func() (err error) { sb, err = p.b.Report(ctx, s.ID, r); return err }); err != nil {
		return 0, fmt.Errorf("report: %w", err)
	}
	st.reports = append(st.reports, time.Since(t3))
	if sa.State != api.StateCompleted && sb.State != api.StateCompleted {
		g, err := p.a.Get(ctx, s.ID)
		if err != nil {
			return 0, err
		}
		if g.State != api.StateCompleted {
			return 0, fmt.Errorf("session %s is %s after both reports", s.ID, g.State)
		}
	}
	return setup, nil
}

// stepTimes are one pair's latencies of each lifecycle step.
type stepTimes struct{ create, join, keys, reports []time.Duration }

func (s *stepTimes) merge(o *stepTimes) {
	s.create = append(s.create, o.create...)
	s.join = append(s.join, o.join...)
	s.keys = append(s.keys, o.keys...)
	s.reports = append(s.reports, o.reports...)
}

func both(f, g func() error) error {
	ch := make(chan error, 1)
	go func() { ch <- g() }()
	return errors.Join(f(), <-ch)
}

// benchLogin measures logins as sft-cli makes them (password connection,
// login request, token connection) with the default hash parameters, which
// bound it on purpose.
func benchLogin(ctx context.Context, o options, dir string) *Case {
	c := newCase(caseLogin)
	st, tgt, err := startEmbedded(ctx, filepath.Join(dir, "stack-login"), nil)
	if err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	defer st.Close()
	p := auth.DefaultHashParams
	const workers = 4
	users := make([]string, workers)
	for i := range users {
		users[i] = fmt.Sprintf("login%d", i)
	}
	if err := tgt.addUsers(ctx, p, users...); err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	c.Notes["hash"] = fmt.Sprintf("argon2id m=%d KiB, t=%d, p=%d; %d concurrent clients", p.Memory, p.Time, p.Threads, workers)
	return repeat(o, c, func(measured bool) error {
		deadline := time.Now().Add(o.cpDuration)
		var (
			mu   sync.Mutex
			lat  []time.Duration
			errs []error
			wg   sync.WaitGroup
		)
		t0 := time.Now()
		for _, u := range users {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					s := time.Now()
					_, nc, err := tgt.login(ctx, u)
					if err == nil {
						nc.Close()
					}
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					} else {
						lat = append(lat, time.Since(s))
					}
					mu.Unlock()
					if err != nil {
						return
					}
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(t0)
		if err := errors.Join(errs...); err != nil {
			return err
		}
		if measured {
			c.add("logins", "/s", float64(len(lat))/elapsed.Seconds())
			c.add("login p99", "ms", percentile(lat, 0.99))
		}
		return nil
	})
}
