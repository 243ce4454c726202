// Package hostaddr lists the IP addresses this machine can be reached at.
package hostaddr

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// Interfaces returns the unicast addresses of the interfaces that are up,
// each once, in the order the system lists them: loopback ones included,
// link-local ones left out (they mean something only together with an
// interface, which neither a URL for another machine nor a certificate
// can name).
func Interfaces() ([]netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	var out []netip.Addr
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", ifc.Name, err)
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() || slices.Contains(out, ip) {
				continue
			}
			out = append(out, ip)
		}
	}
	return out, nil
}
