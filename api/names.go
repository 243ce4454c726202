package api

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"regexp"
	"strings"
)

var (
	userNameRE  = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
	sessionIDRE = regexp.MustCompile(`^[a-z2-7]{16}$`)
)

// ValidUserName checks a user name: lower-case letters, digits, '_' and
// '-', starting with a letter, at most 32 characters. Names are used in
// storage keys and subjects, so nothing else is ever accepted.
func ValidUserName(name string) error {
	if !userNameRE.MatchString(name) {
		return Errorf(CodeInvalid, "invalid user name %q: use 1-32 lower-case letters, digits, '_' or '-', starting with a letter", name)
	}
	return nil
}

// ValidSessionID checks the shape of a session id (16 base32 characters).
func ValidSessionID(id string) error {
	if !sessionIDRE.MatchString(id) {
		return Errorf(CodeInvalid, "invalid session id %q", truncate(id, 40))
	}
	return nil
}

// ValidRequestID checks the shape of a request id (RequestIDHeader): that
// of a session id, which a create's request id becomes.
func ValidRequestID(id string) error {
	if !sessionIDRE.MatchString(id) {
		return Errorf(CodeInvalid, "invalid request id %q: 16 characters of a-z and 2-7", truncate(id, 40))
	}
	return nil
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewID returns 80 random bits as 16 lower-case base32 characters: a
// session or request id, short enough to type, too many to guess.
func NewID() string {
	var b [10]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return strings.ToLower(idEncoding.EncodeToString(b[:]))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s…", s[:n])
}
