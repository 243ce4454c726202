package cli

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestTokenFileMode(t *testing.T) {
	const server = "tls://127.0.0.1:4222"
	secret := "secret-token-value"
	dir := t.TempDir()
	if err := saveToken(dir, cachedToken{Server: server, User: "alice", Token: secret, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(tokenPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %o, want 600", st.Mode().Perm())
	}
	if _, err := loadToken(dir, server); err != nil {
		t.Fatalf("load: %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o644} {
		if err := os.Chmod(tokenPath(dir), mode); err != nil {
			t.Fatal(err)
		}
		_, err := loadToken(dir, server)
		if err == nil || !strings.Contains(err.Error(), "readable by group or others") {
			t.Errorf("mode %o: %v, want refused as readable by others", mode, err)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Errorf("mode %o: the error shows the token: %v", mode, err)
		}
	}
}

// FuzzTokenFile feeds the cached-token parser any file content: it never
// panics, never echoes the token in an error, and accepts only a token for
// the server asked about that has not expired.
func FuzzTokenFile(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzTokenFile.
	const server = "tls://127.0.0.1:4222"
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(tokenPath(dir), b, 0o600); err != nil {
			t.Fatal(err)
		}
		tok, err := loadToken(dir, server)
		if err != nil {
			return
		}
		if tok.Token == "" || tok.Server != server || !time.Now().Before(tok.ExpiresAt) {
			t.Fatalf("accepted an unusable token: %+v", tok)
		}
	})
}
