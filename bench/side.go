package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
)

// runSide is one transfer side, in a process of its own: it logs in, says
// "ready", and on the parent's word (stdin) sends or receives, then prints
// "done <first request ns> <return ns>".
func runSide(ctx context.Context, args, env []string, stdout io.Writer) error {
	if len(args) != 3 {
		return errors.New("side: want ROLE USER PATH")
	}
	role, user, path := args[0], args[1], args[2]
	getenv := func(k string) string {
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, k+"="); ok {
				return v
			}
		}
		return ""
	}
	tgt := target{url: getenv("SFT_BENCH_URL"), caFile: getenv("SFT_BENCH_CA")}
	c, nc, err := tgt.login(ctx, user)
	if err != nil {
		return err
	}
	defer nc.Close()
	fmt.Fprintln(stdout, "ready")
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		return errors.New("side: no word from the parent")
	}
	word := in.Text()
	var t0 time.Time
	switch role {
	case "send":
		t0 = time.Now()
		src, serr := client.FilesFrom([]string{path})
		if serr != nil {
			return serr
		}
		_, err = c.Send(ctx, client.SendOptions{
			To: "bob", Sources: src, Peer: client.PeerOptions{Listen: "127.0.0.1:0", Timeout: time.Minute, Relay: client.RelayNever}, Logger: slog.New(slog.DiscardHandler),
			OnSession: func(s *api.Session, _ bool) { fmt.Fprintln(stdout, "session "+s.ID) },
		})
	case "recv":
		t0 = time.Now()
		_, err = c.Receive(ctx, client.ReceiveOptions{SessionID: word, Dir: path, Overwrite: true, Peer: client.PeerOptions{Timeout: time.Minute, Relay: client.RelayNever}, Logger: slog.New(slog.DiscardHandler)})
	default:
		return fmt.Errorf("side: unknown role %q", role)
	}
	if err != nil {
		return err
	}
	t1 := time.Now()
	fmt.Fprintf(stdout, "done %d %d %d\n", t0.UnixNano(), t1.UnixNano(), peakRSSKiB())
	return nil
}

// peakRSSKiB is this process's own peak resident set (VmHWM). The rusage
// the parent sees is no good here: Linux carries the parent's peak into a
// child's ru_maxrss when the child execs from a vfork (as os/exec does).
func peakRSSKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var n int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &n)
			return n
		}
	}
	return -1
}
