package devstack

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"

	"github.com/sftproject/sft/internal/hostaddr"
)

// reach is how clients find a server that listens on a host: the names
// its certificate must cover besides the loopback ones, and the hosts
// clients on other machines can use.
type reach struct {
	names  []string
	remote []string
}

// reachOf looks at this machine's interfaces and name only when host is
// unspecified (0.0.0.0, ::): the server then listens on all of them.
func reachOf(host string, extra []string) (reach, error) {
	var (
		addrs    []netip.Addr
		hostname string
	)
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		if addrs, err = hostaddr.Interfaces(); err != nil {
			return reach{}, err
		}
		hostname, _ = os.Hostname()
	}
	return reachFor(host, extra, addrs, hostname)
}

// reachFor is reachOf for a machine with the given interface addresses
// and hostname. extra (dev.hosts) are names or addresses clients may use
// too; they are URLs only when the server listens beyond loopback.
func reachFor(host string, extra []string, addrs []netip.Addr, hostname string) (reach, error) {
	for _, h := range extra {
		if !isHost(h) {
			return reach{}, fmt.Errorf("dev.hosts (--host): %q is neither a host name nor an IP address; give names or addresses without a port, e.g. sft.example.com or 203.0.113.5", h)
		}
	}
	var r reach
	ip, err := netip.ParseAddr(host)
	switch {
	case host == "" || host == "localhost" || err == nil && ip.IsLoopback():
		r.names = extra
	case err == nil && ip.IsUnspecified():
		for _, a := range addrs {
			if a.IsLoopback() {
				continue
			}
			r.names = append(r.names, a.String())
			// 0.0.0.0 asks for IPv4: offer its URLs only, although the
			// listener takes IPv6 too and the certificate covers it.
			if ip.Is6() || a.Is4() {
				r.remote = append(r.remote, a.String())
			}
		}
		if isHost(hostname) && hostname != "localhost" {
			r.names = append(r.names, hostname)
		}
		r.names = append(r.names, extra...)
		r.remote = append(r.remote, extra...)
	default:
		r.names = append([]string{host}, extra...)
		r.remote = append([]string{host}, extra...)
	}
	r.names, r.remote = unique(r.names), unique(r.remote)
	return r, nil
}

func unique(s []string) []string {
	var out []string
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// dnsName is what a certificate may name: dot-separated labels of
// letters, digits, '-' and '_'.
var dnsName = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$`)

// isHost reports whether s is an IP address (without zone) or a DNS name.
func isHost(s string) bool {
	if ip, err := netip.ParseAddr(s); err == nil {
		return ip.Zone() == ""
	}
	return len(s) <= 253 && dnsName.MatchString(s)
}
