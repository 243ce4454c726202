// Package seal encrypts small secrets (a password, a token, a session key)
// to a recipient's public key with HPKE (RFC 9180), so they never cross the
// bus in clear.
//
// The suite is fixed: the hybrid post-quantum KEM MLKEM768-X25519,
// HKDF-SHA256 and AES-256-GCM. A sealed box recorded today stays safe against
// a future quantum attacker, which matters because the session key it carries
// is the peer link's Noise PSK.
//
// The info string binds a box to its purpose and context (for example the
// session id): a box sealed for one session does not open for another.
package seal

import (
	"crypto/hpke"
	"errors"
	"fmt"
)

var (
	kem  = hpke.MLKEM768X25519()
	kdf  = hpke.HKDFSHA256()
	aead = hpke.AES256GCM()
)

// ErrOpen means a box could not be opened: wrong key, wrong info, or
// modified bytes. HPKE does not tell these apart, on purpose.
var ErrOpen = errors.New("seal: cannot open sealed box")

// PrivateKey is a recipient's decryption key.
type PrivateKey struct {
	k hpke.PrivateKey
}

// GenerateKey returns a fresh private key. Clients make one per request and
// drop it after the reply, so a leaked reply is useless later.
func GenerateKey() (*PrivateKey, error) {
	k, err := kem.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("seal: generate key: %w", err)
	}
	return &PrivateKey{k: k}, nil
}

// ParsePrivateKey restores a key saved with Bytes.
func ParsePrivateKey(b []byte) (*PrivateKey, error) {
	k, err := kem.NewPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("seal: parse private key: %w", err)
	}
	return &PrivateKey{k: k}, nil
}

// Bytes returns the key's seed, for storage in a 0600 file.
func (p *PrivateKey) Bytes() ([]byte, error) { return p.k.Bytes() }

// PublicKey returns the encoded public key to hand to senders.
func (p *PrivateKey) PublicKey() []byte { return p.k.PublicKey().Bytes() }

// CheckPublicKey reports whether pub is a well-formed public key, so a
// request can be refused before any work is done for it.
func CheckPublicKey(pub []byte) error {
	if _, err := kem.NewPublicKey(pub); err != nil {
		return fmt.Errorf("seal: bad public key: %w", err)
	}
	return nil
}

// Seal encrypts plaintext to the encoded public key pub, bound to info.
func Seal(pub []byte, info string, plaintext []byte) ([]byte, error) {
	pk, err := kem.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("seal: bad public key: %w", err)
	}
	box, err := hpke.Seal(pk, kdf, aead, []byte(info), plaintext)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return box, nil
}

// Open decrypts a box sealed to p's public key with the same info.
func (p *PrivateKey) Open(info string, box []byte) ([]byte, error) {
	pt, err := hpke.Open(p.k, kdf, aead, []byte(info), box)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// Info strings: one per kind of box, so a box can never be replayed as
// another kind.
func LoginPasswordInfo(user string) string { return "sft/v1 login password\x00" + user }
func LoginTokenInfo(user string) string    { return "sft/v1 login token\x00" + user }
func SessionKeyInfo(sessionID string) string {
	return "sft/v1 session key\x00" + sessionID
}
