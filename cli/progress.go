package cli

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/spf13/pflag"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/cli/progress"
)

// output is how a transfer command talks to its user: progress (bars on a
// terminal, plain lines otherwise, JSON lines with --json, nothing with
// --quiet), status messages, and the final result.
type output struct {
	json  bool
	quiet bool
	out   io.Writer // results (and JSON lines)
	err   io.Writer // messages and human progress
	// mu orders messages from the session's watch (the server went away)
	// with the command's own, and guards rep against them.
	mu  sync.Mutex
	rep *progress.Reporter
}

// outputFlags are the transfer commands' output options.
type outputFlags struct {
	json, quiet bool
}

func (f *outputFlags) add(fs *pflag.FlagSet) {
	fs.BoolVar(&f.json, "json", false, "print progress and the result as JSON lines on standard output")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "print only the result")
}

// resultJSON is the final line of a transfer command with --json.
type resultJSON struct {
	Type    string   `json:"type"` // "result"
	Session string   `json:"session"`
	State   string   `json:"state"`
	From    string   `json:"from"`
	To      string   `json:"to"`
	Entries int      `json:"entries"`
	Bytes   int64    `json:"bytes"`
	Moved   int64    `json:"moved"` // bytes this run moved over the link: less than bytes after a resume
	CRC32C  string   `json:"crc32c"`
	SHA256  string   `json:"sha256"`
	Paths   []string `json:"paths,omitempty"`
	Text    string   `json:"text,omitempty"`
	Path    string   `json:"path,omitempty"` // "direct" or "relay"
	Via     string   `json:"via,omitempty"`  // the address the link went to
}

func newResult(out *client.Outcome) resultJSON {
	s := out.Session
	return resultJSON{
		Type: "result", Session: s.ID, State: string(s.State), From: s.Initiator, To: s.Responder,
		Entries: len(s.Manifest.Files), Bytes: out.Result.Bytes, Moved: out.Moved,
		CRC32C: fmt.Sprintf("%08x", out.Result.CRC32C), SHA256: hex.EncodeToString(out.Result.SHA256[:]),
		Paths: out.Paths, Text: out.Text, Path: string(out.Path), Via: out.Via,
	}
}

func (a *app) newOutput(f outputFlags) *output {
	return &output{json: f.json, quiet: f.quiet, out: a.io.Out, err: a.io.Err}
}

// start begins showing progress for the entries of m.
func (o *output) start(m api.Manifest, verb string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	po := progress.Options{Out: o.err, Terminal: isTerminal(o.err), Mode: progress.Auto, Verb: verb}
	switch {
	case o.json:
		po.Out, po.Terminal, po.Mode = o.out, false, progress.JSON
	case o.quiet:
		po.Mode = progress.Quiet
	}
	o.rep = progress.New(po, m.Files)
}

func (o *output) update(file int, done int64) { o.rep.Update(file, done) }

// say prints a status message: above the bars, as a JSON message line, or
// not at all when quiet.
func (o *output) say(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.rep != nil:
		o.rep.Printf(format, args...)
	case o.json:
		json.NewEncoder(o.out).Encode(progress.MessageEvent{Type: "message", Text: fmt.Sprintf(format, args...)})
	case !o.quiet:
		fmt.Fprintf(o.err, format+"\n", args...)
	}
}

// finish stops the progress display, marking every entry complete when the
// transfer succeeded.
func (o *output) finish(m api.Manifest, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.rep == nil {
		return
	}
	if ok {
		for i := range m.Files {
			o.rep.Finish(i)
		}
	}
	o.rep.Close()
	o.rep = nil
}

// result prints the final result: one JSON object with --json, a line
// otherwise.
func (o *output) result(line string, obj any) {
	if o.json {
		json.NewEncoder(o.out).Encode(obj)
		return
	}
	fmt.Fprintln(o.out, line)
}

// sessionSize is the size a session is shown with: its manifest's, or for
// a stream, whose length nobody knows before it ends, the bytes a member
// reported ("stream" until one has).
func sessionSize(s *api.Session) string {
	if !s.Manifest.Streamed() {
		return humanBytes(s.Manifest.TotalSize())
	}
	n := int64(-1)
	for _, r := range s.Reports {
		if r.OK {
			n = max(n, r.Bytes)
		}
	}
	if n < 0 {
		return "stream"
	}
	return humanBytes(n)
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
