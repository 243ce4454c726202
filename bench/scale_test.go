package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/sftproject/sft/services/store/redisstore/redistest"
)

func TestScalePlan(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    scalePlan
		ok   bool
	}{
		{"full", scalePlanFor(options{waiting: 10000}), true},
		{"quick", scalePlanFor(options{quick: true, waiting: 1000}), true},
		{"users not whole", scalePlan{total: 1010, perUser: 20, window: 100, workers: 1, samples: 1}, false},
		{"window not whole users", scalePlan{total: 1000, perUser: 20, window: 110, workers: 1, samples: 1}, false},
		{"windows overlap", scalePlan{total: 200, perUser: 20, window: 120, workers: 1, samples: 1}, false},
		{"too few users to spread over", scalePlan{total: 600, perUser: 20, window: 100, workers: 1, samples: 1}, false},
		{"just enough", scalePlan{total: 620, perUser: 20, window: 100, workers: 1, samples: 1}, true},
		{"no workers", scalePlan{total: 1000, perUser: 20, window: 100, workers: 0, samples: 1}, false},
		{"no samples", scalePlan{total: 1000, perUser: 20, window: 100, workers: 1, samples: 0}, false},
	} {
		if err := tc.p.check(); (err == nil) != tc.ok {
			t.Errorf("%s: check() = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
	if p := scalePlanFor(options{waiting: 10000}); p.total != 10000 || p.users() != 500 || p.windowUsers() != 5 {
		t.Errorf("full plan %+v: %d users, %d a window", p, p.users(), p.windowUsers())
	}
}

func TestThousands(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{
		{0, "0"}, {100, "100"}, {999, "999"}, {1000, "1,000"}, {10000, "10,000"},
		{1234567, "1,234,567"}, {-1000, "-1,000"},
	} {
		if got := thousands(tc.n); got != tc.want {
			t.Errorf("thousands(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestPart(t *testing.T) {
	items := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	for _, tc := range []struct {
		n    int
		want [][]int
	}{
		{1, [][]int{items}},
		{2, [][]int{{0, 1, 2, 3, 4}, {5, 6, 7, 8, 9}}},
		{3, [][]int{{0, 1, 2}, {3, 4, 5}, {6, 7, 8, 9}}},
		{4, [][]int{{0, 1}, {2, 3, 4}, {5, 6}, {7, 8, 9}}},
	} {
		var got [][]int
		for k := range tc.n {
			got = append(got, part(items, k, tc.n))
		}
		if !slices.EqualFunc(got, tc.want, slices.Equal) {
			t.Errorf("%d parts: %v, want %v", tc.n, got, tc.want)
		}
	}
}

func TestProcLabels(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
	}{
		{nil, []string{}},
		{[]string{"sftd dev"}, []string{"sftd dev"}},
		{[]string{"redis-server", "nats-server", "sftd auth", "sftd session", "sftd key", "sftd session", "sftd key"},
			[]string{"redis-server", "nats-server", "sftd auth", "sftd session #1", "sftd key #1", "sftd session #2", "sftd key #2"}},
	} {
		if got := procLabels(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("procLabels(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRSSPerSession(t *testing.T) {
	for _, tc := range []struct {
		rss0, rss1 int64
		n          int
		want       float64
	}{
		{1000, 2000, 1000, 1024},
		{2000, 1000, 1024, -1000},
		{1000, 1000, 10, 0},
		{1000, 2000, 0, 0},
	} {
		if got := rssPerSession(tc.rss0, tc.rss1, tc.n); got != tc.want {
			t.Errorf("rssPerSession(%d, %d, %d) = %v, want %v", tc.rss0, tc.rss1, tc.n, got, tc.want)
		}
	}
}

func TestDevReady(t *testing.T) {
	out := "sftd dev: NATS at tls://127.0.0.1:40001\n" +
		"sftd dev: relay at 127.0.0.1:40002 (for peers that cannot reach each other; it sees only ciphertext)\n" +
		"sftd dev: CA certificate at /tmp/x/data/pki/ca.pem (clients: --ca or SFT_NATS_CA_FILE; the default when on this machine)\n"
	url, ca, err := devReady(out)
	if err != nil || url != "tls://127.0.0.1:40001" || ca != "/tmp/x/data/pki/ca.pem" {
		t.Errorf("devReady = %q, %q, %v", url, ca, err)
	}
	if _, _, err := devReady("sftd dev: NATS at tls://127.0.0.1:1\n"); err == nil {
		t.Error("devReady accepted output without the CA")
	}
}

func TestSettleScale(t *testing.T) {
	flat, slower, skipped := newCase("flat"), newCase("slower"), &Case{Name: "skipped", Skipped: "why"}
	for _, m := range []string{scaleListOwnRatio, scaleListSpreadRatio, scaleListNoneRatio, scaleCreateRatio} {
		flat.add(m, "x", 1.1)
		slower.add(m, "x", 1.1)
	}
	slower.Metrics[scaleListSpreadRatio].Values = []float64{9}
	r := &Results{Cases: []*Case{flat, slower, skipped}}
	r.settle()
	for _, tc := range []struct {
		c, m string
		want bool
	}{
		{"flat", scaleListOwnRatio, true},
		{"flat", scaleListSpreadRatio, true},
		{"slower", scaleListSpreadRatio, false},
		{"slower", scaleCreateRatio, true},
	} {
		k := tc.c + ": " + tc.m + " <= 1.5"
		if got, ok := r.Targets[k]; !ok || got != tc.want {
			t.Errorf("target %q = %v, %v; want %v", k, got, ok, tc.want)
		}
		// The figure judged is printed beside the verdict.
		if got := r.TargetFigures[k]; got != r.find(tc.c).median(tc.m) {
			t.Errorf("target %q judged %v, want the median %v", k, got, r.find(tc.c).median(tc.m))
		}
	}
	if len(r.Targets) != 8 {
		t.Errorf("%d targets, want 4 for each case that ran: %v", len(r.Targets), r.Targets)
	}
}

func TestEach(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name    string
		items   int
		workers int
		failAt  int // -1: none
		want    error
	}{
		{"all", 50, 4, -1, nil},
		{"one worker", 5, 1, -1, nil},
		{"none", 0, 3, -1, nil},
		{"a failure", 50, 4, 7, boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			items := make([]int, tc.items)
			for i := range items {
				items[i] = i
			}
			var done atomic.Int64
			err := each(t.Context(), items, tc.workers, func(ctx context.Context, it *int) error {
				if *it == tc.failAt {
					return boom
				}
				*it = -1
				done.Add(1)
				return nil
			})
			if !errors.Is(err, tc.want) {
				t.Fatalf("each = %v, want %v", err, tc.want)
			}
			if tc.want == nil && int(done.Load()) != tc.items {
				t.Errorf("%d of %d items done", done.Load(), tc.items)
			}
			if tc.want == nil && slices.ContainsFunc(items, func(v int) bool { return v != -1 }) {
				t.Errorf("items not all visited: %v", items)
			}
		})
	}
}

func TestParseWaiting(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
		ok   bool
	}{
		{nil, 10000, true},
		{[]string{"--quick"}, 1000, true},
		{[]string{"--quick", "--waiting", "2000"}, 2000, true},
		{[]string{"--waiting", "100000"}, 100000, true},
		{[]string{"--waiting", "610"}, 0, false},
		{[]string{"--waiting", "600"}, 0, false},
		{[]string{"--waiting", "0"}, 0, false},
	} {
		o, err := parseFlags(tc.args)
		if (err == nil) != tc.ok || tc.ok && o.waiting != tc.want {
			t.Errorf("parseFlags(%q): waiting %d, %v; want %d, ok %v", tc.args, o.waiting, err, tc.want, tc.ok)
		}
	}
}

// TestWaitingSessionsCases runs both waiting-sessions cases, small, as
// `go run ./bench --quick --only waiting` does: `sftd dev`, and the
// Redis topology's servers and sftd services, each a process of its own
// (this test binary in the bench's sftd mode), and every figure in the
// JSON file.
func TestWaitingSessionsCases(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the memory figures come from /proc")
	}
	args := []string{"--quick", "--waiting", "620", "--only", "waiting", "--json", filepath.Join(t.TempDir(), "r.json")}
	if _, err := exec.LookPath("redis-server"); err != nil && os.Getenv(redistest.EnvRequire) != "1" {
		t.Log("redis-server not on PATH: the Redis topology's case is skipped")
		args = append(args, "--skip-redis")
	}
	o, err := parseFlags(args)
	if err != nil {
		t.Fatal(err)
	}
	r, out := runBench(t, o)
	want := map[string][]string{
		scaleCase(o, scaleDev):   {"sftd dev peak RSS"},
		scaleCase(o, scaleRedis): {"redis-server peak RSS", "nats-server peak RSS", "sftd auth peak RSS", "sftd session peak RSS", "sftd key peak RSS"},
	}
	if len(r.Cases) != len(want) {
		t.Fatalf("%d cases, want %d:\n%s", len(r.Cases), len(want), out)
	}
	for _, c := range r.Cases {
		if c.Skipped != "" {
			if c.Skipped != "--skip-redis" || !o.skipRedis {
				t.Errorf("%s skipped: %s", c.Name, c.Skipped)
			}
			continue
		}
		for _, m := range append(want[c.Name], "create p99, last 100", "list (20 own, spread) p50 at 620", scaleListOwnRatio, scaleListSpreadRatio, scaleListNoneRatio, scaleCreateRatio) {
			if s := c.Metrics[m]; s == nil || len(s.Values) != 1 {
				t.Errorf("%s: no %s in\n%s", c.Name, m, out)
			}
		}
	}
}

// The waiting-sessions cases answer to their own word, not to those of
// the other cases.
func TestSelectedScale(t *testing.T) {
	o := options{waiting: 10000}
	for _, tc := range []struct {
		only string
		want bool
	}{
		{"waiting", true},
		{"10,000", true},
		{"SFT", false},
		{"relay", false},
		{"lifecycle", false},
		{"croc", false},
	} {
		for _, top := range scaleTopologies {
			if got := selected(tc.only, scaleCase(o, top)); got != tc.want {
				t.Errorf("selected(%q, %q) = %v", tc.only, scaleCase(o, top), got)
			}
		}
	}
}
