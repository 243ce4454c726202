package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/sftproject/sft/services/relay"
	"github.com/sftproject/sft/services/relay/relaybench"
	"github.com/sftproject/sft/services/secrets"
)

// relayPairs are the concurrent pairs of the raw relay cases.
var relayPairs = []int{1, 50}

// relayCase names the raw relay case of n pairs.
func relayCase(n int) string { return "relay (" + pairsOf(n) + ")" }

func pairsOf(n int) string {
	if n == 1 {
		return "1 pair"
	}
	return fmt.Sprintf("%d pairs", n)
}

// rssEvery is how often a raw relay case samples the relay's VmRSS.
const rssEvery = 20 * time.Millisecond

// runRelay is the relay in a process of its own, admitting the tickets of
// the secrets directory args[0] (see relaybench.Serve).
func runRelay(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("relay: want SECRETS_DIR")
	}
	key, err := secrets.RelayTicketPublicKey(args[0])
	if err != nil {
		return err
	}
	return relaybench.Serve(ctx, key, os.Stdin, stdout)
}

// startRelay starts this binary as a relay process that admits the tickets
// of secretsDir's relay ticket key (made, with the other secrets, if
// missing), and returns it and an issuer of such tickets. The caller stops
// the process.
func startRelay(ctx context.Context, self string, env []string, secretsDir string) (*relaybench.Process, *relay.Issuer, error) {
	sec, err := secrets.Ensure(secretsDir)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(self, modeRelay, secretsDir)
	cmd.Env = env
	p, err := relaybench.Start(ctx, cmd)
	if err != nil {
		return nil, nil, err
	}
	return p, relay.NewIssuer(sec.RelayTicketKey), nil
}

// benchRelayPairs drives a relay process with n pairs of raw connections
// admitted with real tickets, each pushing the same bytes one way at once,
// and reports the relay's CPU per GiB, its memory during and after, and
// the pairs' aggregate rate.
func benchRelayPairs(ctx context.Context, o options, dir string, env []string, n int) *Case {
	c := newCase(relayCase(n))
	self, err := os.Executable()
	if err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	rp, iss, err := startRelay(ctx, self, env, filepath.Join(dir, fmt.Sprintf("relay-%d", n), "secrets"))
	if err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	defer rp.Stop()
	noteStartRSS(c, rp)
	ps, err := relaybench.Connect(ctx, rp.Addr, iss, n)
	if err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	defer ps.Close()
	// Each pair moves o.relayPairBytes, and all together at least the test
	// file's size, so that one pair's CPU time is not a few clock ticks.
	per := max(o.size/int64(n), o.relayPairBytes)
	total := per * int64(n)
	c.Notes["load"] = fmt.Sprintf("%s of raw connections admitted with tickets; each moves %s one way per run", pairsOf(n), human(per))
	c.Notes["relay RSS during"] = fmt.Sprintf("is the most of the relay's VmRSS, sampled every %s of a run", rssEvery)
	c.Notes["relay peak RSS growth"] = "is the relay's VmHWM after a run minus its VmHWM after the warm-up"
	var warmPeak int64 // the relay's peak RSS after the warm-up
	return repeat(o, c, func(measured bool) error {
		u0, err := rp.Usage()
		if err != nil {
			return err
		}
		t0 := time.Now()
		during, err := sampleRSS(rp, func() error { return ps.Move(ctx, per) })
		elapsed := time.Since(t0)
		if err != nil {
			return err
		}
		u1, err := rp.Usage()
		if err != nil {
			return err
		}
		if !measured {
			warmPeak = u1.PeakRSSKiB
			return nil
		}
		c.add("throughput", "MB/s", mbps(total, elapsed))
		c.add("relay CPU", "s/GiB", (u1.CPU-u0.CPU).Seconds()/gib(total))
		c.add("relay RSS during", "MiB", mib(during))
		c.add("relay peak RSS", "MiB", mib(u1.PeakRSSKiB))
		c.add("relay peak RSS growth", "MiB", mib(u1.PeakRSSKiB-warmPeak))
		return nil
	})
}

// noteStartRSS notes the relay process's resident memory before it
// relayed anything: this binary's own, which the relay's work adds to.
func noteStartRSS(c *Case, rp *relaybench.Process) {
	if u, err := rp.Usage(); err == nil {
		c.Notes["relay RSS at start"] = fmt.Sprintf("%.1f MiB", mib(u.RSSKiB))
	}
}

// sampleRSS runs move while it samples the relay's resident memory every
// rssEvery, and returns the most it saw, in KiB.
func sampleRSS(rp *relaybench.Process, move func() error) (int64, error) {
	var (
		most int64
		wg   sync.WaitGroup
	)
	stop := make(chan struct{})
	wg.Go(func() {
		t := time.NewTicker(rssEvery)
		defer t.Stop()
		for {
			if u, err := rp.Usage(); err == nil {
				most = max(most, u.RSSKiB)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	err := move()
	close(stop)
	wg.Wait()
	return most, err
}
