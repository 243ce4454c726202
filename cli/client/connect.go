package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
)

// refusedError is a connection the auth callout refused: an API error with
// its code (so callers treat it like a refused request) that still wraps
// the connect error.
type refusedError struct {
	api *api.Error
	err error
}

func (e *refusedError) Error() string { return e.api.Error() }

func (e *refusedError) Unwrap() []error { return []error{e.api, e.err} }

func refused(err error, code api.Code, msg string) error {
	if err != nil && errors.Is(err, nats.ErrAuthorization) {
		return &refusedError{api: api.Errorf(code, "%s", msg), err: err}
	}
	return err
}

// DialPassword connects as user with a password; the connection may only
// log in. o gives the server, CA, name and logger; its credentials are
// replaced.
func DialPassword(ctx context.Context, o broker.ConnOptions, user, password string) (*nats.Conn, error) {
	if err := api.ValidUserName(user); err != nil {
		return nil, err
	}
	o.User, o.Password, o.Token, o.InboxPrefix = user, password, "", api.InboxPrefix(user)
	nc, err := broker.Connect(ctx, o)
	return nc, refused(err, api.CodeUnauthorized, "wrong user name or password (after repeated failures, wait and retry)")
}

// DialToken connects with user's login token; the connection may send API
// requests and hears only user's own inbox.
func DialToken(ctx context.Context, o broker.ConnOptions, user, token string) (*nats.Conn, error) {
	if err := api.ValidUserName(user); err != nil {
		return nil, err
	}
	o.User, o.Password, o.Token, o.InboxPrefix = "", "", token, api.InboxPrefix(user)
	nc, err := broker.Connect(ctx, o)
	return nc, refused(err, api.CodeUnauthorized, "the login token is expired, revoked or not for this server: run `sft-cli login`")
}

// LogIn logs user in on a password connection, closes it, and returns a
// client on a new connection that presents the token. The caller closes
// the client's connection (Conn).
func LogIn(ctx context.Context, o broker.ConnOptions, user, password string) (*Client, api.LoginReply, error) {
	pnc, err := DialPassword(ctx, o, user, password)
	if err != nil {
		return nil, api.LoginReply{}, err
	}
	c := New(pnc, "", "")
	rep, err := c.Login(ctx, user, password)
	pnc.Close()
	if err != nil {
		return nil, api.LoginReply{}, err
	}
	nc, err := DialToken(ctx, o, user, c.Token())
	if err != nil {
		return nil, api.LoginReply{}, fmt.Errorf("connect with the new token: %w", err)
	}
	return New(nc, user, c.Token()), rep, nil
}

// Conn is the client's NATS connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// Logout revokes the client's token: no new connection is admitted with
// it; the services refuse it on every request from then on, also on
// connections opened before the logout.
func (c *Client) Logout(ctx context.Context) error {
	var rep struct{}
	return c.call(ctx, api.SubjectAuthLogout, struct{}{}, &rep)
}

// errDropped is why a watch lost the server when its connection dropped.
var errDropped = errors.New("connection dropped")

// connWatch follows a connection's state for one watch, and tells status
// when the server becomes unreachable and when the watch has it again. The
// watch owns it and stops it.
type connWatch struct {
	nc     *nats.Conn
	ch     chan nats.Status
	status func(ConnEvent)
	lostAt time.Time // zero while the server is reachable
}

func followConn(nc *nats.Conn, status func(ConnEvent)) *connWatch {
	return &connWatch{nc: nc, ch: nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED), status: status}
}

func (w *connWatch) stop() { w.nc.RemoveStatusListener(w.ch) }

// down records that the server cannot be reached, and says so once.
func (w *connWatch) down(why error) {
	if !w.lostAt.IsZero() {
		return
	}
	w.lostAt = time.Now()
	if w.status != nil {
		w.status(ConnEvent{State: ConnLost, At: w.lostAt, Err: why})
	}
}

// up records that the watch has a relay again, and says so if it had lost
// the server.
func (w *connWatch) up() {
	if w.lostAt.IsZero() {
		return
	}
	since := w.lostAt
	w.lostAt = time.Time{}
	if w.status != nil {
		w.status(ConnEvent{State: ConnRestored, At: time.Now(), Since: since})
	}
}

// waitConnected returns once the connection is up (it reconnects by
// itself, for ever), having said the server is lost if it is not. It fails
// when ctx ends or the connection was closed.
func (w *connWatch) waitConnected(ctx context.Context) error {
	for {
		switch w.nc.Status() {
		case nats.CONNECTED:
			return nil
		case nats.RECONNECTING, nats.DISCONNECTED, nats.CONNECTING:
			w.down(errDropped)
		case nats.CLOSED:
			if err := w.nc.LastError(); err != nil {
				return fmt.Errorf("connection to the server closed: %w", err)
			}
			return nats.ErrConnectionClosed
		default:
			return nats.ErrConnectionDraining // its owner is closing it
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.ch:
		}
	}
}

// changed is signalled when the connection's state changed.
func (w *connWatch) changed() <-chan nats.Status { return w.ch }

// forget drops the changes seen so far: they happened before the relay
// that is about to start.
func (w *connWatch) forget() {
	for {
		select {
		case <-w.ch:
		default:
			return
		}
	}
}

// connected reports whether the connection is up now.
func (w *connWatch) connected() bool { return w.nc.Status() == nats.CONNECTED }
