package broker

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/internal/syncbuf"
)

func TestMain(m *testing.M) {
	// The production cost makes every password-user connect take most of a
	// second under the race detector; the hash format is the same.
	bcryptCost = bcrypt.MinCost
	os.Exit(m.Run())
}

type testBroker struct {
	*Embedded
	pki     PKI
	keys    CalloutKeys
	svcKeys map[string]nkeys.KeyPair // each service's identity

	// A client certificate of the broker's CA that serviceAs and
	// clientWith present, set when the broker verifies clients.
	certFile, keyFile string
	// callouts counts the auth callout's decisions.
	callouts atomic.Int64
}

// Credentials the test callout accepts: tokens "tok-<user>" for alice and
// bob, and alice's password.
const (
	aliceToken    = "tok-alice"
	bobToken      = "tok-bob"
	alicePassword = "pw-alice"
)

func testAuthorize(_ context.Context, c Credentials) (Grant, error) {
	switch {
	case c.Token == aliceToken:
		return Grant{User: "alice", Expires: time.Now().Add(time.Hour)}, nil
	case c.Token == bobToken:
		return Grant{User: "bob", Expires: time.Now().Add(time.Hour)}, nil
	case c.Token == "" && c.User == "alice" && c.Password == alicePassword:
		return Grant{User: "alice", LoginOnly: true}, nil
	}
	return Grant{}, errors.New("refused")
}

func newCalloutKeys(t testing.TB) CalloutKeys {
	t.Helper()
	iss, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	xk, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	return CalloutKeys{Issuer: iss, XKey: xk}
}

func (k CalloutKeys) options(t testing.TB, o EmbeddedOptions) EmbeddedOptions {
	t.Helper()
	var err error
	if o.CalloutIssuer, o.CalloutXKey, err = k.Public(); err != nil {
		t.Fatal(err)
	}
	return o
}

// newServiceKeys makes an identity for every service.
func newServiceKeys(t testing.TB) map[string]nkeys.KeyPair {
	t.Helper()
	out := map[string]nkeys.KeyPair{}
	for _, s := range Services() {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		out[s] = kp
	}
	return out
}

// publicKeys are what EmbeddedOptions.ServiceKeys wants.
func publicKeys(t testing.TB, keys map[string]nkeys.KeyPair) map[string]string {
	t.Helper()
	out := map[string]string{}
	for s, kp := range keys {
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		out[s] = pub
	}
	return out
}

// startBroker runs an embedded server on a random port, logging everything
// nats-server says into a buffer that is checked for secrets at the end.
func startBroker(t *testing.T) *testBroker {
	t.Helper()
	return startBrokerWith(t, false)
}

// startBrokerWith is startBroker with the server requiring client
// certificates (EmbeddedOptions.VerifyClients) or not; when it does, the
// test broker's own connections present one.
func startBrokerWith(t *testing.T, verifyClients bool) *testBroker {
	t.Helper()
	dir := t.TempDir()
	p, err := EnsureDevPKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: levelNATSDebug}))
	keys := newCalloutKeys(t)
	svcKeys := newServiceKeys(t)
	e, err := StartEmbedded(t.Context(), keys.options(t, EmbeddedOptions{
		StoreDir:      filepath.Join(dir, "js"),
		PKI:           p,
		VerifyClients: verifyClients,
		ServiceKeys:   publicKeys(t, svcKeys),
		Logger:        log,
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Shutdown()
		out := logs.String()
		for _, kp := range svcKeys {
			if seed, _ := kp.Seed(); strings.Contains(out, string(seed)) {
				t.Error("server log contains a service's seed")
			}
		}
		if !strings.Contains(out, "NATS server stopped") {
			t.Error("shutdown was not logged")
		}
	})
	b := &testBroker{Embedded: e, pki: p, keys: keys, svcKeys: svcKeys}
	if verifyClients {
		b.certFile, b.keyFile = filepath.Join(dir, "client", "test.crt"), filepath.Join(dir, "client", "test.key")
		if err := EnsureClientCert(filepath.Dir(p.CAFile), "test", b.certFile, b.keyFile); err != nil {
			t.Fatal(err)
		}
	}
	b.serveCallout(t)
	return b
}

// serveCallout answers the auth callout with testAuthorize, as the auth
// service, until the test ends.
func (b *testBroker) serveCallout(t *testing.T) {
	t.Helper()
	nc := b.serviceAs(t, ServiceAuth)
	authorize := func(ctx context.Context, c Credentials) (Grant, error) {
		b.callouts.Add(1)
		return testAuthorize(ctx, c)
	}
	sub, err := ServeCallout(t.Context(), nc, b.keys, authorize, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
}

// client is a connection with alice's token.
func (b *testBroker) client(t *testing.T) *nats.Conn {
	t.Helper()
	return b.clientWith(t, ConnOptions{Token: aliceToken, InboxPrefix: api.InboxPrefix("alice")})
}

func (b *testBroker) clientWith(t *testing.T, o ConnOptions) *nats.Conn {
	t.Helper()
	o.URL, o.CAFile, o.Name = b.ClientURL(), b.pki.CAFile, "test-client"
	if o.CertFile == "" {
		o.CertFile, o.KeyFile = b.certFile, b.keyFile
	}
	nc, err := Connect(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// service is a connection of the session service, the one that serves
// most of the API and talks to clients' inboxes.
func (b *testBroker) service(t *testing.T) *nats.Conn {
	t.Helper()
	return b.serviceAs(t, ServiceSession)
}

func (b *testBroker) serviceAs(t *testing.T, service string) *nats.Conn {
	t.Helper()
	nc, err := Connect(t.Context(), ConnOptions{
		URL: b.ClientURL(), CAFile: b.pki.CAFile, Service: service, NKey: b.svcKeys[service], Name: "test-" + service,
		CertFile: b.certFile, KeyFile: b.keyFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func TestConnectTLS13PostQuantum(t *testing.T) {
	b := startBroker(t)
	if !strings.HasPrefix(b.ClientURL(), "tls://127.0.0.1:") {
		t.Errorf("ClientURL %q", b.ClientURL())
	}
	for name, nc := range map[string]*nats.Conn{"client": b.client(t), "service": b.service(t)} {
		st, err := nc.TLSConnectionState()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if st.Version != tls.VersionTLS13 {
			t.Errorf("%s: TLS version %x, want 1.3", name, st.Version)
		}
		if st.CurveID != tls.X25519MLKEM768 {
			t.Errorf("%s: key exchange %v, want X25519MLKEM768", name, st.CurveID)
		}
	}
}

func TestConnectWithClientCertificate(t *testing.T) {
	b := startBroker(t)
	pkiDir := filepath.Dir(b.pki.CAFile)
	good, err := IssueCert(pkiDir, "svc", nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := Connect(t.Context(), ConnOptions{
		URL: b.ClientURL(), CAFile: b.pki.CAFile, CertFile: good.CertFile, KeyFile: good.KeyFile,
		Service: ServiceKey, NKey: b.svcKeys[ServiceKey],
	})
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()

	// A certificate from another CA is offered, so the server must verify
	// and reject it rather than ignore it.
	otherDir := t.TempDir()
	if _, err := EnsureDevPKI(otherDir); err != nil {
		t.Fatal(err)
	}
	bad, err := IssueCert(otherDir, "svc", nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nc, err = Connect(t.Context(), ConnOptions{
		URL: b.ClientURL(), CAFile: b.pki.CAFile, CertFile: bad.CertFile, KeyFile: bad.KeyFile,
	})
	if err == nil {
		nc.Close()
		t.Fatal("connect with a certificate from a foreign CA succeeded")
	}
	if !strings.Contains(err.Error(), "the server rejected the TLS handshake (check the client certificate)") {
		t.Errorf("unclear error: %v", err)
	}
}

func TestConnectErrors(t *testing.T) {
	b := startBroker(t)
	otherCA := t.TempDir()
	if _, err := EnsureDevPKI(otherCA); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "tls://" + l.Addr().String()
	l.Close()
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	stranger, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		ctx  context.Context
		o    ConnOptions
		want string
	}{
		{
			name: "unknown CA",
			o:    ConnOptions{URL: b.ClientURL(), CAFile: filepath.Join(otherCA, CACertName)},
			want: "cannot connect to NATS at " + b.ClientURL() + ": x509: certificate signed by unknown authority (check --ca)",
		},
		{
			name: "missing CA file",
			o:    ConnOptions{URL: b.ClientURL(), CAFile: filepath.Join(otherCA, "nope.pem")},
			want: "read CA file " + filepath.Join(otherCA, "nope.pem") + ": open ",
		},
		{
			name: "no CA file",
			o:    ConnOptions{URL: b.ClientURL()},
			want: "no CA file given (use --ca)",
		},
		{
			name: "nothing listening",
			o:    ConnOptions{URL: closedURL, CAFile: b.pki.CAFile},
			want: "cannot connect to NATS at " + closedURL + `: connection refused (is "sftd dev" running?)`,
		},
		{
			name: "unknown service key",
			o:    ConnOptions{URL: b.ClientURL(), CAFile: b.pki.CAFile, Service: ServiceAuth, NKey: stranger},
			want: "authorization violation (the server does not know the auth service's key",
		},
		{
			name: "unknown service",
			o:    ConnOptions{URL: b.ClientURL(), CAFile: b.pki.CAFile, Service: "billing", NKey: b.svcKeys[ServiceAuth]},
			want: `unknown service "billing"`,
		},
		{
			name: "unknown user",
			o:    ConnOptions{URL: b.ClientURL(), CAFile: b.pki.CAFile, User: "mallory", Password: "guess"},
			want: "authorization violation",
		},
		{
			name: "cancelled context",
			ctx:  cancelled,
			o:    ConnOptions{URL: b.ClientURL(), CAFile: b.pki.CAFile},
			want: "context canceled",
		},
		{
			name: "half a client certificate",
			o:    ConnOptions{URL: b.ClientURL(), CAFile: b.pki.CAFile, CertFile: b.pki.CertFile},
			want: "needs both a certificate and a key file",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = t.Context()
			}
			nc, err := Connect(ctx, tc.o)
			if err == nil {
				nc.Close()
				t.Fatal("connect succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\nwant it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			if tc.o.Password != "" && strings.Contains(err.Error(), tc.o.Password) {
				t.Error("error contains the password")
			}
		})
	}
}

// TestPlaintextRefused speaks the NATS protocol without TLS, as an old or
// misconfigured client would, and expects the server to hang up.
func TestPlaintextRefused(t *testing.T) {
	b := startBroker(t)
	conn, err := net.Dial("tcp", strings.TrimPrefix(b.ClientURL(), "tls://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // guards against a hang only
	r := bufio.NewReader(conn)
	info, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, `"tls_required":true`) {
		t.Errorf("INFO does not require TLS: %s", info)
	}
	if _, err := conn.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	rest, err := readAllUntilClose(r)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("server kept a plaintext connection open")
	}
	if strings.Contains(rest, "PONG") {
		t.Fatalf("server answered a plaintext client: %q", rest)
	}
}

func readAllUntilClose(r *bufio.Reader) (string, error) {
	var sb strings.Builder
	buf := make([]byte, 512)
	for {
		n, err := r.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return sb.String(), err
			}
			return sb.String(), nil
		}
	}
}

// permissionError flushes (so any -ERR for earlier operations has been
// read) and returns the connection's permission violation, if any.
func permissionError(t *testing.T, nc *nats.Conn) error {
	t.Helper()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	err := nc.LastError()
	if err != nil && !errors.Is(err, nats.ErrPermissionViolation) {
		t.Fatalf("unexpected error: %v", err)
	}
	return err
}

// answerSessionGet serves session.get with "ok" on svc, as the session
// service's identity may, for as long as the test runs.
func answerSessionGet(t *testing.T, svc *nats.Conn) {
	t.Helper()
	sub, err := svc.QueueSubscribe(api.SubjectSessionGet, api.QueueGroup, func(m *nats.Msg) { _ = m.Respond([]byte("ok")) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := permissionError(t, svc); err != nil {
		t.Fatal(err)
	}
}

func TestClientPermissions(t *testing.T) {
	b := startBroker(t)
	tests := []struct {
		op, subject, queue string
		allowed            bool
	}{
		{"sub", api.SubjectSessionCreate, "", false},
		{"sub", api.SubjectSessionCreate, api.QueueGroup, false},
		{"sub", api.SubjectAuthLogin, "", false},
		{"sub", api.Prefix + ".>", "", false},
		{"sub", api.AllEvents, "", false},
		{"sub", api.SessionEvents("s1"), "", false},
		{"sub", "$SYS.>", "", false},
		{"sub", "$JS.API.>", "", false},
		{"sub", "$JS.>", "", false},
		{"sub", ">", "", false},
		{"sub", ServiceInboxPrefix + ".>", "", false},
		{"sub", ServiceInbox(ServiceSession) + ".>", "", false},
		{"sub", "$SYS.REQ.USER.AUTH", "", false},
		{"sub", "_INBOX.>", "", false},
		{"sub", "_INBOX.*.>", "", false},
		{"sub", "_INBOX.bob.abc", "", false},
		{"sub", "_INBOX.bob.>", "", false},
		{"sub", "_INBOX.abc", "", false},
		{"pub", api.EventSubject("x", "created"), "", false},
		{"pub", "$JS.API.INFO", "", false},
		{"pub", "$JS.API.STREAM.CREATE." + api.EventStream, "", false},
		{"pub", "$SYS.REQ.SERVER.PING", "", false},
		{"pub", "$SYS.REQ.USER.AUTH", "", false},
		{"pub", "_INBOX.bob.x", "", false},
		{"pub", ServiceInboxPrefix + ".x.y", "", false},

		{"sub", "_INBOX.alice.abc", "", true},
		{"sub", "_INBOX.alice.abc.*", "", true},
		{"sub", "_INBOX.alice.>", "", true},
		{"pub", api.SubjectSessionGet, "", true},
		{"pub", api.SubjectAuthLogin, "", true},
		{"pub", api.SubjectKeyGet, "", true},
	}
	for _, tc := range tests {
		name := tc.op + " " + tc.subject
		if tc.queue != "" {
			name += " queue " + tc.queue
		}
		t.Run(name, func(t *testing.T) {
			nc := b.client(t) // fresh: LastError is per connection
			var err error
			switch tc.op {
			case "sub":
				_, err = nc.QueueSubscribeSync(tc.subject, tc.queue)
			case "pub":
				err = nc.Publish(tc.subject, []byte("{}"))
			}
			if err != nil {
				t.Fatal(err)
			}
			err = permissionError(t, nc)
			switch {
			case tc.allowed && err != nil:
				t.Errorf("refused: %v", err)
			case !tc.allowed && err == nil:
				t.Error("allowed")
			case !tc.allowed && !strings.Contains(err.Error(), `"`+tc.subject+`"`):
				t.Errorf("violation names another subject: %v", err)
			}
		})
	}
}

// TestRequestFlow checks both directions the API uses: a client request
// served by a service queue group, and a service heartbeat request answered
// by a client on its inbox.
func TestRequestFlow(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second) // a refused request never gets an answer
	defer cancel()
	svc := b.service(t)
	cl := b.client(t)

	sub, err := svc.QueueSubscribe(api.SubjectSessionCreate, api.QueueGroup, func(m *nats.Msg) {
		_ = m.Respond(append([]byte("created:"), m.Data...))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := permissionError(t, svc); err != nil {
		t.Fatal(err)
	}
	reply, err := cl.RequestWithContext(ctx, api.SubjectSessionCreate, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if string(reply.Data) != "created:x" {
		t.Errorf("reply %q", reply.Data)
	}

	inbox := cl.NewInbox()
	hb, err := cl.Subscribe(inbox, func(m *nats.Msg) {
		if !strings.HasPrefix(m.Reply, ServiceInbox(ServiceSession)+".") {
			t.Errorf("service reply subject %q is not under %s", m.Reply, ServiceInbox(ServiceSession))
		}
		_ = m.Respond([]byte("alive"))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Unsubscribe()
	if err := cl.Flush(); err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(inbox)
	msg.Header.Set(api.HeartbeatHeader, "1")
	ans, err := svc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	if string(ans.Data) != "alive" {
		t.Errorf("heartbeat answer %q", ans.Data)
	}
	if err := permissionError(t, cl); err != nil {
		t.Errorf("client answering a heartbeat was refused: %v", err)
	}
}

func TestJetStream(t *testing.T) {
	b := startBroker(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	js, err := jetstream.New(b.service(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: api.EventStream, Subjects: []string{api.AllEvents}}); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, api.EventSubject("s1", "created"), []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != api.EventStream || ack.Sequence != 1 {
		t.Errorf("ack %+v", ack)
	}

	cl := b.client(t)
	if _, err := cl.Request("$JS.API.INFO", nil, 300*time.Millisecond); err == nil {
		t.Error("client got a JetStream API answer")
	}
	if err := permissionError(t, cl); err == nil || !strings.Contains(err.Error(), "$JS.API.INFO") {
		t.Errorf("want a publish violation for $JS.API.INFO, got %v", err)
	}
}

func TestInProcessConn(t *testing.T) {
	b := startBroker(t)
	svc, err := b.InProcessConn(t.Context(), ServiceSession, b.svcKeys[ServiceSession], "in-process-service")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	answerSessionGet(t, svc)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if _, err := b.client(t).RequestWithContext(ctx, api.SubjectSessionGet, nil); err != nil {
		t.Fatalf("TLS client to in-process service: %v", err)
	}

	// Only the services connect in process, each with its own key.
	stranger, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		service string
		key     nkeys.KeyPair
	}{
		"no key":                {ServiceSession, nil},
		"unknown key":           {ServiceSession, stranger},
		"another service's key": {ServiceSession, b.svcKeys[ServiceKey]},
		"unknown service":       {"billing", b.svcKeys[ServiceKey]},
	} {
		if nc, err := b.InProcessConn(t.Context(), tc.service, tc.key, "bad"); err == nil {
			nc.Close()
			t.Errorf("%s: in-process connection succeeded", name)
		}
	}
}

func TestStartEmbeddedErrors(t *testing.T) {
	p, err := EnsureDevPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	busy := l.Addr().(*net.TCPAddr).Port

	keys := publicKeys(t, newServiceKeys(t))
	ok := newCalloutKeys(t).options(t, EmbeddedOptions{StoreDir: t.TempDir(), PKI: p, ServiceKeys: keys})
	tests := []struct {
		name   string
		change func(*EmbeddedOptions)
		want   string
	}{
		{"port in use", func(o *EmbeddedOptions) { o.Port = busy }, "listen"},
		{"no service keys", func(o *EmbeddedOptions) { o.ServiceKeys = nil }, "no service keys"},
		{"unknown service", func(o *EmbeddedOptions) { o.ServiceKeys = map[string]string{"billing": keys[ServiceAuth]} }, `unknown service "billing"`},
		{"not a user key", func(o *EmbeddedOptions) { o.ServiceKeys = map[string]string{ServiceAuth: o.CalloutIssuer} }, "not a public user nkey"},
		{"shared key", func(o *EmbeddedOptions) {
			o.ServiceKeys = map[string]string{ServiceAuth: keys[ServiceAuth], ServiceKey: keys[ServiceAuth]}
		}, "shares its key"},
		{"user without password", func(o *EmbeddedOptions) { o.ServiceUser = "svc" }, "go together"},
		{"no callout issuer", func(o *EmbeddedOptions) { o.CalloutIssuer = "" }, "auth callout issuer"},
		{"callout issuer not an account", func(o *EmbeddedOptions) { o.CalloutIssuer = o.CalloutXKey }, "auth callout issuer"},
		{"callout xkey not a curve key", func(o *EmbeddedOptions) { o.CalloutXKey = o.CalloutIssuer }, "auth callout xkey"},
		{"no store dir", func(o *EmbeddedOptions) { o.StoreDir = "" }, "store directory"},
		{"missing certificate", func(o *EmbeddedOptions) { o.PKI.CertFile = filepath.Join(t.TempDir(), "x.pem") }, "load server certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			o.StoreDir = t.TempDir()
			tc.change(&o)
			e, err := StartEmbedded(t.Context(), o)
			if err == nil {
				e.Shutdown()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestReconnect restarts the broker on the same port and expects a
// connection whose initial context has ended to come back by itself.
func TestReconnect(t *testing.T) {
	b := startBroker(t)
	port := b.Server().Addr().(*net.TCPAddr).Port

	logs := &syncbuf.Buffer{}
	ctx, cancel := context.WithCancel(t.Context())
	nc, err := Connect(ctx, ConnOptions{
		URL: b.ClientURL(), CAFile: b.pki.CAFile, Service: ServiceSession, NKey: b.svcKeys[ServiceSession],
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
	})
	cancel() // only the initial connect may depend on it
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	reconnected := nc.StatusChanged(nats.CONNECTED)

	b.Shutdown()
	again, err := StartEmbedded(t.Context(), b.keys.options(t, EmbeddedOptions{
		Port: port, StoreDir: t.TempDir(), PKI: b.pki, ServiceKeys: publicKeys(t, b.svcKeys),
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Shutdown()

	select {
	case <-reconnected:
	case <-time.After(20 * time.Second): // guards against a hang only
		t.Fatalf("no reconnect; status %v", nc.Status())
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// nats.go calls the reconnect handler on a goroutine of its own, after
	// the status changed: wait for its line.
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logs.String(), "NATS reconnected") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	out := logs.String()
	for _, want := range []string{"level=INFO msg=\"NATS disconnected, reconnecting\"", "level=INFO msg=\"NATS reconnected\""} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if seed, _ := b.svcKeys[ServiceSession].Seed(); strings.Contains(out, string(seed)) {
		t.Error("client log contains the service's seed")
	}
}

// A comma-separated URL is a list of servers: one that is down is passed
// over, whichever order the connection tries them in.
func TestConnectServerList(t *testing.T) {
	b := startBroker(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "tls://" + l.Addr().String()
	_ = l.Close()
	for _, list := range []string{down + "," + b.ClientURL(), b.ClientURL() + ", " + down} {
		nc, err := Connect(t.Context(), ConnOptions{
			URL: list, CAFile: b.pki.CAFile, Service: ServiceSession, NKey: b.svcKeys[ServiceSession],
		})
		if err != nil {
			t.Fatalf("%s: %v", list, err)
		}
		if got := len(nc.Servers()); got < 2 {
			t.Errorf("%s: the connection knows %d servers, want both: %v", list, got, nc.Servers())
		}
		nc.Close()
	}
}

func TestNATSLoggerLevels(t *testing.T) {
	logs := &syncbuf.Buffer{}
	nl := newNATSLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: levelNATSDebug})))
	nl.Noticef("Server is ready")
	nl.Warnf("Plaintext passwords detected, use nkeys or bcrypt")
	nl.Warnf("disk %s", "low")
	nl.Errorf("%s - cid:%d - Subscription Violation", "127.0.0.1:1", 5)
	nl.Errorf("store %s", "broken")
	nl.Debugf("client %d", 1)
	nl.Tracef("<<- [CONNECT %s]", `{"pass":"secret"}`)
	nl.Fatalf("Error listening on port: %d", 1)
	nl.Fatalf("second")

	want := []string{
		`level=DEBUG msg="Server is ready"`,
		`level=DEBUG msg="Plaintext passwords detected`,
		`level=WARN msg="disk low"`,
		`level=WARN msg="127.0.0.1:1 - cid:5 - Subscription Violation"`,
		`level=ERROR msg="store broken"`,
		`level=DEBUG-4 msg="client 1"`,
		`level=ERROR msg="Error listening on port: 1"`,
	}
	out := logs.String()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("log lacks %s", w)
		}
	}
	if strings.Contains(out, "secret") {
		t.Error("trace output was logged")
	}
	if err := nl.fatalErr(); err == nil || err.Error() != "Error listening on port: 1" {
		t.Errorf("fatal error %v, want the first one", err)
	}
}

// TestConnectHonoursContext points Connect at a listener that accepts but
// never speaks, where only ctx can end the wait before the connect timeout.
func TestConnectHonoursContext(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 4)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		l.Close()
		<-done
		close(accepted)
		for c := range accepted {
			c.Close()
		}
	}()

	p, err := EnsureDevPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	nc, err := Connect(ctx, ConnOptions{URL: "tls://" + l.Addr().String(), CAFile: p.CAFile})
	if err == nil {
		nc.Close()
		t.Fatal("connected to a silent server")
	}
	// Not a speed check: returning only at the connect timeout would mean
	// the cancellation was ignored and the timeout ended the wait.
	if waited := time.Since(start); waited >= connectTimeout {
		t.Errorf("Connect returned after %v, at its own timeout rather than at ctx's end", waited)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "context deadline exceeded") {
		t.Errorf("error %q, want the context's deadline", err)
	}
}

func TestRedactURL(t *testing.T) {
	tests := map[string]string{
		"tls://127.0.0.1:4222":                    "tls://127.0.0.1:4222",
		"tls://svc:hunter2@host:4222":             "tls://svc:xxxxx@host:4222",
		"tls://a:1, tls://u:hunter2@b:2":          "tls://a:1,tls://u:xxxxx@b:2",
		"tls://u:hunter2@[::1]:4222/%zz":          "(unparsable URL)",
		"tls://only-user@host:4222":               "tls://only-user@host:4222",
		"nats://127.0.0.1:4222,nats://[::1]:4222": "nats://127.0.0.1:4222,nats://[::1]:4222",
	}
	for in, want := range tests {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
