package client

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/internal/hostaddr"
)

// Candidates returns the addresses a peer listening at bound (the
// listener's actual address) announces, best first: the advertised ones,
// then every usable interface address when bound to all interfaces (IPv4
// before IPv6, link-local left out, since it needs an interface name a peer
// elsewhere cannot know), and loopback last, which a dialer uses only on
// the same host (see HostID). At most api.MaxPeerAddrs.
func Candidates(bound *net.TCPAddr, advertise []string) []string {
	out := slices.Clone(advertise)
	port := strconv.Itoa(bound.Port)
	ip, _ := netip.AddrFromSlice(bound.IP)
	ip = ip.Unmap()
	if !ip.IsUnspecified() {
		out = append(out, net.JoinHostPort(ip.String(), port))
		return dedupe(out)
	}
	// A socket on 0.0.0.0 takes IPv4 only; on :: (or ":0") both families.
	v6 := ip.Is6()
	var v4s, v6s []string
	for _, a := range interfaceAddrs() {
		switch {
		case a.IsLoopback():
		case a.Is4():
			v4s = append(v4s, net.JoinHostPort(a.String(), port))
		case v6:
			v6s = append(v6s, net.JoinHostPort(a.String(), port))
		}
	}
	out = append(out, v4s...)
	out = append(out, v6s...)
	out = append(out, net.JoinHostPort("127.0.0.1", port))
	if v6 {
		out = append(out, net.JoinHostPort("::1", port))
	}
	return dedupe(out)
}

func interfaceAddrs() []netip.Addr {
	addrs, _ := hostaddr.Interfaces() // none listed: loopback and --advertise still go out
	return addrs
}

func dedupe(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		if a != "" && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if len(out) > api.MaxPeerAddrs {
		out = out[:api.MaxPeerAddrs]
	}
	return out
}

// dialOrder returns the announced addresses this side should try: loopback
// only when the listener runs on this host and network namespace (then
// first, being the fastest path) or did not say where it runs, everything
// else in the listener's order.
func dialOrder(addrs []string, peerHost string) []string {
	same := peerHost == "" || peerHost == HostID()
	var local, rest []string
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		ip, err := netip.ParseAddr(host)
		switch {
		case err == nil && ip.Unmap().IsLoopback():
			if same {
				local = append(local, a)
			}
		default:
			rest = append(rest, a)
		}
	}
	return append(local, rest...)
}

// HostID identifies this host and network namespace, opaquely (a hash):
// two processes with the same id reach each other over loopback. It is
// the machine id (or the host name where there is none) with the network
// namespace, since namespaces of one machine have loopbacks of their own.
var HostID = sync.OnceValue(func() string {
	var parts []string
	for _, f := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
		if b, err := os.ReadFile(f); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			parts = append(parts, strings.TrimSpace(string(b)))
			break
		}
	}
	if len(parts) == 0 {
		h, _ := os.Hostname()
		parts = append(parts, h)
	}
	if ns, err := os.Readlink("/proc/self/ns/net"); err == nil {
		parts = append(parts, ns)
	}
	sum := sha256.Sum256([]byte("sft-host\x00" + strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:16])
})

// splitAddrs parses a comma-separated list of host:port addresses.
func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// listenIn listens on addr, HOST:PORT or HOST:LOW-HIGH: the first free port
// of the range, from a random start, for networks that let only some ports
// through.
func listenIn(addr string) (net.Listener, error) {
	host, ports, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("peer listen address %q: %w", addr, err)
	}
	lo, hi, isRange := strings.Cut(ports, "-")
	if !isRange {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen for the peer on %s: %w", addr, err)
		}
		return ln, nil
	}
	low, err1 := strconv.Atoi(lo)
	high, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || low < 1 || high > 65535 || low > high {
		return nil, fmt.Errorf("peer listen address %q: the port range must be LOW-HIGH within 1-65535", addr)
	}
	n := high - low + 1
	start := rand.IntN(n)
	for i := range n {
		port := low + (start+i)%n
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err == nil {
			return ln, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("listen for the peer on %s: %w", addr, err)
		}
	}
	return nil, fmt.Errorf("listen for the peer on %s: every port of the range is in use", addr)
}
