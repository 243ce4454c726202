package progress

import (
	"math"
	"strconv"
	"sync/atomic"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// nameCols bounds the name column of a bar.
const nameCols = 32

// barSlot is one mpb bar. mpb calls the decorators from its own
// goroutines, so what they read beyond mpb's Statistics is atomic.
type barSlot struct {
	bar     *mpb.Bar
	unknown bool         // size unknown: no percentage, a spinner
	rate    atomic.Int64 // bytes per second; -1 unknown
	eta     atomic.Int64 // seconds; -1 unknown
}

func newSlot(unknown bool) *barSlot {
	s := &barSlot{unknown: unknown}
	s.rate.Store(-1)
	s.eta.Store(-1)
	return s
}

func (s *barSlot) set(rate float64, ok bool, eta int64) {
	if !ok {
		rate = -1
	}
	s.rate.Store(int64(rate))
	s.eta.Store(eta)
}

func (s *barSlot) percentText(st decor.Statistics) string {
	switch {
	case s.unknown:
		return ""
	case st.Completed:
		return "100%"
	case st.Total <= 0:
		return ""
	}
	return strconv.FormatInt(percent(st.Current, st.Total), 10) + "%"
}

func (s *barSlot) bytesText(st decor.Statistics) string {
	if s.unknown || (st.Total <= 0 && !st.Completed) {
		return FormatBytes(st.Current)
	}
	return FormatBytes(st.Current) + " / " + FormatBytes(st.Total)
}

func (s *barSlot) rateText(st decor.Statistics) string {
	if st.Completed || st.Aborted {
		return ""
	}
	if r := s.rate.Load(); r >= 0 {
		return formatRate(float64(r))
	}
	return ""
}

func (s *barSlot) etaText(st decor.Statistics) string {
	switch {
	case st.Completed:
		return "done"
	case st.Aborted:
		return "stopped"
	}
	if e := s.eta.Load(); e >= 0 {
		return "ETA " + formatETA(e)
	}
	return ""
}

// termView draws bars with mpb. The Reporter's renderer goroutine feeds
// it values and asks for each redraw, so mpb keeps no clock of its own.
type termView struct {
	p         *mpb.Progress
	refresh   chan any
	shut      chan any // closed by mpb once it has shut down
	keepAll   bool     // few enough files to keep every bar on screen
	slots     map[int]*barSlot
	total     *barSlot
	nFiles    int
	filesDone atomic.Int64
}

func newTermView(r *Reporter) *termView {
	t := &termView{
		refresh: make(chan any),
		shut:    make(chan any),
		keepAll: r.nFiles <= maxFileBars,
		slots:   make(map[int]*barSlot),
		nFiles:  r.nFiles,
	}
	opts := []mpb.ContainerOption{
		mpb.WithOutput(r.o.Out),
		mpb.WithManualRefresh(t.refresh),
		mpb.WithShutdownNotifier(t.shut),
	}
	if r.o.Width > 0 {
		opts = append(opts, mpb.WithWidth(r.o.Width))
	}
	t.p = mpb.New(opts...)
	if r.nFiles > 1 {
		t.total = t.add(-1, r.totalSize, "", math.MaxInt32, false, func(decor.Statistics) string {
			return "total " + strconv.FormatInt(t.filesDone.Load(), 10) + "/" + strconv.Itoa(t.nFiles) + " files"
		})
	}
	return t
}

// add creates a bar. A size of 0 or less starts without a total: mpb
// would otherwise count an empty file as complete before it is seen.
func (t *termView) add(index int, size int64, name string, priority int, remove bool, label decor.DecorFunc) *barSlot {
	s := newSlot(size < 0)
	var style mpb.BarFillerBuilder = mpb.BarStyle()
	if s.unknown {
		style = mpb.SpinnerStyle()
	}
	if label == nil {
		label = func(decor.Statistics) string { return name }
	}
	bar, err := t.p.Add(max(size, 0), style.Build(),
		mpb.BarPriority(priority),
		mpb.BarOptional(mpb.BarRemoveOnComplete(), remove),
		mpb.PrependDecorators(
			decor.Any(label, decor.WCSyncSpaceR),
			decor.Any(s.percentText, decor.WCSyncSpace),
		),
		mpb.AppendDecorators(
			decor.Any(s.bytesText, decor.WCSyncSpace),
			decor.Any(s.rateText, decor.WCSyncSpace),
			decor.Any(s.etaText, decor.WCSyncSpace),
		),
	)
	if err != nil {
		return nil // mpb has shut down after a write error: draw nothing more
	}
	s.bar = bar
	return s
}

func (t *termView) addFile(r *Reporter, i int) *barSlot {
	return t.add(i, r.files[i].Size, shorten(r.names[i], nameCols), i, !t.keepAll, nil)
}

// complete marks entry i's bar complete at its final bytes; with many
// files a completed entry that never had a bar just joins the total.
func (t *termView) complete(r *Reporter, i int) {
	s := t.slots[i]
	delete(t.slots, i)
	if s == nil && t.keepAll {
		s = t.addFile(r, i)
	}
	if s != nil {
		s.bar.SetTotal(r.st[i].done, true)
	}
}

// show updates entry i's bar, creating it while fewer than maxFileBars
// are on screen. It returns nil when the entry has no bar.
func (t *termView) show(r *Reporter, i int) *barSlot {
	s := t.slots[i]
	if s == nil {
		if len(t.slots) >= maxFileBars {
			return nil
		}
		if s = t.addFile(r, i); s == nil {
			return nil
		}
		t.slots[i] = s
	}
	st := &r.st[i]
	s.set(st.rate, st.rateOK, r.fileETA(i))
	s.bar.SetCurrent(st.done)
	return s
}

func (t *termView) tick(r *Reporter) {
	t.filesDone.Store(int64(r.filesDone))
	for _, i := range r.completed {
		t.complete(r, i)
	}
	for _, i := range r.active {
		t.show(r, i)
	}
	if t.total != nil {
		t.total.set(r.tot.rate, r.tot.rateOK, r.totalETA())
		t.total.bar.SetCurrent(r.tot.done)
	}
	t.redraw()
}

// final leaves every bar complete or stopped where it is, then waits for
// mpb to draw that and shut down all its goroutines.
func (t *termView) final(r *Reporter) {
	t.filesDone.Store(int64(r.filesDone))
	for _, i := range r.completed {
		t.complete(r, i)
	}
	for _, i := range r.active {
		if s := t.show(r, i); s != nil {
			delete(t.slots, i)
			s.bar.Abort(false)
		}
	}
	for i, s := range t.slots { // none expected; never leave mpb waiting
		delete(t.slots, i)
		s.bar.Abort(false)
	}
	if t.total != nil {
		t.total.set(0, false, -1)
		t.total.bar.SetCurrent(r.tot.done)
		if r.filesDone == r.nFiles {
			t.total.bar.SetTotal(-1, true)
		} else {
			t.total.bar.Abort(false)
		}
	}
	t.redraw()
	t.p.Wait()
}

func (t *termView) redraw() {
	select {
	case t.refresh <- struct{}{}:
	case <-t.shut:
	}
}
