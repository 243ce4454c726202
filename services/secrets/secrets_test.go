package secrets

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/sftproject/sft/broker"
)

// accountSeed is a valid nkey seed of the wrong kind for a service.
const accountSeed = "SAAGNJOZTRPYYXG2NJX3ZNGXYUSDYX2BWO447W3SHG6XQ7U66RWHQ3JUXM"

var secretFiles = []string{
	ServiceKeyFile(broker.ServiceAuth), ServiceKeyFile(broker.ServiceSession), ServiceKeyFile(broker.ServiceKey),
	SigningKeyFile, TokenPublicKeyFile, SealKeyFile, KEKFile, CalloutIssuerFile, CalloutXKeyFile,
	RelayTicketKeyFile, RelayTicketPublicKeyFile,
}

// publicKeys are the services' public keys in s.
func publicKeys(t *testing.T, s *Secrets) map[string]string {
	t.Helper()
	keys, err := s.ServicePublicKeys()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}

func sameSecrets(t *testing.T, a, b *Secrets) {
	t.Helper()
	ab, err := a.SealKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	bb, err := b.SealKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(publicKeys(t, a), publicKeys(t, b)) || !a.SigningKey.Equal(b.SigningKey) || !a.RelayTicketKey.Equal(b.RelayTicketKey) || !bytes.Equal(ab, bb) || !bytes.Equal(a.KEK, b.KEK) {
		t.Fatal("the secrets changed between loads")
	}
	ai, ax, err := a.Callout.Public()
	if err != nil {
		t.Fatal(err)
	}
	bi, bx, err := b.Callout.Public()
	if err != nil {
		t.Fatal(err)
	}
	if ai != bi || ax != bx {
		t.Fatal("the auth callout keys changed between loads")
	}
}

func TestLoadSecretsCreatesPrivateFiles(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data") // does not exist yet
	s, err := Ensure(filepath.Join(data, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.ServiceKeys) != 3 || len(s.SigningKey) == 0 || s.SealKey == nil || len(s.KEK) != 32 {
		t.Fatalf("incomplete secrets: %d service keys, signing key %d bytes, KEK %d bytes", len(s.ServiceKeys), len(s.SigningKey), len(s.KEK))
	}
	dir := filepath.Join(data, "secrets")
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("%s has mode %o, want 700", dir, m)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != len(secretFiles) {
		t.Errorf("secrets dir holds %v, want exactly %v (no leftovers)", names, secretFiles)
	}
	for _, f := range secretFiles {
		if m := mode(t, filepath.Join(dir, f)); m != 0o600 {
			t.Errorf("%s has mode %o, want 600", f, m)
		}
	}

	again, err := Ensure(filepath.Join(data, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	sameSecrets(t, s, again)

	// Each service its own identity: user nkeys, all different.
	want := publicKeys(t, s)
	seen := map[string]bool{}
	for _, svc := range broker.Services() {
		kp, err := ServiceKey(dir, svc)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		if pub != want[svc] || !nkeys.IsValidPublicUserKey(pub) {
			t.Errorf("ServiceKey(%s) = %s, want the user key %s", svc, pub, want[svc])
		}
		if seen[pub] {
			t.Errorf("%s shares its NATS identity with another service", svc)
		}
		seen[pub] = true
	}
	if _, err := ServiceKey(dir, "billing"); err == nil {
		t.Error("ServiceKey of an unknown service succeeded")
	}
	ck, err := CalloutKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	iss, xk, err := ck.Public()
	if err != nil {
		t.Fatal(err)
	}
	if wi, wx, _ := s.Callout.Public(); iss != wi || xk != wx {
		t.Errorf("CalloutKeys = %s, %s; want %s, %s", iss, xk, wi, wx)
	}
	if !strings.HasPrefix(iss, "A") || !strings.HasPrefix(xk, "X") {
		t.Errorf("callout keys %s, %s: want an account key and a curve key", iss, xk)
	}
}

// Each key pair's loaders read what Ensure made: the private key for the
// signer, the public key for whoever verifies, and the two pairs differ.
func TestSigningKeyPairs(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	s, err := Ensure(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		want ed25519.PrivateKey
		priv func(string) (ed25519.PrivateKey, error)
		pub  func(string) (ed25519.PublicKey, error)
	}{
		{"token", s.SigningKey, SigningKey, TokenPublicKey},
		{"relay ticket", s.RelayTicketKey, RelayTicketKey, RelayTicketPublicKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			priv, err := tc.priv(dir)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := tc.pub(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !priv.Equal(tc.want) || !pub.Equal(tc.want.Public()) {
				t.Error("the loaded keys are not the ones Ensure made")
			}
		})
	}
	if s.SigningKey.Equal(s.RelayTicketKey) {
		t.Error("tokens and relay tickets are signed with the same key")
	}
	// A relay holds only the public key.
	only := t.TempDir()
	copyFile(t, filepath.Join(dir, RelayTicketPublicKeyFile), filepath.Join(only, RelayTicketPublicKeyFile))
	if _, err := RelayTicketPublicKey(only); err != nil {
		t.Errorf("public key alone: %v", err)
	}
	if _, err := RelayTicketKey(only); err == nil || !strings.Contains(err.Error(), "sftd certs") {
		t.Errorf("private key missing: %v, want an error that says to run sftd certs", err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Two sftd processes starting at once on a fresh data dir must agree on
// every secret: neither may read the other's half-written file.
func TestLoadSecretsConcurrent(t *testing.T) {
	for range 5 {
		data := t.TempDir()
		const n = 8
		got := make([]*Secrets, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				got[i], errs[i] = Ensure(filepath.Join(data, "secrets"))
			})
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("concurrent LoadSecrets: %v", errs[i])
			}
			sameSecrets(t, got[0], got[i])
		}
	}
}

func TestSecretReadableByOthersRefused(t *testing.T) {
	for _, f := range secretFiles {
		if f == TokenPublicKeyFile || f == RelayTicketPublicKeyFile {
			continue // public
		}
		t.Run(f, func(t *testing.T) {
			data := t.TempDir()
			if _, err := Ensure(filepath.Join(data, "secrets")); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(data, "secrets", f)
			for _, m := range []os.FileMode{0o644, 0o640, 0o604, 0o620} {
				if err := os.Chmod(path, m); err != nil {
					t.Fatal(err)
				}
				_, err := Ensure(filepath.Join(data, "secrets"))
				if err == nil {
					t.Fatalf("mode %o accepted", m)
				}
				if !strings.Contains(err.Error(), "chmod 600 "+path) {
					t.Errorf("mode %o: error %q does not say to run chmod 600 on the file", m, err)
				}
			}
			if err := os.Chmod(path, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Ensure(filepath.Join(data, "secrets")); err != nil {
				t.Fatalf("after chmod 600: %v", err)
			}
		})
	}
	data := t.TempDir()
	if _, err := Ensure(filepath.Join(data, "secrets")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(data, "secrets", ServiceKeyFile(broker.ServiceSession))
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ServiceKey(filepath.Join(data, "secrets"), broker.ServiceSession); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("ServiceKey of a 0644 file = %v, want a refusal saying chmod 600", err)
	}
}

func TestServiceKeyWithoutInstallation(t *testing.T) {
	data := t.TempDir()
	_, err := ServiceKey(filepath.Join(data, "secrets"), broker.ServiceAuth)
	if err == nil {
		t.Fatal("ServiceKey succeeded on an empty data dir")
	}
	if !strings.Contains(err.Error(), "sftd dev") || !strings.Contains(err.Error(), data) {
		t.Fatalf("error %q should name the data dir and say to start `sftd dev`", err)
	}
}

func TestLoadSecretsRefusesDamagedFiles(t *testing.T) {
	for _, tc := range []struct {
		file, content, msg string
	}{
		{ServiceKeyFile(broker.ServiceKey), "", "empty"}, // e.g. left by a crash of an older version
		{ServiceKeyFile(broker.ServiceKey), "SUnotaseed", "not an nkey seed"},
		{ServiceKeyFile(broker.ServiceAuth), accountSeed, "not a user nkey seed"},
		{"key-encryption.key", "", "empty"},
		{"key-encryption.key", "short", "32 bytes"},
		{"token-signing.pem", "not pem", "token signing key"},
		{"token-signing.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "token signing key"},
		{"login-seal.key", "xx", "seal"},
		{RelayTicketKeyFile, "not pem", "relay ticket key"},
		{CalloutIssuerFile, "SXnotaseed", "auth callout issuer"},
		{CalloutXKeyFile, "SAnotaseed", "auth callout xkey"},
	} {
		t.Run(tc.file+"/"+tc.msg, func(t *testing.T) {
			data := t.TempDir()
			dir := filepath.Join(data, "secrets")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Ensure(filepath.Join(data, "secrets"))
			if err == nil {
				t.Fatalf("LoadSecrets accepted a damaged %s", tc.file)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not mention %q", err, tc.msg)
			}
		})
	}
}

// Each service gets a client certificate of the CA for brokers that verify
// clients: its own, kept across runs, with a private key.
func TestEnsureServiceCerts(t *testing.T) {
	data := t.TempDir()
	caDir, dir := filepath.Join(data, "pki"), filepath.Join(data, "secrets")
	if _, err := broker.EnsureDevPKI(caDir); err != nil {
		t.Fatal(err)
	}
	if err := EnsureServiceCerts(dir, caDir); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(caDir, broker.CACertName))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	certs := map[string][]byte{}
	for _, svc := range broker.Services() {
		certFile, keyFile := filepath.Join(dir, ServiceCertFile(svc)), filepath.Join(dir, ServiceCertKeyFile(svc))
		if m := mode(t, keyFile); m != 0o600 {
			t.Errorf("%s: mode %o, want 600", keyFile, m)
		}
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: %v", certFile, err)
		}
		if cn := pair.Leaf.Subject.CommonName; cn != "sft-service-"+svc {
			t.Errorf("%s: CN %q", certFile, cn)
		}
		certs[svc] = pair.Certificate[0]
	}
	if bytes.Equal(certs[broker.ServiceAuth], certs[broker.ServiceKey]) {
		t.Error("two services share a certificate")
	}

	if err := EnsureServiceCerts(dir, caDir); err != nil {
		t.Fatal(err)
	}
	for _, svc := range broker.Services() {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, ServiceCertFile(svc)), filepath.Join(dir, ServiceCertKeyFile(svc)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pair.Certificate[0], certs[svc]) {
			t.Errorf("%s: a valid certificate was reissued", svc)
		}
	}

	key := filepath.Join(dir, ServiceCertKeyFile(broker.ServiceSession))
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := EnsureServiceCerts(dir, caDir); err == nil || !strings.Contains(err.Error(), "chmod 600 "+key) {
		t.Errorf("a 0644 certificate key: %v, want a refusal saying chmod 600", err)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := EnsureServiceCerts(dir, t.TempDir()); err == nil || !strings.Contains(err.Error(), "client certificate of the") {
		t.Errorf("without a CA: %v", err)
	}
}
