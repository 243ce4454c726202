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

// serverTLSConfig requires TLS 1.3 and verifies a client certificate when
// one is offered, so services can later authenticate with mTLS while
// anonymous clients still connect without one.
func serverTLSConfig(p PKI) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load server certificate %s: %w", p.CertFile, err)
	}
	pool, err := loadCAPool(p.CAFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		CurvePreferences: curvePreferences,
		Certificates:     []tls.Certificate{cert},
		ClientCAs:        pool,
		ClientAuth:       tls.VerifyClientCertIfGiven,
	}, nil
}
