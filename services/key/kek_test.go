package key

import (
	"bytes"
	"crypto/rand"
	"log/slog"
	"strings"
	"testing"
)

func newService(t *testing.T) *Service {
	t.Helper()
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{KEK: kek, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewRejectsBadKEK(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		_, err := New(Options{KEK: make([]byte, n)})
		if err == nil {
			t.Errorf("New with a %d-byte KEK succeeded", n)
			continue
		}
		if !strings.Contains(err.Error(), "32 bytes") {
			t.Errorf("New with a %d-byte KEK: %v; want the required size named", n, err)
		}
	}
}

const (
	idA = "abcdefghijklmnop"
	idB = "bbcdefghijklmnop"
)

func TestEncryptDecrypt(t *testing.T) {
	s := newService(t)
	k := bytes.Repeat([]byte{0x42}, Size)
	enc := s.encrypt(idA, k)
	if bytes.Contains(enc, k) {
		t.Fatal("the encrypted key contains the plaintext key")
	}
	if len(enc) != s.kek.NonceSize()+Size+s.kek.Overhead() {
		t.Fatalf("encrypted key is %d bytes", len(enc))
	}
	got, err := s.decrypt(idA, enc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, k) {
		t.Fatal("round trip changed the key")
	}
	if again := s.encrypt(idA, k); bytes.Equal(again, enc) {
		t.Fatal("two encryptions of one key are equal: the nonce is not fresh")
	}
}

func TestDecryptRefuses(t *testing.T) {
	s := newService(t)
	k := make([]byte, Size)
	enc := s.encrypt(idA, k)

	// Bound to the session id: a stored key moved to another session's
	// record does not decrypt there.
	if _, err := s.decrypt(idB, enc); err == nil {
		t.Error("a key encrypted for one session decrypted for another")
	}

	other := newService(t)
	_, err := other.decrypt(idA, enc)
	if err == nil {
		t.Fatal("decrypted under the wrong KEK")
	}
	if msg := err.Error(); !strings.Contains(msg, "wrong key-encryption key") || !strings.Contains(msg, idA) {
		t.Errorf("wrong-KEK error %q does not say what is wrong and for which session", msg)
	}

	for i := range enc {
		tampered := bytes.Clone(enc)
		tampered[i] ^= 1
		if _, err := s.decrypt(idA, tampered); err == nil {
			t.Fatalf("decrypted with byte %d flipped", i)
		}
	}
	for _, n := range []int{0, 1, s.kek.NonceSize() - 1, s.kek.NonceSize(), len(enc) - 1} {
		if _, err := s.decrypt(idA, enc[:n]); err == nil {
			t.Errorf("decrypted a %d-byte truncation", n)
		}
	}
}
