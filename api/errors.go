package api

import (
	"errors"
	"fmt"
	"strings"
)

// Code is a stable, machine-readable error code. Codes never change meaning;
// clients branch on them, humans read Message.
type Code string

const (
	CodeInvalid      Code = "invalid"      // malformed or semantically wrong request
	CodeUnauthorized Code = "unauthorized" // no, bad, forged or expired credentials
	CodeForbidden    Code = "forbidden"    // authenticated, but not allowed
	CodeNotFound     Code = "not_found"    // no such session, user or key
	CodeConflict     Code = "conflict"     // the state does not allow this now
	CodeExpired      Code = "expired"      // the session's lifetime is over
	CodeThrottled    Code = "throttled"    // too many attempts; retry later
	CodeUnavailable  Code = "unavailable"  // a dependency is down; retry later
	CodeInternal     Code = "internal"     // a bug or unexpected failure
)

// Error is an API error as it travels in a micro error reply.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Errorf builds an *Error.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// bodyTooLarge is the wording of BodyTooLarge, which IsBodyTooLarge
// recognises on the other side of the bus.
const bodyTooLarge = "request body of %d bytes exceeds the %d byte limit"

// BodyTooLarge is the error for a request body over the service's limit
// (limits.request_bytes).
func BodyTooLarge(n, limit int) *Error { return Errorf(CodeInvalid, bodyTooLarge, n, limit) }

// IsBodyTooLarge reports whether err is a BodyTooLarge error.
func IsBodyTooLarge(err error) bool {
	var e *Error
	var n, limit int
	if !errors.As(err, &e) || e.Code != CodeInvalid {
		return false
	}
	_, serr := fmt.Sscanf(e.Message, bodyTooLarge, &n, &limit)
	return serr == nil && strings.HasSuffix(e.Message, "limit")
}

// CodeOf returns the API code of err, or "" when err is not an API error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
