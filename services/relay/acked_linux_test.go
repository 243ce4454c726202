package relay

import (
	"io"
	"net"
	"testing"
	"time"
)

// A copy stuck on a slow reader moves bytes that the relay counts only
// when the copy returns; the peers' acknowledgements keep such a pair from
// counting as idle.
func TestIdleCountsAcknowledgedBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make([]*net.TCPConn, 4) // relay side a, b; their peers
	for i := range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		conns[i], conns[i+2] = s.(*net.TCPConn), c.(*net.TCPConn)
		defer c.Close()
		defer s.Close()
	}
	const idleTimeout = 50 * time.Millisecond
	p := &pair{s: &Server{opts: Options{IdleTimeout: idleTimeout}}, a: conns[0], b: conns[1]}
	p.last.Store(time.Now().Add(-time.Hour).UnixNano()) // no copy returned for long

	ctx := within(t, time.Minute)
	sendAndAck := func() {
		before, _ := ackedBytes(conns[0])
		if _, err := conns[0].Write(make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(conns[2], make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "the acknowledgement", func() bool { n, _ := ackedBytes(conns[0]); return n >= before+1000 })
	}
	sendAndAck()
	if p.idle() {
		t.Fatal("idle although the peer acknowledged bytes since the last look")
	}
	time.Sleep(idleTimeout) // a lower bound: nothing moves meanwhile
	if !p.idle() {
		t.Fatal("not idle after IdleTimeout without a byte")
	}
	sendAndAck()
	if p.idle() {
		t.Fatal("still idle after the peer acknowledged more bytes")
	}
}
