//go:build !linux

package relay

import "net"

// ackedBytes is unknown here: a pair idles when its copies return nothing.
func ackedBytes(*net.TCPConn) (uint64, bool) { return 0, false }
