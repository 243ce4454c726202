//go:build !linux

package link

import (
	"net"
	"time"
)

// setUserTimeout has no portable equivalent; keepalive probes still find
// an idle dead link.
func setUserTimeout(*net.TCPConn, time.Duration) {}
