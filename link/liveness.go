package link

import (
	"net"
	"time"
)

// deadLinkAfter is how long a link may carry no acknowledgement of data
// sent, or no answer to keepalive probes when idle, before the kernel
// reports it dead. A peer that vanished (a NAT that forgot the mapping, a
// network that went away) then fails the transfer within this time, and
// the resume logic takes over, instead of a write or read hanging for the
// kernel's default of a quarter of an hour.
const deadLinkAfter = 30 * time.Second

// watchLiveness sets keepalive probes on a TCP link and, where the system
// has it, a bound on unacknowledged data (setUserTimeout).
func watchLiveness(nc net.Conn) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return
	}
	_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 4})
	setUserTimeout(tc, deadLinkAfter)
}
