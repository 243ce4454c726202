package daemon_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/internal/hermetic"
	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/sftproject/sft/services/daemon"
	"github.com/sftproject/sft/services/secrets"
	"github.com/sftproject/sft/services/store"
	"github.com/sftproject/sft/services/store/kvstore"
	"github.com/sftproject/sft/services/token"
)

// install is one machine's sftd environment: its own home and data dir.
type install struct {
	t       *testing.T
	dataDir string
	env     []string
}

func newInstall(t *testing.T) *install {
	home := t.TempDir()
	data := filepath.Join(home, "data")
	return &install{t: t, dataDir: data, env: append(hermetic.Home(home), "SFT_DATA_DIR="+data, "SFT_LOG_LEVEL=warn")}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sftd runs one command to its end.
func (in *install) sftd(stdin string, extraEnv []string, args ...string) (string, error) {
	var out, errb syncbuf.Buffer
	err := daemon.Run(testCtx(in.t), daemon.IO{In: strings.NewReader(stdin), Out: &out, Err: &errb}, args, append(in.env[:len(in.env):len(in.env)], extraEnv...))
	if errb.String() != "" {
		in.t.Logf("sftd %s stderr:\n%s", strings.Join(args, " "), errb.String())
	}
	return out.String(), err
}

// dev is a running `sftd dev`.
type dev struct {
	url    string
	out    *syncbuf.Buffer // what sftd dev printed
	log    *syncbuf.Buffer // what it logged (standard error)
	cancel context.CancelFunc
	done   chan error
	store  *kvstore.Store // opened by install.user
}

var natsAt = regexp.MustCompile(`NATS at (\S+)`)

// startDev runs `sftd dev` with args (after --listen 127.0.0.1:0) in the
// background until stop.
func (in *install) startDev(args ...string) *dev {
	in.t.Helper()
	var out, errb syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	d := &dev{cancel: cancel, done: make(chan error, 1), out: &out, log: &errb}
	go func() {
		d.done <- daemon.Run(ctx, daemon.IO{In: strings.NewReader(""), Out: &out, Err: &errb},
			append([]string{"dev", "--listen", "127.0.0.1:0"}, args...), in.env)
	}()
	in.t.Cleanup(func() { d.stop(in.t) })
	deadline := time.After(30 * time.Second)
	for {
		if m := natsAt.FindStringSubmatch(out.String()); m != nil {
			d.url = m[1]
			return d
		}
		select {
		case err := <-d.done:
			d.done <- err
			in.t.Fatalf("sftd dev ended before it was ready: %v\n%s", err, errb.String())
		case <-deadline:
			in.t.Fatalf("sftd dev printed no URL:\n%s\n%s", out.String(), errb.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop cancels sftd dev and waits for it to return.
func (d *dev) stop(t *testing.T) {
	t.Helper()
	d.cancel()
	select {
	case err, ok := <-d.done:
		if ok {
			close(d.done)
			if err != nil {
				t.Errorf("sftd dev returned %v after its context ended", err)
			}
		}
	case <-time.After(30 * time.Second):
		t.Fatal("sftd dev did not stop after its context ended")
	}
}

func (in *install) serverEnv(d *dev) []string { return []string{"SFT_NATS_URL=" + d.url} }

// user reads a user record with the services' credentials.
func (in *install) user(d *dev, name string) (*store.User, error) {
	in.t.Helper()
	if d.store == nil {
		d.store = in.openStore(d)
	}
	return d.store.GetUser(testCtx(in.t), name)
}

// openStore connects as the auth service does (the owner of the
// accounts). The connection lives until the test ends.
func (in *install) openStore(d *dev) *kvstore.Store {
	in.t.Helper()
	key, err := secrets.ServiceKey(filepath.Join(in.dataDir, "secrets"), broker.ServiceAuth)
	if err != nil {
		in.t.Fatal(err)
	}
	nc, err := broker.Connect(testCtx(in.t), broker.ConnOptions{
		URL: d.url, CAFile: filepath.Join(in.dataDir, "pki", "ca.pem"), Service: broker.ServiceAuth, NKey: key,
	})
	if err != nil {
		in.t.Fatal(err)
	}
	in.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		in.t.Fatal(err)
	}
	st, err := kvstore.Open(testCtx(in.t), js, kvstore.Options{})
	if err != nil {
		in.t.Fatal(err)
	}
	return st
}

// login logs in as an sft-cli user would and returns the role the token
// carries.
func (in *install) login(d *dev, name, password string) (string, error) {
	in.t.Helper()
	c, _, err := client.LogIn(testCtx(in.t), broker.ConnOptions{URL: d.url, CAFile: filepath.Join(in.dataDir, "pki", "ca.pem")}, name, password)
	if err != nil {
		return "", err
	}
	c.Conn().Close()
	sec, err := secrets.Ensure(filepath.Join(in.dataDir, "secrets"))
	if err != nil {
		in.t.Fatal(err)
	}
	claims, err := token.NewVerifier(sec.SigningKey.Public().(ed25519.PublicKey)).Verify(c.Token())
	if err != nil {
		in.t.Fatal(err)
	}
	return claims.Role, nil
}

func TestDevAndUsers(t *testing.T) {
	in := newInstall(t)
	d := in.startDev()
	srv := in.serverEnv(d)

	out, err := in.sftd("s3cret pass\n", srv, "user", "add", "dave")
	if err != nil {
		t.Fatalf("user add: %v", err)
	}
	if !strings.Contains(out, "user dave created (role user)") {
		t.Errorf("user add said %q", out)
	}
	role, err := in.login(d, "dave", "s3cret pass")
	if err != nil {
		t.Fatalf("dave cannot log in with the password given to user add: %v", err)
	}
	if role != "user" {
		t.Errorf("dave's token has role %q", role)
	}
	if _, err := in.login(d, "dave", "s3cret"); api.CodeOf(err) != api.CodeUnauthorized {
		t.Errorf("login with a wrong password: %v", err)
	}

	if _, err := in.sftd("pw\n", srv, "user", "add", "--admin", "boss"); err != nil {
		t.Fatalf("user add --admin: %v", err)
	}
	if u, err := in.user(d, "boss"); err != nil || u.Role != "admin" {
		t.Errorf("boss: %+v, %v; want role admin", u, err)
	}

	t.Run("add refused", func(t *testing.T) {
		tests := []struct {
			name, stdin string
			args        []string
			want        string
		}{
			{"duplicate", "other\n", []string{"user", "add", "dave"}, `user "dave" already exists`},
			{"upper-case name", "pw\n", []string{"user", "add", "Dave"}, "invalid user name"},
			{"name with dot", "pw\n", []string{"user", "add", "da.ve"}, "invalid user name"},
			{"empty password", "\n", []string{"user", "add", "erin"}, "empty password"},
			{"no password", "", []string{"user", "add", "erin"}, "empty password"},
			{"password too long", strings.Repeat("x", 2000) + "\n", []string{"user", "add", "erin"}, "longer than"},
			{"no name", "pw\n", []string{"user", "add"}, "accepts 1 arg"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				_, err := in.sftd(tc.stdin, srv, tc.args...)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %v, want one saying %q", err, tc.want)
				}
			})
		}
		if _, err := in.user(d, "erin"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a refused user add left erin behind: %v", err)
		}
		// The duplicate attempt did not change dave's password.
		if _, err := in.login(d, "dave", "s3cret pass"); err != nil {
			t.Errorf("dave's password changed: %v", err)
		}
	})

	t.Run("set-role", func(t *testing.T) {
		out, err := in.sftd("", srv, "user", "set-role", "dave", "admin")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "dave now has role admin") {
			t.Errorf("set-role said %q", out)
		}
		if u, err := in.user(d, "dave"); err != nil || u.Role != "admin" {
			t.Fatalf("dave after set-role admin: %+v, %v", u, err)
		}
		role, err := in.login(d, "dave", "s3cret pass")
		if err != nil {
			t.Fatalf("the role change broke dave's login: %v", err)
		}
		if role != "admin" {
			t.Errorf("dave's new token has role %q, want admin", role)
		}
		out, err = in.sftd("", srv, "user", "set-role", "dave", "admin")
		if err != nil || !strings.Contains(out, "already has role admin") {
			t.Errorf("setting the same role again: %q, %v", out, err)
		}
		if _, err := in.sftd("", srv, "user", "set-role", "boss", "user"); err != nil {
			t.Fatal(err)
		}
		if u, err := in.user(d, "boss"); err != nil || u.Role != "user" {
			t.Errorf("boss after set-role user: %+v, %v", u, err)
		}

		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"nobody", "admin"}, `no user named "nobody"`},
			{[]string{"dave", "root"}, `role "root": use user or admin`},
			{[]string{"dave", "Admin"}, `role "Admin"`},
			{[]string{"Dave", "admin"}, "invalid user name"},
			{[]string{"dave"}, "accepts 2 arg"},
		} {
			_, err := in.sftd("", srv, append([]string{"user", "set-role"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("set-role %v: error %v, want one saying %q", tc.args, err, tc.want)
			}
		}
	})

	// Stopping releases everything: the port closes and a new sftd dev on
	// the same data dir starts and still knows the users.
	d.stop(t)
	u, err := url.Parse(d.url)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after sftd dev stopped", u.Host)
	}
	_, err = in.sftd("pw\n", srv, "user", "add", "erin")
	if err == nil || !strings.Contains(err.Error(), "sftd dev") {
		t.Errorf("user add with the stack down: %v, want an error about sftd dev", err)
	}

	d2 := in.startDev()
	if u, err := in.user(d2, "dave"); err != nil || u.Role != "admin" {
		t.Errorf("after a restart dave is %+v, %v", u, err)
	}
	d2.stop(t)
}

// TestUserAddWithoutDevStack: nothing was ever set up here.
func TestUserAddWithoutDevStack(t *testing.T) {
	in := newInstall(t)
	for _, args := range [][]string{{"user", "add", "dave"}, {"user", "set-role", "dave", "admin"}} {
		_, err := in.sftd("pw\n", nil, args...)
		if err == nil || !strings.Contains(err.Error(), "`sftd dev`") {
			t.Errorf("%v: %v, want an error saying to start sftd dev", args, err)
		}
	}
}

func TestBadInvocation(t *testing.T) {
	in := newInstall(t)
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"nope"}, nil, "unknown command"},
		{[]string{"dev", "extra"}, nil, "unknown command"},
		{[]string{"dev", "--listen", "nowhere"}, nil, "dev.listen"},
		{[]string{"dev"}, []string{"SFT_SESSION_TTL=-1s"}, "session.ttl must be positive"},
		{[]string{"user", "add", "dave", "--log-level", "loud"}, nil, "log.level"},
	} {
		_, err := in.sftd("", tc.env, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("sftd %v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}

// sftd health needs to know where to ask: metrics.listen or --url.
func TestHealthNeedsAnAddress(t *testing.T) {
	var out, errOut syncbuf.Buffer
	err := daemon.Run(t.Context(), daemon.IO{In: strings.NewReader(""), Out: &out, Err: &errOut}, []string{"health"}, hermetic.Home(t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), "metrics.listen") {
		t.Errorf("sftd health without an address: %v, want one that names metrics.listen", err)
	}
}
