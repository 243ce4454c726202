package progress

import (
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/internal/syncbuf"
)

// fakeClock is Options.Now under a test's control.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// harness drives a Reporter without its renderer goroutine: each step
// moves the fake clock, applies updates and renders once.
type harness struct {
	t     *testing.T
	r     *Reporter
	clock *fakeClock
	out   *syncbuf.Buffer
}

func newHarness(t *testing.T, o Options, files []api.File) *harness {
	t.Helper()
	h := &harness{t: t, clock: newClock(), out: &syncbuf.Buffer{}}
	o.Out = h.out
	o.Now = h.clock.Now
	h.r = newReporter(o, files, false)
	t.Cleanup(h.r.Close)
	return h
}

// step is one moment of a scripted transfer.
type step struct {
	after   time.Duration // clock advance before the updates
	updates [][2]int64    // {entry, bytes}
	finish  []int
	printf  string
	close   bool // Close instead of rendering
}

func (h *harness) run(steps []step) {
	for _, s := range steps {
		h.clock.Advance(s.after)
		for _, u := range s.updates {
			h.r.Update(int(u[0]), u[1])
		}
		for _, f := range s.finish {
			h.r.Finish(f)
		}
		if s.printf != "" {
			h.r.Printf("%s", s.printf)
		}
		if s.close {
			h.r.Close()
			continue
		}
		h.tick()
	}
}

func (h *harness) tick() {
	h.r.mu.Lock()
	defer h.r.mu.Unlock()
	h.r.tick(h.clock.Now())
}

func (h *harness) lines() []string {
	s := strings.TrimSuffix(h.out.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// goroutines counts live goroutines whose stack mentions any of marks.
func goroutines(marks ...string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		for _, m := range marks {
			if strings.Contains(g, m) {
				count++
				break
			}
		}
	}
	return count
}

var ownGoroutines = []string{"github.com/vbauerster/mpb", "progress.(*Reporter).loop"}

// waitNoGoroutines fails unless the Reporter's and mpb's goroutines are
// gone shortly after Close; mpb's last refresh helpers exit just after it.
func waitNoGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for goroutines(ownGoroutines...) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d rendering goroutines still running after Close", goroutines(ownGoroutines...))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const (
	kib = 1 << 10
	mib = 1 << 20
)
