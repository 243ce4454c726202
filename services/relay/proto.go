package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sftproject/sft/api"
)

// magic opens every client connection; it names the protocol and its version.
const magic = "SFTR1\n"

const (
	// MaxTicket is the longest ticket a preamble may carry, in bytes.
	MaxTicket = 2048
	// maxStatus bounds a status frame's message: the client reads no more.
	maxStatus = 1024
)

// kind is the type of a status frame.
type kind byte

const (
	kindAccepted kind = 1 // admitted; waiting for the peer
	kindPaired   kind = 2 // the peer is here: from now on the connection is a byte pipe to it
	kindRefused  kind = 3 // not admitted; the message starts with an api code; the relay closes
)

func (k kind) String() string {
	switch k {
	case kindAccepted:
		return "accepted"
	case kindPaired:
		return "paired"
	case kindRefused:
		return "refused"
	}
	return fmt.Sprintf("kind %d", byte(k))
}

// errPreamble is wrapped by every error of readPreamble.
var errPreamble = errors.New("not an SFT relay preamble")

// appendPreamble appends the client's preamble carrying ticket.
func appendPreamble(b []byte, ticket string) ([]byte, error) {
	if len(ticket) == 0 || len(ticket) > MaxTicket {
		return nil, fmt.Errorf("relay ticket of %d bytes: want 1 to %d", len(ticket), MaxTicket)
	}
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(ticket)))
	return append(b, ticket...), nil
}

// readPreamble reads a client's preamble from r and returns its ticket. It
// reads nothing past the preamble.
func readPreamble(r io.Reader) (string, error) {
	var head [len(magic) + 2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return "", fmt.Errorf("%w: %w", errPreamble, err)
	}
	if string(head[:len(magic)]) != magic {
		return "", fmt.Errorf("%w: wrong magic", errPreamble)
	}
	n := int(binary.BigEndian.Uint16(head[len(magic):]))
	if n == 0 || n > MaxTicket {
		return "", fmt.Errorf("%w: ticket of %d bytes, want 1 to %d", errPreamble, n, MaxTicket)
	}
	ticket := make([]byte, n)
	if _, err := io.ReadFull(r, ticket); err != nil {
		return "", fmt.Errorf("%w: ticket: %w", errPreamble, err)
	}
	return string(ticket), nil
}

// appendStatus appends a status frame. The message is cut to what a
// client reads, at a rune boundary.
func appendStatus(b []byte, k kind, msg string) []byte {
	for len(msg) > maxStatus {
		_, size := utf8.DecodeLastRuneInString(msg)
		msg = msg[:len(msg)-size]
	}
	b = append(b, byte(k))
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// refusal is the status frame refusing a client with err's code and
// message (an *api.Error; anything else is internal).
func refusal(err *api.Error) []byte {
	return appendStatus(nil, kindRefused, string(err.Code)+": "+err.Message)
}

// readStatus reads one status frame from r, exactly its bytes and no
// more, so that the peer's bytes after a paired frame stay unread. The
// message is valid UTF-8 without control characters, and a refusal's
// starts with an api code and ": ".
func readStatus(r io.Reader) (kind, string, error) {
	var head [3]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, "", err
	}
	k := kind(head[0])
	if k != kindAccepted && k != kindPaired && k != kindRefused {
		return 0, "", fmt.Errorf("relay status: unknown %s", k)
	}
	n := int(binary.BigEndian.Uint16(head[1:]))
	if n > maxStatus {
		return 0, "", fmt.Errorf("relay status: message of %d bytes, the most is %d", n, maxStatus)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return 0, "", fmt.Errorf("relay status: %w", err)
	}
	// The message reaches a person's terminal: nothing that could steer it.
	if !utf8.Valid(msg) || strings.ContainsFunc(string(msg), unprintable) {
		return 0, "", errors.New("relay status: message is not printable UTF-8")
	}
	if k == kindRefused {
		if _, _, err := parseRefusal(string(msg)); err != nil {
			return 0, "", err
		}
	}
	return k, string(msg), nil
}

// unprintable tells control and format characters (bidi overrides among
// them), which could reorder or rewrite what a terminal shows.
func unprintable(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }

// parseRefusal splits a refusal's message into its code and the rest.
func parseRefusal(msg string) (api.Code, string, error) {
	code, rest, ok := strings.Cut(msg, ": ")
	if !ok || code == "" || strings.ContainsFunc(code, func(r rune) bool { return (r < 'a' || r > 'z') && r != '_' }) {
		return "", "", errors.New("relay status: a refusal without an error code")
	}
	return api.Code(code), rest, nil
}
