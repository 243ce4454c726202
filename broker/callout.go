package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/sftproject/sft/api"
)

// CalloutKeys are the keys of the auth callout service: Issuer, an account
// signing key, signs its answers (the server trusts only its public key);
// XKey, a curve key, opens the server's requests and seals the answers, so
// the passwords and tokens inside them never cross the bus in clear.
type CalloutKeys struct {
	Issuer nkeys.KeyPair
	XKey   nkeys.KeyPair
}

// ParseCalloutKeys builds CalloutKeys from an account seed and a curve seed.
func ParseCalloutKeys(issuerSeed, xkeySeed []byte) (CalloutKeys, error) {
	iss, err := nkeys.FromSeed(issuerSeed)
	if err != nil {
		return CalloutKeys{}, fmt.Errorf("auth callout issuer seed: %w", err)
	}
	if p, _ := iss.PublicKey(); !nkeys.IsValidPublicAccountKey(p) {
		return CalloutKeys{}, errors.New("auth callout issuer seed is not an account key")
	}
	xk, err := nkeys.FromCurveSeed(xkeySeed)
	if err != nil {
		return CalloutKeys{}, fmt.Errorf("auth callout xkey seed: %w", err)
	}
	return CalloutKeys{Issuer: iss, XKey: xk}, nil
}

// Public returns the public keys the server's auth_callout block names.
func (k CalloutKeys) Public() (issuer, xkey string, err error) {
	if issuer, err = k.Issuer.PublicKey(); err != nil {
		return "", "", err
	}
	if xkey, err = k.XKey.PublicKey(); err != nil {
		return "", "", err
	}
	return issuer, xkey, nil
}

// Credentials are what a connecting client presented, and from where.
type Credentials struct {
	User, Password string // a password login
	Token          string // a login token
	Host           string // the client's address as the server saw it
}

// Grant is the identity a connection is bound to and what it may do.
type Grant struct {
	User      string
	LoginOnly bool      // LoginPermissions instead of ClientPermissions
	Expires   time.Time // the server closes the connection then; zero: loginGrantTTL
}

// Authorizer decides on one connection; any error refuses it.
type Authorizer func(ctx context.Context, c Credentials) (Grant, error)

// calloutParallel bounds the callout requests one replica decides at once.
const calloutParallel = 4

// errCalloutRequest marks a request that did not come from the server.
var errCalloutRequest = errors.New("auth callout request refused")

// ServeCallout answers the server's auth callout on nc (a connection of an
// auth_users user) until ctx ends or the subscription is drained: every
// client connection is decided by authorize. Replicas share the work in the
// services' queue group. At most calloutParallel requests are decided at
// once: enough that a token check never waits long behind a password check
// (slow on purpose), few enough to bound what a flood of connects costs.
func ServeCallout(ctx context.Context, nc *nats.Conn, keys CalloutKeys, authorize Authorizer, log *slog.Logger) (*nats.Subscription, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	slots := make(chan struct{}, calloutParallel)
	sub, err := nc.QueueSubscribe(server.AuthCalloutSubject, api.QueueGroup, func(m *nats.Msg) {
		slots <- struct{}{} // when all are busy, the subscription waits: back-pressure
		go func() {
			defer func() { <-slots }()
			answer, err := answerCallout(ctx, keys, authorize, m, log)
			if err != nil {
				// Not from the server (or not for us): no answer, the server
				// times the connection out.
				log.Warn("auth callout request dropped", "err", err)
				return
			}
			if err := m.Respond(answer); err != nil {
				log.Warn("auth callout answer not sent", "err", err)
			}
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to the auth callout: %w", err)
	}
	return sub, nil
}

func answerCallout(ctx context.Context, keys CalloutKeys, authorize Authorizer, m *nats.Msg, log *slog.Logger) ([]byte, error) {
	serverXKey := m.Header.Get(server.AuthRequestXKeyHeader)
	if serverXKey == "" {
		return nil, fmt.Errorf("%w: not encrypted", errCalloutRequest)
	}
	plain, err := keys.XKey.Open(m.Data, serverXKey)
	if err != nil {
		return nil, fmt.Errorf("%w: does not open: %v", errCalloutRequest, err)
	}
	// Decoding verifies the signature against the claimed issuer; the
	// checks below tie that issuer to the server that asked.
	req, err := jwt.DecodeAuthorizationRequestClaims(string(plain))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCalloutRequest, err)
	}
	switch {
	case !nkeys.IsValidPublicServerKey(req.Issuer) || req.Issuer != req.Server.ID:
		return nil, fmt.Errorf("%w: issuer %q is not the requesting server", errCalloutRequest, req.Issuer)
	case req.Audience != server.AuthRequestSubject:
		return nil, fmt.Errorf("%w: audience %q", errCalloutRequest, req.Audience)
	case req.Server.XKey != serverXKey:
		return nil, fmt.Errorf("%w: xkey header does not match the signed one", errCalloutRequest)
	case !nkeys.IsValidPublicUserKey(req.UserNkey):
		return nil, fmt.Errorf("%w: no user key", errCalloutRequest)
	}

	co := req.ConnectOptions
	creds := Credentials{User: co.Username, Password: co.Password, Token: co.Token, Host: req.ClientInformation.Host}
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	g, err := authorize(ctx, creds)
	if err == nil {
		resp.Jwt, err = userJWT(keys, req.UserNkey, g)
	}
	if err != nil {
		// The client learns only that it was refused; the reason is logged
		// by the authorizer, never returned into the server's log.
		log.Debug("connection refused", "user", co.Username, "host", creds.Host)
		resp.Jwt, resp.Error = "", "not authorized"
	}
	signed, err := resp.Encode(keys.Issuer)
	if err != nil {
		return nil, fmt.Errorf("sign auth callout answer: %w", err)
	}
	return keys.XKey.Seal([]byte(signed), serverXKey)
}

func userJWT(keys CalloutKeys, userNkey string, g Grant) (string, error) {
	if err := api.ValidUserName(g.User); err != nil {
		return "", err
	}
	uc := jwt.NewUserClaims(userNkey)
	uc.Name = g.User
	// Outside operator mode the audience names the account: the global one.
	uc.Audience = server.DEFAULT_GLOBAL_ACCOUNT
	exp := g.Expires
	if g.LoginOnly || exp.IsZero() {
		exp = time.Now().Add(loginGrantTTL)
	}
	uc.Expires = exp.Unix()
	if g.LoginOnly {
		uc.Permissions = LoginPermissions(g.User)
	} else {
		uc.Permissions = ClientPermissions(g.User)
	}
	return uc.Encode(keys.Issuer)
}
