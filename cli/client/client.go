// Package client is the Go client of the SFT services: log in, manage
// sessions, fetch keys and watch events. The sft-cli commands and the
// end-to-end tests both go through it, so they exercise one code path.
package client

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/rpc"
	"github.com/sftproject/sft/services/seal"
)

// Client talks to the services over one NATS connection, as one user.
type Client struct {
	nc    *nats.Conn
	token string
	user  string
}

// New returns a client on nc. token may be empty until Login.
func New(nc *nats.Conn, user, token string) *Client {
	return &Client{nc: nc, user: user, token: token}
}

// User is the user the client acts as.
func (c *Client) User() string { return c.user }

// Token is the current bearer token.
func (c *Client) Token() string { return c.token }

// Login authenticates user. The password travels sealed to the auth
// service's key and the token comes back sealed to a key made for this
// call only, so neither is readable on the bus.
func (c *Client) Login(ctx context.Context, user, password string) (api.LoginReply, error) {
	if err := api.ValidUserName(user); err != nil {
		return api.LoginReply{}, err
	}
	var info api.AuthInfoReply
	if err := c.call(ctx, api.SubjectAuthInfo, struct{}{}, &info); err != nil {
		return api.LoginReply{}, err
	}
	sealedPw, err := seal.Seal(info.SealKey, seal.LoginPasswordInfo(user), []byte(password))
	if err != nil {
		return api.LoginReply{}, fmt.Errorf("seal password: %w", err)
	}
	replyKey, err := seal.GenerateKey()
	if err != nil {
		return api.LoginReply{}, err
	}
	var rep api.LoginReply
	req := api.LoginRequest{User: user, SealedPassword: sealedPw, ReplyKey: replyKey.PublicKey()}
	if err := retry(ctx, retryable, func(ctx context.Context) error {
		return rpc.Call(ctx, c.nc, api.SubjectAuthLogin, "", req, &rep)
	}); err != nil {
		return api.LoginReply{}, err
	}
	tok, err := replyKey.Open(seal.LoginTokenInfo(user), rep.SealedToken)
	if err != nil {
		return api.LoginReply{}, fmt.Errorf("open login reply: %w", err)
	}
	c.user, c.token = user, string(tok)
	return rep, nil
}

// Create opens a session as initiator.
func (c *Client) Create(ctx context.Context, req api.CreateRequest) (*api.Session, error) {
	var s api.Session
	return &s, c.call(ctx, api.SubjectSessionCreate, req, &s)
}

// Join joins a session as its responder; with peerAddrs the responder
// listens there and the initiator dials it.
func (c *Client) Join(ctx context.Context, id string, peerAddrs []string) (*api.Session, error) {
	var s api.Session
	req := api.JoinRequest{SessionID: id, PeerAddrs: peerAddrs}
	if len(peerAddrs) > 0 {
		req.PeerHost = HostID()
	}
	return &s, c.call(ctx, api.SubjectSessionJoin, req, &s)
}

// Resume re-attaches to a session after a dropped link or a restart. The
// listening member gives the addresses it listens at now (none: only
// through the relay); the dialing member gives nil.
func (c *Client) Resume(ctx context.Context, id string, peerAddrs []string) (*api.Session, error) {
	var s api.Session
	return &s, c.call(ctx, api.SubjectSessionResume, api.ResumeRequest{SessionID: id, PeerAddrs: peerAddrs, PeerHost: HostID()}, &s)
}

// RelayTicket asks for the relay addresses and a ticket for one
// connection of this member's side of a joined session.
func (c *Client) RelayTicket(ctx context.Context, id string) (*api.RelayReply, error) {
	var r api.RelayReply
	// "Unavailable" here means this server offers no relay.
	return &r, c.callAnswered(ctx, api.SubjectSessionRelay, api.RelayRequest{SessionID: id}, &r)
}

// Get reads a session.
func (c *Client) Get(ctx context.Context, id string) (*api.Session, error) {
	var s api.Session
	return &s, c.call(ctx, api.SubjectSessionGet, api.SessionRequest{SessionID: id}, &s)
}

// List returns the user's sessions, newest first; state filters when set.
// The oldest may be left out when they do not fit in one reply (ListReply).
func (c *Client) List(ctx context.Context, state api.State) ([]api.Session, error) {
	rep, err := c.ListReply(ctx, state)
	if err != nil {
		return nil, err
	}
	return rep.Sessions, nil
}

// ListReply is List with the count of sessions left out.
func (c *Client) ListReply(ctx context.Context, state api.State) (*api.ListReply, error) {
	var rep api.ListReply
	return &rep, c.call(ctx, api.SubjectSessionList, api.ListRequest{State: state}, &rep)
}

// Status is every service replica on the bus and the open sessions; only
// an admin may ask.
func (c *Client) Status(ctx context.Context) (*api.StatusReply, error) {
	var rep api.StatusReply
	return &rep, c.call(ctx, api.SubjectSessionStatus, api.StatusRequest{}, &rep)
}

// Report records this member's outcome.
func (c *Client) Report(ctx context.Context, id string, r api.Report) (*api.Session, error) {
	var s api.Session
	return &s, c.call(ctx, api.SubjectSessionReport, api.ReportRequest{SessionID: id, Report: r}, &s)
}

// Cancel cancels a session.
func (c *Client) Cancel(ctx context.Context, id, reason string) (*api.Session, error) {
	var s api.Session
	return &s, c.call(ctx, api.SubjectSessionCancel, api.CancelRequest{SessionID: id, Reason: reason}, &s)
}

// Decline refuses a waiting session as its responder, telling the initiator
// why: with end the session is cancelled, without it keeps waiting for a
// later try.
func (c *Client) Decline(ctx context.Context, id, reason string, end bool) (*api.Session, error) {
	var s api.Session
	return &s, c.call(ctx, api.SubjectSessionDecline, api.DeclineRequest{SessionID: id, Reason: reason, End: end}, &s)
}

// Key fetches the session key, sealed in transit to a key made for this
// call. The caller should clear it when done.
func (c *Client) Key(ctx context.Context, id string) ([]byte, error) {
	k, err := seal.GenerateKey()
	if err != nil {
		return nil, err
	}
	var rep api.KeyReply
	if err := c.call(ctx, api.SubjectKeyGet, api.KeyRequest{SessionID: id, ReplyKey: k.PublicKey()}, &rep); err != nil {
		return nil, err
	}
	key, err := k.Open(seal.SessionKeyInfo(id), rep.SealedKey)
	if err != nil {
		return nil, fmt.Errorf("open session key: %w", err)
	}
	if len(key) != 32 {
		clear(key)
		return nil, fmt.Errorf("session key has %d bytes, want 32", len(key))
	}
	return key, nil
}
