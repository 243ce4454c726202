package client

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sftproject/sft/api"
)

func TestCandidates(t *testing.T) {
	t.Run("a given host", func(t *testing.T) {
		tests := []struct {
			bound     string
			advertise []string
			want      []string
		}{
			{"127.0.0.1:7000", nil, []string{"127.0.0.1:7000"}},
			{"192.0.2.7:7000", []string{"203.0.113.5:9000"}, []string{"203.0.113.5:9000", "192.0.2.7:7000"}},
			{"192.0.2.7:7000", []string{"192.0.2.7:7000", "", "203.0.113.5:9000"}, []string{"192.0.2.7:7000", "203.0.113.5:9000"}},
			{"[2001:db8::7]:7000", nil, []string{"[2001:db8::7]:7000"}},
		}
		for _, tc := range tests {
			addr := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(tc.bound))
			if got := Candidates(addr, tc.advertise); !slices.Equal(got, tc.want) {
				t.Errorf("Candidates(%s, %q) = %q, want %q", tc.bound, tc.advertise, got, tc.want)
			}
		}
	})
	t.Run("every interface", func(t *testing.T) {
		for _, bound := range []string{"0.0.0.0:7000", "[::]:7000"} {
			addr := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(bound))
			got := Candidates(addr, []string{"203.0.113.5:9000"})
			if got[0] != "203.0.113.5:9000" {
				t.Errorf("%s: %q does not start with the advertised address", bound, got)
			}
			if last := got[len(got)-1]; !strings.HasPrefix(last, "127.0.0.1:") && !strings.HasPrefix(last, "[::1]:") {
				t.Errorf("%s: %q does not end with loopback", bound, got)
			}
			sawV6 := false
			for _, a := range got[1:] {
				ap := netip.MustParseAddrPort(a)
				switch {
				case ap.Port() != 7000:
					t.Errorf("%s: %s has another port", bound, a)
				case ap.Addr().IsLinkLocalUnicast():
					t.Errorf("%s: %s is link-local", bound, a)
				case ap.Addr().Is6() && bound == "0.0.0.0:7000":
					t.Errorf("%s: %s is IPv6 on an IPv4 socket", bound, a)
				case ap.Addr().Is6() && !ap.Addr().IsLoopback():
					sawV6 = true
				case ap.Addr().Is4() && sawV6 && !ap.Addr().IsLoopback():
					t.Errorf("%s: IPv4 %s after IPv6 in %q", bound, a, got)
				}
			}
		}
	})
	t.Run("bounded", func(t *testing.T) {
		var many []string
		for i := range 40 {
			many = append(many, fmt.Sprintf("203.0.113.%d:9000", i+1))
		}
		addr := net.TCPAddrFromAddrPort(netip.MustParseAddrPort("0.0.0.0:7000"))
		if got := Candidates(addr, many); len(got) != api.MaxPeerAddrs {
			t.Errorf("%d candidates, want at most %d", len(got), api.MaxPeerAddrs)
		}
	})
}

func TestDialOrder(t *testing.T) {
	addrs := []string{"203.0.113.5:9000", "192.0.2.7:7000", "127.0.0.1:7000", "[::1]:7000", "bad"}
	tests := []struct {
		name, host string
		want       []string
	}{
		{"same host: loopback first", HostID(), []string{"127.0.0.1:7000", "[::1]:7000", "203.0.113.5:9000", "192.0.2.7:7000"}},
		{"another host: no loopback", strings.Repeat("0", 32), []string{"203.0.113.5:9000", "192.0.2.7:7000"}},
		{"host unknown: loopback too", "", []string{"127.0.0.1:7000", "[::1]:7000", "203.0.113.5:9000", "192.0.2.7:7000"}},
	}
	for _, tc := range tests {
		if got := dialOrder(addrs, tc.host); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestHostID(t *testing.T) {
	id := HostID()
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Errorf("HostID() = %q, want 32 lower-case hex digits (the session service's rule)", id)
	}
}

func TestListenIn(t *testing.T) {
	// A range of two ports: both taken by the first two listeners, the
	// third finds none.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	if port >= 65535 {
		t.Skip("no room for a range above the probe's port")
	}
	rng := fmt.Sprintf("127.0.0.1:%d-%d", port, port+1)
	var got []int
	for range 2 {
		ln, err := listenIn(rng)
		if err != nil {
			t.Skipf("a port of the range was taken meanwhile: %v", err)
		}
		defer ln.Close()
		got = append(got, ln.Addr().(*net.TCPAddr).Port)
	}
	slices.Sort(got)
	if !slices.Equal(got, []int{port, port + 1}) {
		t.Errorf("listened on %v, want %d and %d", got, port, port+1)
	}
	if _, err := listenIn(rng); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a full range: %v", err)
	}
	for _, bad := range []string{"127.0.0.1:9-1", "127.0.0.1:0-5", "127.0.0.1:1-70000", "127.0.0.1:a-b", "nohostport"} {
		if _, err := listenIn(bad); err == nil {
			t.Errorf("listenIn(%q) accepted it", bad)
		}
	}
}
