package progress

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/internal/syncbuf"
)

func TestPlainLines(t *testing.T) {
	ms := 500 * time.Millisecond
	tests := []struct {
		name  string
		verb  string
		files []api.File
		steps []step
		want  []string
	}{
		{
			name:  "single file, throttled, completion once",
			verb:  "sent",
			files: []api.File{{Name: "big.iso", Size: 10 * mib}},
			steps: []step{
				{after: ms, updates: [][2]int64{{0, 0}, {0, 1 * mib}}},
				{after: ms, updates: [][2]int64{{0, 2 * mib}}},
				{after: ms, updates: [][2]int64{{0, 3 * mib}}},
				{after: ms, updates: [][2]int64{{0, 10 * mib}}},
				{after: ms, updates: [][2]int64{{0, 10 * mib}}},
				{after: 2 * time.Second},
				{close: true},
			},
			want: []string{
				"sent big.iso: 2.0 MiB of 10.0 MiB (20%), 2.0 MiB/s, ETA 4s",
				"sent big.iso: 10.0 MiB, done",
			},
		},
		{
			name:  "resume above zero counts only moved bytes",
			verb:  "received",
			files: []api.File{{Name: "f", Size: 1000 * mib}},
			steps: []step{
				{after: ms, updates: [][2]int64{{0, 900 * mib}}},
				{after: ms, updates: [][2]int64{{0, 905 * mib}}},
				{close: true},
			},
			want: []string{
				"received f: 905.0 MiB of 1000.0 MiB (90%), 5.0 MiB/s, ETA 19s",
				"received f: 905.0 MiB of 1000.0 MiB (90%), stopped",
			},
		},
		{
			name:  "unknown size finished",
			verb:  "received",
			files: []api.File{{Name: "-", Size: api.SizeUnknown}},
			steps: []step{
				{after: ms, updates: [][2]int64{{0, 0}, {0, 1 * mib}}},
				{after: ms, updates: [][2]int64{{0, 2 * mib}}},
				{after: ms, finish: []int{0}},
				{close: true},
			},
			want: []string{
				"received -: 2.0 MiB, 2.0 MiB/s",
				"received -: 2.0 MiB, done",
			},
		},
		{
			name:  "unknown size not finished stops",
			verb:  "sent",
			files: []api.File{{Name: "-", Size: api.SizeUnknown}},
			steps: []step{
				{after: ms, updates: [][2]int64{{0, 0}, {0, 100}}},
				{close: true},
			},
			want: []string{"sent -: 100 B, stopped"},
		},
		{
			name:  "several files with total, directory skipped",
			verb:  "received",
			files: []api.File{{Name: "d", Dir: true}, {Name: "d/a", Size: 1 * mib}, {Name: "d/b", Size: 3 * mib}},
			steps: []step{
				{after: ms, updates: [][2]int64{{1, 0}, {1, 1 * mib}, {2, 0}, {2, 512 * kib}}},
				{after: ms, updates: [][2]int64{{2, 1 * mib}}},
				{close: true},
			},
			want: []string{
				"received d/a: 1.0 MiB, done",
				"received d/b: 1.0 MiB of 3.0 MiB (33%), 1.0 MiB/s, ETA 2s",
				"received 1 of 2 files, 2.0 MiB of 4.0 MiB (50%), 2.0 MiB/s, ETA 1s",
				"received d/b: 1.0 MiB of 3.0 MiB (33%), stopped",
				"received 1 of 2 files, 2.0 MiB of 4.0 MiB (50%)",
			},
		},
		{
			name:  "small files between ticks still get a total line",
			verb:  "sent",
			files: []api.File{{Name: "a", Size: 10}, {Name: "b", Size: 10}, {Name: "c", Size: 0}, {Name: "d", Size: 10}},
			steps: []step{
				{after: ms, updates: [][2]int64{{0, 0}, {0, 10}}},
				{after: ms, updates: [][2]int64{{1, 0}, {1, 10}, {2, 0}}},
				{after: time.Second},
				{close: true},
			},
			want: []string{
				"sent a: 10 B, done",
				"sent b: 10 B, done",
				"sent c: 0 B, done",
				"sent 3 of 4 files, 20 B of 30 B (66%), 20 B/s, ETA 1s",
				"sent 3 of 4 files, 20 B of 30 B (66%)",
			},
		},
		{
			name:  "stall shows a falling rate, not the average",
			verb:  "sent",
			files: []api.File{{Name: "f", Size: 100 * mib}},
			steps: []step{
				{after: time.Second, updates: [][2]int64{{0, 0}, {0, 10 * mib}}},
				{after: time.Second, updates: [][2]int64{{0, 20 * mib}}},
				{after: time.Second, updates: [][2]int64{{0, 30 * mib}}},
				{after: time.Second},
				{after: time.Second},
				{after: time.Second},
				{after: time.Second},
				{after: time.Second},
				{after: time.Second},
			},
			want: []string{
				"sent f: 10.0 MiB of 100.0 MiB (10%), 10.0 MiB/s, ETA 9s",
				"sent f: 20.0 MiB of 100.0 MiB (20%), 10.0 MiB/s, ETA 8s",
				"sent f: 30.0 MiB of 100.0 MiB (30%), 10.0 MiB/s, ETA 7s",
				"sent f: 30.0 MiB of 100.0 MiB (30%), 7.5 MiB/s, ETA 10s",
				"sent f: 30.0 MiB of 100.0 MiB (30%), 6.0 MiB/s, ETA 12s",
				"sent f: 30.0 MiB of 100.0 MiB (30%), 4.0 MiB/s, ETA 18s",
				"sent f: 30.0 MiB of 100.0 MiB (30%), 2.0 MiB/s, ETA 35s",
				"sent f: 30.0 MiB of 100.0 MiB (30%), 0 B/s",
				"sent f: 30.0 MiB of 100.0 MiB (30%), 0 B/s",
			},
		},
		{
			name:  "non-printable name is quoted, message escaped",
			verb:  "sent",
			files: []api.File{{Name: "evil\x1b[2J.txt", Size: 4}},
			steps: []step{
				{after: ms, updates: [][2]int64{{0, 0}, {0, 4}}, printf: "note \x1b]0;x\a\tok\n"},
			},
			want: []string{
				`note \x1b]0;x\a` + "\tok",
				`sent "evil\x1b[2J.txt": 4 B, done`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{Mode: Plain, Verb: tt.verb}, tt.files)
			h.run(tt.steps)
			if got := h.lines(); !slices.Equal(got, tt.want) {
				t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestPlainThrottle(t *testing.T) {
	tests := []struct {
		interval time.Duration
		want     int
	}{
		{time.Second, 3},
		{500 * time.Millisecond, 6},
		{0, 3}, // the 1s default
	}
	for _, tt := range tests {
		t.Run(tt.interval.String(), func(t *testing.T) {
			h := newHarness(t, Options{Mode: Plain, Verb: "sent", Interval: tt.interval}, []api.File{{Name: "f", Size: 100 * mib}})
			h.r.Update(0, 0) // the entry starts
			for i := range 30 {
				h.run([]step{{after: 100 * time.Millisecond, updates: [][2]int64{{0, int64(i+1) * mib}}}})
			}
			got := h.lines()
			if len(got) != tt.want {
				t.Fatalf("%d lines in 3s, want %d:\n%s", len(got), tt.want, strings.Join(got, "\n"))
			}
			if tt.interval == time.Second && got[0] != "sent f: 10.0 MiB of 100.0 MiB (10%), 10.0 MiB/s, ETA 9s" {
				t.Errorf("first line %q", got[0])
			}
		})
	}
}

func TestJSONLines(t *testing.T) {
	files := []api.File{{Name: "dir", Dir: true}, {Name: "dir/a<&>.txt", Size: 1000}, {Name: "b", Size: 2000}}
	h := newHarness(t, Options{Mode: JSON}, files)
	q := 250 * time.Millisecond
	h.run([]step{
		{after: q, updates: [][2]int64{{1, 0}, {1, 500}}},
		{after: 0, printf: "hello 1"},
		{after: q / 5, updates: [][2]int64{{1, 600}}}, // throttled: nothing
		{after: q, updates: [][2]int64{{1, 1000}, {2, 0}, {2, 100}}},
		{close: true},
	})
	lines := h.lines()

	wantKeys := []string{"type", "file", "index", "bytes", "size", "done", "rate_bps", "eta_s",
		"total_bytes", "total_size", "total_rate_bps", "total_eta_s", "files_done", "files", "final"}
	slices.Sort(wantKeys)
	var got []ProgressEvent
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if m["type"] == "message" {
			if m["text"] != "hello 1" || len(m) != 2 {
				t.Errorf("message %q", l)
			}
			got = append(got, ProgressEvent{Type: "message"})
			continue
		}
		if keys := slices.Sorted(maps.Keys(m)); !slices.Equal(keys, wantKeys) {
			t.Errorf("keys %v, want %v", keys, wantKeys)
		}
		var ev ProgressEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	common := func(e ProgressEvent) ProgressEvent {
		e.Type, e.TotalSize, e.Files = "progress", 3000, 2
		return e
	}
	want := []ProgressEvent{
		common(ProgressEvent{File: "dir/a<&>.txt", Index: 1, Bytes: 500, Size: 1000, RateBPS: 2000, ETAS: 1,
			TotalBytes: 500, TotalRateBPS: 2000, TotalETAS: 2}),
		{Type: "message"},
		common(ProgressEvent{File: "dir/a<&>.txt", Index: 1, Bytes: 1000, Size: 1000, Done: true, RateBPS: 1818,
			TotalBytes: 1100, TotalRateBPS: 2000, TotalETAS: 1, FilesDone: 1}),
		common(ProgressEvent{File: "b", Index: 2, Bytes: 100, Size: 2000, RateBPS: 400, ETAS: 5,
			TotalBytes: 1100, TotalRateBPS: 2000, TotalETAS: 1, FilesDone: 1}),
		common(ProgressEvent{File: "b", Index: 2, Bytes: 100, Size: 2000, RateBPS: 400, ETAS: 5,
			TotalBytes: 1100, TotalRateBPS: 2000, TotalETAS: 1, FilesDone: 1, Final: true}),
	}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n%+v\nwant:\n%+v\nraw:\n%s", got, want, strings.Join(lines, "\n"))
	}
	if !strings.Contains(lines[0], `"dir/a<&>.txt"`) {
		t.Errorf("names are written without HTML escaping: %s", lines[0])
	}
}

func TestJSONFinal(t *testing.T) {
	tests := []struct {
		name  string
		files []api.File
		steps []step
		want  ProgressEvent // the last line
		n     int           // lines in all
	}{
		{
			name:  "nothing pending repeats the last file",
			files: []api.File{{Name: "a", Size: 10}},
			steps: []step{{after: time.Second, updates: [][2]int64{{0, 0}, {0, 10}}}, {close: true}},
			want: ProgressEvent{Type: "progress", File: "a", Index: 0, Bytes: 10, Size: 10, Done: true, RateBPS: 10,
				TotalBytes: 10, TotalSize: 10, TotalRateBPS: 10, FilesDone: 1, Files: 1, Final: true},
			n: 2,
		},
		{
			name:  "nothing ever updated",
			files: []api.File{{Name: "a", Size: 10}},
			steps: []step{{close: true}},
			want: ProgressEvent{Type: "progress", Index: -1, ETAS: -1, TotalSize: 10, TotalETAS: -1,
				Files: 1, Final: true},
			n: 1,
		},
		{
			name:  "unknown size",
			files: []api.File{{Name: "-", Size: api.SizeUnknown}},
			steps: []step{{after: 2 * time.Second, updates: [][2]int64{{0, 0}, {0, 4000}}}, {close: true}},
			want: ProgressEvent{Type: "progress", File: "-", Index: 0, Bytes: 4000, Size: -1, RateBPS: 2000, ETAS: -1,
				TotalBytes: 4000, TotalSize: -1, TotalRateBPS: 2000, TotalETAS: -1, Files: 1, Final: true},
			n: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{Mode: JSON}, tt.files)
			h.run(tt.steps)
			lines := h.lines()
			if len(lines) != tt.n {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), tt.n, strings.Join(lines, "\n"))
			}
			var ev ProgressEvent
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &ev); err != nil {
				t.Fatal(err)
			}
			if ev != tt.want {
				t.Errorf("final %+v\nwant  %+v", ev, tt.want)
			}
		})
	}
}

func TestQuiet(t *testing.T) {
	tests := []struct {
		name string
		o    Options
	}{
		{"quiet mode", Options{Mode: Quiet, Terminal: true}},
		{"no writer", Options{Mode: Plain}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := &syncbuf.Buffer{}
			if tt.o.Mode == Quiet {
				tt.o.Out = out
			}
			r := New(tt.o, []api.File{{Name: "a", Size: 10}, {Name: "b", Size: 10}})
			if r.stop != nil || r.term != nil {
				t.Error("a quiet Reporter started rendering")
			}
			r.Update(0, 10)
			r.Printf("hello")
			r.Close()
			r.Close()
			if out.String() != "" {
				t.Errorf("wrote %q", out.String())
			}
		})
	}
}

func TestModes(t *testing.T) {
	for _, m := range []Mode{Auto, Plain, JSON, Quiet} {
		got, err := ParseMode(strings.ToUpper(m.String()))
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m, got, err)
		}
	}
	if _, err := ParseMode("bars"); err == nil {
		t.Error("ParseMode accepted an internal mode")
	}
	tests := []struct {
		o    Options
		want Mode
	}{
		{Options{Mode: Auto, Terminal: true}, bars},
		{Options{Mode: Auto}, Plain},
		{Options{Mode: Plain, Terminal: true}, Plain},
		{Options{Mode: JSON, Terminal: true}, JSON},
		{Options{Mode: Mode(42)}, Plain},
		{Options{Mode: bars}, Plain},
	}
	for _, tt := range tests {
		tt.o.Out = &syncbuf.Buffer{}
		r := newReporter(tt.o, nil, false)
		r.Close()
		if r.mode != tt.want {
			t.Errorf("%+v resolved to %v, want %v", tt.o, r.mode, tt.want)
		}
	}
}

func TestNilReporter(t *testing.T) {
	var r *Reporter
	r.Update(0, 1)
	r.Finish(0)
	r.Printf("x")
	r.Close()
}

func TestUpdateIgnoresBadInput(t *testing.T) {
	h := newHarness(t, Options{Mode: Plain, Verb: "sent"}, []api.File{{Name: "a", Size: 10}})
	h.run([]step{{after: time.Second, updates: [][2]int64{{-1, 5}, {1, 5}, {0, -5}}}, {close: true}})
	if got := h.lines(); got != nil {
		t.Errorf("out-of-range updates were shown: %q", got)
	}
}

func TestUpdateDoesNotAllocate(t *testing.T) {
	r := New(Options{Mode: Plain, Out: &syncbuf.Buffer{}}, []api.File{{Name: "a", Size: 1 << 40}})
	defer r.Close()
	var n int64
	if a := testing.AllocsPerRun(1000, func() { n++; r.Update(0, n) }); a != 0 {
		t.Errorf("Update allocates %v times per call", a)
	}
}

func BenchmarkUpdate(b *testing.B) {
	r := New(Options{Mode: Plain, Out: &syncbuf.Buffer{}, Interval: time.Millisecond}, []api.File{{Name: "a", Size: 1 << 62}})
	defer r.Close()
	var n int64
	for b.Loop() {
		n += 32 * kib
		r.Update(0, n)
	}
}
