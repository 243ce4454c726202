package link

import (
	"net"
	"sync"
	"testing"
	"time"
)

// TestAcceptOnePeer: once one peer authenticated, the listener is closed,
// so a second peer holding the same key and session id gets nowhere.
func TestAcceptOnePeer(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	var (
		wg       sync.WaitGroup
		accepted *Conn
		acceptEr error
	)
	wg.Go(func() { accepted, acceptEr = Accept(ctx, e.ln, e.key, e.sid, e.opts) })
	first, err := Dial(ctx, e.addr(), e.key, e.sid, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	wg.Wait()
	if acceptEr != nil {
		t.Fatal(acceptEr)
	}
	defer accepted.Close()

	// Not even a TCP connection: nothing is listening any more.
	if c, err := net.DialTimeout("tcp", e.addr(), 2*time.Second); err == nil {
		c.Close()
		t.Fatal("the peer listener still takes connections after the first peer was accepted")
	}
	o := e.opts
	o.DialTimeout, o.HandshakeTimeout = 500*time.Millisecond, 2*time.Second
	if second, err := Dial(ctx, e.addr(), e.key, e.sid, o); err == nil {
		second.Close()
		t.Fatal("a second peer completed the handshake after the first was accepted")
	}
}
