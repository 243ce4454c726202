package client

import (
	"context"
	"errors"
	"fmt"

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
