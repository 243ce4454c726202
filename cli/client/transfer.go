package client

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/progress"
	"github.com/sftproject/sft/link"
)

// SendOptions describe one outgoing transfer.
type SendOptions struct {
	To      string   // the responder's user name
	Sources *Sources // what to send
	Peer    PeerOptions
	// OnSession is told the session as soon as it exists (or was found
	// again, resumed), so a user can pass its id to the receiver.
	OnSession func(s *api.Session, resumed bool)
	Progress  func(file int, done int64)
	// Notify gets status messages (link lost, waiting, resuming, server
	// unreachable), also from the session's watch goroutine.
	Notify func(format string, args ...any)
	Logger *slog.Logger
}

// Outcome is a verified transfer.
type Outcome struct {
	Session *api.Session // in its final state
	Result  link.Result
	Moved   int64    // file bytes this side moved over the link, over every attempt
	Paths   []string // where the receiver stored the entries
	Text    string   // a received text message
	// Path and Via say how this run's last peer link went: direct or
	// through the relay, and the address it reached (empty when this run
	// only confirmed an earlier one's transfer).
	Path api.Path
	Via  string
}

// ErrLeftForResume marks a transfer that stopped with its session still
// open: running the same command again continues it.
var ErrLeftForResume = errors.New("transfer interrupted; run the same command again to resume")

// Send offers the sources to o.To and streams them once they join. A send
// of the same files to the same user whose session is still open resumes
// it instead of starting over. It returns only when the session service
// confirmed both sides' checks (completed), or with an error, after leaving
// the session cancelled or failed — or open, for a later resume, when only
// the link failed (ErrLeftForResume).
func (c *Client) Send(ctx context.Context, o SendOptions) (*Outcome, error) {
	m := o.Sources.Manifest
	var prior *api.Session
	if o.Sources.Resumable() {
		var err error
		if prior, err = c.findOwnSession(ctx, o.To, m); err != nil {
			return nil, err
		}
	}
	sd := newSide(c, api.RoleInitiator, o.Peer.Listen, o.Peer, o.Notify, o.Logger, o.Sources.Resumable())
	defer sd.close()
	var sess *api.Session
	if prior == nil || prior.Listener != api.RoleResponder {
		addrs, err := sd.startListening()
		if err != nil {
			return nil, err
		}
		if prior == nil {
			sess, err = c.Create(ctx, api.CreateRequest{Responder: o.To, Manifest: m, PeerAddrs: addrs, PeerHost: HostID()})
			if err != nil {
				return nil, fmt.Errorf("create session: %w%s", err, tooLargeHint(err, m))
			}
		} else if sess, err = c.Resume(ctx, prior.ID, addrs); err != nil {
			return nil, fmt.Errorf("resume session %s: %w", prior.ID, err)
		}
	} else {
		var err error
		if sess, err = c.Resume(ctx, prior.ID, nil); err != nil {
			return nil, fmt.Errorf("resume session %s: %w", prior.ID, err)
		}
	}
	if o.OnSession != nil {
		o.OnSession(sess, prior != nil)
	}
	sd.sess = sess
	sd.w = c.watchSession(ctx, sess, o.Notify)
	defer sd.w.stop()

	var moved int64
	var res link.Result
	var err error
	if rep, ok := sess.Reports[api.RoleResponder]; ok && rep.OK {
		// The receiver confirmed everything before an earlier run of this
		// send could record its side: check the files still match.
		res, err = link.Summarize(ctx, m, o.Sources.Open)
	} else {
		res, err = sd.transfer(ctx, &moved, func(conn *link.Conn) (link.Result, error) {
			return conn.Send(ctx, m, o.Sources.Open, link.SendOptions{Progress: o.Progress})
		})
	}
	if err != nil {
		return nil, sd.fail(ctx, err)
	}
	if _, err := c.Report(ctx, sess.ID, sd.report(res)); err != nil {
		return nil, fmt.Errorf("report result: %w", err)
	}
	final, err := c.awaitEnd(ctx, sd.w, sess.ID)
	if err != nil {
		return nil, err
	}
	return &Outcome{Session: final, Result: res, Moved: moved, Path: sd.path, Via: sd.via}, nil
}

// findOwnSession returns the caller's open session to `to` offering exactly
// m, the one a repeated send resumes, or nil.
func (c *Client) findOwnSession(ctx context.Context, to string, m api.Manifest) (*api.Session, error) {
	all, err := c.List(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	for _, s := range all { // newest first
		if s.Initiator == c.user && s.Responder == to && !s.State.Terminal() &&
			s.Manifest.Text == m.Text && slices.Equal(s.Manifest.Files, m.Files) {
			return &s, nil
		}
	}
	return nil, nil
}

// ReceiveOptions describe one incoming transfer.
type ReceiveOptions struct {
	SessionID string    // empty: the one session waiting for this user
	Dir       string    // destination directory
	Out       io.Writer // instead of Dir: where a single file's bytes go (-o -)
	Text      io.Writer // where a text message is shown
	Overwrite bool
	// Listen, when set, makes this side the one that listens (host:port)
	// instead of the sender; Peer.Listen is not used.
	Listen string
	Peer   PeerOptions
	// Confirm, if set, is asked before joining, with what the transfer
	// needs and the free space at the destination (-1: unknown). An error
	// that is ErrDeclined declines the session for good, telling the
	// sender; any other leaves the session as it is.
	Confirm   func(s *api.Session, need, free int64) error
	OnSession func(s *api.Session, resumed bool)
	Progress  func(file int, done int64)
	Notify    func(format string, args ...any) // as SendOptions.Notify
	Logger    *slog.Logger
}

// Receive joins a session (or resumes one this user already joined),
// fetches its entries into o.Dir and returns once the session service
// confirmed the transfer. Refusals that need no peer (an unsafe name, an
// existing file, too little space) happen before joining: the sender is
// told why, and the session stays open for a retry with other options.
func (c *Client) Receive(ctx context.Context, o ReceiveOptions) (*Outcome, error) {
	sess, err := c.pick(ctx, o.SessionID)
	if err != nil {
		return nil, err
	}
	if sess.Responder != c.user {
		return nil, fmt.Errorf("session %s is for %s, not for you (%s)", sess.ID, sess.Responder, c.user)
	}
	resuming := sess.State == api.StateJoined
	if sess.State != api.StateWaiting && !resuming {
		return nil, fmt.Errorf("session %s is %s", sess.ID, sess.State)
	}
	if rep, ok := sess.Reports[api.RoleResponder]; ok && rep.OK {
		// An earlier run received and confirmed everything; only the
		// sender's confirmation is missing.
		if o.OnSession != nil {
			o.OnSession(sess, true)
		}
		w := c.watchSession(ctx, sess, o.Notify)
		defer w.stop()
		final, err := c.awaitEnd(ctx, w, sess.ID)
		if err != nil {
			return nil, err
		}
		res := link.Result{Bytes: rep.Bytes, CRC32C: rep.CRC32C, SHA256: decodeSHA(rep.SHA256)}
		out := &Outcome{Session: final, Result: res}
		if o.Out == nil && !sess.Manifest.Text {
			out.Paths = link.Paths(o.Dir, sess.Manifest)
		}
		return out, nil
	}
	m := sess.Manifest
	if err := link.CheckManifest(m); err != nil {
		refused := fmt.Errorf("refusing session %s: %w", sess.ID, err)
		return nil, c.tellSender(ctx, sess, refuse(refused, "the list of entries is refused: %v", err), o.Logger)
	}
	if resuming && o.Out == nil && !m.Text {
		if out, err := c.confirmPlaced(ctx, sess, o); out != nil || err != nil {
			return out, err
		}
	}
	var need, free int64 = 0, -1
	switch {
	case m.Text:
	case o.Out != nil:
		if len(m.Files) != 1 || m.Files[0].Dir {
			err := fmt.Errorf("session %s offers %d entries; only a single file can go to standard output", sess.ID, len(m.Files))
			return nil, c.tellSender(ctx, sess, refuse(err, "only a single file can go to standard output"), o.Logger)
		}
	default:
		if need, free, err = checkDestination(o.Dir, sess, o.Overwrite); err != nil {
			return nil, c.tellSender(ctx, sess, err, o.Logger)
		}
	}
	if o.OnSession != nil {
		o.OnSession(sess, resuming)
	}
	if o.Confirm != nil && !resuming {
		if err := o.Confirm(sess, need, free); err != nil {
			return nil, c.tellSender(ctx, sess, err, o.Logger)
		}
	}

	sd := newSide(c, api.RoleResponder, o.Listen, o.Peer, o.Notify, o.Logger, o.Out == nil && !m.Text)
	defer sd.close()
	var addrs []string
	if o.Listen != "" || (resuming && sess.Listener == api.RoleResponder) {
		if o.Listen == "" {
			return nil, fmt.Errorf("in session %s you are the side that listens: resume with --listen HOST:PORT", sess.ID)
		}
		if o.Peer.Relay == RelayAlways {
			return nil, errors.New("--listen and --relay contradict each other: a side forced through the relay listens nowhere")
		}
		if addrs, err = sd.startListening(); err != nil {
			return nil, err
		}
	}
	if resuming {
		if addrs != nil && sess.Listener != api.RoleResponder {
			return nil, fmt.Errorf("in session %s the sender listens; resume without --listen", sess.ID)
		}
		sess, err = c.Resume(ctx, sess.ID, addrs)
	} else {
		sess, err = c.Join(ctx, sess.ID, addrs)
	}
	if err != nil {
		return nil, fmt.Errorf("join session: %w", err)
	}
	sd.sess = sess
	sd.w = c.watchSession(ctx, sess, o.Notify)
	defer sd.w.stop()

	var text textBuffer
	lo := link.ReceiveOptions{Overwrite: o.Overwrite, Progress: o.Progress, Out: o.Out}
	if m.Text {
		lo.Out = &text
	}
	var moved int64
	res, err := sd.transfer(ctx, &moved, func(conn *link.Conn) (link.Result, error) {
		return conn.Receive(ctx, m, o.Dir, lo)
	})
	if err != nil {
		err = sd.fail(ctx, err)
		if !errors.Is(err, ErrLeftForResume) && lo.Out == nil {
			link.Discard(o.Dir, sess.ID, m)
		}
		return nil, err
	}
	if _, err := c.Report(ctx, sess.ID, sd.report(res)); err != nil {
		return nil, fmt.Errorf("report result: %w", err)
	}
	final, err := c.awaitEnd(ctx, sd.w, sess.ID)
	if err != nil {
		return nil, err
	}
	out := &Outcome{Session: final, Result: res, Moved: moved, Text: text.String(), Path: sd.path, Via: sd.via}
	if lo.Out == nil {
		out.Paths = link.Paths(o.Dir, m)
	}
	return out, nil
}

// confirmPlaced finishes a session whose files an earlier run of this
// receive put in place but could not report (it stopped in between): when
// the sender has confirmed, and the files in o.Dir hash to what it sent,
// this side reports them. It returns nil, nil when that is not the case.
func (c *Client) confirmPlaced(ctx context.Context, sess *api.Session, o ReceiveOptions) (*Outcome, error) {
	sent, ok := sess.Reports[api.RoleInitiator]
	if _, mine := sess.Reports[api.RoleResponder]; mine || !ok || !sent.OK {
		return nil, nil
	}
	paths := link.Paths(o.Dir, sess.Manifest)
	got, err := link.Summarize(ctx, sess.Manifest, func(i int) (io.ReadCloser, error) { return os.Open(paths[i]) })
	if mine := okReport(got); err != nil || mine.Bytes != sent.Bytes || mine.CRC32C != sent.CRC32C || mine.SHA256 != sent.SHA256 {
		return nil, nil
	}
	if o.OnSession != nil {
		o.OnSession(sess, true)
	}
	w := c.watchSession(ctx, sess, o.Notify)
	defer w.stop()
	if _, err := c.Report(ctx, sess.ID, okReport(got)); err != nil {
		return nil, fmt.Errorf("report result: %w", err)
	}
	final, err := c.awaitEnd(ctx, w, sess.ID)
	if err != nil {
		return nil, err
	}
	return &Outcome{Session: final, Result: got, Paths: paths}, nil
}

func decodeSHA(h string) (sum [32]byte) {
	hex.Decode(sum[:], []byte(h))
	return sum
}

// checkDestination refuses, before joining, a transfer that cannot land in
// dir: names taken (unless overwriting) or not enough free space. It
// returns the bytes still to come and the free space (-1 when unknown).
func checkDestination(dir string, sess *api.Session, overwrite bool) (need, free int64, err error) {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return 0, 0, refuse(fmt.Errorf("destination %s is not a directory", dir), "the destination is not a directory")
	}
	paths := link.Paths(dir, sess.Manifest)
	for i, f := range sess.Manifest.Files {
		p := paths[i]
		fi, err := os.Lstat(p)
		switch {
		case err != nil:
			continue
		case f.Dir && fi.IsDir():
			continue
		case f.Dir || fi.IsDir() || !overwrite:
			return 0, 0, refuse(fmt.Errorf("%s already exists (use --overwrite to replace files)", p), "%s exists in the destination", f.Name)
		}
	}
	need = sess.Manifest.TotalSize() - link.Held(dir, sess.ID, sess.Manifest)
	free, err = link.FreeSpace(dir)
	if err != nil {
		return need, -1, nil
	}
	if need > free {
		return 0, 0, refuse(fmt.Errorf("%w in %s: the transfer needs %d bytes, %d are available", link.ErrNoSpace, dir, need, free),
			"%v: needs %s, %s available", link.ErrNoSpace, progress.FormatBytes(need), progress.FormatBytes(free))
	}
	return need, free, nil
}

// pick returns the named session, or the only one waiting for the user (or,
// failing that, the only one the user joined and may resume).
func (c *Client) pick(ctx context.Context, id string) (*api.Session, error) {
	if id != "" {
		return c.Get(ctx, id)
	}
	all, err := c.List(ctx, "")
	if err != nil {
		return nil, err
	}
	for _, state := range []api.State{api.StateWaiting, api.StateJoined} {
		var mine []api.Session
		for _, s := range all {
			if s.Responder == c.user && s.State == state {
				mine = append(mine, s)
			}
		}
		switch len(mine) {
		case 0:
			continue
		case 1:
			return &mine[0], nil
		}
		msg := fmt.Sprintf("%d sessions are %s for you; name one:", len(mine), state)
		for _, s := range mine {
			msg += fmt.Sprintf(" %s (from %s: %s)", s.ID, s.Initiator, s.Manifest.Summary())
		}
		return nil, errors.New(msg)
	}
	return nil, errors.New("no session is waiting for you")
}

// awaitEnd waits for the session's final event: success only if completed.
func (c *Client) awaitEnd(ctx context.Context, w *sessionEvents, id string) (*api.Session, error) {
	ev, err := w.until(ctx, func(ev api.Event) bool { return ev.State.Terminal() && ev.Type != api.EventReported })
	if err != nil {
		return nil, fmt.Errorf("waiting for session %s to complete: %w", id, err)
	}
	if ev.State != api.StateCompleted {
		return nil, fmt.Errorf("session %s %s: %s", id, ev.State, ev.Reason)
	}
	return c.Get(ctx, id)
}

func okReport(r link.Result) api.Report {
	return api.Report{OK: true, Bytes: r.Bytes, CRC32C: r.CRC32C, SHA256: hex.EncodeToString(r.SHA256[:])}
}

// tooLargeHint says what to do when the server refused a manifest of many
// entries for its size (limits.request_bytes): the list of entries travels
// in the create request, while a stream's size does not matter.
func tooLargeHint(err error, m api.Manifest) string {
	if len(m.Files) < 2 || !api.IsBodyTooLarge(err) {
		return ""
	}
	return fmt.Sprintf("; the list of %d entries is too long for one session here: send the folder in parts, "+
		"or as one stream (tar c DIR | sft-cli send - --name DIR.tar)", len(m.Files))
}
