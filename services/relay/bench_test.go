//go:build linux

package relay

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
)

// envBenchChild makes the test binary a relay process for BenchmarkRelay
// (its value is the ticket public key in hex), so the relay's CPU, memory
// and allocations are measured apart from the clients'.
const envBenchChild = "SFT_RELAY_BENCH_CHILD"

func TestMain(m *testing.M) {
	if key := os.Getenv(envBenchChild); key != "" {
		if err := benchChild(key); err != nil {
			fmt.Fprintln(os.Stderr, "relay bench child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// benchChild serves a relay on a random port of 127.0.0.1, prints its
// address, answers each line on standard input with its figures, and stops
// when standard input closes.
func benchChild(keyHex string) error {
	key, err := hex.DecodeString(keyHex)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	quiet := slog.New(slog.DiscardHandler)
	go func() { served <- New(Options{TicketKey: ed25519.PublicKey(key), Logger: quiet}).Serve(ctx, ln) }()
	fmt.Println(ln.Addr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return err
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Println(time.Duration(ru.Utime.Nano()+ru.Stime.Nano()).Nanoseconds(), ms.Mallocs, procStatus("VmRSS"), procStatus("VmHWM"))
	}
	cancel()
	return <-served
}

// procStatus is a field of /proc/self/status in KiB.
func procStatus(field string) int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// childStats are a relay process's figures at one moment.
type childStats struct {
	cpu            time.Duration
	mallocs        uint64
	rssKiB, hwmKiB int64
}

type benchRelayProc struct {
	addr string
	iss  *Issuer
	in   io.WriteCloser
	out  *bufio.Scanner
}

func startBenchChild(b *testing.B) *benchRelayProc {
	b.Helper()
	key := newKey(b)
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), envBenchChild+"="+hex.EncodeToString(key.Public().(ed25519.PublicKey)))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		in.Close()
		if err := cmd.Wait(); err != nil {
			b.Errorf("relay process: %v", err)
		}
	})
	p := &benchRelayProc{iss: NewIssuer(key), in: in, out: bufio.NewScanner(out)}
	if !p.out.Scan() {
		b.Fatal("the relay process printed no address")
	}
	p.addr = p.out.Text()
	return p
}

func (p *benchRelayProc) stats(b *testing.B) childStats {
	b.Helper()
	if _, err := io.WriteString(p.in, "stats\n"); err != nil || !p.out.Scan() {
		b.Fatalf("relay process stats: %v", err)
	}
	var s childStats
	var cpu int64
	if _, err := fmt.Sscan(p.out.Text(), &cpu, &s.mallocs, &s.rssKiB, &s.hwmKiB); err != nil {
		b.Fatal(err)
	}
	s.cpu = time.Duration(cpu)
	return s
}

// BenchmarkRelay moves 64 MiB per operation through a relay process,
// over 1 and over 50 pairs at once, and reports the relay's CPU per GiB,
// its allocations per operation and its memory (resident now and at its
// peak), besides MB/s.
func BenchmarkRelay(b *testing.B) {
	for _, pairs := range []int{1, 50} {
		b.Run(fmt.Sprintf("pairs=%d", pairs), func(b *testing.B) { benchRelay(b, pairs) })
	}
}

func benchRelay(b *testing.B, pairs int) {
	const perOp = 64 << 20
	relay := startBenchChild(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type conns struct {
		w, r net.Conn
		buf  []byte // the reader's
	}
	ps := make([]conns, pairs)
	for i := range ps {
		session := newSessionID()
		ticket := func(role api.Role) string {
			return must(relay.iss.Issue(Ticket{Session: session, Role: role, ExpiresAt: time.Now().Add(time.Hour), MaxBytes: 1 << 50}))
		}
		ch := make(chan dialResult, 1)
		go func() {
			c, err := Dial(ctx, relay.addr, ticket(api.RoleResponder))
			ch <- dialResult{c, err}
		}()
		w, err := Dial(ctx, relay.addr, ticket(api.RoleInitiator))
		res := <-ch
		if err != nil || res.err != nil {
			b.Fatal(err, res.err)
		}
		ps[i] = conns{w, res.conn, make([]byte, 256<<10)}
		defer w.Close()
		defer res.conn.Close()
	}
	per := int64(perOp / pairs)
	buf := make([]byte, 256<<10)
	move := func(c conns) {
		var wg sync.WaitGroup
		wg.Go(func() {
			for left := per; left > 0; {
				n, err := c.w.Write(buf[:min(int64(len(buf)), left)])
				if err != nil {
					b.Error(err)
					return
				}
				left -= int64(n)
			}
		})
		for left := per; left > 0; {
			n, err := c.r.Read(c.buf[:min(int64(len(c.buf)), left)])
			if err != nil {
				b.Error(err)
				return
			}
			left -= int64(n)
		}
		wg.Wait()
	}

	before := relay.stats(b)
	b.SetBytes(per * int64(pairs))
	b.ReportAllocs()
	for b.Loop() {
		var wg sync.WaitGroup
		for _, c := range ps {
			wg.Go(func() { move(c) })
		}
		wg.Wait()
	}
	after := relay.stats(b)
	gib := float64(per*int64(pairs)*int64(b.N)) / (1 << 30)
	b.ReportMetric((after.cpu-before.cpu).Seconds()/gib, "relay-CPU-s/GiB")
	b.ReportMetric(float64(after.mallocs-before.mallocs)/float64(b.N), "relay-allocs/op")
	b.ReportMetric(float64(after.rssKiB)/1024, "relay-RSS-MiB")
	b.ReportMetric(float64(after.hwmKiB)/1024, "relay-peak-RSS-MiB")
}
