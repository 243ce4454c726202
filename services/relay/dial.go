package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
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
	c, _, err := DialAny(ctx, []string{addr}, ticket)
	return c, err
}

// connectStagger is how long one relay address gets to accept the TCP
// connection before the next is tried too.
const connectStagger = 250 * time.Millisecond

// DialAny is Dial with the first of addrs (the addresses of one relay, or
// of several) that accepts a TCP connection: they are tried staggered, so
// one that never answers does not hold up the rest. It returns the
// address it reached with the connection.
func DialAny(ctx context.Context, addrs []string, ticket string) (net.Conn, string, error) {
	preamble, err := appendPreamble(nil, ticket)
	if err != nil {
		return nil, "", err
	}
	c, addr, err := connectFirst(ctx, addrs)
	if err != nil {
		return nil, "", err
	}
	// Waking the reads and writes below is the portable way to honour ctx.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo) })
	err = handshake(c, preamble)
	if !stop() {
		err = errors.Join(ctx.Err(), err)
	}
	if err != nil {
		c.Close()
		return nil, "", fmt.Errorf("relay %s: %w", addr, err)
	}
	return c, addr, nil
}

// connectFirst opens a TCP connection to the first of addrs that accepts
// one; the attempts still under way when it returns are abandoned and
// their connections closed.
func connectFirst(ctx context.Context, addrs []string) (*net.TCPConn, string, error) {
	if len(addrs) == 0 {
		return nil, "", errors.New("no relay address")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type attempt struct {
		c    *net.TCPConn
		addr string
		err  error
	}
	results := make(chan attempt, len(addrs))
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		close(results)
		for a := range results { // late winners
			if a.c != nil {
				a.c.Close()
			}
		}
	}()
	start := func(addr string) {
		wg.Go(func() {
			var d net.Dialer
			nc, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				results <- attempt{addr: addr, err: fmt.Errorf("relay %s: %w", addr, err)}
				return
			}
			results <- attempt{c: nc.(*net.TCPConn), addr: addr}
		})
	}
	next, pending := 0, 0
	var errs []error
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			if next < len(addrs) {
				start(addrs[next])
				next++
				pending++
				timer.Reset(connectStagger)
			}
		case a := <-results:
			pending--
			if a.err == nil {
				return a.c, a.addr, nil
			}
			errs = append(errs, a.err)
			if next < len(addrs) {
				timer.Reset(0) // a failure starts the next at once
			} else if pending == 0 {
				return nil, "", errors.Join(errs...)
			}
		case <-ctx.Done():
			return nil, "", errors.Join(append(errs, ctx.Err())...)
		}
	}
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
