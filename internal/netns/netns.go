// Package netns builds topologies of Linux network namespaces for tests
// that need separate machines: hosts on a bridge or on point-to-point
// links, a router that forwards and masquerades (NAT), addresses that
// silently drop every packet. Each namespace is a real network stack, so
// a test runs the real binaries in them and sees real addresses, routes
// and timeouts.
//
// Everything a topology creates lives inside namespaces it created (the
// bridge too, in a namespace of its own), so nothing touches the
// machine's own interfaces or firewall, and removing the namespaces when
// the test ends removes everything. Names are unique per process and per
// run; namespaces left behind by a killed run are removed by the next one.
//
// New skips the test unless it runs as root with ip and iptables on PATH,
// and fails it instead when SFT_REQUIRE_NETNS=1. A server and a client
// behind a NAT:
//
//	tp := netns.New(t)
//	srv, home, gw := tp.Namespace("server"), tp.Namespace("home"), tp.Router("gw")
//	_, wan := tp.Link(srv, "203.0.113.1/24", gw, "203.0.113.2/24")
//	tp.Link(home, "198.51.100.2/24", gw, "198.51.100.1/24")
//	home.DefaultRoute("198.51.100.1")
//	gw.Masquerade(wan)
//	cmd := srv.Command(ctx, sftd, "dev", "--listen", "0.0.0.0:4222")
//	conn, err := home.Dial(ctx, "tcp", "203.0.113.1:4222")
package netns

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// EnvRequire names the variable that turns a missing root, ip or iptables
// from a skip into a failure, so CI cannot pass by silently skipping.
const EnvRequire = "SFT_REQUIRE_NETNS"

const (
	// prefix starts the name of every namespace this package creates, so
	// stale ones are recognisable; the run id and a counter follow.
	prefix = "sftnetns-"
	// lockDir holds one lock file per live run: a run whose lock is free
	// is dead, and its namespaces are stale.
	lockDir = "/run/sftnetns"
	// nsDir is where ip keeps its named namespaces.
	nsDir = "/run/netns"
)

// Topology is a set of namespaces and links built for one test. Its
// methods call t.Fatal on failure, so they belong on the test's goroutine.
type Topology struct {
	t         testing.TB
	ip, ipt   string // paths of ip and iptables
	ip6t      string // ip6tables, when present
	mu        sync.Mutex
	spaces    []*NS // in creation order, for cleanup
	shortSeen map[string]bool
}

// NS is one network namespace: one machine of the topology.
type NS struct {
	tp     *Topology
	short  string
	name   string
	ifaces int // interfaces made so far, for the next one's name
}

// Bridge is an Ethernet switch: every namespace attached to it shares one
// link. The bridge lives in a namespace of its own.
type Bridge struct {
	ns    *NS
	ports int
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)

// New returns an empty topology whose namespaces are removed, and the
// processes still running in them killed, when t ends. It skips t unless
// it runs as root with ip and iptables on PATH (fails it instead when
// SFT_REQUIRE_NETNS=1), and first removes namespaces left behind by runs
// that were killed.
func New(t testing.TB) *Topology {
	t.Helper()
	tp := &Topology{t: t, shortSeen: map[string]bool{}}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	var err error
	if tp.ip, err = exec.LookPath("ip"); err != nil {
		missing = append(missing, "ip (Debian: apt-get install iproute2)")
	}
	if tp.ipt, err = exec.LookPath("iptables"); err != nil {
		missing = append(missing, "iptables (Debian: apt-get install iptables)")
	}
	tp.ip6t, _ = exec.LookPath("ip6tables")
	if len(missing) > 0 {
		msg := "network namespace tests need " + strings.Join(missing, ", ")
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%s (%s=1 requires them)", msg, EnvRequire)
		}
		t.Skip(msg)
	}
	if err := claimRun(); err != nil {
		t.Fatalf("netns: %v", err)
	}
	removeStale(tp.ip, t)
	t.Cleanup(tp.cleanup)
	return tp
}

// Namespace creates a namespace for a machine called name (lower-case
// letters, digits and '-', unique in the topology), with loopback up.
func (tp *Topology) Namespace(name string) *NS {
	tp.t.Helper()
	tp.mu.Lock()
	if !nameRE.MatchString(name) || tp.shortSeen[name] {
		tp.mu.Unlock()
		tp.t.Fatalf("netns: namespace name %q: want 1-20 of a-z, 0-9 and '-', unique in the topology", name)
	}
	tp.shortSeen[name] = true
	n := &NS{tp: tp, short: name, name: fmt.Sprintf("%s%s-%d-%s", prefix, runID, seq.Add(1), name)}
	tp.mu.Unlock()

	tp.run(tp.ip, "netns", "add", n.name)
	tp.mu.Lock()
	tp.spaces = append(tp.spaces, n)
	tp.mu.Unlock()
	tp.run(tp.ip, "-n", n.name, "link", "set", "lo", "up")
	return n
}

// Router creates a namespace like Namespace that forwards IPv4 and IPv6
// packets between its interfaces.
func (tp *Topology) Router(name string) *NS {
	tp.t.Helper()
	n := tp.Namespace(name)
	for _, key := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
		path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
		// /proc/sys/net shows the sysctls of the writing thread's namespace.
		if err := n.Do(func() error { return os.WriteFile(path, []byte("1\n"), 0o644) }); err != nil {
			tp.t.Fatalf("netns: %s: set %s: %v", n.short, key, err)
		}
	}
	return n
}

// Link connects a and b with a point-to-point link (a veth pair) and
// gives each end its address, a prefix such as "198.51.100.1/24". It
// returns the names of the interfaces in a and in b.
func (tp *Topology) Link(a *NS, aAddr string, b *NS, bAddr string) (aIface, bIface string) {
	tp.t.Helper()
	aIface, bIface = a.nextIface("eth"), b.nextIface("eth")
	tp.run(tp.ip, "link", "add", aIface, "netns", a.name, "type", "veth", "peer", "name", bIface, "netns", b.name)
	a.AddAddr(aIface, aAddr)
	b.AddAddr(bIface, bAddr)
	tp.run(tp.ip, "-n", a.name, "link", "set", aIface, "up")
	tp.run(tp.ip, "-n", b.name, "link", "set", bIface, "up")
	return aIface, bIface
}

// Bridge creates a switch called name (in a namespace of that name).
func (tp *Topology) Bridge(name string) *Bridge {
	tp.t.Helper()
	br := &Bridge{ns: tp.Namespace(name)}
	tp.run(tp.ip, "-n", br.ns.name, "link", "add", "br0", "type", "bridge")
	tp.run(tp.ip, "-n", br.ns.name, "link", "set", "br0", "up")
	return br
}

// Attach connects n to the bridge through a new interface of n with
// address addr (a prefix such as "203.0.113.2/24") and returns its name.
func (br *Bridge) Attach(n *NS, addr string) string {
	tp := br.ns.tp
	tp.t.Helper()
	tp.mu.Lock()
	port := fmt.Sprintf("port%d", br.ports)
	br.ports++
	tp.mu.Unlock()
	iface := n.nextIface("eth")
	tp.run(tp.ip, "link", "add", iface, "netns", n.name, "type", "veth", "peer", "name", port, "netns", br.ns.name)
	tp.run(tp.ip, "-n", br.ns.name, "link", "set", port, "master", "br0", "up")
	n.AddAddr(iface, addr)
	tp.run(tp.ip, "-n", n.name, "link", "set", iface, "up")
	return iface
}

// Name is the namespace's name, as `ip netns` knows it.
func (n *NS) Name() string { return n.name }

// AddAddr gives interface iface of n one more address, a prefix such as
// "203.0.113.7/24". IPv6 addresses are usable at once (no duplicate
// address detection).
func (n *NS) AddAddr(iface, addr string) {
	n.tp.t.Helper()
	p, err := netip.ParsePrefix(addr)
	if err != nil {
		n.tp.t.Fatalf("netns: %s: address %q: want a prefix such as 198.51.100.1/24: %v", n.short, addr, err)
	}
	args := []string{"-n", n.name, "addr", "add", p.String(), "dev", iface}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	n.tp.run(n.tp.ip, args...)
}

// DefaultRoute sends n's traffic for addresses no link reaches to gateway.
func (n *NS) DefaultRoute(gateway string) {
	n.tp.t.Helper()
	n.tp.run(n.tp.ip, "-n", n.name, "route", "add", "default", "via", gateway)
}

// Masquerade makes n (a Router) rewrite the source of the packets it
// forwards out of iface to iface's own address, as a home router's NAT
// does; the replies find their way back through n.
func (n *NS) Masquerade(iface string) {
	n.tp.t.Helper()
	n.iptables(n.tp.ipt, "-t", "nat", "-A", "POSTROUTING", "-o", iface, "-j", "MASQUERADE")
}

// Blackhole makes n silently drop every packet to addr that reaches it,
// whether for n itself or for n to forward: a connection to addr through
// or into n then times out, as to a machine that vanished, instead of
// being refused.
func (n *NS) Blackhole(addr string) {
	n.tp.t.Helper()
	a, err := netip.ParseAddr(addr)
	if err != nil {
		n.tp.t.Fatalf("netns: %s: blackhole %q: not an IP address", n.short, addr)
	}
	bin := n.tp.ipt
	if a.Is6() {
		if bin = n.tp.ip6t; bin == "" {
			n.tp.t.Fatalf("netns: %s: blackhole %s needs ip6tables", n.short, addr)
		}
	}
	for _, chain := range []string{"INPUT", "FORWARD"} {
		n.iptables(bin, "-A", chain, "-d", a.String(), "-j", "DROP")
	}
}

func (n *NS) iptables(bin string, args ...string) {
	n.tp.t.Helper()
	// -w: another test's iptables may hold the xtables lock for a moment.
	n.tp.run(n.tp.ip, append([]string{"netns", "exec", n.name, bin, "-w"}, args...)...)
}

// Command returns a command that runs name with args inside n (through
// `ip netns exec`, which execs it, so signals reach it directly), ended
// when ctx is. Like exec.CommandContext, it inherits the test's
// environment unless Env is set. Processes still running in n when the
// test ends are killed.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, n.tp.ip, append([]string{"netns", "exec", n.name, name}, args...)...)
}

// Listen announces on address (as net.Listen, but the socket belongs to n).
func (n *NS) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() (err error) {
		ln, err = new(net.ListenConfig).Listen(ctx, network, address)
		return err
	})
	return ln, err
}

// Dial connects to address from n (as net.Dialer.DialContext). The host
// must be an IP address: resolving a name, or racing IPv4 against IPv6,
// would open sockets outside n.
func (n *NS) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return nil, fmt.Errorf("netns: dial %s: the host must be an IP address", address)
	}
	var c net.Conn
	err = n.Do(func() (err error) {
		c, err = new(net.Dialer).DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Do runs fn on an OS thread switched into n and returns its error: the
// sockets fn opens belong to n for good, and what fn reads of the network
// (interfaces, addresses, /proc/sys/net) is n's. Only fn's own goroutine
// is inside n: a socket fn opens from another goroutine is not. The thread
// goes back to its own namespace afterwards, or is thrown away when it
// cannot.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer home.Close()
		target, err := os.Open(filepath.Join(nsDir, n.name))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: enter %s: %w", n.short, err)
			return
		}
		err = fn()
		// A thread still locked when its goroutine ends is discarded, so
		// one left in n never runs anything else.
		if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func (n *NS) nextIface(base string) string {
	n.tp.mu.Lock()
	defer n.tp.mu.Unlock()
	name := fmt.Sprintf("%s%d", base, n.ifaces)
	n.ifaces++
	return name
}

// run runs a set-up command and fails the test with its output if it fails.
func (tp *Topology) run(bin string, args ...string) {
	tp.t.Helper()
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		tp.t.Fatalf("netns: %s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
}

func (tp *Topology) cleanup() {
	tp.mu.Lock()
	spaces := tp.spaces
	tp.mu.Unlock()
	for i := len(spaces) - 1; i >= 0; i-- {
		if err := remove(tp.ip, spaces[i].name); err != nil {
			tp.t.Errorf("netns: remove %s: %v", spaces[i].name, err)
		}
	}
}

// remove kills what still runs in namespace name and deletes it; its
// interfaces go with it.
func remove(ip, name string) error {
	out, err := exec.Command(ip, "netns", "pids", name).Output()
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if out, err := exec.Command(ip, "netns", "delete", name).CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

var (
	claimOnce sync.Once
	claimErr  error
	runID     string
	seq       atomic.Int64
	// runLock stays open, and so locked, until the process ends.
	runLock *os.File
)

// claimRun picks this process's run id and holds its lock file, so other
// runs can tell its namespaces from stale ones.
func claimRun() error {
	claimOnce.Do(func() {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		runID = hex.EncodeToString(b)
		if claimErr = os.MkdirAll(lockDir, 0o700); claimErr != nil {
			return
		}
		f, err := os.OpenFile(filepath.Join(lockDir, runID+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			claimErr = err
			return
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			claimErr = fmt.Errorf("lock %s: %w", f.Name(), err)
			return
		}
		runLock = f
	})
	return claimErr
}

var staleOnce sync.Once

// removeStale deletes the namespaces of runs whose lock is free: their
// process ended without cleaning up (killed, or a timed-out test binary).
// The lock files of ended runs go too.
func removeStale(ip string, t testing.TB) {
	staleOnce.Do(func() { sweep(ip, t.Logf) })
}

func sweep(ip string, logf func(string, ...any)) {
	out, err := exec.Command(ip, "netns", "list").Output()
	if err != nil {
		logf("netns: list namespaces: %v", err)
		return
	}
	runs := map[string][]string{} // run id -> its namespaces
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			run, _, _ := strings.Cut(strings.TrimPrefix(f[0], prefix), "-")
			runs[run] = append(runs[run], f[0])
		}
	}
	locks, _ := filepath.Glob(filepath.Join(lockDir, "*.lock"))
	for _, l := range locks {
		run := strings.TrimSuffix(filepath.Base(l), ".lock")
		runs[run] = runs[run]
	}
	delete(runs, runID)
	for run, names := range runs {
		release, dead := lockIfDead(run)
		if !dead {
			continue
		}
		for _, name := range names {
			if err := remove(ip, name); err != nil {
				logf("netns: remove stale %s: %v", name, err)
			}
		}
		release()
	}
}

// lockIfDead reports whether run's process is gone (its lock free, or its
// lock file missing), and then holds its lock until release removes the
// lock file.
func lockIfDead(run string) (release func(), dead bool) {
	path := filepath.Join(lockDir, run+".lock")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return func() {}, true
	}
	if err != nil {
		return nil, false
	}
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		f.Close()
		return nil, false
	}
	return func() { _ = os.Remove(path); f.Close() }, true
}
