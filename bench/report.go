package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Series is one figure measured over several runs.
type Series struct {
	Unit   string    `json:"unit"`
	Values []float64 `json:"values"`
	Min    float64   `json:"min"`
	Median float64   `json:"median"`
	Max    float64   `json:"max"`
}

func (s *Series) add(v float64) { s.Values = append(s.Values, v) }

func (s *Series) settle() {
	if len(s.Values) == 0 {
		return
	}
	v := slices.Clone(s.Values)
	slices.Sort(v)
	s.Min, s.Max = v[0], v[len(v)-1]
	if len(v)%2 == 1 {
		s.Median = v[len(v)/2]
	} else {
		s.Median = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
}

// Case is one benchmark case: named figures, or why it was skipped.
type Case struct {
	Name    string             `json:"name"`
	Skipped string             `json:"skipped,omitempty"`
	Notes   map[string]string  `json:"notes,omitempty"`
	Metrics map[string]*Series `json:"metrics,omitempty"`
	order   []string
}

func newCase(name string) *Case {
	return &Case{Name: name, Metrics: map[string]*Series{}, Notes: map[string]string{}}
}

func (c *Case) add(metric, unit string, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return // no sample (JSON has no NaN)
	}
	s, ok := c.Metrics[metric]
	if !ok {
		s = &Series{Unit: unit}
		c.Metrics[metric] = s
		c.order = append(c.order, metric)
	}
	s.add(v)
}

func (c *Case) median(metric string) float64 {
	if s, ok := c.Metrics[metric]; ok {
		return s.Median
	}
	return math.NaN()
}

// Results is the JSON file.
type Results struct {
	Started time.Time          `json:"started"`
	Seconds float64            `json:"seconds"`
	Machine map[string]string  `json:"machine"`
	Options map[string]any     `json:"options"`
	Cases   []*Case            `json:"cases"`
	Ratios  map[string]float64 `json:"ratios"`
	Targets map[string]bool    `json:"targets"`
	// The figure each target was judged on.
	TargetFigures map[string]float64 `json:"target_figures"`
}

func machine() map[string]string {
	m := map[string]string{"goos": runtime.GOOS, "goarch": runtime.GOARCH, "cpus": fmt.Sprint(runtime.NumCPU()), "go": runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				m["cpu"] = strings.TrimSpace(l[strings.Index(l, ":")+1:])
				break
			}
		}
	}
	return m
}

func (r *Results) find(name string) *Case {
	for _, c := range r.Cases {
		if c.Name == name && c.Skipped == "" {
			return c
		}
	}
	return nil
}

// settle computes min/median/max, the ratios and which targets hold.
// Every ratio comes from the medians of this run, so that the cases it
// compares ran on the same machine minutes apart; no target is a fixed
// throughput.
func (r *Results) settle() {
	for _, c := range r.Cases {
		for _, s := range c.Metrics {
			s.settle()
		}
	}
	r.Ratios, r.Targets, r.TargetFigures = map[string]float64{}, map[string]bool{}, map[string]float64{}
	sft := r.find(caseSFT)
	r.settleDirect(sft)
	r.settleRelay(sft)
	r.settleControl()
	r.settleScale()
	for k, v := range r.Ratios {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			delete(r.Ratios, k)
		}
	}
}

// target records whether got is at least (or, with atMost, at most) want,
// and the figure it was judged on. A figure that could not be taken is no
// verdict.
func (r *Results) target(name string, got, want float64, atMost bool) {
	if math.IsNaN(got) || math.IsInf(got, 0) {
		return
	}
	r.TargetFigures[name] = got
	r.Targets[name] = got >= want
	if atMost {
		r.Targets[name] = got <= want
	}
}

// ratio records a/b of two cases' medians of metric when both ran, and
// returns it (NaN when either did not).
func (r *Results) ratio(key string, a, b *Case, metric string) float64 {
	if a == nil || b == nil {
		return math.NaN()
	}
	v := a.median(metric) / b.median(metric)
	r.Ratios[key] = v
	return v
}

// directAgainst are the cases SFT direct is compared with, and the least
// each ratio should be (0: none). The floor does what the link must and
// nothing more, plainly; its pipelined form as the link does, so SFT can
// at best match that one; raw TCP moves bytes with no crypto or hashing at
// all.
var directAgainst = []struct {
	against, ratio, target string
	least                  float64
}{
	{caseFloor, "sft_over_floor", "sft >= 1.0 x encrypted-copy floor", 1},
	{caseFloorPipelined, "sft_over_pipelined_floor", "", 0},
	{caseRawTCP, "sft_over_raw_tcp", "sft >= 0.8 x raw tcp", 0.8},
	{caseCrocNoCompress, "sft_over_croc_no_compress", "sft >= 4 x croc --no-compress", 4},
	{caseCroc, "sft_over_croc_default", "", 0},
}

func (r *Results) settleDirect(sft *Case) {
	if sft == nil {
		return
	}
	for _, d := range directAgainst {
		v := r.ratio(d.ratio, sft, r.find(d.against), "throughput")
		if d.target != "" {
			r.target(d.target, v, d.least, false)
		}
	}
	if sft.Metrics["sender peak RSS"] != nil && sft.Metrics["receiver peak RSS"] != nil {
		r.target("peak rss <= 64 MiB per side", max(sft.Metrics["sender peak RSS"].Max, sft.Metrics["receiver peak RSS"].Max), 64, true)
	}
}

// Targets of the control plane. The goal of 2,000 lifecycles/s on two
// cores is held as the CPU it leaves each lifecycle, every process
// included, so that it does not depend on the machine's size; where the
// server side runs in processes of its own (the Redis topology), its share
// has a target of its own.
const (
	lifecycleCPUms       = 1.0
	serverLifecycleCPUms = 2.5
	setupP99ms           = 20.0
)

func (r *Results) settleControl() {
	for _, name := range []string{caseLifecycleEmbedded, caseLifecycleRedis} {
		if c := r.find(name); c != nil {
			r.target(fmt.Sprintf("%s: CPU per lifecycle <= %.0f ms (all processes)", name, lifecycleCPUms), c.median("CPU per lifecycle"), lifecycleCPUms, true)
			r.target(fmt.Sprintf("%s: p99 setup <= %.0f ms", name, setupP99ms), c.median("setup p99"), setupP99ms, true)
		}
	}
	if c := r.find(caseLifecycleRedis); c != nil {
		r.target(fmt.Sprintf("%s: server CPU per lifecycle <= %.1f ms", caseLifecycleRedis, serverLifecycleCPUms), c.median("server CPU per lifecycle"), serverLifecycleCPUms, true)
	}
	one, three := r.find(caseClusterOne), r.find(caseClusterThree)
	r.ratio("cluster_over_single_lifecycles", three, one, "lifecycles")
	r.ratio("cluster_over_single_setup_p99", three, one, "setup p99")
}

// Targets of the relay (issue 12).
const (
	relayOverDirect      = 0.8  // SFT via relay against SFT direct
	relayCPUPerGiB       = 0.3  // s of relay CPU per GiB relayed
	relayGrowthMiB       = 1.0  // the most the relay's peak RSS may grow after the warm-up
	relayKiBPerAddedPair = 256. // the most each pair beyond the first may add to its peak RSS
)

// settleRelay adds the ratios and targets of the relay cases; sft is the
// direct case of the same run, if any.
func (r *Results) settleRelay(sft *Case) {
	if via := r.find(caseSFTRelay); via != nil {
		v := r.ratio("sft_relay_over_direct", via, sft, "throughput")
		r.target(fmt.Sprintf("sft via relay >= %.1f x direct", relayOverDirect), v, relayOverDirect, false)
		r.ratio("sft_relay_over_croc_no_compress", via, r.find(caseCrocNoCompress), "throughput")
		r.target(fmt.Sprintf("relay CPU <= %.1f s/GiB (sft via relay)", relayCPUPerGiB), via.median("relay CPU"), relayCPUPerGiB, true)
	}
	for _, n := range relayPairs {
		if c := r.find(relayCase(n)); c != nil && c.Metrics["relay peak RSS growth"] != nil {
			r.target(fmt.Sprintf("%s: relay memory flat in bytes relayed (peak RSS grows <= %.0f MiB after the warm-up)", c.Name, relayGrowthMiB),
				c.Metrics["relay peak RSS growth"].Max, relayGrowthMiB, true)
		}
	}
	first, last := relayPairs[0], relayPairs[len(relayPairs)-1]
	if one, many := r.find(relayCase(first)), r.find(relayCase(last)); one != nil && many != nil {
		v := (many.median("relay peak RSS") - one.median("relay peak RSS")) * 1024 / float64(last-first)
		r.Ratios["relay_peak_rss_kib_per_added_pair"] = v
		r.target(fmt.Sprintf("relay peak RSS <= %.0f KiB per added pair", relayKiBPerAddedPair), v, relayKiBPerAddedPair, true)
	}
}

func (r *Results) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

func (r *Results) markdown(w io.Writer) {
	fmt.Fprintf(w, "\n| case | figure | min | median | max | unit |\n|---|---|---:|---:|---:|---|\n")
	for _, c := range r.Cases {
		if c.Skipped != "" {
			fmt.Fprintf(w, "| %s | skipped: %s | | | | |\n", c.Name, c.Skipped)
			continue
		}
		for _, m := range c.order {
			s := c.Metrics[m]
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", c.Name, m, num(s.Min), num(s.Median), num(s.Max), s.Unit)
		}
	}
	fmt.Fprintln(w)
	for _, c := range r.Cases {
		for _, k := range sortedKeys(c.Notes) {
			fmt.Fprintf(w, "- %s: %s %s\n", c.Name, k, c.Notes[k])
		}
	}
	for _, k := range sortedKeys(r.Ratios) {
		fmt.Fprintf(w, "- ratio %s: %.2f\n", k, r.Ratios[k])
	}
	for _, k := range sortedKeys(r.Targets) {
		mark := "met"
		if !r.Targets[k] {
			mark = "NOT met"
		}
		fmt.Fprintf(w, "- target %s: %s, %s\n", k, num(r.TargetFigures[k]), mark)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	slices.Sort(k)
	return k
}

func num(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// percentile of sorted-in-place durations, in milliseconds.
func percentile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return math.NaN()
	}
	slices.Sort(d)
	i := int(math.Ceil(p*float64(len(d)))) - 1
	i = max(0, min(i, len(d)-1))
	return float64(d[i]) / float64(time.Millisecond)
}
