package daemon_test

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/sftproject/sft/services/daemon"
	"github.com/sftproject/sft/services/relay"
	"github.com/sftproject/sft/services/secrets"
)

var relayAt = regexp.MustCompile(`sftd relay: serving on (\S+)`)

// `sftd relay` serves with the key `sftd certs` made and no NATS at all,
// and on SIGTERM lets a relayed session finish before it exits.
func TestRelayCommand(t *testing.T) {
	in := newInstall(t)
	if _, err := in.sftd("", nil, "certs"); err != nil {
		t.Fatal(err)
	}
	var out, errb syncbuf.Buffer
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.IO{In: strings.NewReader(""), Out: &out, Err: &errb},
			[]string{"relay", "--listen", "127.0.0.1:0"}, append(in.env, "SFT_NATS_URL=tls://127.0.0.1:1"))
	}()
	var addr string
	deadline := time.After(30 * time.Second)
	for addr == "" {
		if m := relayAt.FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("sftd relay ended: %v\n%s", err, errb.String())
		case <-deadline:
			t.Fatalf("sftd relay printed no address:\n%s", errb.String())
		case <-time.After(20 * time.Millisecond):
		}
	}

	key, err := secrets.RelayTicketKey(filepath.Join(in.dataDir, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	iss := relay.NewIssuer(key)
	const session = "abcdefghijklmnop"
	dial := func(role api.Role) <-chan net.Conn {
		ch := make(chan net.Conn, 1)
		go func() {
			tk, err := iss.Issue(relay.Ticket{Session: session, Role: role, ExpiresAt: time.Now().Add(time.Minute), MaxBytes: 1 << 20})
			if err == nil {
				var c net.Conn
				if c, err = relay.Dial(testCtx(t), addr, tk); err == nil {
					ch <- c
					return
				}
			}
			t.Errorf("%s: %v", role, err)
			ch <- nil
		}()
		return ch
	}
	ca, cb := dial(api.RoleInitiator), dial(api.RoleResponder)
	a, b := <-ca, <-cb
	if a == nil || b == nil {
		t.FailNow()
	}
	defer a.Close()
	defer b.Close()

	stop() // SIGTERM
	select {
	case err := <-done:
		t.Fatalf("sftd relay exited with a session still relayed: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := io.WriteString(a, "last words"); err != nil {
		t.Fatal(err)
	}
	a.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "last words" {
		t.Fatalf("after SIGTERM the session carried %q, %v", got, err)
	}
	b.(*net.TCPConn).CloseWrite()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sftd relay: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sftd relay did not exit once its session ended")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("the relay still accepts connections")
	}
	var e *api.Error
	if _, err := relay.Dial(testCtx(t), addr, "x"); errors.As(err, &e) {
		t.Errorf("a stopped relay answered: %v", err)
	}
}
