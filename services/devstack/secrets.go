package devstack

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sftproject/sft/services/seal"
)

// Secrets are the long-lived keys of a dev installation, kept as 0600 files
// under <data_dir>/secrets.
type Secrets struct {
	ServicePassword string             // the services' NATS password
	SigningKey      ed25519.PrivateKey // signs login tokens
	SealKey         *seal.PrivateKey   // opens sealed passwords
	KEK             []byte             // encrypts session keys at rest
}

// ServiceUser is the NATS user the dev services connect as.
const ServiceUser = "sft-service"

func secretsDir(dataDir string) string { return filepath.Join(dataDir, "secrets") }

// LoadSecrets reads the dev secrets, creating any that are missing.
func LoadSecrets(dataDir string) (*Secrets, error) {
	dir := secretsDir(dataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	var s Secrets
	pw, err := loadOrCreate(filepath.Join(dir, "nats-service.password"), func() ([]byte, error) {
		return []byte(base64.RawURLEncoding.EncodeToString(random(32))), nil
	})
	if err != nil {
		return nil, err
	}
	s.ServicePassword = string(pw)

	signing, err := loadOrCreate(filepath.Join(dir, "token-signing.pem"), func() ([]byte, error) {
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
	if s.SigningKey, err = parseEd25519(signing); err != nil {
		return nil, fmt.Errorf("token signing key: %w", err)
	}

	sealBytes, err := loadOrCreate(filepath.Join(dir, "login-seal.key"), func() ([]byte, error) {
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

	if s.KEK, err = loadOrCreate(filepath.Join(dir, "key-encryption.key"), func() ([]byte, error) { return random(32), nil }); err != nil {
		return nil, err
	}
	if len(s.KEK) != 32 {
		return nil, fmt.Errorf("key-encryption key in %s must be 32 bytes", dir)
	}
	return &s, nil
}

// ReadServicePassword returns the services' NATS password of an existing
// dev installation (for admin commands such as `sftd user add`).
func ReadServicePassword(dataDir string) (string, error) {
	b, err := readSecret(filepath.Join(secretsDir(dataDir), "nats-service.password"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no dev installation in %s: start `sftd dev` first (or set --data-dir)", dataDir)
	}
	return string(b), err
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
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by group or others (mode %o): run chmod 600 %s", path, st.Mode().Perm(), path)
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
