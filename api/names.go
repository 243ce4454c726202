package api

import (
	"fmt"
	"regexp"
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

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("%s…", s[:n])
}
