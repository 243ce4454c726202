package api

import (
	"errors"
	"fmt"
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

// CodeOf returns the API code of err, or "" when err is not an API error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
