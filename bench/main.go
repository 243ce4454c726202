// Command bench measures SFT on loopback in one run: the data path, direct
// and through the relay, against raw TCP, the encrypted-copy floor and
// croc; the relay's own CPU and memory, under a transfer and under 1 and 50
// pairs of raw connections; control-plane capacity (session lifecycles,
// logins), on one NATS server and on a 3-node cluster; and the memory of
// each transfer side. `go tool task bench` runs it; it prints
// a Markdown table and writes every figure to a JSON file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	quick     bool
	size      int64
	runs      int
	pairs     int
	jsonPath  string
	skipCroc  bool
	skipRedis bool
	// duration of one control-plane run
	cpDuration time.Duration
	cpuProfile string
	replicas   int
	only       string
	// the least each pair of a raw relay case moves per run
	relayPairBytes int64
	// sessions the waiting-sessions cases leave waiting
	waiting int
}

// Hidden first arguments: the bench re-executes itself so that each
// transfer side, the relay, and each service of the production topology is
// its own process with its own CPU time and peak RSS.
const (
	modeSide  = "__side"
	modeFloor = "__floor"
	modeSftd  = "__sftd"
	modeRelay = "__relay"
)

func run(ctx context.Context, args, env []string, stdout io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case modeSide:
			return runSide(ctx, args[1:], env, stdout)
		case modeFloor:
			return runFloor(ctx, args[1:], env, stdout)
		case modeSftd:
			return runSftd(ctx, args[1:], env, stdout)
		case modeRelay:
			return runRelay(ctx, args[1:], stdout)
		}
	}
	o, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	return runAll(ctx, o, env, stdout)
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	o := options{}
	size := fs.String("size", "1GiB", "size of the random test file (e.g. 256MiB, 1GiB, 4GiB)")
	fs.BoolVar(&o.quick, "quick", false, "sub-minute smoke run: small file, one run, short control-plane load")
	fs.IntVar(&o.runs, "runs", 3, "measured runs of each case, after one warm-up")
	fs.IntVar(&o.pairs, "pairs", 64, "concurrent client pairs for the session-lifecycle load")
	fs.StringVar(&o.jsonPath, "json", "bench-results.json", "where to write every figure as JSON")
	fs.BoolVar(&o.skipCroc, "skip-croc", false, "do not install or run croc")
	fs.BoolVar(&o.skipRedis, "skip-redis", false, "skip the Redis + separate-processes control-plane case")
	fs.IntVar(&o.replicas, "replicas", 1, "processes of sftd session and of sftd key in the Redis topology case")
	fs.StringVar(&o.only, "only", "", "run only the cases whose name contains one of these comma-separated words (e.g. lifecycle, or SFT,relay)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the bench process (the embedded stacks run in it) to this file")
	fs.DurationVar(&o.cpDuration, "cp-duration", 5*time.Second, "length of one control-plane run")
	fs.IntVar(&o.waiting, "waiting", 10000, "sessions the waiting-sessions cases leave waiting (20 a user; --quick: 1000)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	n, err := parseSize(*size)
	if err != nil {
		return o, err
	}
	o.size = n
	o.relayPairBytes = 64 << 20
	if o.quick {
		sizeSet, waitingSet := false, false
		fs.Visit(func(f *flag.Flag) {
			sizeSet, waitingSet = sizeSet || f.Name == "size", waitingSet || f.Name == "waiting"
		})
		if !sizeSet {
			o.size = 64 << 20
		}
		if !waitingSet {
			o.waiting = 1000
		}
		o.runs = 1
		o.relayPairBytes = 8 << 20
		o.cpDuration = time.Second
		if o.pairs > 16 {
			o.pairs = 16
		}
	}
	if o.runs < 1 || o.pairs < 1 || o.size < 1 || o.replicas < 1 {
		return o, errors.New("--runs, --pairs, --size and --replicas must be positive")
	}
	if err := scalePlanFor(o).check(); err != nil {
		return o, fmt.Errorf("--waiting %d: %w", o.waiting, err)
	}
	return o, nil
}

// parseSize reads 123, 64KiB, 256MiB, 1GiB (also KB/MB/GB as powers of 1000).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if len(s) > len(u.suffix) && s[len(s)-len(u.suffix):] == u.suffix {
			s, mult = s[:len(s)-len(u.suffix)], u.mult
			break
		}
	}
	var n int64
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n <= 0 {
		return 0, fmt.Errorf("--size %q: want a positive size such as 1GiB", s)
	}
	return n * mult, nil
}
