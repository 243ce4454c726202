package link

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/flynn/noise"
)

// KeySize is the length of the session key, in bytes.
const KeySize = 32

const (
	prologuePrefix = "sft-link/3\x00"
	// maxHandshakeMsg is well above the 48 bytes an NNpsk0 message takes;
	// anything longer is not an SFT peer and is dropped without reading it.
	maxHandshakeMsg = 256
	// maxSelectFrame is well above the 17 bytes a select record takes.
	maxSelectFrame = 64
	// firstMessageTimeout bounds the wait for a connection's first handshake
	// message. A real peer sends it as soon as it is connected; what stays
	// silent longer is a scanner, a slow-loris or a connection whose other
	// end is gone, and must not hold a place for the whole HandshakeTimeout.
	// A peer cut off by it dials again.
	firstMessageTimeout = 5 * time.Second

	defaultTimeout    = 10 * time.Second
	defaultStagger    = 250 * time.Millisecond
	defaultRelayDelay = 2500 * time.Millisecond
)

var cipherSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256)

// Options tunes Connect, Dial and Accept. The zero value is ready to use.
type Options struct {
	// HandshakeTimeout bounds the handshake of one connection (default 10s).
	HandshakeTimeout time.Duration
	// DialTimeout bounds how long Connect and Dial keep trying to reach the
	// peer (default 10s): attempts that fail are repeated until it has
	// passed, and connects still under way are abandoned then. A handshake
	// already under way may still complete within HandshakeTimeout.
	DialTimeout time.Duration
	// Stagger is how long Connect gives one direct candidate before it
	// starts the next (default 250ms; negative: all at once).
	Stagger time.Duration
	// RelayDelay is how long Connect gives direct candidates before relay
	// candidates start, and Accept its listener before it calls Relay
	// (default 2.5s; negative: at once).
	RelayDelay time.Duration
	// Relay, for Accept, supplies a connection through a relay to the peer.
	// It must return once its ctx ends. Accept calls it again, after a
	// short pause, whenever it or the handshake on its connection fails.
	Relay func(ctx context.Context) (net.Conn, error)
	// RelayAddr is the relay's address as users know it, reported by
	// Conn.PeerAddr for a relayed connection (default: the relay
	// connection's remote address).
	RelayAddr string
	// PeerName names the other side in Connect's errors, such as "bob's
	// peer" (default "the peer").
	PeerName string
	// Logger receives warnings about failed connection attempts (default slog.Default()).
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = defaultTimeout
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = defaultTimeout
	}
	o.Stagger = orDefault(o.Stagger, defaultStagger)
	o.RelayDelay = orDefault(o.RelayDelay, defaultRelayDelay)
	if o.PeerName == "" {
		o.PeerName = "the peer"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// orDefault reads a delay the way net.Dialer.FallbackDelay is read: zero
// means the default, negative means none.
func orDefault(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

func checkParams(key []byte, sessionID string) error {
	if len(key) != KeySize {
		return fmt.Errorf("link: session key must be %d bytes, got %d", KeySize, len(key))
	}
	if sessionID == "" {
		return errors.New("link: empty session id")
	}
	return nil
}

func newHandshake(key []byte, sessionID string, initiator bool) (*noise.HandshakeState, error) {
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:           cipherSuite,
		Pattern:               noise.HandshakeNN,
		Initiator:             initiator,
		Prologue:              []byte(prologuePrefix + sessionID),
		PresharedKey:          key,
		PresharedKeyPlacement: 0,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	return hs, nil
}

// Handshakes read and write nc directly, one exact frame at a time, with
// small buffers: a connection that is still unproven costs little memory,
// and nothing the peer sends after the handshake is read ahead and lost
// before the winning connection gets its Conn.

// initiate runs the initiator's side of the handshake on nc and returns the
// cipher states to send and to receive with. On error the caller closes nc.
func initiate(ctx context.Context, nc net.Conn, key []byte, sessionID string, timeout time.Duration) (enc, dec *noise.CipherState, err error) {
	hs, err := newHandshake(key, sessionID, true)
	if err != nil {
		return nil, nil, err
	}
	nc.SetDeadline(time.Now().Add(timeout))
	stop := watch(ctx, nc)
	enc, dec, err = initiateOn(nc, hs)
	if stop() {
		return nil, nil, fmt.Errorf("handshake interrupted: %w", ctx.Err())
	}
	if err != nil {
		if isTimeout(err) {
			return nil, nil, fmt.Errorf("%w: no answer to the handshake within %s", ErrHandshake, timeout)
		}
		return nil, nil, err
	}
	nc.SetDeadline(time.Time{})
	return enc, dec, nil
}

func initiateOn(nc net.Conn, hs *noise.HandshakeState) (enc, dec *noise.CipherState, err error) {
	var buf [frameHeader + maxHandshakeMsg]byte
	if _, _, err := writeHandshake(nc, hs, buf[:]); err != nil {
		return nil, nil, err
	}
	msg, err := readSmallFrame(nc, buf[:])
	if err != nil {
		if peerClosed(err) {
			return nil, nil, fmt.Errorf("%w: the peer closed the connection during the handshake; it does not hold this session's key, or waits for another session", ErrHandshake)
		}
		return nil, nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	_, cs1, cs2, err := hs.ReadMessage(nil, msg)
	if err != nil || cs1 == nil {
		return nil, nil, fmt.Errorf("%w: the peer answered with another key or session", ErrHandshake)
	}
	return cs1, cs2, nil
}

// Errors of respond that are no sign of a peer with the wrong key, so
// Accept notes them only at Debug level.
var (
	// errSilent: the connection closed before sending anything, as a port
	// scanner's does.
	errSilent = errors.New("closed before sending anything")
	// errNotSelected: the peer completed the handshake, then closed the
	// connection because it chose another one.
	errNotSelected = errors.New("the peer closed the connection without selecting it")
)

// respond runs the responder's side of the handshake on nc, then waits for
// the initiator's select record, and returns the cipher states to send and
// to receive with. The first message must arrive within
// firstMessageTimeout (or timeout, if shorter), the rest within timeout.
// hello, if not nil, is called once the first message proved that the other
// end holds the session key (or replays a message of one that does). On
// error the caller closes nc.
func respond(ctx context.Context, nc net.Conn, key []byte, sessionID string, timeout time.Duration, hello func()) (enc, dec *noise.CipherState, err error) {
	hs, err := newHandshake(key, sessionID, false)
	if err != nil {
		return nil, nil, err
	}
	start := time.Now()
	first := min(timeout, firstMessageTimeout)
	nc.SetDeadline(start.Add(first))
	stop := watch(ctx, nc)
	proven := false
	enc, dec, err = respondOn(nc, hs, func() {
		proven = true
		extendDeadline(ctx, nc, start.Add(timeout))
		if hello != nil {
			hello()
		}
	})
	if stop() {
		return nil, nil, fmt.Errorf("handshake interrupted: %w", ctx.Err())
	}
	switch {
	case err == nil:
		nc.SetDeadline(time.Time{})
		return enc, dec, nil
	case isTimeout(err) && !proven:
		return nil, nil, fmt.Errorf("%w: did not start the handshake within %s", ErrHandshake, first)
	case isTimeout(err):
		return nil, nil, fmt.Errorf("%w: did not complete the handshake and select the connection within %s", ErrHandshake, timeout)
	}
	return nil, nil, err
}

func respondOn(nc net.Conn, hs *noise.HandshakeState, hello func()) (enc, dec *noise.CipherState, err error) {
	var buf [frameHeader + maxHandshakeMsg]byte
	msg, err := readSmallFrame(nc, buf[:])
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return nil, nil, errSilent
	case err != nil:
		return nil, nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	if _, _, _, err := hs.ReadMessage(nil, msg); err != nil {
		return nil, nil, fmt.Errorf("%w: does not hold this session's key or is for another session", ErrHandshake)
	}
	hello()
	cs1, cs2, err := writeHandshake(nc, hs, buf[:])
	if err != nil {
		return nil, nil, err
	}
	if cs1 == nil {
		return nil, nil, fmt.Errorf("%w: handshake did not complete", ErrHandshake)
	}
	// The responder sends with the second CipherState of the split.
	enc, dec = cs2, cs1
	if err := readSelect(nc, dec); err != nil {
		if peerClosed(err) {
			return nil, nil, errNotSelected
		}
		return nil, nil, err
	}
	return enc, dec, nil
}

// writeHandshake writes hs's next message as one frame, using buf, and
// returns the split the message completed, if it did.
func writeHandshake(nc net.Conn, hs *noise.HandshakeState, buf []byte) (cs1, cs2 *noise.CipherState, err error) {
	out, cs1, cs2, err := hs.WriteMessage(buf[frameHeader:frameHeader], nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	binary.BigEndian.PutUint16(buf, uint16(len(out)))
	if _, err := nc.Write(buf[:frameHeader+len(out)]); err != nil {
		return nil, nil, fmt.Errorf("%w: sending a handshake message: %w", ErrHandshake, err)
	}
	return cs1, cs2, nil
}

// readSmallFrame reads one frame of at most len(buf)-frameHeader bytes into
// buf and returns its content. It reads exactly the frame, nothing after.
func readSmallFrame(r io.Reader, buf []byte) ([]byte, error) {
	if _, err := io.ReadFull(r, buf[:frameHeader]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(buf))
	if n > len(buf)-frameHeader {
		return nil, fmt.Errorf("not an SFT peer (message of %d bytes where at most %d fit)", n, len(buf)-frameHeader)
	}
	msg := buf[frameHeader : frameHeader+n]
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// readSelect reads the initiator's first record, which must be select, and
// decrypts it with dec. It reads exactly that frame, so the records behind
// it stay for the Conn.
func readSelect(r io.Reader, dec *noise.CipherState) error {
	var buf [frameHeader + maxSelectFrame]byte
	ct, err := readSmallFrame(r, buf[:])
	if err != nil {
		if peerClosed(err) || isTimeout(err) {
			return err
		}
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	pt, err := dec.Decrypt(ct[:0], nil, ct)
	if err != nil {
		return fmt.Errorf("%w: the first record failed authentication", ErrHandshake)
	}
	return decodeSelect(pt)
}

// decodeSelect checks a decrypted record for being a select record.
func decodeSelect(pt []byte) error {
	switch {
	case len(pt) == 0:
		return fmt.Errorf("%w: empty record where select was expected", ErrProtocol)
	case recType(pt[0]) != recSelect:
		return fmt.Errorf("%w: expected select, got a %s record", ErrProtocol, recType(pt[0]))
	case len(pt) != 1:
		return fmt.Errorf("%w: select record with %d bytes of payload", ErrProtocol, len(pt)-1)
	}
	return nil
}

// extendDeadline moves nc's deadline to t unless ctx has ended, in which
// case watch has set (or is about to set) a deadline in the past that must
// stay.
func extendDeadline(ctx context.Context, nc net.Conn, t time.Time) {
	nc.SetDeadline(t)
	if ctx.Err() != nil {
		nc.SetDeadline(aLongTimeAgo)
	}
}

// netCause strips the "dial tcp …: connect:" layers that repeat what the
// caller's message already says, keeping the chain for errors.Is.
func netCause(err error) error {
	for {
		switch e := err.(type) {
		case *net.OpError:
			err = e.Err
		case *os.SyscallError:
			err = e.Err
		default:
			return err
		}
	}
}

// peerClosed reports that the other end closed or reset the connection.
func peerClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}
