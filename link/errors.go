package link

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"syscall"
	"unicode"
)

// Sentinel errors. Returned errors wrap them with detail; test with errors.Is.
var (
	// ErrHandshake: the peer does not hold this session's key, is on another
	// session or protocol version, or is not an SFT peer at all.
	ErrHandshake = errors.New("peer handshake failed")
	// ErrTampered: a record failed authentication.
	ErrTampered = errors.New("data was modified in transit or the session key is wrong")
	// ErrTruncated: the stream stopped before the transfer was complete.
	ErrTruncated = errors.New("transfer cut short")
	// ErrManifestMismatch: the peer's manifest is not the one the session recorded.
	ErrManifestMismatch = errors.New("manifest does not match the session's")
	// ErrBadManifest: a manifest that cannot be used (malformed, wrong file count, negative size).
	ErrBadManifest = errors.New("invalid manifest")
	// ErrUnsafeName: a file name that could escape the destination directory or mislead a user.
	ErrUnsafeName = errors.New("unsafe file name")
	// ErrExists: the destination file exists and overwriting was not allowed.
	ErrExists = errors.New("destination already exists")
	// ErrVerify: length or checksums differ between what was sent and what was received.
	ErrVerify = errors.New("verification failed")
	// ErrSourceSize: the sender's reader did not hold exactly the declared number of bytes.
	ErrSourceSize = errors.New("source size differs from the manifest")
	// ErrProtocol: the peer sent a record that has no place at this point.
	ErrProtocol = errors.New("protocol violation by peer")
	// ErrNoSpace: the destination's file system cannot hold what is still to come.
	ErrNoSpace = errors.New("not enough free space")
	// ErrAborted: the peer ended the transfer; see AbortError for its reason.
	ErrAborted = errors.New("peer aborted the transfer")
)

// AbortError is returned when the peer ended the transfer with an abort
// record. It matches ErrAborted and, when the peer named one, the sentinel
// for its cause: a sender whose receiver refused to overwrite gets an error
// matching both ErrAborted and ErrExists.
type AbortError struct {
	Reason string // the peer's reason, stripped of control characters
	cause  error
}

func (e *AbortError) Error() string { return ErrAborted.Error() + ": " + e.Reason }

func (e *AbortError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrAborted}
	}
	return []error{ErrAborted, e.cause}
}

// reachError is Connect's failure: each candidate and why it failed.
type reachError struct {
	peer  string
	cands []Candidate
	errs  []error // per candidate; nil: never tried
}

func (e *reachError) Error() string {
	var b strings.Builder
	list := func(path string) {
		n := 0
		for i, c := range e.cands {
			if c.Path != path {
				continue
			}
			if n++; n > 1 {
				b.WriteString(", ")
			}
			why := "not tried"
			if e.errs[i] != nil {
				why = e.errs[i].Error()
			}
			fmt.Fprintf(&b, "%s (%s)", c.Addr, why)
		}
	}
	relays := 0
	for _, c := range e.cands {
		if c.Path == PathRelay {
			relays++
		}
	}
	b.WriteString("cannot reach " + e.peer)
	switch {
	case relays == len(e.cands):
		b.WriteString(" through the relay at ")
		list(PathRelay)
	case relays == 0:
		b.WriteString(" at ")
		list(PathDirect)
		b.WriteString("; no relay")
	default:
		b.WriteString(" at ")
		list(PathDirect)
		b.WriteString("; relay ")
		list(PathRelay)
	}
	return b.String()
}

func (e *reachError) Unwrap() []error {
	var errs []error
	for _, err := range e.errs {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// errNoAnswer: a connect that neither succeeded nor failed before Connect
// gave up, as to an address where packets are dropped.
var errNoAnswer error = noAnswer{}

type noAnswer struct{}

func (noAnswer) Error() string { return "no answer" }
func (noAnswer) Unwrap() error { return os.ErrDeadlineExceeded }

// abortCauses maps the code byte of an abort record to a sentinel. Codes are
// part of the wire format: append only.
var abortCauses = [...]error{
	0:  nil,
	1:  ErrExists,
	2:  ErrManifestMismatch,
	3:  ErrUnsafeName,
	4:  ErrTampered,
	5:  ErrVerify,
	6:  ErrProtocol,
	7:  ErrSourceSize,
	8:  ErrBadManifest,
	9:  ErrTruncated,
	10: ErrNoSpace,
}

const maxReason = 512

func abortCode(err error) byte {
	for i, s := range abortCauses {
		if s != nil && errors.Is(err, s) {
			return byte(i)
		}
	}
	return 0
}

// peerError carries the text sent to the peer when the local error holds
// details the peer should not see (local paths).
type peerError struct {
	err    error
	reason string
}

func (e *peerError) Error() string { return e.err.Error() }
func (e *peerError) Unwrap() error { return e.err }

func withReason(err error, reason string) error { return &peerError{err: err, reason: reason} }

// abortPayload builds the abort record that tells the peer why role failed.
func abortPayload(err error, role string) []byte {
	var reason string
	var pe *peerError
	var pathErr *fs.PathError
	var linkErr *os.LinkError
	var errno syscall.Errno
	switch {
	case errors.As(err, &pe):
		reason = pe.reason
	case errors.Is(err, context.Canceled):
		reason = "the " + role + " cancelled the transfer"
	case errors.Is(err, context.DeadlineExceeded):
		reason = "the " + role + " gave up waiting (deadline exceeded)"
	case errors.As(err, &pathErr), errors.As(err, &linkErr):
		// File system errors name local paths; pass on only what went wrong.
		reason = role + " could not access the file"
		if errors.As(err, &errno) {
			reason += ": " + errno.Error()
		}
	default:
		reason = role + ": " + err.Error()
	}
	reason = cleanReason(reason)
	b := make([]byte, 0, 1+len(reason))
	return append(append(b, abortCode(err)), reason...)
}

func decodeAbort(p []byte) error {
	if len(p) == 0 {
		return &AbortError{Reason: "(no reason given)"}
	}
	e := &AbortError{Reason: cleanReason(string(p[1:]))}
	if int(p[0]) < len(abortCauses) {
		e.cause = abortCauses[p[0]]
	}
	if e.Reason == "" {
		e.Reason = "(no reason given)"
	}
	return e
}

// cleanReason makes peer-supplied text safe to print on a terminal: valid
// UTF-8, no control or direction-override characters, bounded length.
func cleanReason(s string) string {
	if len(s) > maxReason {
		s = s[:maxReason]
	}
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		if isControl(r) {
			return '?'
		}
		return r
	}, s)
}

// isControl reports runes that can rewrite a terminal or disguise text:
// C0, DEL, C1, Unicode direction controls and line/paragraph separators.
func isControl(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) ||
		unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029'
}

// ctxErr reports an interrupted operation as such: once ctx has ended, the
// I/O error its deadline caused says less than the cancellation does.
func ctxErr(ctx context.Context, what string, err error) error {
	if ctx.Err() == nil || errors.Is(err, ctx.Err()) {
		return err
	}
	return fmt.Errorf("%s interrupted: %w", what, ctx.Err())
}

func isAbort(err error) bool {
	var ae *AbortError
	return errors.As(err, &ae)
}

// checkSpace refuses a transfer that would not fit in dir's file system.
func checkSpace(dir string, need int64) error {
	free, err := FreeSpace(dir)
	if err != nil || need <= free {
		return nil // unknown: the writes themselves will tell
	}
	return withReason(fmt.Errorf("%w in %s: %d bytes to receive, %d available", ErrNoSpace, dir, need, free),
		fmt.Sprintf("receiver has not enough free space (%d bytes needed, %d available)", need, free))
}

// isNetErr reports a failure of the connection rather than of a local file.
func isNetErr(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
