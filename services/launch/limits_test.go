package launch_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/devstack/devstacktest"
	"github.com/sftproject/sft/services/rpc"
)

// TestRequestSizeLimit sends every API subject a body one byte over its
// limit (limits.request_bytes for session and key, rpc.MaxBody for auth):
// each refuses it as invalid before reading it, and a body at the limit is
// not refused for its size.
func TestRequestSizeLimit(t *testing.T) {
	const limit = 4096
	h := devstacktest.Start(t, func(c *config.Config) { c.Limits.RequestBytes = limit })
	nc := h.Conn()
	for _, tc := range []struct {
		subject string
		limit   int
	}{
		{api.SubjectAuthInfo, rpc.MaxBody},
		{api.SubjectAuthLogin, rpc.MaxBody},
		{api.SubjectSessionCreate, limit},
		{api.SubjectSessionJoin, limit},
		{api.SubjectSessionResume, limit},
		{api.SubjectSessionGet, limit},
		{api.SubjectSessionList, limit},
		{api.SubjectSessionReport, limit},
		{api.SubjectSessionCancel, limit},
		{api.SubjectSessionDecline, limit},
		{api.SubjectSessionWatch, limit},
		{api.SubjectKeyGet, limit},
	} {
		t.Run(tc.subject, func(t *testing.T) {
			over := fmt.Sprintf("exceeds the %d byte limit", tc.limit)
			code, msg := request(t, nc, tc.subject, body(tc.limit+1))
			if code != string(api.CodeInvalid) || !strings.Contains(msg, over) {
				t.Errorf("%d bytes: %s %q, want invalid: ...%s", tc.limit+1, code, msg, over)
			}
			if _, msg := request(t, nc, tc.subject, body(tc.limit)); strings.Contains(msg, over) {
				t.Errorf("%d bytes refused for its size: %s", tc.limit, msg)
			}
		})
	}
}

// body is a JSON object of n bytes.
func body(n int) []byte { return append(append([]byte("{"), bytes.Repeat([]byte(" "), n-2)...), '}') }

func request(t *testing.T, nc *nats.Conn, subject string, data []byte) (code, msg string) {
	t.Helper()
	m, err := nc.Request(subject, data, 10*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	return m.Header.Get(micro.ErrorCodeHeader), m.Header.Get(micro.ErrorHeader)
}

// limits.login_failures_per_address reaches the auth service: after that
// many failed password connects from one address (127.0.0.1 here), even a
// right password from it is refused for a while; one failure fewer and it
// is not.
func TestLoginFailuresPerAddress(t *testing.T) {
	for _, tc := range []struct {
		limit    int
		admitted bool
	}{
		{limit: 2, admitted: false},
		{limit: 3, admitted: true},
	} {
		t.Run(fmt.Sprint(tc.limit), func(t *testing.T) {
			h := devstacktest.Start(t, func(c *config.Config) { c.Limits.LoginFailuresPerAddress = tc.limit })
			o := broker.ConnOptions{URL: h.Stack.URL, CAFile: h.Stack.CAFile}
			// One failure per name, so only the address's count can bite.
			for _, name := range []string{"alice", "carol"} {
				if _, err := client.DialPassword(t.Context(), o, name, "guess"); api.CodeOf(err) != api.CodeUnauthorized {
					t.Fatalf("wrong password for %s: %v, want refused", name, err)
				}
			}
			nc, err := client.DialPassword(t.Context(), o, "bob", devstacktest.Password("bob"))
			if err == nil {
				nc.Close()
			}
			if admitted := err == nil; admitted != tc.admitted {
				t.Fatalf("right password after 2 failures with limit %d: admitted %v (%v), want %v", tc.limit, admitted, err, tc.admitted)
			}
		})
	}
}
