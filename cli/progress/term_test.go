package progress

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/vbauerster/mpb/v8/decor"
)

// TestTerminalBars checks the final frame, which Close waits for; frames
// drawn while the transfer runs depend on mpb's scheduling.
func TestTerminalBars(t *testing.T) {
	files := []api.File{{Name: "dir", Dir: true}, {Name: "dir/alpha.bin", Size: 1 * mib}, {Name: "beta.bin", Size: 2 * mib}}
	tests := []struct {
		name  string
		files []api.File
		steps []step
		want  []string // the final frame's lines hold these, in order
		out   []string // the whole output holds these
		not   []string // the whole output never holds these
	}{
		{
			name:  "all complete",
			files: files,
			steps: []step{
				{after: time.Second, updates: [][2]int64{{1, 0}, {1, 512 * kib}}},
				{after: time.Second, updates: [][2]int64{{1, 1 * mib}, {2, 0}, {2, 1 * mib}}, printf: "peer says \x1b[31mhi"},
				{after: time.Second, updates: [][2]int64{{2, 2 * mib}}},
				{close: true},
			},
			want: []string{
				"dir/alpha.bin .* 100% .* 1.0 MiB / 1.0 MiB .* done",
				"beta.bin .* 100% .* 2.0 MiB / 2.0 MiB .* done",
				"total 2/2 files .* 100% .* 3.0 MiB / 3.0 MiB .* done",
			},
			out: []string{`peer says \x1b[31mhi`},
			not: []string{"stopped", "\x1b[31m"},
		},
		{
			name:  "stopped part way",
			files: files,
			steps: []step{
				{after: time.Second, updates: [][2]int64{{1, 0}, {1, 1 * mib}, {2, 0}, {2, 1 * mib}}},
				{close: true},
			},
			want: []string{
				"dir/alpha.bin .* 100% .* 1.0 MiB / 1.0 MiB .* done",
				"beta.bin .* 50% .* 1.0 MiB / 2.0 MiB .* stopped",
				"total 1/2 files .* 66% .* 2.0 MiB / 3.0 MiB .* stopped",
			},
		},
		{
			name:  "single file has no total bar",
			files: []api.File{{Name: "one", Size: 100}},
			steps: []step{
				{after: time.Second, updates: [][2]int64{{0, 0}, {0, 100}}},
				{close: true},
			},
			want: []string{"one .* 100% .* 100 B / 100 B .* done"},
			not:  []string{"total"},
		},
		{
			name:  "unknown size",
			files: []api.File{{Name: "-", Size: api.SizeUnknown}},
			steps: []step{
				{after: time.Second, updates: [][2]int64{{0, 0}, {0, 3 * kib}}},
				{after: time.Second, finish: []int{0}},
				{close: true},
			},
			want: []string{"- .* 3.0 KiB +done"},
			not:  []string{"ETA", "%"},
		},
		{
			name:  "control characters in a name are quoted",
			files: []api.File{{Name: "x\x1b]2;pwned\a", Size: 1}},
			steps: []step{
				{after: time.Second, updates: [][2]int64{{0, 0}, {0, 1}}},
				{close: true},
			},
			want: []string{regexp.QuoteMeta(`"x\x1b]2;pwned\a"`) + " .* done"},
			not:  []string{"\x1b]2", "\a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{Terminal: true, Width: 120}, tt.files)
			if h.r.mode != bars {
				t.Fatalf("mode %v", h.r.mode)
			}
			h.run(tt.steps)
			out := h.out.String()
			lines := h.lines()
			last := lines[max(0, len(lines)-len(tt.want)):]
			for i, w := range tt.want {
				if !regexp.MustCompile("^" + w).MatchString(last[i]) {
					t.Errorf("final line %d %q does not match %q; output:\n%s", i, last[i], w, out)
				}
			}
			for _, w := range tt.out {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestBarText checks what the decorators draw from a tick's values.
func TestBarText(t *testing.T) {
	files := []api.File{{Name: "a", Size: 1 * mib}, {Name: "-", Size: api.SizeUnknown}}
	h := newHarness(t, Options{Terminal: true, Width: 120}, files)
	h.run([]step{{after: time.Second, updates: [][2]int64{{0, 0}, {0, 512 * kib}, {1, 0}, {1, 3 * kib}}}})
	h.r.mu.Lock()
	a, pipe, total := h.r.term.slots[0], h.r.term.slots[1], h.r.term.total
	h.r.mu.Unlock()
	running := decor.Statistics{Current: 512 * kib, Total: 1 * mib}
	tests := []struct {
		name string
		fn   decor.DecorFunc
		st   decor.Statistics
		want string
	}{
		{"percent", a.percentText, running, "50%"},
		{"bytes", a.bytesText, running, "512.0 KiB / 1.0 MiB"},
		{"rate", a.rateText, running, "512.0 KiB/s"},
		{"eta", a.etaText, running, "ETA 1s"},
		{"done", a.etaText, decor.Statistics{Completed: true}, "done"},
		{"no rate when done", a.rateText, decor.Statistics{Completed: true}, ""},
		{"stopped", a.etaText, decor.Statistics{Aborted: true}, "stopped"},
		{"unknown percent", pipe.percentText, decor.Statistics{Current: 3 * kib}, ""},
		{"unknown bytes", pipe.bytesText, decor.Statistics{Current: 3 * kib, Total: 3 * kib}, "3.0 KiB"},
		{"unknown rate", pipe.rateText, decor.Statistics{}, "3.0 KiB/s"},
		{"unknown eta", pipe.etaText, decor.Statistics{}, ""},
		{"total rate", total.rateText, decor.Statistics{}, "515.0 KiB/s"},
		{"total eta", total.etaText, decor.Statistics{}, ""}, // a size is unknown
	}
	for _, tt := range tests {
		if got := tt.fn(tt.st); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestTerminalManyFiles(t *testing.T) {
	const n = 200
	files := make([]api.File, n)
	for i := range files {
		files[i] = api.File{Name: fmt.Sprintf("f%03d", i), Size: 10}
	}
	h := newHarness(t, Options{Terminal: true, Width: 120}, files)
	most := 0
	// Twenty entries are in flight at a time, and one batch completes per tick.
	for batch := 0; batch < n; batch += 20 {
		var ups [][2]int64
		for i := batch; i < batch+20; i++ {
			ups = append(ups, [2]int64{int64(i), 0}, [2]int64{int64(i), 5})
		}
		h.run([]step{{after: 200 * time.Millisecond, updates: ups}})
		most = max(most, len(h.r.term.slots))
		for i := batch; i < batch+20; i++ {
			ups = append(ups, [2]int64{int64(i), 10})
		}
		h.run([]step{{after: 200 * time.Millisecond, updates: ups}})
		most = max(most, len(h.r.term.slots))
	}
	h.r.Close()
	if most != maxFileBars {
		t.Errorf("at most %d file bars at once, want %d", most, maxFileBars)
	}
	out := h.out.String()
	if !strings.Contains(out, "total 200/200 files") {
		t.Errorf("no complete total bar:\n%s", out[max(0, len(out)-2000):])
	}
	if lines := h.lines(); !strings.Contains(lines[len(lines)-1], "total 200/200 files") {
		t.Errorf("the total is not the bottom line: %q", lines[len(lines)-1])
	}
}

// TestCloseStopsRendering runs the real renderer goroutine in every mode
// and checks that Close leaves no goroutine behind.
func TestCloseStopsRendering(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		// marks that must be running before Close, proving the check can fail
		running []string
		drawn   string // output once the renderer has drawn
	}{
		{"bars", Options{Terminal: true, Width: 80}, ownGoroutines, "total 1/2 files"},
		{"plain", Options{Mode: Plain, Interval: time.Millisecond}, []string{"progress.(*Reporter).loop"}, "a: 1.0 MiB, done"},
		{"json", Options{Mode: JSON, Interval: time.Millisecond}, []string{"progress.(*Reporter).loop"}, `"file":"a"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := &syncbuf.Buffer{}
			tt.o.Out = out
			r := New(tt.o, []api.File{{Name: "a", Size: 1 * mib}, {Name: "b", Size: 1 * mib}})
			r.Update(0, 0)
			r.Update(0, 1*mib)
			r.Update(1, 0)
			r.Update(1, 100)
			deadline := time.Now().Add(2 * time.Second)
			for _, m := range tt.running {
				// A goroutine just started may be missing from a stack dump.
				for goroutines(m) == 0 {
					if time.Now().After(deadline) {
						r.Close()
						t.Fatalf("no goroutine matching %q before Close", m)
					}
					time.Sleep(time.Millisecond)
				}
			}
			for !strings.Contains(out.String(), tt.drawn) {
				if time.Now().After(deadline) {
					t.Fatal("nothing rendered")
				}
				time.Sleep(5 * time.Millisecond)
			}
			r.Close()
			r.Close()
			waitNoGoroutines(t)
			r.Printf("after close")
			if !strings.Contains(out.String(), "after close") {
				t.Error("Printf after Close was lost")
			}
		})
	}
}

// TestConcurrentUpdate updates from one goroutine per side while the
// renderer draws and messages are printed; run it under -race.
func TestConcurrentUpdate(t *testing.T) {
	for _, o := range []Options{
		{Terminal: true, Width: 100},
		{Mode: Plain, Interval: time.Millisecond},
		{Mode: JSON, Interval: time.Millisecond},
	} {
		t.Run(fmt.Sprint(o.Terminal, o.Mode), func(t *testing.T) {
			o.Out = &syncbuf.Buffer{}
			files := []api.File{{Name: "a", Size: 1 << 30}, {Name: "b", Size: api.SizeUnknown}, {Name: "c", Size: 1 << 30}}
			r := New(o, files)
			var wg sync.WaitGroup
			for f := range files {
				wg.Go(func() {
					for n := int64(0); n < 20000; n++ {
						r.Update(f, n*512)
						if n%2000 == 0 {
							r.Printf("file %d at %d", f, n)
						}
					}
					r.Finish(f)
				})
			}
			time.Sleep(20 * time.Millisecond)
			wg.Go(r.Close) // Close races the updates and a second Close
			r.Close()
			wg.Wait()
			waitNoGoroutines(t)
		})
	}
}
