package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for the bench's own binary in its
// hidden modes (a transfer side, the relay), which the bench starts as
// processes of their own by re-executing itself.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && strings.HasPrefix(os.Args[1], "__") {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1GiB", 1 << 30, true},
		{"4GiB", 4 << 30, true},
		{"256MiB", 256 << 20, true},
		{"64KiB", 64 << 10, true},
		{"10MB", 10e6, true},
		{"123", 123, true},
		{"0", 0, false},
		{"-1GiB", 0, false},
		{"GiB", 0, false},
		{"lots", 0, false},
	} {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil || o.size != 1<<30 || o.runs != 3 || o.pairs != 64 || o.jsonPath != "bench-results.json" || o.quick {
		t.Fatalf("defaults: %+v, %v", o, err)
	}
	if o.relayPairBytes != 64<<20 {
		t.Errorf("default bytes per relay pair %d", o.relayPairBytes)
	}
	o, err = parseFlags([]string{"--quick"})
	if err != nil || o.size != 64<<20 || o.runs != 1 || o.pairs > 16 || o.relayPairBytes != 8<<20 {
		t.Fatalf("--quick: %+v, %v", o, err)
	}
	o, err = parseFlags([]string{"--quick", "--size", "4GiB", "--skip-croc", "--skip-redis"})
	if err != nil || o.size != 4<<30 || !o.skipCroc || !o.skipRedis {
		t.Fatalf("--quick --size 4GiB: %+v, %v", o, err)
	}
	for _, bad := range [][]string{{"--runs", "0"}, {"--size", "x"}, {"extra"}, {"--pairs", "-1"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func TestSeriesAndRatios(t *testing.T) {
	r := &Results{}
	raw, sft := newCase(caseRawTCP), newCase(caseSFT)
	for _, v := range []float64{500, 400, 600} {
		raw.add("throughput", "MB/s", v)
	}
	for _, v := range []float64{300, 450} {
		sft.add("throughput", "MB/s", v)
	}
	sft.add("sender peak RSS", "MiB", 20)
	sft.add("receiver peak RSS", "MiB", 70)
	r.Cases = []*Case{raw, sft, {Name: caseCroc, Skipped: "--skip-croc"}}
	r.settle()
	if s := raw.Metrics["throughput"]; s.Min != 400 || s.Median != 500 || s.Max != 600 {
		t.Errorf("raw series %+v", s)
	}
	if m := sft.Metrics["throughput"].Median; m != 375 {
		t.Errorf("even median = %v, want 375", m)
	}
	if got := r.Ratios["sft_over_raw_tcp"]; math.Abs(got-0.75) > 1e-9 {
		t.Errorf("ratio = %v", got)
	}
	if r.Targets["sft >= 0.8 x raw tcp"] || r.Targets["peak rss <= 64 MiB per side"] {
		t.Errorf("targets %v: neither is met", r.Targets)
	}
	if _, ok := r.Ratios["sft_over_croc_default"]; ok {
		t.Error("ratio against a skipped case")
	}
	path := filepath.Join(t.TempDir(), "r.json")
	if err := r.writeJSON(path); err != nil {
		t.Fatal(err)
	}
}

// SFT direct is compared with each case of the same run by their medians,
// and each target records the figure it was judged on.
func TestDirectRatios(t *testing.T) {
	throughput := func(name string, v ...float64) *Case {
		c := newCase(name)
		for _, x := range v {
			c.add("throughput", "MB/s", x)
		}
		return c
	}
	for _, tc := range []struct {
		name    string
		cases   []*Case
		ratios  map[string]float64
		targets map[string]bool
	}{
		{
			name:    "SFT above the floor",
			cases:   []*Case{throughput(caseFloor, 380, 400, 420), throughput(caseSFT, 410, 440, 430)},
			ratios:  map[string]float64{"sft_over_floor": 430.0 / 400},
			targets: map[string]bool{"sft >= 1.0 x encrypted-copy floor": true},
		},
		{
			name:  "every comparison",
			cases: []*Case{throughput(caseRawTCP, 800), throughput(caseFloor, 500), throughput(caseSFT, 400), throughput(caseCroc, 20), throughput(caseCrocNoCompress, 100)},
			ratios: map[string]float64{"sft_over_floor": 0.8, "sft_over_raw_tcp": 0.5, "sft_over_croc_default": 20,
				"sft_over_croc_no_compress": 4},
			targets: map[string]bool{"sft >= 1.0 x encrypted-copy floor": false, "sft >= 0.8 x raw tcp": false,
				"sft >= 4 x croc --no-compress": true},
		},
		{
			name:    "the same machine twice as fast: the same verdicts",
			cases:   []*Case{throughput(caseRawTCP, 1600), throughput(caseFloor, 1000), throughput(caseSFT, 800), throughput(caseCrocNoCompress, 200)},
			ratios:  map[string]float64{"sft_over_floor": 0.8, "sft_over_raw_tcp": 0.5, "sft_over_croc_no_compress": 4},
			targets: map[string]bool{"sft >= 1.0 x encrypted-copy floor": false, "sft >= 0.8 x raw tcp": false, "sft >= 4 x croc --no-compress": true},
		},
		{
			name:  "the floor skipped",
			cases: []*Case{{Name: caseFloor, Skipped: "failed"}, throughput(caseSFT, 400)},
		},
		{
			name:  "no SFT",
			cases: []*Case{throughput(caseFloor, 400), throughput(caseRawTCP, 800)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Results{Cases: tc.cases}
			r.settle()
			if len(r.Ratios) != len(tc.ratios) || len(r.Targets) != len(tc.targets) {
				t.Errorf("ratios %v, targets %v; want %v, %v", r.Ratios, r.Targets, tc.ratios, tc.targets)
			}
			for k, want := range tc.ratios {
				if got, ok := r.Ratios[k]; !ok || math.Abs(got-want) > 1e-9 {
					t.Errorf("ratio %s = %v, %v; want %v", k, got, ok, want)
				}
			}
			for k, want := range tc.targets {
				if got, ok := r.Targets[k]; !ok || got != want {
					t.Errorf("target %q = %v, %v; want %v", k, got, ok, want)
				}
				if r.TargetFigures[k] != r.Ratios[directRatioOf(k)] {
					t.Errorf("target %q judged on %v, its ratio is %v", k, r.TargetFigures[k], r.Ratios[directRatioOf(k)])
				}
			}
			var out bytes.Buffer
			r.markdown(&out)
			for k := range tc.targets {
				line := fmt.Sprintf("- target %s: %s, ", k, num(r.TargetFigures[k]))
				if !strings.Contains(out.String(), line) {
					t.Errorf("no line %q in\n%s", line, out.String())
				}
			}
		})
	}
}

// directRatioOf is the ratio a target of directAgainst is judged on.
func directRatioOf(target string) string {
	for _, d := range directAgainst {
		if d.target == target {
			return d.ratio
		}
	}
	return ""
}

// The control plane's targets are CPU per lifecycle and latency, and the
// cluster is compared with the one node of the same run.
func TestControlRatios(t *testing.T) {
	lifecycle := func(name string, rate, p99, cpu float64) *Case {
		c := newCase(name)
		c.add("lifecycles", "/s", rate)
		c.add("setup p99", "ms", p99)
		c.add("CPU per lifecycle", "ms", cpu)
		return c
	}
	r := &Results{Cases: []*Case{
		lifecycle(caseLifecycleEmbedded, 470, 150, 4.2),
		lifecycle(caseLifecycleRedis, 2500, 15, 0.8),
		lifecycle(caseClusterOne, 250, 300, 8),
		lifecycle(caseClusterThree, 200, 450, 10),
	}}
	r.settle()
	want := map[string]bool{
		caseLifecycleEmbedded + ": CPU per lifecycle <= 1 ms (all processes)": false,
		caseLifecycleEmbedded + ": p99 setup <= 20 ms":                        false,
		caseLifecycleRedis + ": CPU per lifecycle <= 1 ms (all processes)":    true,
		caseLifecycleRedis + ": p99 setup <= 20 ms":                           true,
	}
	if len(r.Targets) != len(want) {
		t.Errorf("targets %v, want %v", r.Targets, want)
	}
	for k, v := range want {
		if got, ok := r.Targets[k]; !ok || got != v {
			t.Errorf("target %q = %v, %v; want %v", k, got, ok, v)
		}
	}
	for k, v := range map[string]float64{"cluster_over_single_lifecycles": 0.8, "cluster_over_single_setup_p99": 1.5} {
		if got := r.Ratios[k]; math.Abs(got-v) > 1e-9 {
			t.Errorf("ratio %s = %v, want %v", k, got, v)
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p := percentile(d, 0.5); p != 50 {
		t.Errorf("p50 = %v", p)
	}
	if p := percentile(d, 0.99); p != 99 {
		t.Errorf("p99 = %v", p)
	}
	if !math.IsNaN(percentile(nil, 0.5)) {
		t.Error("percentile of nothing is a number")
	}
}

func TestSelected(t *testing.T) {
	for _, tc := range []struct {
		only, name string
		want       bool
	}{
		{"", caseLogin, true},
		{"lifecycle", caseLifecycleRedis, true},
		{"lifecycle", caseLogin, false},
		{"relay", caseSFTRelay, true},
		{"relay", relayCase(50), true},
		{"relay", caseSFT, false},
		{"SFT,relay", caseSFT, true},
		{"sft, relay", relayCase(1), true},
		{"SFT,relay", caseCroc, false},
		{",", caseRawTCP, false},
		{"floor", caseFloor, true},
		{"floor", caseFloorPipelined, true},
		{"pipelined", caseFloor, false},
		{"floor", caseSFT, false},
		{"floor,SFT,raw", caseRawTCP, true},
		{"SFT", caseFloor, false},
		{"cluster", caseClusterOne, true},
		{"cluster", caseClusterThree, true},
		{"cluster", caseLifecycleRedis, false},
		{"lifecycle", caseClusterThree, false},
	} {
		if got := selected(tc.only, tc.name); got != tc.want {
			t.Errorf("selected(%q, %q) = %v", tc.only, tc.name, got)
		}
	}
}

func TestRelayRatios(t *testing.T) {
	sft, via, one, many := newCase(caseSFT), newCase(caseSFTRelay), newCase(relayCase(1)), newCase(relayCase(50))
	sft.add("throughput", "MB/s", 400)
	via.add("throughput", "MB/s", 340)
	via.add("relay CPU", "s/GiB", 0.35)
	one.add("relay peak RSS", "MiB", 16)
	one.add("relay peak RSS growth", "MiB", 0)
	many.add("relay peak RSS", "MiB", 18)
	many.add("relay peak RSS growth", "MiB", 0.5)
	many.add("relay peak RSS growth", "MiB", 2)
	r := &Results{Cases: []*Case{sft, via, one, many}}
	r.settle()
	if got := r.Ratios["sft_relay_over_direct"]; math.Abs(got-0.85) > 1e-9 {
		t.Errorf("relay over direct = %v", got)
	}
	if got := r.Ratios["relay_peak_rss_kib_per_added_pair"]; math.Abs(got-2048.0/49) > 1e-9 {
		t.Errorf("KiB per added pair = %v", got)
	}
	want := map[string]bool{
		"sft via relay >= 0.8 x direct":            true,
		"relay CPU <= 0.3 s/GiB (sft via relay)":   false,
		"relay peak RSS <= 256 KiB per added pair": true,
		relayCase(1) + ": relay memory flat in bytes relayed (peak RSS grows <= 1 MiB after the warm-up)":  true,
		relayCase(50) + ": relay memory flat in bytes relayed (peak RSS grows <= 1 MiB after the warm-up)": false,
	}
	for k, v := range want {
		if got, ok := r.Targets[k]; !ok || got != v {
			t.Errorf("target %q = %v, %v; want %v", k, got, ok, v)
		}
	}
}

// TestRelayCases runs the relay cases and the direct one they compare to,
// small, as `go run ./bench --quick --only SFT,relay` does: the sides and
// the relay each a process of its own (this test binary in the bench's
// hidden modes), the figures into the table and the JSON file.
func TestRelayCases(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the relay's figures come from /proc")
	}
	r, out := runCases(t, func(o *options) { o.relayPairBytes = 256 << 10 }, "--only", "SFT,relay")
	checkFigures(t, r, out, map[string][]string{
		caseSFT:       {"throughput", "sender CPU"},
		caseSFTRelay:  {"throughput", "relay CPU", "relay peak RSS"},
		relayCase(1):  {"throughput", "relay CPU", "relay RSS during", "relay peak RSS", "relay peak RSS growth"},
		relayCase(50): {"throughput", "relay CPU", "relay RSS during", "relay peak RSS", "relay peak RSS growth"},
	}, func(string) bool { return false })
	for _, k := range []string{"sft_relay_over_direct", "relay_peak_rss_kib_per_added_pair"} {
		if _, ok := r.Ratios[k]; !ok {
			t.Errorf("no ratio %s in %v", k, r.Ratios)
		}
	}
	if !strings.Contains(out, "| "+caseSFTRelay+" | relay CPU |") {
		t.Errorf("the table has no relay CPU row:\n%s", out)
	}
}

// TestFloorAndClusterCases runs the floor and the cluster cases small, as
// `go run ./bench --quick --only floor,cluster` does: the floor's sides
// processes of their own (this test binary in the bench's hidden mode),
// then redis-server, one and then three nats-server processes and the
// sftd services, and the figures and ratios into the table and the JSON
// file.
func TestFloorAndClusterCases(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the sides' figures come from /proc")
	}
	servers := serversOnPath(t)
	r, out := runCases(t, func(o *options) { o.cpDuration = 300 * time.Millisecond }, "--pairs", "2", "--only", "floor,cluster")
	lifecycle := []string{"lifecycles", "setup p99", "CPU per lifecycle", "server CPU per lifecycle", "CPU stolen by the host", "host yardstick: one key seal"}
	checkFigures(t, r, out, map[string][]string{
		caseFloor:          {"throughput", "sender CPU", "receiver CPU", "sender peak RSS", "receiver peak RSS"},
		caseFloorPipelined: {"throughput", "sender CPU", "receiver CPU", "sender peak RSS", "receiver peak RSS"},
		caseClusterOne:     lifecycle,
		caseClusterThree:   lifecycle,
	}, func(name string) bool { return name != caseFloor && name != caseFloorPipelined && !servers })
	if _, ok := r.Ratios["cluster_over_single_lifecycles"]; servers && !ok {
		t.Errorf("no cluster ratio in %v", r.Ratios)
	}
}

// runCases runs the bench in-process with --quick, a 4 MiB file and args,
// after tweak, and returns the JSON file it wrote and what it printed.
func runCases(t *testing.T, tweak func(*options), args ...string) (Results, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "r.json")
	o, err := parseFlags(append([]string{"--quick", "--size", "4MiB", "--json", path}, args...))
	if err != nil {
		t.Fatal(err)
	}
	tweak(&o)
	return runBench(t, o)
}

// checkFigures checks r holds exactly the cases of want, each with one
// value of each of its figures, or skipped where maySkip allows.
func checkFigures(t *testing.T, r Results, out string, want map[string][]string, maySkip func(string) bool) {
	t.Helper()
	if len(r.Cases) != len(want) {
		t.Errorf("%d cases, want %d:\n%s", len(r.Cases), len(want), out)
	}
	for _, c := range r.Cases {
		if c.Skipped != "" {
			if !maySkip(c.Name) {
				t.Errorf("%s skipped: %s", c.Name, c.Skipped)
			}
			continue
		}
		for _, m := range want[c.Name] {
			if s := c.Metrics[m]; s == nil || len(s.Values) != 1 {
				t.Errorf("%s: no %s in %v", c.Name, m, c.Metrics)
			}
		}
	}
}

// serversOnPath tells whether nats-server and redis-server are there for
// the cases that run them; SFT_REQUIRE_NATS=1 and SFT_REQUIRE_REDIS=1
// make their absence a failure.
func serversOnPath(t *testing.T) bool {
	t.Helper()
	ok := true
	for bin, env := range map[string]string{"nats-server": "SFT_REQUIRE_NATS", "redis-server": "SFT_REQUIRE_REDIS"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv(env) == "1" {
				t.Fatalf("%s not on PATH (%s=1 requires it)", bin, env)
			}
			ok = false
		}
	}
	return ok
}

// runBench runs the bench as o says and returns the JSON file it wrote
// and what it printed.
func runBench(t *testing.T, o options) (Results, string) {
	t.Helper()
	var out bytes.Buffer
	if err := runAll(t.Context(), o, os.Environ(), &out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(o.jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r, out.String()
}
