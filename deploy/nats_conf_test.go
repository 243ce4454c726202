package deploy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/services/auth"
	"github.com/sftproject/sft/services/daemon"
	"github.com/sftproject/sft/services/secrets"
	"github.com/sftproject/sft/services/store"
	"github.com/sftproject/sft/services/store/kvstore"
)

// natsLayout lays out, in a new directory, what deploy/nats-server.conf
// expects next to it (see its header), from the output of `sftd certs` in
// dataDir, and returns the directory.
func natsLayout(t testing.TB, dataDir string) string {
	t.Helper()
	dir := t.TempDir()
	copyFile(t, filepath.Join(repoRoot(t), "deploy", "nats-server.conf"), filepath.Join(dir, "nats-server.conf"))
	for _, name := range []string{broker.CACertName, broker.ServerCertName, broker.ServerKeyName} {
		copyFile(t, filepath.Join(dataDir, "pki", name), filepath.Join(dir, "pki", name))
	}
	copyFile(t, filepath.Join(dataDir, "secrets", daemon.NATSAuthFile), filepath.Join(dir, "secrets", daemon.NATSAuthFile))
	for _, name := range clusterFiles {
		copyFile(t, filepath.Join(repoRoot(t), "deploy", "nats-cluster", name), filepath.Join(dir, "nats-cluster", name))
	}
	return dir
}

// clusterFiles are deploy/nats-cluster's: what the nodes share, then one
// file per node.
var clusterFiles = []string{"cluster.conf", "nats-1.conf", "nats-2.conf", "nats-3.conf"}

// Each node of deploy/nats-cluster is deploy/nats-server.conf (the same
// users, permissions and auth callout) with a name and JetStream directory
// of its own, and routes over TLS 1.3 that accept only a certificate of
// the CA naming one of the routes.
func TestNATSClusterConfig(t *testing.T) {
	data := sftdCerts(t, filepath.Join(t.TempDir(), "data"))
	t.Chdir(natsLayout(t, data))
	single, err := server.ProcessConfigFile("nats-server.conf")
	if err != nil {
		t.Fatal(err)
	}
	names, stores := map[string]bool{}, map[string]bool{}
	for _, node := range clusterFiles[1:] {
		opts, err := server.ProcessConfigFile(filepath.Join("nats-cluster", node))
		if err != nil {
			t.Fatalf("deploy/nats-cluster/%s: %v", node, err)
		}
		names[opts.ServerName], stores[opts.StoreDir] = true, true
		if !opts.JetStream {
			t.Errorf("%s: JetStream off", node)
		}
		c := opts.Cluster
		if c.Name != "sft" || c.Port != 6222 || len(opts.Routes) != 3 {
			t.Errorf("%s: cluster %q on port %d with %d routes, want sft on 6222 with 3", node, c.Name, c.Port, len(opts.Routes))
		}
		if c.TLSConfig == nil || c.TLSConfig.MinVersion != tls.VersionTLS13 || !c.TLSCheckKnownURLs || c.TLSConfig.ClientCAs == nil {
			t.Errorf("%s: routes must be TLS 1.3, verifying the peer's certificate against the CA and the routes' names", node)
		}
		if opts.TLSConfig == nil || opts.TLSConfig.MinVersion != tls.VersionTLS13 {
			t.Errorf("%s: clients must need TLS 1.3", node)
		}
		if len(opts.Nkeys) != len(single.Nkeys) || opts.AuthCallout == nil ||
			!reflect.DeepEqual(opts.AuthCallout, single.AuthCallout) {
			t.Errorf("%s: users or auth callout differ from deploy/nats-server.conf", node)
		}
		for i, nk := range opts.Nkeys {
			checkPermissions(t, nk.Permissions, single.Nkeys[i].Permissions)
		}
	}
	if len(names) != 3 || len(stores) != 3 {
		t.Errorf("server names %v and store directories %v: want three distinct of each", names, stores)
	}
}

// serviceKeys reads the services' NATS identities `sftd certs` made in
// dataDir.
func serviceKeys(t testing.TB, dataDir string) map[string]nkeys.KeyPair {
	t.Helper()
	out := map[string]nkeys.KeyPair{}
	for _, svc := range broker.Services() {
		kp, err := secrets.ServiceKey(filepath.Join(dataDir, "secrets"), svc)
		if err != nil {
			t.Fatal(err)
		}
		out[svc] = kp
	}
	return out
}

func publicKey(t testing.TB, kp nkeys.KeyPair) string {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func TestNATSConfig(t *testing.T) {
	data := sftdCerts(t, filepath.Join(t.TempDir(), "data"))
	dir := natsLayout(t, data)
	// nats-server reads TLS files relative to its working directory, which
	// the deployment sets to the configuration's directory.
	t.Chdir(dir)
	opts, err := server.ProcessConfigFile("nats-server.conf")
	if err != nil {
		t.Fatalf("deploy/nats-server.conf: %v", err)
	}

	t.Run("listen", func(t *testing.T) {
		if opts.Host != "0.0.0.0" || opts.Port != 4222 {
			t.Errorf("listen %s:%d, want 0.0.0.0:4222", opts.Host, opts.Port)
		}
		// The compose health check asks http://127.0.0.1:8222/healthz.
		if opts.HTTPHost != "127.0.0.1" || opts.HTTPPort != 8222 || opts.HTTPSPort != 0 {
			t.Errorf("monitoring on %s:%d (https port %d), want only http on 127.0.0.1:8222", opts.HTTPHost, opts.HTTPPort, opts.HTTPSPort)
		}
		if opts.MaxPayload <= 0 || opts.MaxPayload > 1<<20 {
			t.Errorf("max_payload %d, want a modest limit (at most 1 MiB)", opts.MaxPayload)
		}
	})

	t.Run("tls", func(t *testing.T) {
		c := opts.TLSConfig
		if c == nil || opts.AllowNonTLS {
			t.Fatalf("TLS not required (tls config %v, allow_non_tls %v)", c != nil, opts.AllowNonTLS)
		}
		if c.MinVersion != tls.VersionTLS13 {
			t.Errorf("min TLS version %s, want TLS 1.3", tls.VersionName(c.MinVersion))
		}
		if len(c.CurvePreferences) == 0 || c.CurvePreferences[0] != tls.X25519MLKEM768 {
			t.Errorf("curve preferences %v, want X25519MLKEM768 first", c.CurvePreferences)
		}
		if c.ClientAuth != tls.NoClientCert {
			t.Errorf("client auth %v: anonymous clients have no certificate", c.ClientAuth)
		}
		if len(c.Certificates) != 1 || c.Certificates[0].Leaf == nil {
			t.Fatalf("want one server certificate, got %d", len(c.Certificates))
		}
		caPEM, err := os.ReadFile(filepath.Join(data, "pki", broker.CACertName))
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(caPEM)
		// "nats" is the compose service name; 127.0.0.1 the published port.
		for _, name := range []string{"nats", "127.0.0.1"} {
			if _, err := c.Certificates[0].Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
				t.Errorf("server certificate for %s: %v", name, err)
			}
		}
	})

	// The commented `verify: true`, turned on, requires a client
	// certificate of the CA on every connection.
	t.Run("tls verify", func(t *testing.T) {
		copyFile(t, "nats-server.conf", "nats-server-verify.conf")
		enableVerify(t, "nats-server-verify.conf")
		vopts, err := server.ProcessConfigFile("nats-server-verify.conf")
		if err != nil {
			t.Fatalf("with verify: true: %v", err)
		}
		c := vopts.TLSConfig
		if c == nil || c.ClientAuth != tls.RequireAndVerifyClientCert || c.ClientCAs == nil {
			t.Fatalf("with verify: true: TLS %+v, want client certificates required and verified", c)
		}
		if c.MinVersion != tls.VersionTLS13 || len(c.CurvePreferences) == 0 || c.CurvePreferences[0] != tls.X25519MLKEM768 {
			t.Errorf("with verify: true: TLS %s, curves %v; want TLS 1.3 with X25519MLKEM768 first", tls.VersionName(c.MinVersion), c.CurvePreferences)
		}
	})

	t.Run("jetstream", func(t *testing.T) {
		if !opts.JetStream || opts.StoreDir == "" {
			t.Errorf("JetStream %v in %q, want on with a store_dir", opts.JetStream, opts.StoreDir)
		}
	})

	t.Run("users", func(t *testing.T) {
		if opts.NoAuthUser != "" {
			t.Errorf("no_auth_user %q: every client must authenticate", opts.NoAuthUser)
		}
		if len(opts.Users) != 0 || opts.Username != "" || opts.Authorization != "" {
			t.Errorf("password or token users %v: the services authenticate with their nkeys, clients through the auth callout", opts.Users)
		}
		keys := serviceKeys(t, data)
		if len(opts.Nkeys) != len(keys) {
			t.Fatalf("%d nkey users, want one per service (%v)", len(opts.Nkeys), broker.Services())
		}
		for _, svc := range broker.Services() {
			t.Run(svc, func(t *testing.T) {
				pub := publicKey(t, keys[svc])
				i := slices.IndexFunc(opts.Nkeys, func(u *server.NkeyUser) bool { return u.Nkey == pub })
				if i < 0 {
					t.Fatalf("no nkey user with the key of %s", secrets.ServiceKeyFile(svc))
				}
				want, err := broker.ServicePermissions(svc)
				if err != nil {
					t.Fatal(err)
				}
				checkPermissions(t, opts.Nkeys[i].Permissions, want)
			})
		}
	})

	t.Run("auth callout", func(t *testing.T) {
		ac := opts.AuthCallout
		if ac == nil {
			t.Fatal("no auth_callout")
		}
		keys, err := secrets.CalloutKeys(filepath.Join(data, "secrets"))
		if err != nil {
			t.Fatal(err)
		}
		issuer, xkey, err := keys.Public()
		if err != nil {
			t.Fatal(err)
		}
		if ac.Issuer != issuer || ac.XKey != xkey {
			t.Errorf("auth_callout issuer %q xkey %q, want the keys of %s and %s", ac.Issuer, ac.XKey, secrets.CalloutIssuerFile, secrets.CalloutXKeyFile)
		}
		var want []string
		for _, kp := range serviceKeys(t, data) {
			want = append(want, publicKey(t, kp))
		}
		if !sameSet(ac.AuthUsers, want) {
			t.Errorf("auth_users %v, want exactly the services' keys %v", ac.AuthUsers, want)
		}
		if opts.AuthTimeout < 5 {
			t.Errorf("authorization timeout %vs leaves the callout too little time", opts.AuthTimeout)
		}
	})
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// checkPermissions compares the permissions the configuration file gives
// with those the embedded server uses, as sets: the order of a list does
// not matter to the server.
func checkPermissions(t *testing.T, got, want *server.Permissions) {
	t.Helper()
	if got == nil {
		t.Fatal("no permissions")
	}
	subjects := func(p *server.SubjectPermission) (allow, deny []string) {
		if p == nil {
			return nil, nil
		}
		return p.Allow, p.Deny
	}
	for _, kind := range []struct {
		name      string
		got, want *server.SubjectPermission
	}{{"publish", got.Publish, want.Publish}, {"subscribe", got.Subscribe, want.Subscribe}} {
		ga, gd := subjects(kind.got)
		wa, wd := subjects(kind.want)
		if missing, extra := diff(ga, wa); len(missing)+len(extra) > 0 {
			t.Errorf("%s allow: missing %q, extra %q", kind.name, missing, extra)
		}
		if !sameSet(gd, wd) {
			t.Errorf("%s deny %q, want %q", kind.name, gd, wd)
		}
	}
	if !reflect.DeepEqual(got.Response, want.Response) {
		t.Errorf("response permission %+v, want %+v", got.Response, want.Response)
	}
}

// diff returns what want has and got lacks, and what got has beyond want.
func diff(got, want []string) (missing, extra []string) {
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			extra = append(extra, g)
		}
	}
	return missing, extra
}

// TestNATSServer runs nats-server itself with deploy/nats-server.conf and
// checks what it enforces.
func TestNATSServer(t *testing.T) {
	t.Parallel()
	natsBinary(t)
	data := sftdCerts(t, filepath.Join(t.TempDir(), "data"))
	dir := natsLayout(t, data)
	srv := startNATS(t, filepath.Join(dir, "nats-server.conf"), dir)
	caFile := filepath.Join(data, "pki", broker.CACertName)
	keys := serviceKeys(t, data)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	conn := func(t *testing.T, o broker.ConnOptions) *nats.Conn {
		t.Helper()
		o.URL, o.CAFile, o.Name = srv.URL, caFile, "test"
		nc, err := broker.Connect(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	service := func(t *testing.T, svc string) *nats.Conn {
		t.Helper()
		return conn(t, broker.ConnOptions{Service: svc, NKey: keys[svc]})
	}

	authConn := service(t, broker.ServiceAuth)
	if st, err := authConn.TLSConnectionState(); err != nil {
		t.Error(err)
	} else if st.Version != tls.VersionTLS13 || st.CurveID != tls.X25519MLKEM768 {
		t.Errorf("TLS %s with %s, want TLS 1.3 with X25519MLKEM768", tls.VersionName(st.Version), st.CurveID)
	}

	t.Run("refused", func(t *testing.T) {
		pool := x509.NewCertPool()
		caPEM, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		pool.AppendCertsFromPEM(caPEM)
		plain := strings.Replace(srv.URL, "tls://", "nats://", 1)
		for _, tc := range []struct {
			name string
			url  string
			opts []nats.Option
		}{
			{"no TLS", plain, nil},
			{"TLS 1.2", srv.URL, []nats.Option{nats.Secure(&tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12})}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				nc, err := nats.Connect(tc.url, append(tc.opts, nats.Timeout(5*time.Second), nats.NoReconnect())...)
				if err == nil {
					nc.Close()
					t.Fatal("connected")
				}
			})
		}
	})

	// The auth service answers the callout, as `sftd auth` does.
	aliceToken := startAuth(t, ctx, authConn, data, srv.URL)
	if _, err := os.Stat(filepath.Join(dir, "data", "jetstream")); err != nil {
		t.Errorf("JetStream state is not under data/, where compose mounts its volume: %v", err)
	}
	alice := func(t *testing.T) *nats.Conn {
		t.Helper()
		return conn(t, broker.ConnOptions{Token: aliceToken, InboxPrefix: api.InboxPrefix("alice")})
	}

	t.Run("clients refused", func(t *testing.T) {
		stranger, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		for name, o := range map[string]broker.ConnOptions{
			"no credentials":      {},
			"wrong password":      {User: "alice", Password: "guess", InboxPrefix: api.InboxPrefix("alice")},
			"forged token":        {Token: aliceToken[:len(aliceToken)-4] + "AAAA", InboxPrefix: api.InboxPrefix("alice")},
			"unknown service key": {Service: broker.ServiceAuth, NKey: stranger},
			"service key as user": {User: publicKey(t, keys[broker.ServiceAuth]), Password: "pw-alice"},
		} {
			t.Run(name, func(t *testing.T) {
				o.URL, o.CAFile = srv.URL, caFile
				nc, err := broker.Connect(ctx, o)
				if err == nil {
					nc.Close()
					t.Fatal("connected")
				}
				if !strings.Contains(err.Error(), "authorization violation") {
					t.Errorf("error %v, want an authorization violation", err)
				}
			})
		}
	})

	// Each case on a fresh connection, whose LastError then tells whether
	// the server refused the operation.
	const client = "client"
	for _, tc := range []struct {
		who      string
		sub, pub string
		allowed  bool
	}{
		{who: broker.ServiceAuth, sub: api.SubjectAuthLogin, allowed: true},
		{who: broker.ServiceAuth, sub: server.AuthCalloutSubject, allowed: true},
		{who: broker.ServiceAuth, sub: broker.ServiceInbox(broker.ServiceAuth) + ".>", allowed: true},
		{who: broker.ServiceAuth, sub: api.Prefix + ".session.>"},
		{who: broker.ServiceAuth, pub: "_INBOX.alice.x"},
		{who: broker.ServiceSession, sub: api.SubjectSessionCreate, allowed: true},
		{who: broker.ServiceSession, pub: api.EventSubject("s1", "created"), allowed: true},
		{who: broker.ServiceSession, pub: "_INBOX.alice.x", allowed: true},
		{who: broker.ServiceSession, sub: api.Prefix + ".key.>"},
		{who: broker.ServiceSession, sub: server.AuthCalloutSubject},
		{who: broker.ServiceSession, sub: broker.ServiceInbox(broker.ServiceKey) + ".>"},
		{who: broker.ServiceSession, pub: "$JS.API.DIRECT.GET.KV_SFT_KEYS.$KV.SFT_KEYS.s1"},
		{who: broker.ServiceSession, pub: "$KV.SFT_KEYS.s1"},
		{who: broker.ServiceKey, sub: api.SubjectKeyGet, allowed: true},
		{who: broker.ServiceKey, pub: api.SubjectSessionGet, allowed: true},
		{who: broker.ServiceKey, sub: api.Prefix + ".auth.>"},
		{who: broker.ServiceKey, sub: server.AuthCalloutSubject},
		{who: broker.ServiceKey, pub: "_INBOX.alice.x"},
		{who: broker.ServiceKey, pub: "$KV.SFT_SESSIONS.s.x"},
		{who: broker.ServiceKey, sub: "_INBOX.>"},
		{who: broker.ServiceKey, sub: "$SYS.>"},
		{who: broker.ServiceKey, sub: ">"},
		{who: broker.ServiceKey, pub: "$SYS.REQ.SERVER.PING"},

		{who: client, sub: "_INBOX.alice.x", allowed: true},
		{who: client, sub: "_INBOX.bob.x"},
		{who: client, sub: "_INBOX.>"},
		{who: client, sub: api.Prefix + ".>"},
		{who: client, sub: api.SubjectAuthLogin},
		{who: client, sub: api.AllEvents},
		{who: client, sub: "$JS.API.>"},
		{who: client, sub: "$SYS.>"},
		{who: client, sub: broker.ServiceInboxPrefix + ".>"},
		{who: client, sub: ">"},
		{who: client, pub: api.SubjectAuthInfo, allowed: true},
		{who: client, pub: api.SubjectSessionCreate, allowed: true},
		{who: client, pub: api.SubjectKeyGet, allowed: true},
		{who: client, pub: api.EventSubject("s1", "created")},
		{who: client, pub: "$JS.API.INFO"},
		{who: client, pub: "_INBOX.bob.x"},
	} {
		name := tc.who + " sub " + tc.sub
		if tc.pub != "" {
			name = tc.who + " pub " + tc.pub
		}
		t.Run(name, func(t *testing.T) {
			var nc *nats.Conn
			if tc.who == client {
				nc = alice(t)
			} else {
				nc = service(t, tc.who)
			}
			var err error
			if tc.sub != "" {
				_, err = nc.SubscribeSync(tc.sub)
			} else {
				err = nc.Publish(tc.pub, []byte("{}"))
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			err = nc.LastError()
			denied := err != nil && strings.Contains(strings.ToLower(err.Error()), "permissions violation")
			if tc.allowed && err != nil {
				t.Errorf("refused: %v", err)
			}
			if !tc.allowed && !denied {
				t.Errorf("allowed (last error %v), want a permissions violation", err)
			}
		})
	}

	t.Run("request and reply", func(t *testing.T) {
		client := alice(t)
		svc := service(t, broker.ServiceSession)

		// Client to service: an API request, answered in the client's inbox
		// through the service's response permission.
		sub, err := svc.Subscribe(api.SubjectSessionCreate, func(m *nats.Msg) { _ = m.Respond([]byte(`{"ok":true}`)) })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := svc.Flush(); err != nil {
			t.Fatal(err)
		}
		rep, err := client.RequestWithContext(ctx, api.SubjectSessionCreate, []byte("{}"))
		if err != nil {
			t.Fatalf("client request: %v", err)
		}
		var body struct{ OK bool }
		if err := json.Unmarshal(rep.Data, &body); err != nil || !body.OK {
			t.Errorf("reply %q (%v)", rep.Data, err)
		}

		// Service to client (the watch heartbeat): allow_responses lets the
		// client answer into the service's inbox, which it may not
		// otherwise publish to.
		hb, err := client.Subscribe("_INBOX.alice.heartbeat", func(m *nats.Msg) { _ = m.Respond([]byte("alive")) })
		if err != nil {
			t.Fatal(err)
		}
		defer hb.Unsubscribe()
		if err := client.Flush(); err != nil {
			t.Fatal(err)
		}
		// A refused answer is dropped, so only a timeout can tell.
		hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
		defer hcancel()
		rep, err = svc.RequestWithContext(hctx, "_INBOX.alice.heartbeat", nil)
		if err != nil {
			t.Fatalf("client's answer to a service request: %v (client error: %v)", err, client.LastError())
		}
		if string(rep.Data) != "alive" {
			t.Errorf("answer %q", rep.Data)
		}
	})
}

// startAuth runs the auth service on svc, a connection of the auth
// identity (state in the server's JetStream), with a user alice, and
// returns a login token of hers, obtained the way sft-cli does: a password
// connection, then the login request.
func startAuth(t *testing.T, ctx context.Context, svc *nats.Conn, data, url string) string {
	t.Helper()
	js, err := jetstream.New(svc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kvstore.Open(ctx, js, kvstore.Options{SessionsBucket: broker.SessionsBucket, UsersBucket: broker.UsersBucket, KeysBucket: broker.KeysBucket})
	if err != nil {
		t.Fatal(err)
	}
	hash, err := auth.HashPassword("pw-alice", auth.HashParams{Memory: 8 << 10, Time: 1, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateUser(ctx, &store.User{Name: "alice", PasswordHash: hash, Role: "user", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(data, "secrets")
	signing, err := secrets.SigningKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	sealKey, err := secrets.SealKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secrets.CalloutKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Options{Users: st, SigningKey: signing, SealKey: sealKey, TokenTTL: time.Hour, Callout: &keys})
	if err != nil {
		t.Fatal(err)
	}
	m, err := a.Start(ctx, svc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	c, _, err := client.LogIn(ctx, broker.ConnOptions{URL: url, CAFile: filepath.Join(data, "pki", broker.CACertName)}, "alice", "pw-alice")
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	c.Conn().Close()
	return c.Token()
}
