// Package progress shows a transfer's progress on the sending and the
// receiving side of sft-cli.
//
// A Reporter is built from the manifest's entries. The transfer calls
// Update with the bytes of an entry present so far; Update only stores an
// atomic, and a renderer goroutine owned by the Reporter samples the values
// a few times a second and draws them. Close stops that goroutine and
// prints the final state.
//
// Rates are measured over a sliding window of a few seconds, counting only
// bytes that moved while the Reporter watched: an entry resumed at an
// offset (its first Update above 0) does not inflate the rate, and a stall
// shows as a falling rate rather than a long-run average.
//
// Modes:
//
//   - Auto: bars (github.com/vbauerster/mpb) when Options.Terminal is set,
//     Plain otherwise. Bars: one per active file (at most 8 at once; with
//     more than 8 files completed bars are folded into the total) and a
//     total bar when the manifest holds more than one file.
//   - Plain: text lines, at most one report per Interval (a line per
//     active file, and a total line when there are several files), one
//     line when each file completes, and the final state at Close.
//   - JSON: one JSON object per line, described below.
//   - Quiet: nothing at all, not even Printf messages.
//
// # JSON lines
//
// Every line is one object with a "type" field. Field names are stable.
//
// type "progress" (ProgressEvent), written for each active file at most
// once per Interval, once when a file completes, and at Close for every
// file still pending; the last object written by Close has "final": true
// (when nothing is pending, Close repeats the most recent file's object):
//
//	file            entry name from the manifest
//	index           entry index in the manifest (-1 only in a final object
//	                when no entry was ever updated)
//	bytes           bytes of the entry present so far
//	size            entry size from the manifest; -1 for a stream of unknown size
//	done            the entry is complete
//	rate_bps        entry rate in bytes per second over the last few seconds
//	eta_s           seconds left for the entry; -1 when unknown
//	total_bytes     bytes of all entries present so far
//	total_size      sum of entry sizes; -1 when a size is unknown
//	total_rate_bps  rate of the whole transfer in bytes per second
//	total_eta_s     seconds left for the transfer; -1 when unknown
//	files_done      entries completed (directories are not counted)
//	files           entries that carry bytes (directories are not counted)
//	final           this is the last object of the transfer
//
// type "message" (MessageEvent), one per Printf:
//
//	text            the message
package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sftproject/sft/api"
)

// Mode selects how progress is shown.
type Mode int

const (
	Auto  Mode = iota // bars on a terminal, plain lines otherwise
	Plain             // plain text lines, at most one report every Interval and one at each file's end
	JSON              // one JSON object per line
	Quiet             // nothing

	// bars is what Auto resolves to on a terminal.
	bars Mode = -1
)

// String returns the name ParseMode accepts.
func (m Mode) String() string {
	switch m {
	case Auto:
		return "auto"
	case Plain:
		return "plain"
	case JSON:
		return "json"
	case Quiet:
		return "quiet"
	case bars:
		return "bars"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode reads a mode name as a command-line flag would carry it:
// "auto", "plain", "json" or "quiet".
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{Auto, Plain, JSON, Quiet} {
		if strings.EqualFold(s, m.String()) {
			return m, nil
		}
	}
	return Auto, fmt.Errorf("progress mode %q: want auto, plain, json or quiet", s)
}

// Options configures a Reporter.
type Options struct {
	Out      io.Writer        // where bars/lines go; nil shows nothing
	Terminal bool             // Out is a terminal (Auto uses bars only then)
	Mode     Mode             // how to show progress
	Verb     string           // "sent" / "received", used in lines; default "transferred"
	Interval time.Duration    // plain/JSON throttle; default 1s plain, 250ms JSON
	Now      func() time.Time // for tests; default time.Now
	// Width is the bar width in columns when Out is not a real terminal
	// (mpb measures a real one); 0 leaves mpb's default of 80.
	Width int
}

const (
	// maxFileBars bounds the file bars on screen, so hundreds of files
	// stay readable.
	maxFileBars = 8
	// barTick is the terminal redraw period.
	barTick = 150 * time.Millisecond
	// maxLineTick bounds how late a plain/JSON completion line can be;
	// minLineTick keeps a tiny Interval from spinning the renderer.
	maxLineTick = 200 * time.Millisecond
	minLineTick = 10 * time.Millisecond
)

// entry is the part of a file's state that Update writes.
type entry struct {
	done  atomic.Int64 // bytes present; -1 until the first Update
	start atomic.Int64 // the first value Updated, -1 until then
	fin   atomic.Bool  // Finish was called
}

// fileState is the renderer's view of one entry, guarded by Reporter.mu.
type fileState struct {
	final  bool // completion handled (always set for a directory)
	done   int64
	moved  int64 // bytes that moved while watched: done minus the first Update
	win    *window
	rate   float64
	rateOK bool
}

// Reporter shows one transfer's progress. Update, Finish, Printf and Close
// may be called from different goroutines. A nil *Reporter does nothing.
type Reporter struct {
	o         Options
	mode      Mode // resolved: Plain, JSON, Quiet or bars
	files     []api.File
	names     []string // display-safe names
	ent       []entry
	nFiles    int   // non-directory entries
	totalSize int64 // -1 when any size is unknown

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once

	mu        sync.Mutex // guards everything below and all writes to o.Out
	closed    bool
	st        []fileState
	cursor    int // entries below are all final
	lastTick  time.Time
	lastEmit  time.Time
	lastFile  int // most recently seen entry, -1 before any
	filesDone int
	doneBase  int64 // bytes of final entries
	movedBase int64
	tot       struct {
		done, moved int64
		rate        float64
		rateOK      bool
	}
	totWin     *window
	lastReport struct {
		done  int64
		files int
	}
	active, completed []int // scratch filled by scan
	enc               *json.Encoder
	term              *termView
}

// New starts a Reporter for a manifest's entries. Directory entries get
// no bar or line; an entry of Size api.SizeUnknown shows bytes and rate
// but no percentage or ETA. Close must be called to stop its renderer.
func New(o Options, files []api.File) *Reporter {
	return newReporter(o, files, true)
}

// newReporter lets tests drive rendering by calling tick themselves
// instead of starting the renderer goroutine.
func newReporter(o Options, files []api.File, run bool) *Reporter {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Verb == "" {
		o.Verb = "transferred"
	}
	mode := o.Mode
	switch {
	case o.Out == nil:
		mode = Quiet
	case mode == Auto && o.Terminal:
		mode = bars
	case mode < Auto || mode > Quiet || mode == Auto:
		mode = Plain
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
		if mode == JSON {
			o.Interval = 250 * time.Millisecond
		}
	}
	r := &Reporter{
		o:        o,
		mode:     mode,
		files:    slices.Clone(files),
		names:    make([]string, len(files)),
		ent:      make([]entry, len(files)),
		st:       make([]fileState, len(files)),
		lastFile: -1,
	}
	for i, f := range r.files {
		r.ent[i].done.Store(-1)
		r.ent[i].start.Store(-1)
		r.names[i] = displayName(f.Name)
		if f.Dir {
			r.st[i].final = true
			continue
		}
		r.nFiles++
		if f.Size < 0 || r.totalSize < 0 {
			r.totalSize = -1
		} else {
			r.totalSize += f.Size
		}
	}
	now := o.Now()
	r.lastTick, r.lastEmit = now, now

	every := min(max(o.Interval, minLineTick), maxLineTick)
	switch mode {
	case Quiet:
		return r
	case JSON:
		r.enc = json.NewEncoder(o.Out)
		r.enc.SetEscapeHTML(false)
	case bars:
		r.term = newTermView(r)
		every = barTick
	}
	if run {
		r.stop = make(chan struct{})
		r.wg.Add(1)
		go r.loop(every)
	}
	return r
}

// Update records that entry file (an index into the manifest) has done
// bytes present. The first call for an entry sets the bytes that were
// already there, which rates do not count: call Update(file, offset) as
// an entry starts (offset 0, or above 0 when resuming). It only stores
// atomics, so it is cheap enough for every buffer written.
func (r *Reporter) Update(file int, done int64) {
	if r == nil || uint(file) >= uint(len(r.ent)) || done < 0 {
		return
	}
	e := &r.ent[file]
	if e.start.Load() < 0 {
		e.start.CompareAndSwap(-1, done)
	}
	e.done.Store(done)
}

// Finish marks entry file complete at the bytes last Updated. An entry
// of known size completes by itself when its bytes reach its size; a
// stream of unknown size needs Finish, or Close reports it as stopped.
func (r *Reporter) Finish(file int) {
	if r == nil || uint(file) >= uint(len(r.ent)) {
		return
	}
	r.ent[file].fin.Store(true)
}

// Printf shows a message: above the bars, as a plain line, or as a JSON
// "message" object. Non-printable characters other than newline and tab
// are escaped outside JSON, since messages may quote peer-supplied text.
func (r *Reporter) Printf(format string, args ...any) {
	if r == nil || r.mode == Quiet {
		return
	}
	msg := fmt.Sprintf(format, args...)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode == JSON {
		r.emit(MessageEvent{Type: "message", Text: msg})
		return
	}
	text := sanitizeText(strings.TrimSuffix(msg, "\n")) + "\n"
	if r.mode == bars && !r.closed {
		if _, err := r.term.p.Write([]byte(text)); err == nil {
			return
		}
	}
	_, _ = io.WriteString(r.o.Out, text)
}

// Close stops rendering and prints the final state: each file complete
// or where it stopped. It is idempotent. Afterwards Update and Finish have
// no visible effect, and Printf writes lines directly (objects in JSON).
func (r *Reporter) Close() {
	if r == nil {
		return
	}
	r.once.Do(func() {
		if r.stop != nil {
			close(r.stop)
			r.wg.Wait()
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.mode != Quiet {
			r.final(r.o.Now())
		}
		r.closed = true
	})
}

func (r *Reporter) loop(every time.Duration) {
	defer r.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.mu.Lock()
			r.tick(r.o.Now())
			r.mu.Unlock()
		}
	}
}

// scan samples every entry not yet final, fills r.active and r.completed
// (in index order) and updates rates and totals. Callers hold r.mu.
func (r *Reporter) scan(now time.Time) {
	r.active, r.completed = r.active[:0], r.completed[:0]
	done, moved := r.doneBase, r.movedBase
	for i := r.cursor; i < len(r.ent); i++ {
		s := &r.st[i]
		if s.final {
			if i == r.cursor {
				r.cursor++
			}
			continue
		}
		e := &r.ent[i]
		fin := e.fin.Load()
		d := e.done.Load()
		if d < 0 {
			if !fin {
				continue
			}
			d = 0
		}
		m := max(d-max(e.start.Load(), 0), 0)
		if s.win == nil {
			// Bytes seen now moved after the previous tick, when this entry
			// was still untouched.
			s.win = newWindow(r.lastTick, 0)
			if r.totWin == nil {
				r.totWin = newWindow(r.lastTick, 0)
			}
		}
		s.done, s.moved = d, m
		s.win.add(now, m)
		s.rate, s.rateOK = s.win.rate(now, m)
		r.lastFile = i
		done += d
		moved += m
		if size := r.files[i].Size; fin || (size >= 0 && d >= size) {
			s.final, s.win = true, nil
			r.doneBase += d
			r.movedBase += m
			r.filesDone++
			r.completed = append(r.completed, i)
			if i == r.cursor {
				r.cursor++
			}
			continue
		}
		r.active = append(r.active, i)
	}
	r.tot.done, r.tot.moved = done, moved
	if r.totWin != nil {
		r.totWin.add(now, moved)
		r.tot.rate, r.tot.rateOK = r.totWin.rate(now, moved)
	}
}

// fileETA is the seconds left for entry i, -1 when unknown.
func (r *Reporter) fileETA(i int) int64 {
	s, size := &r.st[i], r.files[i].Size
	if s.final {
		return 0
	}
	if size < 0 || !s.rateOK {
		return -1
	}
	return etaSeconds(size-s.done, s.rate)
}

// totalETA is the seconds left for the transfer, -1 when unknown.
func (r *Reporter) totalETA() int64 {
	if r.filesDone == r.nFiles {
		return 0
	}
	if r.totalSize < 0 || !r.tot.rateOK {
		return -1
	}
	return etaSeconds(r.totalSize-r.tot.done, r.tot.rate)
}

// tick samples the entries and draws what is due. Callers hold r.mu.
func (r *Reporter) tick(now time.Time) {
	r.scan(now)
	due := now.Sub(r.lastEmit) >= r.o.Interval
	switch r.mode {
	case Plain:
		r.plainTick(now, due)
	case JSON:
		r.jsonTick(now, due)
	case bars:
		r.term.tick(r)
	}
	r.lastTick = now
}

// final draws the state at Close. Callers hold r.mu.
func (r *Reporter) final(now time.Time) {
	r.scan(now)
	switch r.mode {
	case Plain:
		r.plainFinal()
	case JSON:
		r.jsonFinal()
	case bars:
		r.term.final(r)
	}
	r.lastTick = now
}
