package broker

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/sftproject/sft/api"
)

// clientCert issues a client certificate named name from the CA in caDir
// into a new directory and returns its certificate and key files.
func clientCert(t *testing.T, caDir, name string) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := EnsureClientCert(caDir, name, certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestVerifyClients runs a server that requires client certificates: only
// holders of one issued by its CA get through the TLS handshake, and they
// still need their NATS identity (service nkey, login token or password)
// and get only its permissions.
func TestVerifyClients(t *testing.T) {
	b := startBrokerWith(t, true)
	caDir := filepath.Dir(b.pki.CAFile)

	// A service and a client, each with a certificate and its own
	// credentials, talk through the broker as without mTLS.
	svc := b.service(t)
	client := b.client(t)
	for name, nc := range map[string]*nats.Conn{"service": svc, "client": client} {
		st, err := nc.TLSConnectionState()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if st.Version != tls.VersionTLS13 || st.CurveID != tls.X25519MLKEM768 {
			t.Errorf("%s: TLS %s with %v, want TLS 1.3 with X25519MLKEM768", name, tls.VersionName(st.Version), st.CurveID)
		}
	}
	answerSessionGet(t, svc)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if rep, err := client.RequestWithContext(ctx, api.SubjectSessionGet, nil); err != nil || string(rep.Data) != "ok" {
		t.Fatalf("request through the mTLS broker: %v", err)
	}
	// The certificate grants nothing: the client is still kept to its
	// own permissions.
	if _, err := client.SubscribeSync(api.SubjectSessionGet); err != nil {
		t.Fatal(err)
	}
	if err := permissionError(t, client); err == nil {
		t.Error("a client with a certificate subscribed to a request subject")
	}

	// Refused in the TLS handshake, before the auth callout is asked.
	otherCA := t.TempDir()
	if _, err := EnsureDevPKI(otherCA); err != nil {
		t.Fatal(err)
	}
	foreignCert, foreignKey := clientCert(t, otherCA, "test")
	ca, err := loadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	expiredDir := t.TempDir()
	expiredCert, expiredKey := filepath.Join(expiredDir, "old.crt"), filepath.Join(expiredDir, "old.key")
	if err := issue(ca, "old", nil, clientOnly, expiredCert, expiredKey, time.Now().Add(-2*leafValidity)); err != nil {
		t.Fatal(err)
	}
	token := ConnOptions{Token: aliceToken, InboxPrefix: api.InboxPrefix("alice")}
	with := func(o ConnOptions, cert, key string) ConnOptions {
		o.CertFile, o.KeyFile = cert, key
		return o
	}
	for _, tc := range []struct {
		name string
		o    ConnOptions
		want string
	}{
		{"service key without a certificate", ConnOptions{Service: ServiceSession, NKey: b.svcKeys[ServiceSession]}, "the server requires a client certificate"},
		{"token without a certificate", token, "the server requires a client certificate"},
		{"password without a certificate", ConnOptions{User: "alice", Password: alicePassword, InboxPrefix: api.InboxPrefix("alice")}, "the server requires a client certificate"},
		{"service key with another CA's certificate", with(ConnOptions{Service: ServiceSession, NKey: b.svcKeys[ServiceSession]}, foreignCert, foreignKey), "the server rejected the TLS handshake"},
		{"token with another CA's certificate", with(token, foreignCert, foreignKey), "the server rejected the TLS handshake"},
		{"token with an expired certificate of the CA", with(token, expiredCert, expiredKey), "the server rejected the TLS handshake"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := b.callouts.Load()
			tc.o.URL, tc.o.CAFile = b.ClientURL(), b.pki.CAFile
			nc, err := Connect(t.Context(), tc.o)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "authorization violation") {
				t.Errorf("refused after the TLS handshake: %v", err)
			}
			if n := b.callouts.Load() - before; n != 0 {
				t.Errorf("the auth callout was asked %d times about a connection without a valid certificate", n)
			}
		})
	}

	// mTLS adds to the NATS identity and never replaces it: a valid
	// certificate with missing or wrong credentials is still refused.
	stranger, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]ConnOptions{
		"no credentials":               {},
		"unknown service key":          {Service: ServiceSession, NKey: stranger},
		"forged token":                 {Token: "tok-mallory", InboxPrefix: api.InboxPrefix("alice")},
		"wrong password":               {User: "alice", Password: "guess", InboxPrefix: api.InboxPrefix("alice")},
		"service key's name as user":   {User: mustPublic(t, b.svcKeys[ServiceSession]), Password: alicePassword},
		"service name with a password": {User: ServiceSession, Password: alicePassword},
	} {
		t.Run("valid certificate, "+name, func(t *testing.T) {
			o.URL, o.CAFile, o.CertFile, o.KeyFile = b.ClientURL(), b.pki.CAFile, b.certFile, b.keyFile
			nc, err := Connect(t.Context(), o)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), "authorization violation") {
				t.Errorf("error %q, want an authorization violation", err)
			}
		})
	}

	if v, err := b.Server().Varz(nil); err != nil || !v.TLSVerify {
		t.Errorf("monitoring says tls_verify %v (%v), want true", v != nil && v.TLSVerify, err)
	}
}

// TestVerifyClientsOff: without VerifyClients nothing changes for clients
// without a certificate, a certificate of the CA is accepted, and one of
// another CA is still verified and refused rather than ignored.
func TestVerifyClientsOff(t *testing.T) {
	b := startBrokerWith(t, false)
	if b.certFile != "" {
		t.Fatal("the test broker made a client certificate it does not need")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	svc := b.service(t)
	answerSessionGet(t, svc)
	cert, key := clientCert(t, filepath.Dir(b.pki.CAFile), "alice-laptop")
	otherCA := t.TempDir()
	if _, err := EnsureDevPKI(otherCA); err != nil {
		t.Fatal(err)
	}
	foreignCert, foreignKey := clientCert(t, otherCA, "alice-laptop")
	for _, tc := range []struct {
		name       string
		cert, key  string
		refusedTLS bool
	}{
		{name: "no certificate"},
		{name: "certificate of the CA", cert: cert, key: key},
		{name: "certificate of another CA", cert: foreignCert, key: foreignKey, refusedTLS: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := Connect(t.Context(), ConnOptions{
				URL: b.ClientURL(), CAFile: b.pki.CAFile, Token: aliceToken, InboxPrefix: api.InboxPrefix("alice"),
				CertFile: tc.cert, KeyFile: tc.key,
			})
			if tc.refusedTLS {
				if err == nil {
					nc.Close()
					t.Fatal("connected")
				}
				if !strings.Contains(err.Error(), "the server rejected the TLS handshake") {
					t.Errorf("error %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.RequestWithContext(ctx, api.SubjectSessionGet, nil); err != nil {
				t.Fatalf("request: %v", err)
			}
		})
	}
	if v, err := b.Server().Varz(nil); err != nil || v.TLSVerify {
		t.Errorf("monitoring says tls_verify %v (%v), want false", v != nil && v.TLSVerify, err)
	}
}

// The client certificate's key is a secret like the others: a copy that
// group or others can read is refused before it is used.
func TestClientKeyReadableByOthersRefused(t *testing.T) {
	b := startBrokerWith(t, true)
	cert, key := clientCert(t, filepath.Dir(b.pki.CAFile), "test")
	if err := os.Chmod(key, 0o640); err != nil {
		t.Fatal(err)
	}
	o := ConnOptions{URL: b.ClientURL(), CAFile: b.pki.CAFile, Service: ServiceKey, NKey: b.svcKeys[ServiceKey], CertFile: cert, KeyFile: key}
	nc, err := Connect(t.Context(), o)
	if err == nil {
		nc.Close()
		t.Fatal("connected with a group-readable key")
	}
	if !strings.Contains(err.Error(), "chmod 600 "+key) {
		t.Errorf("error %q does not say to chmod 600 the key", err)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	nc, err = Connect(t.Context(), o)
	if err != nil {
		t.Fatalf("after chmod 600: %v", err)
	}
	nc.Close()
}
