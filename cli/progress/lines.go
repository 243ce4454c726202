package progress

import (
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ProgressEvent is the JSON "progress" object; see the package doc.
type ProgressEvent struct {
	Type         string `json:"type"`
	File         string `json:"file"`
	Index        int    `json:"index"`
	Bytes        int64  `json:"bytes"`
	Size         int64  `json:"size"`
	Done         bool   `json:"done"`
	RateBPS      int64  `json:"rate_bps"`
	ETAS         int64  `json:"eta_s"`
	TotalBytes   int64  `json:"total_bytes"`
	TotalSize    int64  `json:"total_size"`
	TotalRateBPS int64  `json:"total_rate_bps"`
	TotalETAS    int64  `json:"total_eta_s"`
	FilesDone    int    `json:"files_done"`
	Files        int    `json:"files"`
	Final        bool   `json:"final"`
}

// MessageEvent is the JSON "message" object, one per Printf.
type MessageEvent struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// line writes one plain line. Output errors are ignored: progress is a
// courtesy and must never fail the transfer.
func (r *Reporter) line(s string) {
	_, _ = io.WriteString(r.o.Out, s+"\n")
}

func (r *Reporter) emit(v any) {
	_ = r.enc.Encode(v)
}

// amount renders "done of size (pct%)", or just done for an unknown size.
func amount(done, size int64) string {
	if size < 0 {
		return FormatBytes(done)
	}
	return FormatBytes(done) + " of " + FormatBytes(size) + " (" + strconv.FormatInt(percent(done, size), 10) + "%)"
}

// speed renders ", rate/s, ETA x", leaving out what is not known.
func speed(rate float64, ok bool, eta int64) string {
	if !ok {
		return ""
	}
	s := ", " + formatRate(rate)
	if eta >= 0 {
		s += ", ETA " + formatETA(eta)
	}
	return s
}

// fileLine reports entry i: "sent a.iso: 1.0 MiB of 2.0 MiB (50%), 1.0 MiB/s, ETA 1s".
func (r *Reporter) fileLine(i int, suffix string) string {
	s := &r.st[i]
	var b strings.Builder
	b.WriteString(r.o.Verb)
	b.WriteByte(' ')
	b.WriteString(r.names[i])
	b.WriteString(": ")
	switch suffix {
	case "done":
		b.WriteString(FormatBytes(s.done))
		b.WriteString(", done")
	case "stopped":
		b.WriteString(amount(s.done, r.files[i].Size))
		b.WriteString(", stopped")
	default:
		b.WriteString(amount(s.done, r.files[i].Size))
		b.WriteString(speed(s.rate, s.rateOK, r.fileETA(i)))
	}
	return b.String()
}

// totalLine reports the whole transfer: "sent 2 of 5 files, 3.0 MiB of 9.0 MiB (33%), …".
func (r *Reporter) totalLine(final bool) string {
	s := r.o.Verb + " " + strconv.Itoa(r.filesDone) + " of " + strconv.Itoa(r.nFiles) + " files, " + amount(r.tot.done, r.totalSize)
	if !final {
		s += speed(r.tot.rate, r.tot.rateOK, r.totalETA())
	}
	return s
}

func (r *Reporter) plainTick(now time.Time, due bool) {
	for _, i := range r.completed {
		r.line(r.fileLine(i, "done"))
	}
	if !due {
		return
	}
	wrote := false
	for _, i := range r.active {
		r.line(r.fileLine(i, ""))
		wrote = true
	}
	// Small files can complete between ticks, leaving nothing active; the
	// total line still shows that the transfer moves.
	if r.nFiles > 1 && (wrote || r.tot.done != r.lastReport.done || r.filesDone != r.lastReport.files) {
		r.line(r.totalLine(false))
		r.lastReport.done, r.lastReport.files = r.tot.done, r.filesDone
		wrote = true
	}
	if wrote {
		r.lastEmit = now
	}
}

func (r *Reporter) plainFinal() {
	for _, i := range r.completed {
		r.line(r.fileLine(i, "done"))
	}
	for _, i := range r.active {
		r.line(r.fileLine(i, "stopped"))
	}
	if r.nFiles > 1 {
		r.line(r.totalLine(true))
	}
}

// event builds the progress object for entry i; i < 0 gives one with
// totals only.
func (r *Reporter) event(i int) ProgressEvent {
	ev := ProgressEvent{
		Type:         "progress",
		Index:        -1,
		ETAS:         -1,
		TotalBytes:   r.tot.done,
		TotalSize:    r.totalSize,
		TotalRateBPS: int64(math.Round(r.tot.rate)),
		TotalETAS:    r.totalETA(),
		FilesDone:    r.filesDone,
		Files:        r.nFiles,
	}
	if i < 0 {
		return ev
	}
	s := &r.st[i]
	ev.File = r.files[i].Name
	ev.Index = i
	ev.Bytes = s.done
	ev.Size = r.files[i].Size
	ev.Done = s.final
	ev.RateBPS = int64(math.Round(s.rate))
	ev.ETAS = r.fileETA(i)
	return ev
}

func (r *Reporter) jsonTick(now time.Time, due bool) {
	for _, i := range r.completed {
		r.emit(r.event(i))
	}
	if !due || len(r.active) == 0 {
		return
	}
	for _, i := range r.active {
		r.emit(r.event(i))
	}
	r.lastEmit = now
}

func (r *Reporter) jsonFinal() {
	pending := slices.Concat(r.completed, r.active)
	if len(pending) == 0 {
		pending = append(pending, r.lastFile)
	}
	for n, i := range pending {
		ev := r.event(i)
		ev.Final = n == len(pending)-1
		r.emit(ev)
	}
}
