package devstack

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestReachFor(t *testing.T) {
	addrs := []netip.Addr{
		netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"),
		netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("198.51.100.4"),
	}
	tests := []struct {
		name, host string
		extra      []string
		names      []string
		remote     []string
	}{
		{name: "loopback", host: "127.0.0.1"},
		{name: "loopback by name", host: "localhost"},
		{name: "IPv6 loopback, with hosts for the certificate only", host: "::1", extra: []string{"sft.example"}, names: []string{"sft.example"}},
		{name: "empty host is loopback", host: ""},
		{
			name: "all IPv4", host: "0.0.0.0", extra: []string{"sft.example", "203.0.113.1"},
			names:  []string{"203.0.113.1", "2001:db8::1", "198.51.100.4", "box", "sft.example"},
			remote: []string{"203.0.113.1", "198.51.100.4", "sft.example"},
		},
		{
			name: "all IPv6 too", host: "::",
			names:  []string{"203.0.113.1", "2001:db8::1", "198.51.100.4", "box"},
			remote: []string{"203.0.113.1", "2001:db8::1", "198.51.100.4"},
		},
		{name: "one address", host: "203.0.113.1", extra: []string{"nat.example"}, names: []string{"203.0.113.1", "nat.example"}, remote: []string{"203.0.113.1", "nat.example"}},
		{name: "one name", host: "sft.example", names: []string{"sft.example"}, remote: []string{"sft.example"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := reachFor(tc.host, tc.extra, addrs, "box")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.names, tc.names) {
				t.Errorf("certificate names %q, want %q", r.names, tc.names)
			}
			if !slices.Equal(r.remote, tc.remote) {
				t.Errorf("remote hosts %q, want %q", r.remote, tc.remote)
			}
		})
	}
}

func TestReachForHostname(t *testing.T) {
	for hostname, want := range map[string]bool{"box": true, "box.lan": true, "localhost": false, "": false, "bad name": false, "ünï": false} {
		r, err := reachFor("0.0.0.0", nil, nil, hostname)
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Contains(r.names, hostname); got != want {
			t.Errorf("hostname %q in the certificate names = %v, want %v", hostname, got, want)
		}
	}
}

func TestReachForRefusesBadHosts(t *testing.T) {
	for _, h := range []string{"sft.example:4222", "tls://sft.example", "fe80::1%eth0", "a b", "", "-x.example", "x..example"} {
		_, err := reachFor("0.0.0.0", []string{h}, nil, "")
		if err == nil || !strings.Contains(err.Error(), "--host") {
			t.Errorf("host %q: %v, want an error naming --host", h, err)
		}
	}
}
