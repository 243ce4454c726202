// Package store defines the records SFT's services persist and the errors
// every state-store implementation reports. Implementations live in
// sub-packages (kvstore on NATS JetStream KV); storetest is the conformance
// suite they all pass, so services can swap one for another.
//
// Each consuming service declares the subset of methods it needs as an
// interface in its own package; this package only holds what they share.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sftproject/sft/api"
)

// Sentinel errors. Implementations wrap them with %w, so callers test with
// errors.Is.
var (
	// ErrNotFound: no such session, user or key (or it expired).
	ErrNotFound = errors.New("store: not found")
	// ErrExists: a record with that name already exists.
	ErrExists = errors.New("store: already exists")
	// ErrConflict: a compare-and-set lost because the record changed since
	// it was read; re-read and retry.
	ErrConflict = errors.New("store: revision conflict")
	// ErrInvalid: the request can never succeed as given (a name that is
	// not a valid key, a nil record, a TTL out of range).
	ErrInvalid = errors.New("store: invalid request")
	// ErrUnavailable: the store could not be reached or could not make the
	// write durable (for example during a Redis failover). A write that
	// failed so may or may not have been applied; re-read, then retry.
	ErrUnavailable = errors.New("store: unavailable")
)

// User is an account record.
type User struct {
	Name string `json:"name"`
	// PasswordHash is a PHC-style string that includes the hash parameters.
	PasswordHash string    `json:"password_hash"`
	Role         string    `json:"role"` // "user" or "admin"
	CreatedAt    time.Time `json:"created_at"`
}

// MaxNameLen bounds user names and session ids, so a key built from them
// stays well inside every backend's key limits.
const MaxNameLen = 128

// ValidateName checks that name (a user name or session id) is a single
// token of [A-Za-z0-9_-]. Callers validate more strictly; implementations
// call this too so that every backend refuses the same names, and none of
// them can be tricked into a wildcard or hierarchical key ('*', '>', '.').
// kind names the field in the error ("session id", "user").
func ValidateName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalid, kind)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, kind, MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return fmt.Errorf("%w: %s %q contains %q; only letters, digits, '_' and '-' are allowed",
				ErrInvalid, kind, name, c)
		}
	}
	return nil
}

// EncodeUser is the stored form of a user record, the same in every
// backend.
func EncodeUser(u *User) ([]byte, error) {
	if u == nil {
		return nil, fmt.Errorf("%w: nil user", ErrInvalid)
	}
	if err := ValidateName("user", u.Name); err != nil {
		return nil, err
	}
	data, err := json.Marshal(u)
	if err != nil {
		return nil, fmt.Errorf("encode user %s: %w", u.Name, err)
	}
	return data, nil
}

// CheckSession refuses a session record no backend can key: every
// implementation calls it before a write, so all refuse the same records.
func CheckSession(sess *api.Session) error {
	if sess == nil {
		return fmt.Errorf("%w: nil session", ErrInvalid)
	}
	if err := ValidateName("session id", sess.ID); err != nil {
		return err
	}
	if err := ValidateName("initiator", sess.Initiator); err != nil {
		return fmt.Errorf("session %s: %w", sess.ID, err)
	}
	if err := ValidateName("responder", sess.Responder); err != nil {
		return fmt.Errorf("session %s: %w", sess.ID, err)
	}
	return nil
}
