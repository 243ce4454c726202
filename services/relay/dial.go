package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/sftproject/sft/api"
)

// aLongTimeAgo is a deadline in the past: setting it wakes a blocked read
// or write at once.
var aLongTimeAgo = time.Unix(1, 0)

// Dial connects to the relay at addr, presents ticket and waits (until ctx
// ends) for the peer. It returns the connection once the relay paired it,
// a *net.TCPConn from which the next byte read is the peer's; the caller
// owns it. A refusal is an *api.Error with the relay's code (errors.As),
// wrapped with the relay's address. When ctx ends first, the connection is
// closed and the error wraps ctx.Err().
func Dial(ctx context.Context, addr, ticket string) (net.Conn, error) {
	preamble, err := appendPreamble(nil, ticket)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("relay %s: %w", addr, err)
	}
	c := nc.(*net.TCPConn)
	// Waking the reads and writes below is the portable way to honour ctx.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo) })
	err = handshake(c, preamble)
	if !stop() {
		err = errors.Join(ctx.Err(), err)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("relay %s: %w", addr, err)
	}
	return c, nil
}

// handshake sends the preamble and reads status frames until the relay
// pairs or refuses the connection.
func handshake(c *net.TCPConn, preamble []byte) error {
	if _, err := c.Write(preamble); err != nil {
		return err
	}
	for {
		k, msg, err := readStatus(c)
		if err != nil {
			return err
		}
		switch k {
		case kindPaired:
			return nil
		case kindRefused:
			code, rest, _ := parseRefusal(msg) // readStatus checked it
			return api.Errorf(code, "%s", rest)
		}
	}
}
