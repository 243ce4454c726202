package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
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
	path := filepath.Join(t.TempDir(), "r.json")
	o, err := parseFlags([]string{"--quick", "--size", "4MiB", "--only", "SFT,relay", "--json", path})
	if err != nil {
		t.Fatal(err)
	}
	o.relayPairBytes = 256 << 10
	r, out := runBench(t, o)
	want := map[string][]string{
		caseSFT:       {"throughput", "sender CPU"},
		caseSFTRelay:  {"throughput", "relay CPU", "relay peak RSS"},
		relayCase(1):  {"throughput", "relay CPU", "relay RSS during", "relay peak RSS", "relay peak RSS growth"},
		relayCase(50): {"throughput", "relay CPU", "relay RSS during", "relay peak RSS", "relay peak RSS growth"},
	}
	if len(r.Cases) != len(want) {
		t.Errorf("%d cases, want %d:\n%s", len(r.Cases), len(want), out)
	}
	for _, c := range r.Cases {
		if c.Skipped != "" {
			t.Errorf("%s skipped: %s", c.Name, c.Skipped)
			continue
		}
		for _, m := range want[c.Name] {
			if s := c.Metrics[m]; s == nil || len(s.Values) != 1 {
				t.Errorf("%s: no %s in %v", c.Name, m, c.Metrics)
			}
		}
	}
	for _, k := range []string{"sft_relay_over_direct", "relay_peak_rss_kib_per_added_pair"} {
		if _, ok := r.Ratios[k]; !ok {
			t.Errorf("no ratio %s in %v", k, r.Ratios)
		}
	}
	if !strings.Contains(out, "| "+caseSFTRelay+" | relay CPU |") {
		t.Errorf("the table has no relay CPU row:\n%s", out)
	}
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
