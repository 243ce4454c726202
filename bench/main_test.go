package main

import (
	"math"
	"path/filepath"
	"testing"
	"time"
)

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
	o, err = parseFlags([]string{"--quick"})
	if err != nil || o.size != 64<<20 || o.runs != 1 || o.pairs > 16 {
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
