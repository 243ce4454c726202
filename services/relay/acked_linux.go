package relay

import (
	"net"

	"golang.org/x/sys/unix"
)

// ackedBytes is how many bytes c's peer has acknowledged: it grows while a
// slow reader drains what the relay sent, even before a copy returns.
func ackedBytes(c *net.TCPConn) (uint64, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	cerr := rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if cerr != nil || err != nil {
		return 0, false
	}
	return info.Bytes_acked, true
}
