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
func (r *Results) settle() {
	for _, c := range r.Cases {
		for _, s := range c.Metrics {
			s.settle()
		}
	}
	r.Ratios, r.Targets = map[string]float64{}, map[string]bool{}
	raw, sft := r.find(caseRawTCP), r.find(caseSFT)
	if raw != nil && sft != nil {
		v := sft.median("throughput") / raw.median("throughput")
		r.Ratios["sft_over_raw_tcp"] = v
		r.Targets["sft >= 0.8 x raw tcp"] = v >= 0.8
	}
	if croc := r.find(caseCrocNoCompress); croc != nil && sft != nil {
		v := sft.median("throughput") / croc.median("throughput")
		r.Ratios["sft_over_croc_no_compress"] = v
		r.Targets["sft >= 4 x croc --no-compress"] = v >= 4
	}
	if croc := r.find(caseCroc); croc != nil && sft != nil {
		r.Ratios["sft_over_croc_default"] = sft.median("throughput") / croc.median("throughput")
	}
	r.settleRelay(sft)
	r.settleScale()
	for k, v := range r.Ratios {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			delete(r.Ratios, k)
		}
	}
	if sft != nil && sft.Metrics["sender peak RSS"] != nil && sft.Metrics["receiver peak RSS"] != nil {
		r.Targets["peak rss <= 64 MiB per side"] = sft.Metrics["sender peak RSS"].Max <= 64 && sft.Metrics["receiver peak RSS"].Max <= 64
	}
	for _, name := range []string{caseLifecycleEmbedded, caseLifecycleRedis} {
		if c := r.find(name); c != nil {
			r.Targets[name+": >= 2000 lifecycles/s"] = c.median("lifecycles") >= 2000
			r.Targets[name+": p99 setup <= 20 ms"] = c.median("setup p99") <= 20
		}
	}
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
		if sft != nil {
			v := via.median("throughput") / sft.median("throughput")
			r.Ratios["sft_relay_over_direct"] = v
			r.Targets[fmt.Sprintf("sft via relay >= %.1f x direct", relayOverDirect)] = v >= relayOverDirect
		}
		if croc := r.find(caseCrocNoCompress); croc != nil {
			r.Ratios["sft_relay_over_croc_no_compress"] = via.median("throughput") / croc.median("throughput")
		}
		if _, ok := via.Metrics["relay CPU"]; ok {
			r.Targets[fmt.Sprintf("relay CPU <= %.1f s/GiB (sft via relay)", relayCPUPerGiB)] = via.median("relay CPU") <= relayCPUPerGiB
		}
	}
	for _, n := range relayPairs {
		if c := r.find(relayCase(n)); c != nil && c.Metrics["relay peak RSS growth"] != nil {
			r.Targets[fmt.Sprintf("%s: relay memory flat in bytes relayed (peak RSS grows <= %.0f MiB after the warm-up)", c.Name, relayGrowthMiB)] =
				c.Metrics["relay peak RSS growth"].Max <= relayGrowthMiB
		}
	}
	first, last := relayPairs[0], relayPairs[len(relayPairs)-1]
	if one, many := r.find(relayCase(first)), r.find(relayCase(last)); one != nil && many != nil {
		v := (many.median("relay peak RSS") - one.median("relay peak RSS")) * 1024 / float64(last-first)
		r.Ratios["relay_peak_rss_kib_per_added_pair"] = v
		r.Targets[fmt.Sprintf("relay peak RSS <= %.0f KiB per added pair", relayKiBPerAddedPair)] = v <= relayKiBPerAddedPair
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
		fmt.Fprintf(w, "- target %s: %s\n", k, mark)
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
