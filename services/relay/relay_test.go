package relay

import (
	"bytes"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/token"
)

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	_, _ = mrand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// copyThrough writes data into w and closes w's sending side, and returns
// what r reads until EOF.
func copyThrough(t testing.TB, w, r net.Conn, data []byte) []byte {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := w.Write(data)
		if err == nil {
			err = w.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read through the relay: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write through the relay: %v", err)
	}
	return got
}

func TestPair(t *testing.T) {
	r := startRelay(t, Options{})
	ctx := within(t, time.Minute)
	ini, resp := r.pair(ctx)
	if _, ok := ini.(*net.TCPConn); !ok {
		t.Fatalf("Dial returned a %T, want the *net.TCPConn (splice needs it)", ini)
	}
	if s := r.srv.Stats(); s.ActivePairs != 1 || s.Waiting != 0 {
		t.Errorf("stats %+v, want one pair and nobody waiting", s)
	}

	// Both ways at once, then each side's close reaches the other as EOF
	// while the other direction carries on (half-close).
	up, down := randomBytes(3<<20+7, 1), randomBytes(1<<20+3, 2)
	var wg sync.WaitGroup
	var gotDown []byte
	wg.Go(func() { gotDown = copyThrough(t, resp, ini, down) })
	gotUp := copyThrough(t, ini, resp, up)
	wg.Wait()
	if !bytes.Equal(gotUp, up) || !bytes.Equal(gotDown, down) {
		t.Fatalf("bytes changed on the way: %d of %d up, %d of %d down", len(gotUp), len(up), len(gotDown), len(down))
	}
	r.waitStats(ctx, "the pair to end", func(s Stats) bool { return s.ActivePairs == 0 })
	if s := r.srv.Stats(); s.BytesRelayed != int64(len(up)+len(down)) {
		t.Errorf("relayed %d bytes, want %d", s.BytesRelayed, len(up)+len(down))
	}
	if logs := r.logs.String(); !strings.Contains(logs, "relay: pair ended") || !strings.Contains(logs, "both peers closed") {
		t.Errorf("logs do not say the pair ended as both peers closed:\n%s", logs)
	}

	// One side closes while the other still sends: the sender's bytes
	// still arrive.
	ini, resp = r.pair(ctx)
	if err := ini.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := readsEOF(resp, 30*time.Second); err != nil {
		t.Fatalf("the initiator's close did not reach the responder: %v", err)
	}
	if got := copyThrough(t, resp, ini, []byte("still here")); string(got) != "still here" {
		t.Fatalf("after the half-close the responder's bytes arrived as %q", got)
	}
}

// Every refusal reaches the client as its api code, is logged at Warn with
// the client's address and the reason, and leaves a pair being relayed
// alone.
func TestRefusals(t *testing.T) {
	r := startRelay(t, Options{AdmissionTimeout: 300 * time.Millisecond})
	ctx := within(t, time.Minute)
	ini, resp := r.pair(ctx)

	other := startRelay(t, Options{}) // another installation's key
	// A login token signed with the relay's own key names another audience.
	login, _, err := token.NewIssuer(r.key, time.Hour).Issue("alice", "user")
	if err != nil {
		t.Fatal(err)
	}
	replayed := r.ticket(newSessionID(), api.RoleInitiator)
	first := r.dial(ctx, replayed)
	r.waitStats(ctx, "the first use to wait", func(s Stats) bool { return s.Waiting == 1 })

	busy := newSessionID()
	a, b := r.dial(ctx, r.ticket(busy, api.RoleInitiator)), r.dial(ctx, r.ticket(busy, api.RoleResponder))
	for _, c := range []<-chan dialResult{a, b} {
		res := <-c
		if res.err != nil {
			t.Fatal(res.err)
		}
		defer res.conn.Close()
	}

	var tickets []string
	for _, tc := range []struct {
		name   string
		ticket string
		code   api.Code
		reason string
	}{
		{"forged", other.ticket(newSessionID(), api.RoleInitiator), api.CodeForbidden, "ticket signature invalid"},
		{"expired", r.ticket(newSessionID(), api.RoleInitiator, func(t *Ticket) { t.ExpiresAt = time.Now().Add(-time.Minute) }), api.CodeForbidden, "ticket expired"},
		{"login token", login, api.CodeForbidden, "ticket audience"},
		{"garbage ticket", "garbage", api.CodeForbidden, "ticket malformed"},
		{"replayed", replayed, api.CodeForbidden, "ticket already used"},
		{"session already relayed", r.ticket(busy, api.RoleResponder), api.CodeConflict, "is already relayed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tickets = append(tickets, tc.ticket)
			_, err := Dial(ctx, r.addr, tc.ticket)
			var e *api.Error
			if !errors.As(err, &e) || e.Code != tc.code || !strings.Contains(e.Message, tc.reason) {
				t.Fatalf("Dial = %v, want %s: …%s", err, tc.code, tc.reason)
			}
			if !strings.Contains(err.Error(), r.addr) {
				t.Errorf("error %q does not name the relay", err)
			}
		})
	}

	// Clients that are no SFT client at all.
	for _, tc := range []struct {
		name, send, reason string
	}{
		{"http", "GET / HTTP/1.1\r\nHost: relay\r\n\r\n", "not an SFT relay preamble"},
		{"silent", "", "no preamble within 300ms"},
		{"half a preamble", "SFTR1\n\x01\x00abc", "no preamble within 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tc.send); err != nil {
				t.Fatal(err)
			}
			k, msg, err := readStatus(c)
			if err != nil || k != kindRefused || msg != "invalid: "+tc.reason {
				t.Fatalf("status %s %q %v, want refused invalid: %s", k, msg, err, tc.reason)
			}
			if err := readsEOF(c, 30*time.Second); err != nil {
				t.Errorf("not closed after the refusal: %v", err)
			}
		})
	}

	// A waiting client that speaks before it is paired.
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pre, _ := appendPreamble(nil, r.ticket(newSessionID(), api.RoleResponder))
	if _, err := c.Write(pre); err != nil {
		t.Fatal(err)
	}
	if k, _, err := readStatus(c); err != nil || k != kindAccepted {
		t.Fatalf("status %s %v, want accepted", k, err)
	}
	if _, err := c.Write([]byte("hello?")); err != nil {
		t.Fatal(err)
	}
	if k, msg, err := readStatus(c); err != nil || k != kindRefused || !strings.HasPrefix(msg, "invalid: data before") {
		t.Fatalf("status %s %q %v, want refused invalid", k, msg, err)
	}

	logs := r.logs.String()
	for _, want := range []string{"ticket signature invalid", "ticket expired", "ticket already used", "is already relayed", "not an SFT relay preamble", "no preamble within", "data before"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no log line says %q", want)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if strings.Contains(line, "refused connection") && (!strings.Contains(line, "level=WARN") || !strings.Contains(line, "remote=127.0.0.1:")) {
			t.Errorf("refusal not logged at Warn with the client's address: %s", line)
		}
	}
	for _, tk := range tickets {
		for _, part := range strings.Split(tk, ".") {
			if len(part) > 8 && strings.Contains(logs, part) {
				t.Errorf("the logs quote a ticket:\n%s", logs)
			}
		}
	}

	// The pair relayed all along is untouched.
	if got := copyThrough(t, ini, resp, []byte("unharmed")); string(got) != "unharmed" {
		t.Fatalf("the pair's bytes arrived as %q", got)
	}
	select {
	case res := <-first:
		t.Fatalf("the first use of the replayed ticket stopped waiting: %v", res.err)
	default:
	}
}
