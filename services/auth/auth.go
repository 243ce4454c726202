// Package auth is the auth service: it checks passwords and issues signed
// tokens that the other services verify locally.
package auth

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/sftproject/sft/services/api"
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
	Logger     *slog.Logger
}

// Service answers sft.v1.auth.*.
type Service struct {
	o        Options
	issuer   *token.Issuer
	throttle *throttle
	dummy    string // hash checked for unknown users, so they cost as much as known ones
}

// New builds the service.
func New(o Options) (*Service, error) {
	dummy, err := HashPassword("sft-timing-equaliser", DefaultHashParams)
	if err != nil {
		return nil, err
	}
	return &Service{o: o, issuer: token.NewIssuer(o.SigningKey, o.TokenTTL), throttle: newThrottle(), dummy: dummy}, nil
}

// Start registers the service on nc; it serves until ctx ends or Stop.
func (s *Service) Start(ctx context.Context, nc *nats.Conn) (micro.Service, error) {
	svc, err := micro.AddService(nc, micro.Config{
		Name:        "sft-auth",
		Version:     "1.0.0",
		Description: "SFT authentication: password login, signed tokens",
		QueueGroup:  api.QueueGroup,
	})
	if err != nil {
		return nil, fmt.Errorf("start auth service: %w", err)
	}
	h := rpc.Handler{Ctx: ctx, Log: s.o.Logger}
	if err := errors.Join(
		svc.AddEndpoint("info", rpc.Public(h, s.info), micro.WithEndpointSubject(api.SubjectAuthInfo)),
		svc.AddEndpoint("login", rpc.Public(h, s.login), micro.WithEndpointSubject(api.SubjectAuthLogin)),
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
		return nil, api.Errorf(api.CodeThrottled, "too many failed logins for %q: retry in %ds", req.User, int(math.Ceil(wait.Seconds())))
	}
	password, err := s.o.SealKey.Open(seal.LoginPasswordInfo(req.User), req.SealedPassword)
	if err != nil {
		return nil, api.Errorf(api.CodeInvalid, "sealed password does not open: seal it to the key from %s for this user", api.SubjectAuthInfo)
	}
	defer clear(password)

	u, err := s.o.Users.GetUser(ctx, req.User)
	hash := s.dummy
	switch {
	case err == nil:
		hash = u.PasswordHash
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("read user: %w", err)
	}
	ok, verr := VerifyPassword(hash, string(password))
	if verr != nil {
		s.o.Logger.Error("stored password hash is unreadable", "user", req.User, "err", verr)
	}
	if err != nil || !ok {
		s.throttle.failed(req.User)
		s.o.Logger.Info("login refused", "user", req.User)
		return nil, errLogin
	}
	s.throttle.succeeded(req.User)

	tok, claims, err := s.issuer.Issue(u.Name, u.Role)
	if err != nil {
		return nil, err
	}
	sealed, err := seal.Seal(req.ReplyKey, seal.LoginTokenInfo(req.User), []byte(tok))
	if err != nil {
		return nil, api.Errorf(api.CodeInvalid, "reply_key is not a valid public key: %v", err)
	}
	s.o.Logger.Info("login", "user", u.Name, "token_id", claims.ID)
	return &api.LoginReply{SealedToken: sealed, ExpiresAt: claims.ExpiresAt}, nil
}
