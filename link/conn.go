package link

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/flynn/noise"
)

const (
	// readBufferSize lets one read syscall bring in several frames.
	readBufferSize = 4 * (frameHeader + maxFrame)
	// abortTimeout bounds the best-effort write of an abort record.
	abortTimeout = 500 * time.Millisecond
	// lingerTimeout bounds how long a failing side keeps reading after its
	// abort, so the peer sees the abort instead of a connection reset.
	lingerTimeout = 2 * time.Second
)

// aLongTimeAgo is a deadline that makes blocked I/O return at once.
var aLongTimeAgo = time.Unix(1, 0)

// Conn is an authenticated, encrypted link to the peer. It carries one
// transfer: call Send on one side and Receive on the other. After a failed
// Send or Receive the Conn is closed.
type Conn struct {
	sid      string // the session the handshake bound this link to
	path     string
	peerAddr string
	nc       net.Conn
	br       *bufio.Reader
	log      *slog.Logger
	enc      *noise.CipherState
	dec      *noise.CipherState

	// Records are encrypted and decrypted in place: wbuf holds header and
	// ciphertext of the frame being written, rbuf the frame being read.
	wbuf []byte
	rbuf []byte
	hdr  [frameHeader]byte

	// wbroken is set once a write failed: the frame may be half sent and its
	// nonce is spent, so no further record can be written.
	wbroken bool

	used      atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

func newConn(nc net.Conn, log *slog.Logger) *Conn {
	return &Conn{
		nc:   nc,
		br:   bufio.NewReaderSize(nc, readBufferSize),
		log:  log,
		wbuf: make([]byte, frameBufSize),
		rbuf: make([]byte, maxFrame),
	}
}

// linkConn is the Conn for nc once its handshake completed.
func linkConn(nc net.Conn, log *slog.Logger, sessionID string, enc, dec *noise.CipherState, path, peerAddr string) *Conn {
	watchLiveness(nc)
	c := newConn(nc, log)
	c.sid, c.enc, c.dec = sessionID, enc, dec
	c.path, c.peerAddr = path, peerAddr
	return c
}

// Path is how this connection reaches the peer: PathDirect or PathRelay.
func (c *Conn) Path() string { return c.path }

// PeerAddr is where this connection goes, as users know it: the Addr of
// the candidate Connect chose, the remote address of a connection Accept
// took on its listener, or the relay's address (Options.RelayAddr, else the
// relay connection's remote address) for one through the relay.
func (c *Conn) PeerAddr() string { return c.peerAddr }

// Close closes the connection. It is safe to call more than once.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { c.closeErr = c.nc.Close() })
	return c.closeErr
}

// RemoteAddr is the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// LocalAddr is this side's network address.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

func (c *Conn) claim() error {
	if !c.used.CompareAndSwap(false, true) {
		return errors.New("link: this connection already carried a transfer; dial or accept a new one")
	}
	return nil
}

// watch makes blocked I/O on nc return once ctx ends. The returned stop
// reports whether ctx interrupted; after it returns, the watcher no longer
// touches nc.
func watch(ctx context.Context, nc net.Conn) (stop func() bool) {
	fired := make(chan struct{})
	cancel := context.AfterFunc(ctx, func() {
		defer close(fired)
		nc.SetDeadline(aLongTimeAgo)
	})
	return func() bool {
		if cancel() {
			return false
		}
		<-fired
		return true
	}
}

// frameBufSize holds one frame: header, then the record's ciphertext.
const frameBufSize = frameHeader + maxFrame

// writeFrame encrypts, in place, the record of type t whose n-byte payload
// is already in buf at payloadOffset, and writes header and ciphertext with
// one Write. buf must be frameBufSize long.
func (c *Conn) writeFrame(buf []byte, t recType, n int) error {
	if c.wbroken {
		return errors.New("link: connection unusable after an earlier write failure")
	}
	if n > maxPayload {
		return fmt.Errorf("link: record payload of %d bytes exceeds %d", n, maxPayload)
	}
	buf[frameHeader] = byte(t)
	ct, err := c.enc.Encrypt(buf[frameHeader:frameHeader], nil, buf[frameHeader:payloadOffset+n])
	if err != nil {
		c.wbroken = true
		return fmt.Errorf("link: encrypting record: %w", err)
	}
	binary.BigEndian.PutUint16(buf, uint16(len(ct)))
	if _, err := c.nc.Write(buf[:frameHeader+len(ct)]); err != nil {
		c.wbroken = true
		return writeErr(err)
	}
	return nil
}

// payloadOffset is where a record's payload starts in a frame buffer.
const payloadOffset = frameHeader + 1

func (c *Conn) writeRecord(t recType, p []byte) error {
	if len(p) > maxPayload {
		return fmt.Errorf("link: %s record of %d bytes exceeds %d", t, len(p), maxPayload)
	}
	return c.writeFrame(c.wbuf, t, copy(c.wbuf[payloadOffset:], p))
}

// readRecord reads and decrypts one record into c.rbuf. The payload is
// valid until the next call.
func (c *Conn) readRecord() (recType, []byte, error) { return c.readRecordInto(c.rbuf) }

// readRecordInto reads one frame and decrypts it into buf (maxFrame
// bytes), straight out of the read buffer so the bytes are copied only by
// the cipher. Memory use is bounded by buf whatever length the peer
// declares.
func (c *Conn) readRecordInto(buf []byte) (recType, []byte, error) {
	if _, err := io.ReadFull(c.br, c.hdr[:]); err != nil {
		return 0, nil, readErr(err)
	}
	n := int(binary.BigEndian.Uint16(c.hdr[:]))
	if n < tagLen+1 {
		return 0, nil, fmt.Errorf("%w: frame of %d bytes is too short to be a record", ErrTampered, n)
	}
	ct, err := c.br.Peek(n) // the read buffer holds several frames
	if err != nil {
		return 0, nil, readErr(err)
	}
	pt, err := c.dec.Decrypt(buf[:0], nil, ct)
	c.br.Discard(n)
	if err != nil {
		return 0, nil, fmt.Errorf("%w (record failed authentication)", ErrTampered)
	}
	return recType(pt[0]), pt[1:], nil
}

func readErr(err error) error {
	if peerClosed(err) {
		return fmt.Errorf("%w: the connection closed before the transfer finished", ErrTruncated)
	}
	return fmt.Errorf("reading from peer: %w", err)
}

func writeErr(err error) error {
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%w: the peer closed the connection", ErrTruncated)
	}
	return fmt.Errorf("writing to peer: %w", err)
}

// sendAbort tells the peer why this side stops, if the outgoing stream can
// still carry a record. Best effort: the local error is what matters.
func (c *Conn) sendAbort(err error, role string) {
	if c.wbroken || isAbort(err) {
		return
	}
	c.nc.SetWriteDeadline(time.Now().Add(abortTimeout))
	if werr := c.writeRecord(recAbort, abortPayload(err, role)); werr != nil {
		c.log.Debug("peer link: could not send abort", "remote", c.nc.RemoteAddr(), "err", werr)
	}
	// Half-close so the peer reads our abort, then EOF, rather than a reset.
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// linger reads and discards what the peer still sends until it closes, for
// at most lingerTimeout, so that closing does not reset the connection
// before the peer has read our abort.
func (c *Conn) linger() {
	c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.Copy(io.Discard, c.br)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
