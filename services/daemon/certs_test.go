package daemon_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/services/daemon"
	"github.com/sftproject/sft/services/secrets"
)

func TestCerts(t *testing.T) {
	in := newInstall(t)
	out, err := in.sftd("", nil, "certs", "--host", "nats", "--host", "10.1.2.3", "--client", "alice", "--client", "bob-laptop")
	if err != nil {
		t.Fatalf("sftd certs: %v", err)
	}
	if !strings.Contains(out, "CA:") {
		t.Errorf("output %q does not say where the CA is", out)
	}
	pkiDir := filepath.Join(in.dataDir, "pki")
	secretsDir := filepath.Join(in.dataDir, "secrets")
	for _, f := range []string{
		"pki/ca.pem", "pki/ca-key.pem", "pki/server.pem", "pki/server-key.pem",
		"secrets/token-signing.pem", "secrets/token-signing.pub.pem", "secrets/login-seal.key",
		"secrets/key-encryption.key", "secrets/nats-auth.conf",
		"secrets/relay-ticket.pem", "secrets/relay-ticket.pub.pem",
		"secrets/nats-service-auth.nk", "secrets/nats-service-session.nk", "secrets/nats-service-key.nk",
		"secrets/nats-callout.nk", "secrets/nats-callout.xk",
		"secrets/nats-service-auth.crt", "secrets/nats-service-session.crt", "secrets/nats-service-key.crt",
		"secrets/nats-service-auth.key", "secrets/nats-service-session.key", "secrets/nats-service-key.key",
		"clients/alice.crt", "clients/alice.key", "clients/bob-laptop.crt", "clients/bob-laptop.key",
	} {
		if _, err := os.Stat(filepath.Join(in.dataDir, f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}

	b, err := os.ReadFile(filepath.Join(pkiDir, "server.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"nats", "localhost", "10.1.2.3", "127.0.0.1"} {
		if err := cert.VerifyHostname(host); err != nil {
			t.Errorf("server certificate does not cover %s: %v", host, err)
		}
	}

	// nats-auth.conf holds each service's public key, never its seed.
	auth, err := os.ReadFile(filepath.Join(secretsDir, "nats-auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range broker.Services() {
		kp, err := secrets.ServiceKey(secretsDir, svc)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		if want := daemon.NATSKeyVariable(svc) + ": \"" + pub + "\""; !strings.Contains(string(auth), want) {
			t.Errorf("nats-auth.conf lacks %s:\n%s", want, auth)
		}
		seed, err := kp.Seed()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(auth), string(seed)) {
			t.Errorf("nats-auth.conf contains the %s service's seed", svc)
		}
	}
	// ... and the auth callout's public keys, never its seeds.
	ck, err := secrets.CalloutKeys(secretsDir)
	if err != nil {
		t.Fatal(err)
	}
	issuer, xkey, err := ck.Public()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SFT_CALLOUT_ISSUER: \"" + issuer + "\"", "SFT_CALLOUT_XKEY: \"" + xkey + "\""} {
		if !strings.Contains(string(auth), want) {
			t.Errorf("nats-auth.conf lacks %s:\n%s", want, auth)
		}
	}
	for _, f := range []string{"nats-callout.nk", "nats-callout.xk"} {
		seed, err := os.ReadFile(filepath.Join(secretsDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(auth), string(seed)) {
			t.Errorf("nats-auth.conf contains the seed of %s", f)
		}
	}
	if st, _ := os.Stat(filepath.Join(secretsDir, "nats-auth.conf")); st.Mode().Perm() != 0o600 {
		t.Errorf("nats-auth.conf has mode %o", st.Mode().Perm())
	}

	// Client certificates (mTLS): one per service and one per --client,
	// client authentication only, signed by the CA, keys 0600.
	caPEM, err := os.ReadFile(filepath.Join(pkiDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	clientCerts := map[string][2]string{}
	for _, svc := range broker.Services() {
		clientCerts["sft-service-"+svc] = [2]string{filepath.Join(secretsDir, secrets.ServiceCertFile(svc)), filepath.Join(secretsDir, secrets.ServiceCertKeyFile(svc))}
	}
	for _, name := range []string{"alice", "bob-laptop"} {
		cert, key := daemon.ClientCertFiles(in.dataDir, name)
		clientCerts[name] = [2]string{cert, key}
		if !strings.Contains(out, "SFT_NATS_CERT_FILE="+cert+" SFT_NATS_KEY_FILE="+key) {
			t.Errorf("output does not say how to use %s's certificate:\n%s", name, out)
		}
	}
	pems := map[string]string{}
	for name, files := range clientCerts {
		if st, err := os.Stat(files[1]); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, want mode 600", files[1], err)
		}
		pair, err := tls.LoadX509KeyPair(files[0], files[1])
		if err != nil {
			t.Fatal(err)
		}
		if pair.Leaf.Subject.CommonName != name {
			t.Errorf("%s: CN %q, want %q", files[0], pair.Leaf.Subject.CommonName, name)
		}
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: %v", files[0], err)
		}
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
			t.Errorf("%s is good for a server too", files[0])
		}
		b, _ := os.ReadFile(files[0])
		pems[files[0]] = string(b)
	}

	// A second run keeps everything as it was.
	if _, err := in.sftd("", nil, "certs", "--host", "nats", "--host", "10.1.2.3", "--client", "alice"); err != nil {
		t.Fatal(err)
	}
	auth2, _ := os.ReadFile(filepath.Join(secretsDir, "nats-auth.conf"))
	b2, _ := os.ReadFile(filepath.Join(pkiDir, "server.pem"))
	if string(auth2) != string(auth) || string(b2) != string(b) {
		t.Fatal("a second `sftd certs` changed existing files")
	}
	for f, want := range pems {
		if got, _ := os.ReadFile(f); string(got) != want {
			t.Errorf("a second `sftd certs` reissued %s", f)
		}
	}

	for _, bad := range []string{"", "../x", "a/b", "Alice", ".hidden", strings.Repeat("x", 65)} {
		if _, err := in.sftd("", nil, "certs", "--client", bad); err == nil || !strings.Contains(err.Error(), "client name") {
			t.Errorf("--client %q: %v, want a refusal", bad, err)
		}
	}
}

func TestServiceWithoutSecrets(t *testing.T) {
	in := newInstall(t)
	for _, svc := range []string{"auth", "session", "key", "relay"} {
		_, err := in.sftd("", []string{"SFT_NATS_URL=tls://127.0.0.1:1", "SFT_RELAY_LISTEN=127.0.0.1:0"}, svc)
		if err == nil || !strings.Contains(err.Error(), "sftd certs") {
			t.Errorf("sftd %s without secrets: %v, want an error that says to run sftd certs", svc, err)
		}
	}
}
