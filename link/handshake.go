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
	"sync"
	"syscall"
	"time"

	"github.com/flynn/noise"
)

// KeySize is the length of the session key, in bytes.
const KeySize = 32

const (
	prologuePrefix = "sft-link/2\x00"
	// maxHandshakeMsg is well above the 48 bytes an NNpsk0 message takes;
	// anything longer is not an SFT peer and is dropped without reading it.
	maxHandshakeMsg = 256
	// maxPendingHandshakes bounds the connections Accept serves at once, so
	// a flood of idle connections cannot exhaust memory or descriptors.
	maxPendingHandshakes = 16
	defaultTimeout       = 10 * time.Second
)

var cipherSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256)

// Options tunes Accept and Dial. The zero value is ready to use.
type Options struct {
	// HandshakeTimeout bounds the handshake of one connection (default 10s).
	HandshakeTimeout time.Duration
	// DialTimeout bounds establishing the TCP connection (default 10s).
	DialTimeout time.Duration
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
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
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

// Accept waits on ln for the peer of session sessionID and returns the first
// connection that completes the handshake with key. Connections that fail it
// (another key or session, garbage) or stay silent past HandshakeTimeout are
// closed, logged at Warn, and Accept keeps waiting; several may be in their
// handshake at once, so an idle connection does not hold up the real peer.
//
// Accept takes ownership of ln and closes it before returning, so no second
// peer can ever connect. When ctx ends first, the error wraps ctx.Err() and,
// if a connection attempt failed, that failure too (so errors.Is(err,
// ErrHandshake) tells that someone tried with the wrong key).
func Accept(ctx context.Context, ln net.Listener, key []byte, sessionID string, opts Options) (*Conn, error) {
	defer ln.Close()
	if err := checkParams(key, sessionID); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Closing the listener is the only portable way to interrupt Accept.
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var (
		wg        sync.WaitGroup
		won       = make(chan *Conn)
		acceptErr = make(chan error, 1)
		pending   = make(chan struct{}, maxPendingHandshakes)
		mu        sync.Mutex
		lastErr   error
	)
	serve := func(nc net.Conn) {
		defer wg.Done()
		defer func() { <-pending }()
		c, err := handshake(ctx, nc, key, sessionID, false, opts)
		if err != nil {
			// Record before closing: the peer learns of the failure by the close.
			if ctx.Err() == nil {
				opts.Logger.Warn("peer link: rejected connection", "remote", nc.RemoteAddr().String(), "err", err)
				mu.Lock()
				lastErr = err
				mu.Unlock()
			}
			nc.Close()
			return
		}
		select {
		case won <- c:
		case <-ctx.Done():
			c.Close()
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			select {
			case pending <- struct{}{}:
				wg.Add(1)
				go serve(nc)
			default:
				opts.Logger.Warn("peer link: too many connections in handshake, dropping one", "remote", nc.RemoteAddr().String())
				nc.Close()
			}
		}
	}()

	var (
		c   *Conn
		err error
	)
	select {
	case c = <-won:
	case err = <-acceptErr:
		err = fmt.Errorf("waiting for the peer on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	cancel()
	ln.Close()
	wg.Wait()
	if c != nil {
		return c, nil
	}
	if parent.Err() != nil {
		mu.Lock()
		defer mu.Unlock()
		if lastErr != nil {
			return nil, fmt.Errorf("no peer completed the handshake: %w (last attempt: %w)", parent.Err(), lastErr)
		}
		return nil, fmt.Errorf("no peer connected: %w", parent.Err())
	}
	return nil, err
}

// Dial connects to the peer at addr and runs the handshake as initiator.
func Dial(ctx context.Context, addr string, key []byte, sessionID string, opts Options) (*Conn, error) {
	if err := checkParams(key, sessionID); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	d := net.Dialer{Timeout: opts.DialTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connecting to peer at %s: %w", addr, ctx.Err())
		}
		if isTimeout(err) {
			return nil, fmt.Errorf("cannot reach peer at %s: no answer within %s: %w", addr, opts.DialTimeout, os.ErrDeadlineExceeded)
		}
		return nil, fmt.Errorf("cannot reach peer at %s: %w", addr, netCause(err))
	}
	c, err := handshake(ctx, nc, key, sessionID, true, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
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

// handshake runs Noise NNpsk0 on nc. On error the caller closes nc.
func handshake(ctx context.Context, nc net.Conn, key []byte, sessionID string, initiator bool, opts Options) (*Conn, error) {
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
	c := newConn(nc, opts.Logger)
	c.sid = sessionID
	nc.SetDeadline(time.Now().Add(opts.HandshakeTimeout))
	stop := watch(ctx, nc)
	if initiator {
		err = c.initiate(hs)
	} else {
		err = c.respond(hs)
	}
	if stop() {
		return nil, fmt.Errorf("handshake with %s interrupted: %w", nc.RemoteAddr(), ctx.Err())
	}
	if err != nil {
		if isTimeout(err) {
			return nil, fmt.Errorf("%w: %s did not complete the handshake within %s", ErrHandshake, nc.RemoteAddr(), opts.HandshakeTimeout)
		}
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

func (c *Conn) initiate(hs *noise.HandshakeState) error {
	addr := c.nc.RemoteAddr()
	if err := c.writeHandshake(hs); err != nil {
		return err
	}
	msg, err := c.readHandshake()
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			return fmt.Errorf("%w: peer at %s closed the connection during the handshake; it does not hold this session's key, or waits for another session", ErrHandshake, addr)
		}
		return fmt.Errorf("%w: peer at %s: %w", ErrHandshake, addr, err)
	}
	_, cs1, cs2, err := hs.ReadMessage(nil, msg)
	if err != nil || cs1 == nil {
		return fmt.Errorf("%w: peer at %s answered with another key or session", ErrHandshake, addr)
	}
	c.enc, c.dec = cs1, cs2
	return nil
}

func (c *Conn) respond(hs *noise.HandshakeState) error {
	addr := c.nc.RemoteAddr()
	msg, err := c.readHandshake()
	if err != nil {
		return fmt.Errorf("%w: connection from %s: %w", ErrHandshake, addr, err)
	}
	if _, _, _, err := hs.ReadMessage(nil, msg); err != nil {
		return fmt.Errorf("%w: connection from %s does not hold this session's key or is for another session", ErrHandshake, addr)
	}
	out, cs1, cs2, err := hs.WriteMessage(c.wbuf[frameHeader:frameHeader], nil)
	if err != nil || cs1 == nil {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	binary.BigEndian.PutUint16(c.wbuf, uint16(len(out)))
	if _, err := c.nc.Write(c.wbuf[:frameHeader+len(out)]); err != nil {
		return fmt.Errorf("%w: answering %s: %w", ErrHandshake, addr, err)
	}
	// The responder sends with the second CipherState of the split.
	c.enc, c.dec = cs2, cs1
	return nil
}

func (c *Conn) writeHandshake(hs *noise.HandshakeState) error {
	out, _, _, err := hs.WriteMessage(c.wbuf[frameHeader:frameHeader], nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	binary.BigEndian.PutUint16(c.wbuf, uint16(len(out)))
	if _, err := c.nc.Write(c.wbuf[:frameHeader+len(out)]); err != nil {
		return fmt.Errorf("%w: sending to %s: %w", ErrHandshake, c.nc.RemoteAddr(), err)
	}
	return nil
}

func (c *Conn) readHandshake() ([]byte, error) {
	if _, err := io.ReadFull(c.br, c.hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(c.hdr[:]))
	if n > maxHandshakeMsg {
		return nil, fmt.Errorf("not an SFT peer (handshake message of %d bytes)", n)
	}
	msg := c.rbuf[:n]
	if _, err := io.ReadFull(c.br, msg); err != nil {
		return nil, err
	}
	return msg, nil
}
