package auth

import (
	"context"
	"errors"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
)

// errRefused refuses a connection; the client sees only "authorization
// violation", whatever the reason.
var errRefused = errors.New("connection refused")

// Callout outcomes, the label of the decisions metric.
const (
	calloutToken            = "token"    // admitted with a login token
	calloutPassword         = "password" // admitted to log in
	calloutRefusedToken     = "refused_token"
	calloutRefusedPassword  = "refused_password"
	calloutRefusedThrottled = "refused_throttled"
	calloutRefused          = "refused" // no credentials, an invalid name, or the revocation check failed
)

// authorize decides on a client connection and counts the decision.
func (s *Service) authorize(ctx context.Context, c broker.Credentials) (broker.Grant, error) {
	g, outcome, err := s.decide(ctx, c)
	s.o.Metrics.Callout(outcome)
	return g, err
}

// decide decides on a client connection for the NATS auth callout. A
// token (from login) binds the connection to its user with the client
// permissions until the token expires; a user name and password buy a
// connection that may only log in. Password attempts are throttled per
// name and per client address.
func (s *Service) decide(ctx context.Context, c broker.Credentials) (broker.Grant, string, error) {
	switch {
	case c.Token != "":
		claims, err := s.verifier.Verify(c.Token)
		if err != nil {
			s.o.Logger.Info("connection refused: bad token", "host", c.Host, "err", err)
			return broker.Grant{}, calloutRefusedToken, errRefused
		}
		revoked, err := s.revoked.revoked(ctx, claims.ID)
		if err != nil {
			s.o.Logger.Error("connection refused: cannot check revocation", "user", claims.User, "err", err)
			return broker.Grant{}, calloutRefused, errRefused
		}
		if revoked {
			s.o.Logger.Info("connection refused: revoked token", "user", claims.User, "token_id", claims.ID, "host", c.Host)
			return broker.Grant{}, calloutRefusedToken, errRefused
		}
		return broker.Grant{User: claims.User, Expires: claims.ExpiresAt}, calloutToken, nil
	case c.User != "" && c.Password != "":
		if api.ValidUserName(c.User) != nil {
			return broker.Grant{}, calloutRefused, errRefused
		}
		if s.throttle.allow(c.User) > 0 || s.addrThrottle.allow(c.Host) > 0 {
			s.o.Logger.Info("connection refused: throttled", "user", c.User, "host", c.Host)
			return broker.Grant{}, calloutRefusedThrottled, errRefused
		}
		if _, err := s.checkPassword(ctx, c.User, []byte(c.Password)); err != nil {
			s.addrThrottle.failed(c.Host)
			s.o.Logger.Info("connection refused: wrong password", "user", c.User, "host", c.Host)
			return broker.Grant{}, calloutRefusedPassword, errRefused
		}
		// The address count is not reset: one good account must not buy a
		// guesser fresh attempts at the others.
		return broker.Grant{User: c.User, LoginOnly: true}, calloutPassword, nil
	default:
		return broker.Grant{}, calloutRefused, errRefused
	}
}
