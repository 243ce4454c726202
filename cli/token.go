package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// cachedToken is what `sft-cli login` leaves for the other commands.
type cachedToken struct {
	Server    string    `json:"server"`
	User      string    `json:"user"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

func tokenPath(dir string) string { return filepath.Join(dir, "token.json") }

func saveToken(dir string, t cachedToken) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	// Write a private temp file and rename, so the token is never briefly
	// readable by others nor left half-written.
	f, err := os.CreateTemp(dir, ".token-*")
	if err != nil {
		return fmt.Errorf("save token: %w", err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("save token: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("save token: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save token: %w", err)
	}
	if err := os.Rename(f.Name(), tokenPath(dir)); err != nil {
		return fmt.Errorf("save token: %w", err)
	}
	return nil
}

var errNotLoggedIn = errors.New("not logged in: run `sft-cli login`")

// errTokenUnusable marks a cached token that no command can use (damaged,
// for another server, expired); logout just forgets it.
var errTokenUnusable = errors.New("unusable token")

type unusableToken struct{ error }

func (unusableToken) Is(target error) bool { return target == errTokenUnusable }

func loadToken(dir, server string) (cachedToken, error) {
	p := tokenPath(dir)
	st, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return cachedToken{}, errNotLoggedIn
	}
	if err != nil {
		return cachedToken{}, fmt.Errorf("read token: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return cachedToken{}, unusableToken{fmt.Errorf("token file %s is readable by group or others (mode %o): run `sft-cli login` again", p, st.Mode().Perm())}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return cachedToken{}, fmt.Errorf("read token: %w", err)
	}
	var t cachedToken
	if err := json.Unmarshal(b, &t); err != nil || t.Token == "" {
		return cachedToken{}, unusableToken{fmt.Errorf("token file %s is damaged: run `sft-cli login`", p)}
	}
	if t.Server != server {
		return cachedToken{}, unusableToken{fmt.Errorf("logged in to %s, not %s: run `sft-cli login`", t.Server, server)}
	}
	if time.Now().After(t.ExpiresAt) {
		return cachedToken{}, unusableToken{fmt.Errorf("login as %s expired at %s: run `sft-cli login`", t.User, t.ExpiresAt.Local().Format(time.DateTime))}
	}
	return t, nil
}
