package daemon_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDevHosts: --host (or SFT_DEV_HOSTS) adds names to the server
// certificate. A certificate that misses a name needed now is reissued by
// the same CA, so the CA file clients copied stays valid; one that covers
// them is kept. Listening on loopback, sftd dev says how to let other
// machines in, and prints no URL for them.
func TestDevHosts(t *testing.T) {
	in := newInstall(t)
	pki := filepath.Join(in.dataDir, "pki")
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(pki, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	covers := func(names ...string) {
		t.Helper()
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(read("ca.pem")) {
			t.Fatal("no CA certificate")
		}
		blk, _ := pem.Decode(read("server.pem"))
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if _, err := cert.Verify(x509.VerifyOptions{DNSName: n, Roots: roots}); err != nil {
				t.Errorf("server certificate for %s: %v", n, err)
			}
		}
	}

	d := in.startDev()
	out := d.out.String()
	d.stop(t)
	if !strings.Contains(out, "only this machine can connect; `sftd dev --listen 0.0.0.0:0` lets other machines in") {
		t.Errorf("sftd dev on loopback does not say how to let other machines in:\n%s", out)
	}
	ca, first := read("ca.pem"), read("server.pem")

	d = in.startDev("--host", "203.0.113.7", "--host", "sft.example")
	out = d.out.String()
	d.stop(t)
	if n := strings.Count(out, "NATS at"); n != 1 {
		t.Errorf("listening on loopback, sftd dev printed %d URLs:\n%s", n, out)
	}
	second := read("server.pem")
	if bytes.Equal(first, second) {
		t.Error("the server certificate was not reissued for the new hosts")
	}
	if !bytes.Equal(ca, read("ca.pem")) {
		t.Error("the CA changed: clients' copies of the CA file no longer verify the server")
	}
	covers("localhost", "127.0.0.1", "::1", "203.0.113.7", "sft.example")

	// Covered already: by the same hosts from the environment, or by none.
	for _, env := range [][]string{{"SFT_DEV_HOSTS=sft.example,203.0.113.7"}, nil} {
		saved := in.env
		in.env = append(in.env[:len(in.env):len(in.env)], env...)
		d = in.startDev()
		d.stop(t)
		in.env = saved
		if !bytes.Equal(second, read("server.pem")) {
			t.Errorf("with %v the server certificate was reissued although it covers every name", env)
		}
	}

	_, err := in.sftd("", nil, "dev", "--listen", "127.0.0.1:0", "--host", "sft.example:4222")
	if err == nil || !strings.Contains(err.Error(), "--host") {
		t.Errorf("sftd dev --host with a port: %v, want an error about --host", err)
	}
}
