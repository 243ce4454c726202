package netns_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sftproject/sft/internal/netns"
)

// echo listens on addr in server, dials it from client, sends a word and
// checks it comes back; it returns the address server saw the connection
// come from.
func echo(t *testing.T, client, server *netns.NS, addr string) netip.Addr {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ln, err := server.Listen(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	from := make(chan netip.Addr, 1)
	go func() {
		defer close(from)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		from <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.CopyN(c, c, 5)
	}()
	c, err := client.Dial(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial %s from %s: %v", ln.Addr(), client.Name(), err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 5)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "hello" {
		t.Fatalf("echo from %s: %q, %v", ln.Addr(), got, err)
	}
	return <-from
}

// Two machines on a bridge reach each other at their own addresses, and
// neither has the other's (or the host's) addresses.
func TestBridge(t *testing.T) {
	tp := netns.New(t)
	lan := tp.Bridge("lan")
	a, b := tp.Namespace("a"), tp.Namespace("b")
	lan.Attach(a, "203.0.113.1/24")
	lan.Attach(b, "203.0.113.2/24")

	if got := echo(t, a, b, "203.0.113.2:0"); got != netip.MustParseAddr("203.0.113.1") {
		t.Errorf("b saw the connection come from %v, want 203.0.113.1", got)
	}

	// Commands run inside: a sees its own address only.
	out, err := a.Command(t.Context(), "ip", "-o", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr in a: %v\n%s", err, out)
	}
	if s := string(out); !strings.Contains(s, "203.0.113.1/24") || strings.Contains(s, "203.0.113.2/") {
		t.Errorf("a's addresses:\n%s", s)
	}
}

// Behind a masquerading router, A's connection reaches B from the
// router's public address; B has no route to A's network at all.
func TestNAT(t *testing.T) {
	tp := netns.New(t)
	a, r, b := tp.Namespace("a"), tp.Router("r"), tp.Namespace("b")
	tp.Link(a, "198.51.100.2/24", r, "198.51.100.1/24")
	_, public := tp.Link(b, "203.0.113.2/24", r, "203.0.113.1/24")
	a.DefaultRoute("198.51.100.1")
	r.Masquerade(public)

	if got := echo(t, a, b, "203.0.113.2:0"); got != netip.MustParseAddr("203.0.113.1") {
		t.Errorf("b saw a's connection come from %v, want the router's 203.0.113.1", got)
	}
}

// A closed port is refused at once; a blackholed address swallows the
// connection attempt until the dial gives up.
func TestBlackhole(t *testing.T) {
	tp := netns.New(t)
	a, b := tp.Namespace("a"), tp.Namespace("b")
	tp.Link(a, "203.0.113.1/24", b, "203.0.113.2/24")
	ln, err := b.Listen(t.Context(), "tcp", "203.0.113.2:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	closed, err := b.Listen(t.Context(), "tcp", "203.0.113.2:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := a.Dial(ctx, "tcp", closedAddr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial to a closed port: %v, want connection refused", err)
	}

	b.Blackhole("203.0.113.2")
	for _, addr := range []string{closedAddr, net.JoinHostPort("203.0.113.2", strconv.Itoa(port))} {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		start := time.Now()
		c, err := a.Dial(ctx, "tcp", addr)
		cancel()
		if err == nil {
			c.Close()
			t.Fatalf("dial %s through the blackhole succeeded", addr)
		}
		var ne net.Error
		if errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("dial %s: %v, want it to time out", addr, err)
		}
		if d := time.Since(start); d < 900*time.Millisecond {
			t.Errorf("dial %s gave up after %v, before its deadline", addr, d)
		}
	}
}
