package secrets

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/nats-io/nkeys"

	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/services/seal"
)

// File names inside a secrets directory. Each service reads only the files
// it needs, so a deployment can hand each one just those.
const (
	SigningKeyFile           = "token-signing.pem"     // auth: signs tokens (Ed25519, PKCS#8)
	TokenPublicKeyFile       = "token-signing.pub.pem" // session, key: verify tokens
	SealKeyFile              = "login-seal.key"        // auth: opens sealed passwords
	KEKFile                  = "key-encryption.key"    // key: encrypts session keys at rest
	CalloutIssuerFile        = "nats-callout.nk"       // auth: signs the NATS auth callout's answers (account seed)
	CalloutXKeyFile          = "nats-callout.xk"       // auth: opens and seals the auth callout exchange (curve seed)
	RelayTicketKeyFile       = "relay-ticket.pem"      // session: signs relay tickets (Ed25519, PKCS#8)
	RelayTicketPublicKeyFile = "relay-ticket.pub.pem"  // relay: verifies relay tickets
)

// ServiceKeyFile is the file of service's NATS identity (a user nkey
// seed), e.g. nats-service-auth.nk; only that service reads it.
func ServiceKeyFile(service string) string { return "nats-service-" + service + ".nk" }

// ServiceCertFile and ServiceCertKeyFile are the files of service's NATS
// client certificate and its key (mTLS, for a broker that verifies
// clients), e.g. nats-service-auth.crt and nats-service-auth.key; only that
// service reads them.
func ServiceCertFile(service string) string    { return "nats-service-" + service + ".crt" }
func ServiceCertKeyFile(service string) string { return "nats-service-" + service + ".key" }

// EnsureServiceCerts makes sure dir holds a client certificate for every
// service, signed by the CA in caDir (see broker.EnsurePKI); valid ones
// are kept. The keys are 0600 files in a 0700 directory.
func EnsureServiceCerts(dir, caDir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for _, name := range broker.Services() {
		key := filepath.Join(dir, ServiceCertKeyFile(name))
		// A key others could read is refused, as every secret here, not
		// silently kept.
		if err := broker.CheckPrivate(key); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		err := broker.EnsureClientCert(caDir, "sft-service-"+name, filepath.Join(dir, ServiceCertFile(name)), key)
		if err != nil {
			return fmt.Errorf("client certificate of the %s service: %w", name, err)
		}
	}
	return nil
}

// Secrets are the long-lived keys of an installation.
type Secrets struct {
	// ServiceKeys are the services' NATS identities, by service name
	// (broker.ServiceAuth, ...).
	ServiceKeys    map[string]nkeys.KeyPair
	SigningKey     ed25519.PrivateKey // signs login tokens
	RelayTicketKey ed25519.PrivateKey // signs relay tickets
	SealKey        *seal.PrivateKey   // opens sealed passwords
	KEK            []byte             // encrypts session keys at rest
	Callout        broker.CalloutKeys // answers the NATS auth callout
}

// Ensure reads every secret in dir, creating the missing ones (0600 files
// in a 0700 directory). `sftd dev` and `sftd certs` use it.
func Ensure(dir string) (*Secrets, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	s := Secrets{ServiceKeys: map[string]nkeys.KeyPair{}}
	for _, name := range broker.Services() {
		seed, err := loadOrCreate(filepath.Join(dir, ServiceKeyFile(name)), func() ([]byte, error) { return newSeed(nkeys.CreateUser) })
		if err != nil {
			return nil, err
		}
		if s.ServiceKeys[name], err = parseServiceKey(seed); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ServiceKeyFile(name)), err)
		}
	}

	var err error
	if s.SigningKey, err = ensureEd25519(dir, SigningKeyFile, TokenPublicKeyFile); err != nil {
		return nil, fmt.Errorf("token signing key: %w", err)
	}
	if s.RelayTicketKey, err = ensureEd25519(dir, RelayTicketKeyFile, RelayTicketPublicKeyFile); err != nil {
		return nil, fmt.Errorf("relay ticket key: %w", err)
	}

	sealBytes, err := loadOrCreate(filepath.Join(dir, SealKeyFile), func() ([]byte, error) {
		k, err := seal.GenerateKey()
		if err != nil {
			return nil, err
		}
		return k.Bytes()
	})
	if err != nil {
		return nil, err
	}
	if s.SealKey, err = seal.ParsePrivateKey(sealBytes); err != nil {
		return nil, err
	}

	if s.KEK, err = loadOrCreate(filepath.Join(dir, KEKFile), func() ([]byte, error) { return random(32), nil }); err != nil {
		return nil, err
	}
	if len(s.KEK) != 32 {
		return nil, fmt.Errorf("key-encryption key in %s must be 32 bytes", dir)
	}

	issuer, err := loadOrCreate(filepath.Join(dir, CalloutIssuerFile), func() ([]byte, error) { return newSeed(nkeys.CreateAccount) })
	if err != nil {
		return nil, err
	}
	xkey, err := loadOrCreate(filepath.Join(dir, CalloutXKeyFile), func() ([]byte, error) { return newSeed(nkeys.CreateCurveKeys) })
	if err != nil {
		return nil, err
	}
	if s.Callout, err = broker.ParseCalloutKeys(issuer, xkey); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return &s, nil
}

func newSeed(create func() (nkeys.KeyPair, error)) ([]byte, error) {
	kp, err := create()
	if err != nil {
		return nil, err
	}
	return kp.Seed()
}

// ensureEd25519 reads the Ed25519 private key in dir's file priv and makes
// sure pub holds its public key, creating whichever is missing.
func ensureEd25519(dir, priv, pub string) (ed25519.PrivateKey, error) {
	b, err := loadOrCreate(filepath.Join(dir, priv), func() ([]byte, error) {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	})
	if err != nil {
		return nil, err
	}
	k, err := parseEd25519(b)
	if err != nil {
		return nil, err
	}
	// The public key may be readable by anyone, so only its absence matters here.
	if _, err := readPublicKey(dir, pub); err != nil {
		if _, err := loadOrCreate(filepath.Join(dir, pub), func() ([]byte, error) {
			der, err := x509.MarshalPKIXPublicKey(k.Public())
			if err != nil {
				return nil, err
			}
			return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
		}); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// CalloutKeys reads the keys of the NATS auth callout.
func CalloutKeys(dir string) (broker.CalloutKeys, error) {
	issuer, err := read(dir, CalloutIssuerFile)
	if err != nil {
		return broker.CalloutKeys{}, err
	}
	xkey, err := read(dir, CalloutXKeyFile)
	if err != nil {
		return broker.CalloutKeys{}, err
	}
	k, err := broker.ParseCalloutKeys(issuer, xkey)
	if err != nil {
		return broker.CalloutKeys{}, fmt.Errorf("%s: %w", dir, err)
	}
	return k, nil
}

// read reads one existing secret of dir.
func read(dir, name string) ([]byte, error) {
	b, err := readSecret(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no %s in %s: run `sftd certs` or `sftd dev` to create it (or set secrets_dir)", name, dir)
	}
	return b, err
}

// ServiceKey reads service's NATS identity. It is kept by the caller for
// the connection's life: every reconnect signs with it.
func ServiceKey(dir, service string) (nkeys.KeyPair, error) {
	if !slices.Contains(broker.Services(), service) {
		return nil, fmt.Errorf("no NATS identity for %q: the services are %v", service, broker.Services())
	}
	b, err := read(dir, ServiceKeyFile(service))
	if err != nil {
		return nil, err
	}
	kp, err := parseServiceKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ServiceKeyFile(service)), err)
	}
	return kp, nil
}

// ServicePublicKeys returns the public keys of the services' NATS
// identities, by service name, as a server configuration lists them.
func (s *Secrets) ServicePublicKeys() (map[string]string, error) {
	out := make(map[string]string, len(s.ServiceKeys))
	for name, kp := range s.ServiceKeys {
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("public key of the %s service: %w", name, err)
		}
		out[name] = pub
	}
	return out, nil
}

func parseServiceKey(seed []byte) (nkeys.KeyPair, error) {
	kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		return nil, fmt.Errorf("not an nkey seed: %w", err)
	}
	if pub, _ := kp.PublicKey(); !nkeys.IsValidPublicUserKey(pub) {
		return nil, errors.New("not a user nkey seed")
	}
	return kp, nil
}

// SigningKey reads the token signing key.
func SigningKey(dir string) (ed25519.PrivateKey, error) { return readPrivateKey(dir, SigningKeyFile) }

// TokenPublicKey reads the key that verifies tokens. It is public, so any
// file mode is fine.
func TokenPublicKey(dir string) (ed25519.PublicKey, error) {
	return readPublicKey(dir, TokenPublicKeyFile)
}

// RelayTicketKey reads the key the session service signs relay tickets
// with.
func RelayTicketKey(dir string) (ed25519.PrivateKey, error) {
	return readPrivateKey(dir, RelayTicketKeyFile)
}

// RelayTicketPublicKey reads the key the relay verifies tickets with. It
// is public, so any file mode is fine.
func RelayTicketPublicKey(dir string) (ed25519.PublicKey, error) {
	return readPublicKey(dir, RelayTicketPublicKeyFile)
}

// readPrivateKey reads the Ed25519 private key (PKCS#8 PEM) in dir's file
// name, which only its owner may read.
func readPrivateKey(dir, name string) (ed25519.PrivateKey, error) {
	b, err := read(dir, name)
	if err != nil {
		return nil, err
	}
	k, err := parseEd25519(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
	}
	return k, nil
}

// readPublicKey reads the Ed25519 public key (PKIX PEM) in dir's file name.
func readPublicKey(dir, name string) (ed25519.PublicKey, error) {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no %s in %s: run `sftd certs` or `sftd dev` to create it (or set secrets_dir)", name, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: not PEM", path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pk, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an Ed25519 public key", path)
	}
	return pk, nil
}

// SealKey reads the key that opens sealed login passwords.
func SealKey(dir string) (*seal.PrivateKey, error) {
	b, err := read(dir, SealKeyFile)
	if err != nil {
		return nil, err
	}
	return seal.ParsePrivateKey(b)
}

// KEK reads the key-encryption key.
func KEK(dir string) ([]byte, error) {
	b, err := read(dir, KEKFile)
	if err == nil && len(b) != 32 {
		return nil, fmt.Errorf("%s must hold 32 bytes, not %d", filepath.Join(dir, KEKFile), len(b))
	}
	return b, err
}

func parseEd25519(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("not an Ed25519 key")
	}
	return ek, nil
}

func random(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return b
}

func loadOrCreate(path string, gen func() ([]byte, error)) ([]byte, error) {
	b, err := readSecret(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	b, err = gen()
	if err != nil {
		return nil, fmt.Errorf("generate %s: %w", path, err)
	}
	// Written aside, then linked into place: the secret appears whole or
	// not at all, so neither a concurrent start nor a crash can leave an
	// empty or partial secret for the next start to use.
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) { // another process made it first
			return readSecret(path)
		}
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return b, nil
}

// readSecret refuses a secret file that others can read: a leaked copy
// would let them impersonate the services.
func readSecret(path string) ([]byte, error) {
	if err := broker.CheckPrivate(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%s is empty: delete it and a new secret is made on the next start", path)
	}
	return b, nil
}
