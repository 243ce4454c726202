package hostaddr_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/sftproject/sft/internal/hostaddr"
	"github.com/sftproject/sft/internal/netns"
)

// On a machine with known interfaces: loopback and global addresses of
// interfaces that are up, no link-local ones (each veth has one), nothing
// of an interface that is down.
func TestInterfaces(t *testing.T) {
	tp := netns.New(t)
	m, other := tp.Namespace("m"), tp.Namespace("other")
	iface, _ := tp.Link(m, "203.0.113.1/24", other, "203.0.113.2/24")
	m.AddAddr(iface, "2001:db8::1/64")
	m.AddAddr(iface, "203.0.113.7/24")
	down, _ := tp.Link(m, "198.51.100.9/24", other, "198.51.100.10/24")
	if out, err := m.Command(t.Context(), "ip", "link", "set", down, "down").CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s down: %v\n%s", down, err, out)
	}

	var got []netip.Addr
	if err := m.Do(func() (err error) { got, err = hostaddr.Interfaces(); return err }); err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.1", "::1", "203.0.113.1", "203.0.113.7", "2001:db8::1"}
	var gotS []string
	for _, a := range got {
		gotS = append(gotS, a.String())
	}
	slices.Sort(gotS)
	slices.Sort(want)
	if !slices.Equal(gotS, want) {
		t.Errorf("Interfaces() = %v, want %v", gotS, want)
	}
}
