package cli

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress draws one status line on a terminal, at most ten times a
// second; elsewhere it stays silent.
type progress struct {
	w     io.Writer
	verb  string
	on    bool
	mu    sync.Mutex
	start time.Time
	last  time.Time
	drawn bool
}

func newProgress(w io.Writer, verb string) *progress {
	return &progress{w: w, verb: verb, on: isTerminal(w)}
}

func (p *progress) update(done, total int64) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.start.IsZero() {
		p.start = now
	}
	if now.Sub(p.last) < 100*time.Millisecond && done < total {
		return
	}
	p.last = now
	elapsed := now.Sub(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(done) / elapsed
	}
	eta := "--"
	if rate > 0 && total >= done {
		eta = time.Duration(float64(total-done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	pct := 100.0
	if total > 0 {
		pct = float64(done) * 100 / float64(total)
	}
	fmt.Fprintf(p.w, "\r\033[K%s %s / %s (%.0f%%)  %s/s  ETA %s", p.verb, humanBytes(done), humanBytes(total), pct, humanBytes(int64(rate)), eta)
	p.drawn = true
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
