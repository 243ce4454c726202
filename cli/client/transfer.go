package client

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/sftproject/sft/link"
	"github.com/sftproject/sft/services/api"
)

// SendOptions describe one outgoing transfer.
type SendOptions struct {
	To             string        // the responder's user name
	Path           string        // the file to send
	Listen         string        // peer link listen address (host:port, port 0 = any)
	Advertise      string        // address the peer dials, when it differs from Listen (NAT, port forwarding)
	ConnectTimeout time.Duration // wait for the peer's connection once it joined
	// OnSession is told the session as soon as it exists, so a user can
	// pass its id to the receiver.
	OnSession func(*api.Session)
	Progress  func(done, total int64)
	Logger    *slog.Logger
}

// Outcome is a verified transfer.
type Outcome struct {
	Session *api.Session // in its final state
	Result  link.Result
	Path    string // where the receiver stored the file
}

// Send offers a file to o.To and streams it once they join. It returns only
// when the session service confirmed both sides' checks (completed), or
// with an error, after leaving the session cancelled or failed.
func (c *Client) Send(ctx context.Context, o SendOptions) (*Outcome, error) {
	f, err := os.Open(o.Path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", o.Path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", o.Path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", o.Path)
	}
	manifest := api.Manifest{Files: []api.File{{Name: filepath.Base(o.Path), Size: st.Size()}}}

	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen for the peer on %s: %w", o.Listen, err)
	}
	defer ln.Close()
	addr := o.Advertise
	if addr == "" {
		if tcp, ok := ln.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
			return nil, fmt.Errorf("listen address %s does not say where the peer should connect: give a host (--listen HOST:PORT) or --advertise HOST:PORT", o.Listen)
		}
		addr = ln.Addr().String()
	}

	sess, err := c.Create(ctx, api.CreateRequest{Responder: o.To, Manifest: manifest, PeerAddr: addr})
	if err != nil {
		return nil, fmt.Errorf("create session: %w", err)
	}
	if o.OnSession != nil {
		o.OnSession(sess)
	}
	w := c.watchSession(ctx, sess.ID)
	defer w.stop()

	res, err := c.sendOn(ctx, o, sess, w, ln, f, manifest)
	if err != nil {
		c.abandon(ctx, sess.ID, err)
		return nil, err
	}
	final, err := c.awaitEnd(ctx, w, sess.ID)
	if err != nil {
		return nil, err
	}
	return &Outcome{Session: final, Result: res}, nil
}

func (c *Client) sendOn(ctx context.Context, o SendOptions, sess *api.Session, w *sessionEvents, ln net.Listener, f *os.File, m api.Manifest) (link.Result, error) {
	ev, err := w.until(ctx, func(ev api.Event) bool { return ev.Type == api.EventJoined || ev.State.Terminal() })
	if err != nil {
		return link.Result{}, fmt.Errorf("waiting for %s to join: %w", o.To, err)
	}
	if ev.Type != api.EventJoined {
		return link.Result{}, fmt.Errorf("session %s %s: %s", sess.ID, ev.State, ev.Reason)
	}
	key, err := c.Key(ctx, sess.ID)
	if err != nil {
		return link.Result{}, fmt.Errorf("get session key: %w", err)
	}
	defer clear(key)

	actx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	conn, err := link.Accept(actx, ln, key, sess.ID, link.Options{Logger: o.Logger})
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return link.Result{}, fmt.Errorf("%s joined but did not connect to %s within %s", o.To, ln.Addr(), o.ConnectTimeout)
		}
		return link.Result{}, fmt.Errorf("wait for peer: %w", err)
	}
	defer conn.Close()
	total := m.TotalSize()
	res, err := conn.Send(ctx, m, f, progress(o.Progress, total))
	if err != nil {
		return link.Result{}, fmt.Errorf("send %s: %w", m.Files[0].Name, err)
	}
	if _, err := c.Report(ctx, sess.ID, okReport(res)); err != nil {
		return link.Result{}, fmt.Errorf("report result: %w", err)
	}
	return res, nil
}

// ReceiveOptions describe one incoming transfer.
type ReceiveOptions struct {
	SessionID      string // empty: the one session waiting for this user
	Dir            string // destination directory
	Overwrite      bool
	ConnectTimeout time.Duration // dial timeout to the sender
	OnSession      func(*api.Session)
	Progress       func(done, total int64)
	Logger         *slog.Logger
}

// Receive joins a session, fetches the file into o.Dir and returns once the
// session service confirmed the transfer. Refusals that need no peer (an
// unsafe name, an existing file) happen before joining, so the session
// stays open for a retry with other options.
func (c *Client) Receive(ctx context.Context, o ReceiveOptions) (*Outcome, error) {
	sess, err := c.pick(ctx, o.SessionID)
	if err != nil {
		return nil, err
	}
	if sess.Responder != c.user {
		return nil, fmt.Errorf("session %s is for %s, not for you (%s)", sess.ID, sess.Responder, c.user)
	}
	if sess.State != api.StateWaiting {
		return nil, fmt.Errorf("session %s is %s, not waiting", sess.ID, sess.State)
	}
	if len(sess.Manifest.Files) != 1 {
		return nil, fmt.Errorf("session %s offers %d files; this version receives exactly one", sess.ID, len(sess.Manifest.Files))
	}
	name := sess.Manifest.Files[0].Name
	if err := link.SafeName(name); err != nil {
		return nil, fmt.Errorf("refusing session %s: %w", sess.ID, err)
	}
	if st, err := os.Stat(o.Dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("destination %s is not a directory", o.Dir)
	}
	dst := filepath.Join(o.Dir, name)
	if _, err := os.Lstat(dst); err == nil && !o.Overwrite {
		return nil, fmt.Errorf("%s already exists (use --overwrite to replace it)", dst)
	}
	if o.OnSession != nil {
		o.OnSession(sess)
	}

	sess, err = c.Join(ctx, sess.ID)
	if err != nil {
		return nil, fmt.Errorf("join session: %w", err)
	}
	w := c.watchSession(ctx, sess.ID)
	defer w.stop()

	res, path, err := c.receiveOn(ctx, o, sess)
	if err != nil {
		c.abandon(ctx, sess.ID, err)
		return nil, err
	}
	final, err := c.awaitEnd(ctx, w, sess.ID)
	if err != nil {
		return nil, err
	}
	return &Outcome{Session: final, Result: res, Path: path}, nil
}

func (c *Client) receiveOn(ctx context.Context, o ReceiveOptions, sess *api.Session) (link.Result, string, error) {
	key, err := c.Key(ctx, sess.ID)
	if err != nil {
		return link.Result{}, "", fmt.Errorf("get session key: %w", err)
	}
	defer clear(key)
	// The sender accepts only once it has heard of the join and fetched the
	// key, so the handshake may wait as long as the connection may.
	conn, err := link.Dial(ctx, sess.PeerAddr, key, sess.ID, link.Options{DialTimeout: o.ConnectTimeout, HandshakeTimeout: o.ConnectTimeout, Logger: o.Logger})
	if err != nil {
		return link.Result{}, "", err
	}
	defer conn.Close()
	total := sess.Manifest.TotalSize()
	res, path, err := conn.Receive(ctx, sess.Manifest, o.Dir, link.ReceiveOptions{Overwrite: o.Overwrite, Progress: progress(o.Progress, total)})
	if err != nil {
		return link.Result{}, "", fmt.Errorf("receive %s: %w", sess.Manifest.Files[0].Name, err)
	}
	if _, err := c.Report(ctx, sess.ID, okReport(res)); err != nil {
		return link.Result{}, "", fmt.Errorf("report result: %w", err)
	}
	return res, path, nil
}

// pick returns the named session, or the only one waiting for the user.
func (c *Client) pick(ctx context.Context, id string) (*api.Session, error) {
	if id != "" {
		return c.Get(ctx, id)
	}
	all, err := c.List(ctx, api.StateWaiting)
	if err != nil {
		return nil, err
	}
	var mine []api.Session
	for _, s := range all {
		if s.Responder == c.user {
			mine = append(mine, s)
		}
	}
	switch len(mine) {
	case 0:
		return nil, errors.New("no session is waiting for you")
	case 1:
		return &mine[0], nil
	}
	msg := fmt.Sprintf("%d sessions are waiting for you; name one:", len(mine))
	for _, s := range mine {
		msg += fmt.Sprintf(" %s (from %s: %s)", s.ID, s.Initiator, s.Manifest.Files[0].Name)
	}
	return nil, errors.New(msg)
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

// abandon leaves a session that this side cannot finish in the right state:
// cancelled if nobody joined yet, failed with the reason otherwise. It runs
// even when ctx was cancelled (Ctrl-C), with its own short deadline.
func (c *Client) abandon(ctx context.Context, id string, cause error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	sess, err := c.Get(ctx, id)
	if err != nil || sess.State.Terminal() {
		return
	}
	if sess.State == api.StateWaiting {
		_, _ = c.Cancel(ctx, id, cause.Error())
		return
	}
	_, _ = c.Report(ctx, id, api.Report{OK: false, Error: cause.Error()})
}

func okReport(r link.Result) api.Report {
	return api.Report{OK: true, Bytes: r.Bytes, CRC32C: r.CRC32C, SHA256: hex.EncodeToString(r.SHA256[:])}
}

func progress(fn func(done, total int64), total int64) func(int64) {
	if fn == nil {
		return nil
	}
	return func(n int64) { fn(n, total) }
}
