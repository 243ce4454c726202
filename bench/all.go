package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"
)

// runAll runs every case in one process, so that ratios compare figures
// taken on the same machine within minutes of each other.
func runAll(ctx context.Context, o options, env []string, stdout io.Writer) error {
	start := time.Now()
	if o.cpuProfile != "" {
		stop, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	dir, err := os.MkdirTemp("", "sft-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	res := &Results{
		Started: start, Machine: machine(),
		Options: map[string]any{"quick": o.quick, "size_bytes": o.size, "runs": o.runs, "warmups": 1, "pairs": o.pairs, "replicas": o.replicas, "control_plane_run_seconds": o.cpDuration.Seconds()},
	}
	say := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }
	say("SFT bench: %s file, %d run(s) after a warm-up, %d pairs; scratch in %s", human(o.size), o.runs, o.pairs, dir)

	// The test file is made once, when the first data-path case needs it.
	var src string
	withFile := func(name string, run func(src string) *Case) func() *Case {
		return func() *Case {
			if src == "" {
				var err error
				if src, err = randomFile(ctx, dir, o.size); err != nil {
					return &Case{Name: name, Skipped: "no test file: " + err.Error()}
				}
			}
			return run(src)
		}
	}
	type step struct {
		name string
		run  func() *Case
	}
	steps := []step{
		{caseRawTCP, withFile(caseRawTCP, func(src string) *Case { return benchRawTCP(ctx, o, dir, src) })},
		{caseFloor, withFile(caseFloor, func(src string) *Case { return benchFloor(ctx, o, dir, src, env, floorPlain) })},
		{caseFloorPipelined, withFile(caseFloorPipelined, func(src string) *Case { return benchFloor(ctx, o, dir, src, env, floorPipelined) })},
		{caseSFT, withFile(caseSFT, func(src string) *Case { return benchSFT(ctx, o, dir, src, env, sftDirect) })},
		{caseSFTRelay, withFile(caseSFTRelay, func(src string) *Case { return benchSFT(ctx, o, dir, src, env, sftRelay) })},
	}
	for _, name := range []string{caseCroc, caseCrocNoCompress} {
		run := withFile(name, func(src string) *Case { return benchCroc(ctx, o, dir, src, env, name == caseCrocNoCompress, say) })
		if o.skipCroc {
			run = func() *Case { return &Case{Name: name, Skipped: "--skip-croc"} }
		}
		steps = append(steps, step{name, run})
	}
	for _, n := range relayPairs {
		steps = append(steps, step{relayCase(n), func() *Case { return benchRelayPairs(ctx, o, dir, env, n) }})
	}
	steps = append(steps,
		step{caseLifecycleEmbedded, func() *Case { return benchLifecycleEmbedded(ctx, o, dir) }},
		step{caseLifecycleRedis, func() *Case { return benchLifecycleRedis(ctx, o, dir, env) }},
		step{caseLogin, func() *Case { return benchLogin(ctx, o, dir) }},
		step{caseClusterOne, func() *Case { return benchCluster(ctx, o, dir, env, 1) }},
		step{caseClusterThree, func() *Case { return benchCluster(ctx, o, dir, env, 3) }},
	)
	for _, t := range scaleTopologies {
		steps = append(steps, step{scaleCase(o, t), func() *Case { return benchScale(ctx, o, dir, env, t) }})
	}
	for _, st := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !selected(o.only, st.name) {
			continue
		}
		c := st.run()
		if c.Skipped != "" {
			say("%s: skipped: %s", c.Name, c.Skipped)
		} else {
			say("%s: done", c.Name)
		}
		res.Cases = append(res.Cases, c)
	}
	res.Seconds = time.Since(start).Seconds()
	res.settle()
	res.markdown(stdout)
	if err := res.writeJSON(o.jsonPath); err != nil {
		return err
	}
	say("\nwrote %s (%.0f s)", o.jsonPath, res.Seconds)
	return nil
}

// selected tells whether --only (comma-separated words, any case) picks
// the case called name: one of the words is part of it. No words pick
// every case.
func selected(only, name string) bool {
	if only == "" {
		return true
	}
	for w := range strings.SplitSeq(only, ",") {
		if w = strings.TrimSpace(w); w != "" && strings.Contains(strings.ToLower(name), strings.ToLower(w)) {
			return true
		}
	}
	return false
}

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d B", n)
}

// startCPUProfile writes this process's CPU profile to file until stop.
func startCPUProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
