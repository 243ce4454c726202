package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// PKI names the PEM files a TLS endpoint needs.
type PKI struct {
	CAFile   string // CA certificate that signs CertFile
	CertFile string // leaf certificate
	KeyFile  string // private key of CertFile
}

// File names inside a development PKI directory.
const (
	CACertName     = "ca.pem"
	CAKeyName      = "ca-key.pem"
	ServerCertName = "server.pem"
	ServerKeyName  = "server-key.pem"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// renewBefore is how close to expiry a certificate may get before it is
	// replaced, so a long-running dev setup never serves an expired cert.
	renewBefore = 30 * 24 * time.Hour
	// backdate tolerates clocks that are slightly behind the issuer's.
	backdate = 5 * time.Minute
)

// devServerSANs are the names the development server certificate always
// covers: the loopback ones, which clients on the server's machine use.
var devServerSANs = []string{"localhost", "127.0.0.1", "::1"}

// EnsureDevPKI makes sure dir holds a development CA and a server certificate
// signed by it for localhost, 127.0.0.1, ::1 and hosts (DNS names or IP
// addresses: those other machines reach the server by). Existing files are
// reused while they parse, cover every one of those names and are more
// than 30 days from expiry; otherwise the server certificate is reissued
// from the same CA, so the CA file clients hold stays valid (the CA itself
// is recreated only when it is missing, broken or expiring).
func EnsureDevPKI(dir string, hosts ...string) (PKI, error) {
	return EnsurePKI(dir, append(slices.Clip(devServerSANs), hosts...))
}

// EnsurePKI is EnsureDevPKI for a certificate that covers exactly sans.
// The certificate is reissued when it does not cover every name in sans.
func EnsurePKI(dir string, sans []string) (PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return PKI{}, fmt.Errorf("create PKI directory %s: %w", dir, err)
	}
	p := PKI{
		CAFile:   filepath.Join(dir, CACertName),
		CertFile: filepath.Join(dir, ServerCertName),
		KeyFile:  filepath.Join(dir, ServerKeyName),
	}
	now := time.Now()

	ca, err := loadCA(dir)
	if err != nil || !fresh(ca.cert, now) {
		if ca, err = newCA(dir, now); err != nil {
			return PKI{}, err
		}
	} else if leafUsable(p.CertFile, p.KeyFile, ca.cert, sans, now) {
		return p, nil
	}
	if err := issue(ca, "sft-nats-server", sans, serverAndClient, p.CertFile, p.KeyFile, now); err != nil {
		return PKI{}, err
	}
	return p, nil
}

// IssueCert issues a certificate for name from the CA in caDir (as made by
// EnsureDevPKI), valid for the given SANs (DNS names or IP addresses) and for
// both client and server authentication, so a service can use it for mTLS.
// It writes outDir/<name>.pem and outDir/<name>-key.pem.
func IssueCert(caDir, name string, sans []string, outDir string) (PKI, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return PKI{}, fmt.Errorf("issue certificate: invalid name %q (want a plain file name)", name)
	}
	ca, err := loadCA(caDir)
	if err != nil {
		return PKI{}, fmt.Errorf("issue certificate %q: %w", name, err)
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return PKI{}, fmt.Errorf("create certificate directory %s: %w", outDir, err)
	}
	p := PKI{
		CAFile:   filepath.Join(caDir, CACertName),
		CertFile: filepath.Join(outDir, name+".pem"),
		KeyFile:  filepath.Join(outDir, name+"-key.pem"),
	}
	if err := issue(ca, name, sans, serverAndClient, p.CertFile, p.KeyFile, time.Now()); err != nil {
		return PKI{}, err
	}
	return p, nil
}

// EnsureClientCert makes sure certFile and keyFile hold a client
// certificate (client authentication only, no names to serve) for name,
// signed by the CA in caDir: what a NATS client presents to a server that
// verifies clients (mutual TLS). An existing pair is kept while it is
// name's, chains to that CA and is more than 30 days from expiry;
// otherwise a new one is issued. The key is written 0600.
func EnsureClientCert(caDir, name, certFile, keyFile string) error {
	if name == "" {
		return errors.New("issue client certificate: empty name")
	}
	ca, err := loadCA(caDir)
	if err != nil {
		return fmt.Errorf("issue client certificate %q: %w", name, err)
	}
	now := time.Now()
	if clientCertUsable(certFile, keyFile, ca.cert, name, now) {
		return nil
	}
	for _, dir := range []string{filepath.Dir(certFile), filepath.Dir(keyFile)} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create certificate directory %s: %w", dir, err)
		}
	}
	return issue(ca, name, nil, clientOnly, certFile, keyFile, now)
}

// clientCertUsable reports whether an existing client certificate can be
// kept: it is name's, matches its key, chains to ca for client
// authentication, and is fresh.
func clientCertUsable(certFile, keyFile string, ca *x509.Certificate, name string, now time.Time) bool {
	cert, ok := freshPair(certFile, keyFile, now)
	if !ok || cert.Subject.CommonName != name {
		return false
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return err == nil
}

// freshPair reads a certificate and its key, and reports whether they
// match and the certificate is fresh.
func freshPair(certFile, keyFile string, now time.Time) (*x509.Certificate, bool) {
	cert, err := readCert(certFile)
	if err != nil || !fresh(cert, now) {
		return nil, false
	}
	key, err := readKey(keyFile)
	if err != nil || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, false
	}
	return cert, true
}

type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func fresh(c *x509.Certificate, now time.Time) bool {
	return now.Add(renewBefore).Before(c.NotAfter) && !now.Before(c.NotBefore)
}

func loadCA(dir string) (authority, error) {
	cert, err := readCert(filepath.Join(dir, CACertName))
	if err != nil {
		return authority{}, err
	}
	key, err := readKey(filepath.Join(dir, CAKeyName))
	if err != nil {
		return authority{}, err
	}
	if !cert.IsCA || !key.PublicKey.Equal(cert.PublicKey) {
		return authority{}, fmt.Errorf("%s: not a CA matching %s", filepath.Join(dir, CACertName), CAKeyName)
	}
	return authority{cert: cert, key: key}, nil
}

// leafUsable reports whether an existing leaf certificate can be kept: it
// parses, matches its key, chains to ca for every wanted name, and is fresh.
func leafUsable(certFile, keyFile string, ca *x509.Certificate, sans []string, now time.Time) bool {
	cert, ok := freshPair(certFile, keyFile, now)
	if !ok {
		return false
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, san := range sans {
		_, err := cert.Verify(x509.VerifyOptions{
			DNSName:     san,
			Roots:       roots,
			CurrentTime: now,
			KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return false
		}
	}
	return true
}

func newCA(dir string, now time.Time) (authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return authority{}, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return authority{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "SFT development CA", Organization: []string{"SFT"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// No intermediates: this CA only ever signs leaves.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return authority{}, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return authority{}, fmt.Errorf("parse new CA certificate: %w", err)
	}
	// Key first: a CA certificate on disk without its key would be useless.
	if err := writeKey(filepath.Join(dir, CAKeyName), key); err != nil {
		return authority{}, err
	}
	if err := writePEM(filepath.Join(dir, CACertName), "CERTIFICATE", der, 0o644); err != nil {
		return authority{}, err
	}
	return authority{cert: cert, key: key}, nil
}

// Extended key usages of the certificates issue makes.
var (
	serverAndClient = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	// A client certificate cannot stand in for the server.
	clientOnly = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
)

func issue(ca authority, name string, sans []string, usage []x509.ExtKeyUsage, certFile, keyFile string, now time.Time) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key for %q: %w", name, err)
	}
	serial, err := serialNumber()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"SFT"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
	}
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	for _, san := range sans {
		if ip := net.ParseIP(san); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, san)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return fmt.Errorf("create certificate for %q: %w", name, err)
	}
	if err := writeKey(keyFile, key); err != nil {
		return err
	}
	return writePEM(certFile, "CERTIFICATE", der, 0o644)
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // serials must be positive
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s: no PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ECDSA key", path)
	}
	return ek, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key %s: %w", path, err)
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

// writePEM replaces path atomically, so a crash never leaves a half-written
// key, and creates the file with its final mode so a key is never readable
// by others even for a moment.
func writePEM(path, typ string, der []byte, mode os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
