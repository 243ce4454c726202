// Package rpc is SFT's request-reply convention over NATS micro, both
// sides of it: how a service decodes, authenticates and answers a request,
// and how a caller sends one and turns an error reply back into an
// *api.Error with its stable code.
package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/store"
	"github.com/sftproject/sft/services/token"
)

// MaxBody is the default bound of a request body (Handler.MaxBody); a
// larger one is refused before decoding.
const MaxBody = 64 << 10

// Timeout bounds the work done for one request.
const Timeout = 15 * time.Second

// Caller is the authenticated identity behind a request.
type Caller struct {
	token.Claims
	Token string // the raw bearer token, to forward to another service
	// RequestID names the request across the client's retries
	// (api.RequestIDHeader); empty when the client sent none.
	RequestID string
}

// Verifier checks bearer tokens.
type Verifier interface {
	Verify(string) (token.Claims, error)
}

// Revocations tells whether a token was revoked (its holder logged out)
// before it expired. Implementations answer from memory: it is asked on
// every authenticated request.
type Revocations interface {
	Revoked(tokenID string) bool
}

// ErrRevoked refuses a token that was revoked by a logout.
var ErrRevoked = errors.New("token was revoked by a logout: run `sft-cli login`")

// CheckRevoked returns a Verifier that refuses, besides what v refuses,
// every token r lists as revoked, so an Authed endpoint refuses a logged-out
// token on a connection opened before the logout too (the broker checks
// tokens only when a connection opens).
func CheckRevoked(v Verifier, r Revocations) Verifier { return revocationChecker{v, r} }

type revocationChecker struct {
	v Verifier
	r Revocations
}

func (c revocationChecker) Verify(raw string) (token.Claims, error) {
	claims, err := c.v.Verify(raw)
	if err != nil {
		return token.Claims{}, err
	}
	if c.r.Revoked(claims.ID) {
		return token.Claims{}, ErrRevoked
	}
	return claims, nil
}

// Handler builds micro handlers that share a service context, token
// verifier and logger.
type Handler struct {
	Ctx      context.Context
	Verifier Verifier // nil: endpoints built with Public only
	Log      *slog.Logger
	// MaxBody bounds a request body; 0 means the package's MaxBody.
	MaxBody int
	// Metrics, when set, counts every request by subject and result code
	// and times it.
	Metrics Recorder
}

// Recorder records answered requests: code is "ok" or the error code of
// the reply (services/metrics.Metrics).
type Recorder interface {
	Request(subject, code string, d time.Duration)
}

// codeOK is the result code of a request answered without error.
const codeOK = "ok"

// Authed returns a handler for an endpoint that needs a valid token.
func Authed[Req, Rep any](h Handler, fn func(context.Context, Caller, *Req) (*Rep, error)) micro.Handler {
	return h.handle(true, func(ctx context.Context, c Caller, body []byte) (any, error) {
		var req Req
		if err := Decode(body, &req); err != nil {
			return nil, err
		}
		return fn(ctx, c, &req)
	})
}

// Public returns a handler for an endpoint that needs no token (login, info).
func Public[Req, Rep any](h Handler, fn func(context.Context, *Req) (*Rep, error)) micro.Handler {
	return h.handle(false, func(ctx context.Context, _ Caller, body []byte) (any, error) {
		var req Req
		if err := Decode(body, &req); err != nil {
			return nil, err
		}
		return fn(ctx, &req)
	})
}

func (h Handler) handle(authed bool, fn func(context.Context, Caller, []byte) (any, error)) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		ctx, cancel := context.WithTimeout(h.Ctx, Timeout)
		defer cancel()
		start, code := time.Now(), codeOK
		if h.Metrics != nil {
			defer func() { h.Metrics.Request(r.Subject(), code, time.Since(start)) }()
		}
		// A bug in one handler must not take the whole service down.
		defer func() {
			if p := recover(); p != nil {
				h.Log.Error("handler panicked", "subject", r.Subject(), "panic", p, "stack", string(debug.Stack()))
				code = h.respondError(r, fmt.Errorf("panic: %v", p))
			}
		}()
		rep, err := h.serve(ctx, authed, r, fn)
		if err != nil {
			code = h.respondError(r, err)
			return
		}
		if err := r.RespondJSON(rep); err != nil {
			h.Log.Warn("reply failed", "subject", r.Subject(), "err", err)
		}
	})
}

func (h Handler) serve(ctx context.Context, authed bool, r micro.Request, fn func(context.Context, Caller, []byte) (any, error)) (any, error) {
	limit := h.MaxBody
	if limit <= 0 {
		limit = MaxBody
	}
	if len(r.Data()) > limit {
		return nil, api.BodyTooLarge(len(r.Data()), limit)
	}
	var c Caller
	if authed {
		raw, ok := strings.CutPrefix(r.Headers().Get(api.AuthHeader), "Bearer ")
		if !ok || raw == "" {
			return nil, api.Errorf(api.CodeUnauthorized, "missing token: run `sft-cli login`")
		}
		claims, err := h.Verifier.Verify(raw)
		if err != nil {
			return nil, api.Errorf(api.CodeUnauthorized, "%v", err)
		}
		c = Caller{Claims: claims, Token: raw}
		if id := r.Headers().Get(api.RequestIDHeader); id != "" {
			if err := api.ValidRequestID(id); err != nil {
				return nil, err
			}
			c.RequestID = id
		}
	}
	return fn(ctx, c, r.Data())
}

// respondError answers r with err and returns the code it answered with.
func (h Handler) respondError(r micro.Request, err error) string {
	var e *api.Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, store.ErrUnavailable):
		// The caller can act on this one: the store is failing over or
		// down, and the request may be retried after a re-read.
		h.Log.Warn("request failed: state store unavailable", "subject", r.Subject(), "err", err)
		e = api.Errorf(api.CodeUnavailable, "the state store is unavailable; retry shortly")
	case brokerUnavailable(err):
		// A NATS cluster electing new leaders after losing a node answers
		// nothing for a moment: the caller may retry, as after a restart.
		h.Log.Warn("request failed: a server did not answer", "subject", r.Subject(), "err", err)
		e = api.Errorf(api.CodeUnavailable, "a server the service depends on did not answer in time; retry")
	default:
		// Unexpected failures are logged in full here and answered
		// generically: internals stay out of replies.
		h.Log.Error("request failed", "subject", r.Subject(), "err", err)
		e = api.Errorf(api.CodeInternal, "internal error; the service log has details")
	}
	if rerr := r.Error(string(e.Code), e.Message, nil); rerr != nil {
		h.Log.Warn("error reply failed", "subject", r.Subject(), "err", rerr)
	}
	return string(e.Code)
}

// brokerUnavailable reports whether err says NATS or JetStream did not
// answer (no responders, a timeout, a connection between servers) rather
// than refused.
func brokerUnavailable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrConnectionClosed)
}

// Decode parses a JSON request body strictly: unknown fields, trailing data
// and a missing body are errors, so garbage never half-works.
func Decode(body []byte, v any) error {
	start := bytes.TrimLeft(body, jsonSpace)
	if len(start) == 0 {
		return api.Errorf(api.CodeInvalid, "empty request body: expected a JSON object")
	}
	// json would take null as "leave v alone" and answer as if for an
	// empty request.
	if start[0] != '{' {
		return api.Errorf(api.CodeInvalid, "malformed request body: expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return api.Errorf(api.CodeInvalid, "malformed request body: %v", err)
	}
	// Not dec.More: it reports false for a stray '}' or ']'.
	if rest := bytes.TrimLeft(body[dec.InputOffset():], jsonSpace); len(rest) > 0 {
		return api.Errorf(api.CodeInvalid, "malformed request body: trailing data after the JSON object")
	}
	return nil
}

// jsonSpace is the whitespace JSON allows between tokens.
const jsonSpace = " \t\r\n"

// Call sends req to subject with the bearer token (may be empty) and decodes
// the reply into rep. Error replies become *api.Error.
func Call(ctx context.Context, nc *nats.Conn, subject, bearer string, req, rep any) error {
	return CallID(ctx, nc, subject, bearer, "", req, rep)
}

// CallID is Call with a request id (api.RequestIDHeader; empty: none), which
// the caller keeps the same when it sends the request again.
func CallID(ctx context.Context, nc *nats.Conn, subject, bearer, requestID string, req, rep any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", subject, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = body
	if bearer != "" {
		msg.Header.Set(api.AuthHeader, "Bearer "+bearer)
	}
	if requestID != "" {
		msg.Header.Set(api.RequestIDHeader, requestID)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, Timeout)
		defer cancel()
	}
	resp, err := nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return &noResponders{api.Errorf(api.CodeUnavailable, "no service answers %s: is the %s service running?", subject, serviceOf(subject))}
		}
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
			// Say which side of the bus went quiet: ours, or the service.
			why := "it may be overloaded or down"
			if !nc.IsConnected() {
				why = "the connection to the NATS server is down"
			}
			return fmt.Errorf("no answer from the %s service to %s in time (%s): %w", serviceOf(subject), subject, why, err)
		}
		return fmt.Errorf("request %s: %w", subject, err)
	}
	return DecodeReply(subject, resp.Header, resp.Data, rep)
}

// noResponders is the unavailable error of a request no service answers:
// it is an *api.Error for callers and still nats.ErrNoResponders, so a
// caller that retries can tell it apart.
type noResponders struct{ err *api.Error }

func (e *noResponders) Error() string   { return e.err.Error() }
func (e *noResponders) Unwrap() []error { return []error{e.err, nats.ErrNoResponders} }

// DecodeReply turns a reply into rep, or into an *api.Error when its
// headers say it is an error reply. rep may be nil to ignore the body.
func DecodeReply(subject string, h nats.Header, data []byte, rep any) error {
	if code := h.Get(micro.ErrorCodeHeader); code != "" {
		return &api.Error{Code: api.Code(code), Message: h.Get(micro.ErrorHeader)}
	}
	if rep == nil {
		return nil
	}
	if err := json.Unmarshal(data, rep); err != nil {
		return fmt.Errorf("decode %s reply: %w", subject, err)
	}
	return nil
}

// serviceOf names the service behind a subject (sft.v1.<service>.<op>).
func serviceOf(subject string) string {
	parts := strings.Split(subject, ".")
	if len(parts) >= 3 {
		return parts[2]
	}
	return subject
}
