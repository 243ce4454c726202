package broker

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func verifyLeaf(t *testing.T, caFile, certFile string, usage x509.ExtKeyUsage, names ...string) *x509.Certificate {
	t.Helper()
	ca, err := readCert(caFile)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := readCert(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, name := range names {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("verify %s for %q: %v", certFile, name, err)
		}
	}
	return cert
}

func TestEnsureDevPKICreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	p, err := EnsureDevPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fileMode(t, dir); got != 0o700 {
		t.Errorf("dir mode %o, want 700", got)
	}
	for name, want := range map[string]os.FileMode{
		CACertName: 0o644, CAKeyName: 0o600, ServerCertName: 0o644, ServerKeyName: 0o600,
	} {
		if got := fileMode(t, filepath.Join(dir, name)); got != want {
			t.Errorf("%s mode %o, want %o", name, got, want)
		}
	}
	if p.CAFile != filepath.Join(dir, CACertName) || p.CertFile != filepath.Join(dir, ServerCertName) || p.KeyFile != filepath.Join(dir, ServerKeyName) {
		t.Errorf("unexpected paths %+v", p)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 4 {
		t.Errorf("want exactly 4 files in %s, got %d (temp files left?)", dir, len(entries))
	}

	ca, err := readCert(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("CA certificate is not a signing CA")
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
	if life := ca.NotAfter.Sub(ca.NotBefore); life < 9*365*24*time.Hour {
		t.Errorf("CA valid for %v, want about 10 years", life)
	}

	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		verifyLeaf(t, p.CAFile, p.CertFile, usage, "localhost", "127.0.0.1", "::1")
	}
	srv := verifyLeaf(t, p.CAFile, p.CertFile, x509.ExtKeyUsageServerAuth)
	if life := srv.NotAfter.Sub(srv.NotBefore); life < 364*24*time.Hour || life > 367*24*time.Hour {
		t.Errorf("server cert valid for %v, want about 1 year", life)
	}
	if _, err := srv.Verify(x509.VerifyOptions{DNSName: "example.com", Roots: x509.NewCertPool()}); err == nil {
		t.Error("server cert verified for a name it must not cover")
	}
	for _, f := range []string{p.KeyFile, filepath.Join(dir, CAKeyName)} {
		k, err := readKey(f)
		if err != nil {
			t.Fatal(err)
		}
		if k.Curve != elliptic.P256() {
			t.Errorf("%s: curve %s, want P-256", f, k.Curve.Params().Name)
		}
	}
	if pub, ok := srv.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Error("server certificate key is not ECDSA P-256")
	}
}

func readAll(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, n := range []string{CACertName, CAKeyName, ServerCertName, ServerKeyName} {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		out[n] = b
	}
	return out
}

func TestEnsureDevPKIReuseAndRenew(t *testing.T) {
	tests := []struct {
		name      string
		damage    func(t *testing.T, dir string)
		newServer bool // server cert must be reissued
		newCA     bool // CA must be recreated
	}{
		{name: "intact files are reused"},
		{
			name: "server cert near expiry is reissued",
			damage: func(t *testing.T, dir string) {
				ca, err := loadCA(dir)
				if err != nil {
					t.Fatal(err)
				}
				// Issued as if 340 days ago: 25 days left.
				past := time.Now().Add(-leafValidity + 25*24*time.Hour)
				if err := issue(ca, "old", devServerSANs, serverAndClient, filepath.Join(dir, ServerCertName), filepath.Join(dir, ServerKeyName), past); err != nil {
					t.Fatal(err)
				}
			},
			newServer: true,
		},
		{
			name: "corrupt server cert is reissued",
			damage: func(t *testing.T, dir string) {
				if err := os.WriteFile(filepath.Join(dir, ServerCertName), []byte("garbage"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			newServer: true,
		},
		{
			name: "server key not matching the cert is reissued",
			damage: func(t *testing.T, dir string) {
				b, err := os.ReadFile(filepath.Join(dir, CAKeyName))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, ServerKeyName), b, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			newServer: true,
		},
		{
			name: "missing CA key recreates everything",
			damage: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, CAKeyName)); err != nil {
					t.Fatal(err)
				}
			},
			newServer: true,
			newCA:     true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := EnsureDevPKI(dir); err != nil {
				t.Fatal(err)
			}
			before := readAll(t, dir)
			if tc.damage != nil {
				tc.damage(t, dir)
			}
			p, err := EnsureDevPKI(dir)
			if err != nil {
				t.Fatal(err)
			}
			after := readAll(t, dir)
			if same := bytes.Equal(before[CACertName], after[CACertName]); same == tc.newCA {
				t.Errorf("CA changed = %v, want %v", !same, tc.newCA)
			}
			if same := bytes.Equal(before[ServerCertName], after[ServerCertName]); same == tc.newServer {
				t.Errorf("server cert changed = %v, want %v", !same, tc.newServer)
			}
			verifyLeaf(t, p.CAFile, p.CertFile, x509.ExtKeyUsageServerAuth, devServerSANs...)
			if !leafUsable(p.CertFile, p.KeyFile, mustCA(t, dir).cert, devServerSANs, time.Now()) {
				t.Error("resulting server cert/key pair is not usable")
			}
		})
	}
}

func mustCA(t *testing.T, dir string) authority {
	t.Helper()
	ca, err := loadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestIssueCert(t *testing.T) {
	caDir := t.TempDir()
	if _, err := EnsureDevPKI(caDir); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "certs")
	p, err := IssueCert(caDir, "svc-session", []string{"session.internal", "10.0.0.7"}, out)
	if err != nil {
		t.Fatal(err)
	}
	if got := fileMode(t, p.KeyFile); got != 0o600 {
		t.Errorf("key mode %o, want 600", got)
	}
	if p.CAFile != filepath.Join(caDir, CACertName) {
		t.Errorf("CAFile %s", p.CAFile)
	}
	c := verifyLeaf(t, p.CAFile, p.CertFile, x509.ExtKeyUsageClientAuth, "session.internal", "10.0.0.7")
	if c.Subject.CommonName != "svc-session" {
		t.Errorf("CN %q", c.Subject.CommonName)
	}
	for _, bad := range []string{"", "..", "a/b", `a\b`} {
		if _, err := IssueCert(caDir, bad, nil, out); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	if _, err := IssueCert(t.TempDir(), "x", nil, out); err == nil {
		t.Error("issuing without a CA succeeded")
	}
}

func TestEnsureClientCert(t *testing.T) {
	caDir := t.TempDir()
	p, err := EnsureDevPKI(caDir)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "clients")
	certFile, keyFile := filepath.Join(dir, "alice.crt"), filepath.Join(dir, "alice.key")
	if err := EnsureClientCert(caDir, "alice", certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	if got := fileMode(t, keyFile); got != 0o600 {
		t.Errorf("key mode %o, want 600", got)
	}
	if got := fileMode(t, dir); got != 0o700 {
		t.Errorf("directory mode %o, want 700", got)
	}
	c := verifyLeaf(t, p.CAFile, certFile, x509.ExtKeyUsageClientAuth, "")
	if c.Subject.CommonName != "alice" || len(c.DNSNames)+len(c.IPAddresses) != 0 {
		t.Errorf("CN %q, SANs %v %v; want alice and no names to serve", c.Subject.CommonName, c.DNSNames, c.IPAddresses)
	}
	// A client certificate cannot stand in for the server.
	roots := x509.NewCertPool()
	roots.AddCert(mustCA(t, caDir).cert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("the client certificate is valid for server authentication")
	}

	read := func(t *testing.T) []byte {
		t.Helper()
		b, err := os.ReadFile(certFile)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	first := read(t)
	if err := EnsureClientCert(caDir, "alice", certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(read(t), first) {
		t.Error("a valid client certificate was reissued")
	}

	reissued := func(t *testing.T, caDir, name string) {
		t.Helper()
		before := read(t)
		if err := EnsureClientCert(caDir, name, certFile, keyFile); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(read(t), before) {
			t.Fatal("kept")
		}
		c := verifyLeaf(t, filepath.Join(caDir, CACertName), certFile, x509.ExtKeyUsageClientAuth, "")
		if c.Subject.CommonName != name {
			t.Errorf("CN %q, want %q", c.Subject.CommonName, name)
		}
	}
	t.Run("another name is reissued", func(t *testing.T) { reissued(t, caDir, "alice-laptop") })
	t.Run("another CA's is reissued", func(t *testing.T) {
		other := t.TempDir()
		if _, err := EnsureDevPKI(other); err != nil {
			t.Fatal(err)
		}
		reissued(t, other, "alice-laptop")
	})
	t.Run("near expiry is reissued", func(t *testing.T) {
		past := time.Now().Add(-leafValidity + 25*24*time.Hour)
		if err := issue(mustCA(t, caDir), "alice", nil, clientOnly, certFile, keyFile, past); err != nil {
			t.Fatal(err)
		}
		reissued(t, caDir, "alice")
	})
	t.Run("damaged key is reissued", func(t *testing.T) {
		if err := os.WriteFile(keyFile, []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
		reissued(t, caDir, "alice")
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			t.Error(err)
		}
	})
	t.Run("refused", func(t *testing.T) {
		if err := EnsureClientCert(caDir, "", certFile, keyFile); err == nil {
			t.Error("empty name accepted")
		}
		if err := EnsureClientCert(t.TempDir(), "x", certFile, keyFile); err == nil {
			t.Error("issuing without a CA succeeded")
		}
	})
}
