package progress

import "time"

const (
	// rateSpan is how far back a rate looks: long enough to smooth bursts,
	// short enough that a stall or a resumed start shows within seconds.
	rateSpan = 5 * time.Second
	// rateStep is the spacing of kept samples.
	rateStep = 250 * time.Millisecond
	ringLen  = int(rateSpan/rateStep) + 2
)

type sample struct {
	t time.Time
	v int64
}

// window measures a byte counter's rate over the last rateSpan. It keeps a
// fixed ring of samples, so a long transfer costs no more than a short one.
// Only the renderer touches it.
type window struct {
	s       [ringLen]sample
	head, n int // head is the oldest sample
}

// newWindow starts a window at (t, v): the moment before any byte counted.
func newWindow(t time.Time, v int64) *window {
	w := &window{}
	w.add(t, v)
	return w
}

// add records the counter's value v at t, keeping at most one sample per
// rateStep.
func (w *window) add(t time.Time, v int64) {
	if w.n > 0 && t.Sub(w.s[(w.head+w.n-1)%ringLen].t) < rateStep {
		return
	}
	if w.n == ringLen {
		w.head = (w.head + 1) % ringLen
		w.n--
	}
	w.s[(w.head+w.n)%ringLen] = sample{t, v}
	w.n++
}

// rate is the bytes per second between the oldest sample within rateSpan
// of t (or the newest sample, if all are older) and the value v at t. ok
// is false when no time has passed since that sample. A counter that went
// backwards (a rewind) reads as 0.
func (w *window) rate(t time.Time, v int64) (bps float64, ok bool) {
	if w.n == 0 {
		return 0, false
	}
	from := w.s[(w.head+w.n-1)%ringLen]
	for i := range w.n {
		s := w.s[(w.head+i)%ringLen]
		if t.Sub(s.t) <= rateSpan {
			from = s
			break
		}
	}
	dt := t.Sub(from.t)
	if dt <= 0 {
		return 0, false
	}
	if v <= from.v {
		return 0, true
	}
	return float64(v-from.v) / dt.Seconds(), true
}
