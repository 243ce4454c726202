package rpc_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/sftproject/sft/services/rpc"
	"github.com/sftproject/sft/services/store"
	"github.com/sftproject/sft/services/token"
)

// startNATS runs a plain NATS server on a random port for the test.
func startNATS(t *testing.T) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return srv.ClientURL()
}

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

const secretDetail = "db password is hunter2"

type whoami struct {
	User string `json:"user"`
	Role string `json:"role"`
}

type fixture struct {
	nc      *nats.Conn // the caller's connection
	issuer  *token.Issuer
	key     ed25519.PrivateKey
	log     *syncbuf.Buffer
	revoked *revokedSet // the service's revoked token ids
}

// revokedSet is an rpc.Revocations the test fills by hand (the one that
// follows the bus is tested with the auth service).
type revokedSet struct{ ids sync.Map }

func (r *revokedSet) Revoked(id string) bool { _, ok := r.ids.Load(id); return ok }
func (r *revokedSet) revoke(id string)       { r.ids.Store(id, true) }

// startService serves a test micro service built with rpc.Public and
// rpc.Authed on a real NATS server.
func startService(t *testing.T) *fixture {
	t.Helper()
	url := startNATS(t)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	revoked := &revokedSet{}
	h := rpc.Handler{
		Ctx:      t.Context(),
		Verifier: rpc.CheckRevoked(token.NewVerifier(key.Public().(ed25519.PublicKey)), revoked),
		Log:      slog.New(slog.NewTextHandler(logs, nil)),
	}
	svcConn := connect(t, url)
	svc, err := micro.AddService(svcConn, micro.Config{Name: "sft-test", Version: "1.0.0", QueueGroup: api.QueueGroup})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	endpoints := map[string]micro.Handler{
		"echo": rpc.Public(h, func(_ context.Context, r *api.SessionRequest) (*api.SessionRequest, error) {
			return r, nil
		}),
		"conflict": rpc.Public(h, func(context.Context, *struct{}) (*struct{}, error) {
			return nil, api.Errorf(api.CodeConflict, "session %s is busy", "abcdefghijklmnop")
		}),
		"wrapped": rpc.Public(h, func(context.Context, *struct{}) (*struct{}, error) {
			return nil, fmt.Errorf("load: %w", api.Errorf(api.CodeNotFound, "no session x"))
		}),
		"broken": rpc.Public(h, func(context.Context, *struct{}) (*struct{}, error) {
			return nil, fmt.Errorf("query store: %s", secretDetail)
		}),
		"storedown": rpc.Public(h, func(context.Context, *struct{}) (*struct{}, error) {
			return nil, fmt.Errorf("update session x: %w: %s", store.ErrUnavailable, secretDetail)
		}),
		"panics": rpc.Public(h, func(context.Context, *struct{}) (*struct{}, error) {
			panic("nil map in " + secretDetail)
		}),
		"deadline": rpc.Public(h, func(ctx context.Context, _ *struct{}) (*struct{}, error) {
			if _, ok := ctx.Deadline(); !ok {
				return nil, api.Errorf(api.CodeInternal, "handler context has no deadline")
			}
			return &struct{}{}, nil
		}),
		"whoami": rpc.Authed(h, func(_ context.Context, c rpc.Caller, _ *struct{}) (*whoami, error) {
			if c.Token == "" {
				return nil, api.Errorf(api.CodeInternal, "caller has no raw token")
			}
			return &whoami{User: c.User, Role: c.Role}, nil
		}),
	}
	for name, fn := range endpoints {
		if err := svc.AddEndpoint(name, fn, micro.WithEndpointSubject("sft.v1.test."+name)); err != nil {
			t.Fatal(err)
		}
	}
	// The subscriptions must reach the server before a caller's request does.
	if err := svcConn.Flush(); err != nil {
		t.Fatal(err)
	}
	return &fixture{nc: connect(t, url), issuer: token.NewIssuer(key, time.Hour), key: key, log: logs, revoked: revoked}
}

func wantAPIError(t *testing.T, err error, code api.Code, msgPart string) *api.Error {
	t.Helper()
	var e *api.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *api.Error %q", err, err, code)
	}
	if e.Code != code || !strings.Contains(e.Message, msgPart) {
		t.Fatalf("error = %q, want code %q and a message containing %q", e, code, msgPart)
	}
	return e
}

func TestCallRoundTrip(t *testing.T) {
	f := startService(t)
	var rep api.SessionRequest
	if err := rpc.Call(t.Context(), f.nc, "sft.v1.test.echo", "", api.SessionRequest{SessionID: "abc"}, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.SessionID != "abc" {
		t.Fatalf("echo = %+v", rep)
	}
	// A nil reply target discards the body.
	if err := rpc.Call(t.Context(), f.nc, "sft.v1.test.echo", "", api.SessionRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	// The handler's context is bounded even though the service's is not.
	if err := rpc.Call(t.Context(), f.nc, "sft.v1.test.deadline", "", struct{}{}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestCallErrors(t *testing.T) {
	f := startService(t)
	ctx := t.Context()

	t.Run("api error", func(t *testing.T) {
		e := wantAPIError(t, rpc.Call(ctx, f.nc, "sft.v1.test.conflict", "", struct{}{}, nil), api.CodeConflict, "")
		if e.Message != "session abcdefghijklmnop is busy" {
			t.Fatalf("message = %q", e.Message)
		}
	})
	t.Run("wrapped api error keeps its code", func(t *testing.T) {
		wantAPIError(t, rpc.Call(ctx, f.nc, "sft.v1.test.wrapped", "", struct{}{}, nil), api.CodeNotFound, "no session x")
	})
	t.Run("non-api error is internal and generic", func(t *testing.T) {
		e := wantAPIError(t, rpc.Call(ctx, f.nc, "sft.v1.test.broken", "", struct{}{}, nil), api.CodeInternal, "")
		if strings.Contains(e.Message, "hunter2") || strings.Contains(e.Message, "query store") {
			t.Fatalf("internal detail leaked into the reply: %q", e.Message)
		}
		// ... but it is in the service log, for the operator.
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(f.log.String(), secretDetail) {
			if time.Now().After(deadline) {
				t.Fatalf("the failure was not logged; log:\n%s", f.log.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("an unavailable store is unavailable, without details", func(t *testing.T) {
		e := wantAPIError(t, rpc.Call(ctx, f.nc, "sft.v1.test.storedown", "", struct{}{}, nil), api.CodeUnavailable, "retry")
		if strings.Contains(e.Message, "hunter2") {
			t.Fatalf("store detail leaked into the reply: %q", e.Message)
		}
	})
	t.Run("panic is internal and the service lives on", func(t *testing.T) {
		e := wantAPIError(t, rpc.Call(ctx, f.nc, "sft.v1.test.panics", "", struct{}{}, nil), api.CodeInternal, "")
		if strings.Contains(e.Message, "hunter2") {
			t.Fatalf("panic detail leaked into the reply: %q", e.Message)
		}
		if err := rpc.Call(ctx, f.nc, "sft.v1.test.echo", "", api.SessionRequest{SessionID: "x"}, nil); err != nil {
			t.Fatalf("service dead after a panic: %v", err)
		}
	})
	t.Run("malformed body", func(t *testing.T) {
		// A raw request: Call always sends valid JSON.
		for _, body := range []string{"", "null", `{"session_id":1}`, `{"x":1}`, `{}}`} {
			msg, err := f.nc.RequestWithContext(ctx, "sft.v1.test.echo", []byte(body))
			if err != nil {
				t.Fatal(err)
			}
			if got := msg.Header.Get(micro.ErrorCodeHeader); got != string(api.CodeInvalid) {
				t.Errorf("body %q: error code %q, want %q", body, got, api.CodeInvalid)
			}
		}
	})
	t.Run("no responders", func(t *testing.T) {
		e := wantAPIError(t, rpc.Call(ctx, f.nc, "sft.v1.nothing.get", "", struct{}{}, nil), api.CodeUnavailable, "nothing")
		if !strings.Contains(e.Message, "sft.v1.nothing.get") {
			t.Errorf("message %q does not name the subject", e.Message)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		sub, err := f.nc.SubscribeSync("sft.v1.silent.get") // never answers
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		err = rpc.Call(ctx, f.nc, "sft.v1.silent.get", "", struct{}{}, nil)
		if err == nil || api.CodeOf(err) != "" {
			t.Fatalf("Call to a silent subscriber = %v, want a transport error", err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Call = %v, want it to wrap context.DeadlineExceeded", err)
		}
		if msg := err.Error(); !strings.Contains(msg, "no answer from the silent service to sft.v1.silent.get") || !strings.Contains(msg, "overloaded or down") {
			t.Errorf("Call to a silent subscriber says %q", msg)
		}
	})
	t.Run("server gone", func(t *testing.T) {
		srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats server not ready")
		}
		nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		srv.Shutdown()
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		err = rpc.Call(ctx, nc, "sft.v1.session.report", "", struct{}{}, nil)
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "the connection to the NATS server is down") {
			t.Fatalf("Call with the server gone = %v, want a timeout that says the connection is down", err)
		}
	})
	t.Run("request not encodable", func(t *testing.T) {
		err := rpc.Call(ctx, f.nc, "sft.v1.test.echo", "", make(chan int), nil)
		if err == nil || api.CodeOf(err) != "" {
			t.Fatalf("Call(chan) = %v, want a local encode error", err)
		}
	})
}

// Call maps any responder's micro error headers, not only rpc's.
func TestCallMapsErrorHeaders(t *testing.T) {
	url := startNATS(t)
	srv := connect(t, url)
	_, err := srv.Subscribe("sft.v1.raw.get", func(m *nats.Msg) {
		switch string(m.Data) {
		case `"error"`:
			rep := nats.NewMsg(m.Reply)
			rep.Header.Set(micro.ErrorCodeHeader, "forbidden")
			rep.Header.Set(micro.ErrorHeader, "you are not a member of session x")
			_ = m.RespondMsg(rep)
		case `"garbage"`:
			_ = m.Respond([]byte("not json"))
		default:
			_ = m.Respond([]byte(`{"session_id":"ok"}`))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Flush(); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, url)
	var rep api.SessionRequest

	err = rpc.Call(t.Context(), nc, "sft.v1.raw.get", "", "error", &rep)
	e := wantAPIError(t, err, api.CodeForbidden, "")
	if e.Message != "you are not a member of session x" {
		t.Fatalf("message = %q", e.Message)
	}

	err = rpc.Call(t.Context(), nc, "sft.v1.raw.get", "", "garbage", &rep)
	if err == nil || api.CodeOf(err) != "" || !strings.Contains(err.Error(), "sft.v1.raw.get") {
		t.Fatalf("undecodable reply: err = %v, want a decode error naming the subject", err)
	}

	if err := rpc.Call(t.Context(), nc, "sft.v1.raw.get", "", "fine", &rep); err != nil || rep.SessionID != "ok" {
		t.Fatalf("Call = %v, %+v", err, rep)
	}
}

func TestAuthed(t *testing.T) {
	f := startService(t)
	good, _, err := f.issuer.Issue("alice", "admin")
	if err != nil {
		t.Fatal(err)
	}
	expired, _, err := token.NewIssuer(f.key, -time.Hour).Issue("alice", "admin")
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	forged, _, err := token.NewIssuer(otherKey, time.Hour).Issue("alice", "admin")
	if err != nil {
		t.Fatal(err)
	}

	// Call with the good token works and carries the claims.
	var who whoami
	if err := rpc.Call(t.Context(), f.nc, "sft.v1.test.whoami", good, struct{}{}, &who); err != nil {
		t.Fatal(err)
	}
	if who != (whoami{User: "alice", Role: "admin"}) {
		t.Fatalf("whoami = %+v", who)
	}

	for _, tc := range []struct {
		name, header, msgPart string
	}{
		{"missing", "", "sft-cli login"},
		{"bearer without token", "Bearer ", "sft-cli login"},
		{"wrong scheme", "Basic " + good, "sft-cli login"},
		{"no scheme", good, "sft-cli login"},
		{"garbage", "Bearer garbage", "invalid token"},
		{"expired", "Bearer " + expired, "expired"},
		{"forged", "Bearer " + forged, "invalid token"},
		{"truncated", "Bearer " + good[:len(good)-4], "invalid token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := nats.NewMsg("sft.v1.test.whoami")
			msg.Data = []byte(`{}`)
			if tc.header != "" {
				msg.Header.Set(api.AuthHeader, tc.header)
			}
			rep, err := f.nc.RequestMsgWithContext(t.Context(), msg)
			if err != nil {
				t.Fatal(err)
			}
			code, text := rep.Header.Get(micro.ErrorCodeHeader), rep.Header.Get(micro.ErrorHeader)
			if code != string(api.CodeUnauthorized) || !strings.Contains(text, tc.msgPart) {
				t.Fatalf("reply %q %q (body %q), want %q with %q", code, text, rep.Data, api.CodeUnauthorized, tc.msgPart)
			}
		})
	}

	// Authentication comes before decoding: an anonymous caller learns
	// nothing about what the body should look like.
	msg := nats.NewMsg("sft.v1.test.whoami")
	msg.Data = []byte(`{"x":1}`)
	rep, err := f.nc.RequestMsgWithContext(t.Context(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if code := rep.Header.Get(micro.ErrorCodeHeader); code != string(api.CodeUnauthorized) {
		t.Fatalf("bad body without token: code %q, want %q", code, api.CodeUnauthorized)
	}
}

// A revoked token is refused by an Authed endpoint, with a message that
// says why and what to do; other tokens are not affected.
func TestAuthedRevoked(t *testing.T) {
	f := startService(t)
	tok, claims, err := f.issuer.Issue("alice", "user")
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := f.issuer.Issue("alice", "user")
	if err != nil {
		t.Fatal(err)
	}
	var who whoami
	if err := rpc.Call(t.Context(), f.nc, "sft.v1.test.whoami", tok, struct{}{}, &who); err != nil {
		t.Fatalf("before the revocation: %v", err)
	}
	f.revoked.revoke(claims.ID)
	err = rpc.Call(t.Context(), f.nc, "sft.v1.test.whoami", tok, struct{}{}, &who)
	wantAPIError(t, err, api.CodeUnauthorized, "revoked by a logout: run `sft-cli login`")
	if err := rpc.Call(t.Context(), f.nc, "sft.v1.test.whoami", other, struct{}{}, &who); err != nil {
		t.Errorf("another token of the same user: %v", err)
	}
	// Public endpoints do not look at tokens at all.
	var echo api.SessionRequest
	if err := rpc.Call(t.Context(), f.nc, "sft.v1.test.echo", tok, api.SessionRequest{SessionID: "abcdefghijklmnop"}, &echo); err != nil {
		t.Errorf("public endpoint with a revoked token: %v", err)
	}
}

func TestMaxBody(t *testing.T) {
	f := startService(t)
	body := func(n int) []byte {
		const head, tail = `{"session_id":"`, `"}`
		return []byte(head + strings.Repeat("a", n-len(head)-len(tail)) + tail)
	}
	for _, tc := range []struct {
		size int
		code api.Code
	}{
		{rpc.MaxBody, ""},
		{rpc.MaxBody + 1, api.CodeInvalid},
		{4 * rpc.MaxBody, api.CodeInvalid},
	} {
		b := body(tc.size)
		if len(b) != tc.size {
			t.Fatalf("built %d bytes, want %d", len(b), tc.size)
		}
		rep, err := f.nc.RequestWithContext(t.Context(), "sft.v1.test.echo", b)
		if err != nil {
			t.Fatal(err)
		}
		if got := api.Code(rep.Header.Get(micro.ErrorCodeHeader)); got != tc.code {
			t.Errorf("%d-byte body: code %q (%s), want %q", tc.size, got, rep.Header.Get(micro.ErrorHeader), tc.code)
		}
		if tc.code == api.CodeInvalid && !strings.Contains(rep.Header.Get(micro.ErrorHeader), fmt.Sprint(rpc.MaxBody)) {
			t.Errorf("message %q does not state the limit", rep.Header.Get(micro.ErrorHeader))
		}
	}
	// The size check also guards authenticated endpoints, before the token.
	rep, err := f.nc.RequestWithContext(t.Context(), "sft.v1.test.whoami", body(rpc.MaxBody+1))
	if err != nil {
		t.Fatal(err)
	}
	if got := api.Code(rep.Header.Get(micro.ErrorCodeHeader)); got != api.CodeInvalid {
		t.Errorf("oversized body to an authed endpoint: code %q, want %q", got, api.CodeInvalid)
	}
}
