// Package auth is the auth service: it checks passwords and issues signed
// tokens that the other services verify locally.
package auth

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/services/rpc"
	"github.com/sftproject/sft/services/seal"
	"github.com/sftproject/sft/services/store"
	"github.com/sftproject/sft/services/token"
)

// Users is the part of the state store the auth service reads.
type Users interface {
	GetUser(ctx context.Context, name string) (*store.User, error)
}

// Options are the auth service's settings and keys.
type Options struct {
	Users      Users
	SigningKey ed25519.PrivateKey // signs tokens
	SealKey    *seal.PrivateKey   // opens sealed passwords
	TokenTTL   time.Duration
	// Callout keys: with them the service also answers the NATS server's
	// auth callout, deciding every client connection (nil: it does not).
	Callout *broker.CalloutKeys
	// AddressFailures is how many failed password connects one client
	// address may make before each further one waits longer and longer
	// (0: DefaultAddressFailures). Many users may share an address (NAT),
	// so it is well above the per-name allowance.
	AddressFailures int
	Logger          *slog.Logger
	// Metrics records requests, logins and callout decisions (nil: none).
	Metrics Metrics
	// Replicas is the replica count of the revoked-tokens bucket, which
	// the auth service owns (0 means 1).
	Replicas int
}

// Metrics is what the auth service records (services/metrics.Metrics).
type Metrics interface {
	rpc.Recorder
	Login(outcome string)   // ok, wrong_password, throttled
	Callout(outcome string) // see the callout* outcomes
}

// Login outcomes, as services/metrics names them.
const (
	loginOK            = "ok"
	loginWrongPassword = "wrong_password"
	loginThrottled     = "throttled"
)

type noMetrics struct{}

func (noMetrics) Request(string, string, time.Duration) {}
func (noMetrics) Login(string)                          {}
func (noMetrics) Callout(string)                        {}

// DefaultAddressFailures is Options.AddressFailures when unset.
const DefaultAddressFailures = 20

// Service answers sft.v1.auth.*.
type Service struct {
	o            Options
	issuer       *token.Issuer
	verifier     *token.Verifier
	throttle     *throttle       // failed passwords per user name
	addrThrottle *throttle       // failed passwords per client address
	revoked      *revocations    // the bucket, for connects and logouts
	revokedList  *RevocationList // its local copy, for requests
	dummy        string          // hash checked for unknown users, so they cost as much as known ones
}

// New builds the service.
func New(o Options) (*Service, error) {
	dummy, err := HashPassword("sft-timing-equaliser", DefaultHashParams)
	if err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = noMetrics{}
	}
	return &Service{
		o: o, issuer: token.NewIssuer(o.SigningKey, o.TokenTTL), verifier: token.NewVerifier(o.SigningKey.Public().(ed25519.PublicKey)),
		throttle: newThrottle(), addrThrottle: newAddrThrottle(cmp.Or(o.AddressFailures, DefaultAddressFailures)), dummy: dummy,
	}, nil
}

// Start registers the service on nc; it serves until ctx ends or Stop.
// With callout keys it also answers the auth callout, which Stop ends too.
// Call Wait after ctx ended.
func (s *Service) Start(ctx context.Context, nc *nats.Conn) (micro.Service, error) {
	rev, err := openRevocations(ctx, nc, s.o.TokenTTL, s.o.Replicas)
	if err != nil {
		return nil, fmt.Errorf("start auth service: %w", err)
	}
	s.revoked = rev
	if s.revokedList, err = WatchRevocations(ctx, nc, s.o.TokenTTL, s.o.Replicas, s.o.Logger); err != nil {
		return nil, fmt.Errorf("start auth service: %w", err)
	}
	var callout *nats.Subscription
	if s.o.Callout != nil {
		callout, err = broker.ServeCallout(ctx, nc, *s.o.Callout, s.authorize, s.o.Logger)
		if err != nil {
			return nil, fmt.Errorf("start auth service: %w", err)
		}
	}
	svc, err := rpc.AddService(nc, micro.Config{
		Name:        "sft-auth",
		Version:     "1.0.0",
		Description: "SFT authentication: password login, signed tokens",
		QueueGroup:  api.QueueGroup,
		// The callout goes with the service: a stopped auth replica no
		// longer admits connections.
		DoneHandler: func(micro.Service) {
			if callout != nil {
				_ = callout.Drain()
			}
		},
	}, 1)
	if err != nil {
		if callout != nil {
			_ = callout.Unsubscribe()
		}
		return nil, fmt.Errorf("start auth service: %w", err)
	}
	h := rpc.Handler{Ctx: ctx, Log: s.o.Logger, Verifier: rpc.CheckRevoked(s.verifier, s.revokedList), Metrics: s.o.Metrics}
	if err := errors.Join(
		svc.AddEndpoint("info", rpc.Public(h, s.info), micro.WithEndpointSubject(api.SubjectAuthInfo)),
		svc.AddEndpoint("login", rpc.Public(h, s.login), micro.WithEndpointSubject(api.SubjectAuthLogin)),
		svc.AddEndpoint("logout", rpc.Authed(h, s.logout), micro.WithEndpointSubject(api.SubjectAuthLogout)),
	); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("start auth service: %w", err)
	}
	return svc, nil
}

func (s *Service) info(context.Context, *struct{}) (*api.AuthInfoReply, error) {
	return &api.AuthInfoReply{
		SealKey:  s.o.SealKey.PublicKey(),
		TokenKey: s.o.SigningKey.Public().(ed25519.PublicKey),
	}, nil
}

// errLogin is the one answer to every bad credential, so a caller cannot
// tell an unknown user from a wrong password.
var errLogin = api.Errorf(api.CodeUnauthorized, "wrong user name or password")

func (s *Service) login(ctx context.Context, req *api.LoginRequest) (*api.LoginReply, error) {
	if err := api.ValidUserName(req.User); err != nil {
		return nil, err
	}
	if len(req.ReplyKey) == 0 || len(req.SealedPassword) == 0 {
		return nil, api.Errorf(api.CodeInvalid, "login needs sealed_password and reply_key")
	}
	if err := seal.CheckPublicKey(req.ReplyKey); err != nil {
		return nil, api.Errorf(api.CodeInvalid, "reply_key is not a valid public key")
	}
	if wait := s.throttle.allow(req.User); wait > 0 {
		s.o.Metrics.Login(loginThrottled)
		return nil, api.Errorf(api.CodeThrottled, "too many failed logins for %q: retry in %ds", req.User, int(math.Ceil(wait.Seconds())))
	}
	password, err := s.o.SealKey.Open(seal.LoginPasswordInfo(req.User), req.SealedPassword)
	if err != nil {
		return nil, api.Errorf(api.CodeInvalid, "sealed password does not open: seal it to the key from %s for this user", api.SubjectAuthInfo)
	}
	defer clear(password)
	u, err := s.checkPassword(ctx, req.User, password)
	if errors.Is(err, errLogin) {
		s.o.Metrics.Login(loginWrongPassword)
	}
	if err != nil {
		return nil, err
	}
	tok, claims, err := s.issuer.Issue(u.Name, u.Role)
	if err != nil {
		return nil, err
	}
	sealed, err := seal.Seal(req.ReplyKey, seal.LoginTokenInfo(req.User), []byte(tok))
	if err != nil {
		return nil, api.Errorf(api.CodeInvalid, "reply_key is not a valid public key: %v", err)
	}
	s.o.Metrics.Login(loginOK)
	s.o.Logger.Info("login", "user", u.Name, "token_id", claims.ID)
	return &api.LoginReply{SealedToken: sealed, ExpiresAt: claims.ExpiresAt}, nil
}

// checkPassword verifies name's password and counts the outcome in the
// per-name throttle. Every refusal is errLogin.
func (s *Service) checkPassword(ctx context.Context, name string, password []byte) (*store.User, error) {
	u, err := s.o.Users.GetUser(ctx, name)
	hash := s.dummy
	switch {
	case err == nil:
		hash = u.PasswordHash
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("read user: %w", err)
	}
	ok, verr := VerifyPassword(hash, string(password))
	if verr != nil {
		s.o.Logger.Error("stored password hash is unreadable", "user", name, "err", verr)
	}
	if err != nil || !ok {
		s.throttle.failed(name)
		s.o.Logger.Info("login refused", "user", name)
		return nil, errLogin
	}
	s.throttle.succeeded(name)
	return u, nil
}

// Wait blocks until the service's background work (the revoked-token
// watch) stopped after Start's context ended.
func (s *Service) Wait() {
	if s.revokedList != nil {
		s.revokedList.Wait()
	}
}

// logout revokes the caller's token: no new connection is admitted with
// it, and every service refuses its requests, on connections already open
// too. The answer waits until this service's own copy of the list has the
// id: the other services' copies are fed by the same stream at the same
// moment, so by the time the caller reads the answer they have it too.
func (s *Service) logout(ctx context.Context, c rpc.Caller, _ *struct{}) (*struct{}, error) {
	if err := s.revoked.revoke(ctx, c.ID, c.ExpiresAt); err != nil {
		return nil, err
	}
	if err := s.revokedList.waitFor(ctx, c.ID); err != nil {
		// Stored, so refused at the next connect; say so rather than fail.
		s.o.Logger.Warn("logout stored but not yet seen by the revoked-token watch", "token_id", c.ID, "err", err)
	}
	s.o.Logger.Info("logout", "user", c.User, "token_id", c.ID)
	return &struct{}{}, nil
}
