package link

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// Both ends of a link bound how long sent data may go unacknowledged, so a
// peer that vanished mid-transfer fails the link (and a resume follows)
// within deadLinkAfter instead of the kernel's quarter of an hour.
func TestLinkNoticesADeadPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	key, sid := randomKey(t), "s"
	accepted := make(chan *Conn, 1)
	go func() {
		c, err := Accept(t.Context(), ln, key, sid, Options{})
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	dialed, err := Dial(t.Context(), ln.Addr().String(), key, sid, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dialed.Close()
	acc := <-accepted
	if acc == nil {
		return
	}
	defer acc.Close()
	for name, c := range map[string]*Conn{"dialer": dialed, "acceptor": acc} {
		raw, err := c.nc.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var ms, keepalive int
		var serr error
		raw.Control(func(fd uintptr) {
			ms, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
			if serr == nil {
				keepalive, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE)
			}
		})
		if serr != nil {
			t.Fatal(serr)
		}
		if ms != int(deadLinkAfter.Milliseconds()) || keepalive != 1 {
			t.Errorf("%s: TCP_USER_TIMEOUT %d ms, keepalive %d; want %d ms and on", name, ms, keepalive, deadLinkAfter.Milliseconds())
		}
	}
}
