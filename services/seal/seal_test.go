package seal

import (
	"bytes"
	"errors"
	"testing"
)

func TestSealOpen(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	box, err := Seal(k.PublicKey(), SessionKeyInfo("s1"), secret)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(box, secret) {
		t.Fatal("sealed box contains the plaintext")
	}
	got, err := k.Open(SessionKeyInfo("s1"), box)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %x, %v", got, err)
	}

	flipped := bytes.Clone(box)
	flipped[len(flipped)-1] ^= 1
	for name, open := range map[string]func() ([]byte, error){
		"other session":   func() ([]byte, error) { return k.Open(SessionKeyInfo("s2"), box) },
		"other purpose":   func() ([]byte, error) { return k.Open(LoginTokenInfo("s1"), box) },
		"other recipient": func() ([]byte, error) { return other.Open(SessionKeyInfo("s1"), box) },
		"flipped bit":     func() ([]byte, error) { return k.Open(SessionKeyInfo("s1"), flipped) },
		"truncated":       func() ([]byte, error) { return k.Open(SessionKeyInfo("s1"), box[:10]) },
		"empty":           func() ([]byte, error) { return k.Open(SessionKeyInfo("s1"), nil) },
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := open(); !errors.Is(err, ErrOpen) {
				t.Fatalf("err = %v, want ErrOpen", err)
			}
		})
	}
}

func TestKeyRoundTrip(t *testing.T) {
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.PublicKey(), k2.PublicKey()) {
		t.Fatal("restored key has another public key")
	}
	if _, err := Seal([]byte("short"), "x", []byte("y")); err == nil {
		t.Fatal("Seal accepted a malformed public key")
	}
}

func FuzzOpen(f *testing.F) {
	k, err := GenerateKey()
	if err != nil {
		f.Fatal(err)
	}
	box, _ := Seal(k.PublicKey(), "i", []byte("x"))
	f.Add(box)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = k.Open("i", b) // must not panic
	})
}
