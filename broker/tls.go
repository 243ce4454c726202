package broker

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// curvePreferences puts the hybrid post-quantum key exchange first so that
// recorded traffic stays confidential against a future quantum adversary;
// X25519 remains for peers that lack it.
var curvePreferences = []tls.CurveID{tls.X25519MLKEM768, tls.X25519}

// loadCAPool reads a PEM file of one or more CA certificates.
func loadCAPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read CA file %s: %w", file, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("read CA file %s: no PEM certificate in it", file)
	}
	return pool, nil
}

// CheckPrivate refuses a file that group or others may read, such as a
// private key: a leaked copy would let them act as its owner. The error
// says how to fix the mode; a missing file gives the os.Stat error.
func CheckPrivate(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s is readable by group or others (mode %o): run chmod 600 %s", path, st.Mode().Perm(), path)
	}
	return nil
}

// serverTLSConfig requires TLS 1.3. With verifyClients it also requires a
// client certificate signed by the CA (mutual TLS), so only holders of such
// a certificate get as far as presenting NATS credentials; otherwise a
// certificate is verified when offered and clients may come without one.
func serverTLSConfig(p PKI, verifyClients bool) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load server certificate %s: %w", p.CertFile, err)
	}
	pool, err := loadCAPool(p.CAFile)
	if err != nil {
		return nil, err
	}
	clientAuth := tls.VerifyClientCertIfGiven
	if verifyClients {
		clientAuth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		CurvePreferences: curvePreferences,
		Certificates:     []tls.Certificate{cert},
		ClientCAs:        pool,
		ClientAuth:       clientAuth,
	}, nil
}
