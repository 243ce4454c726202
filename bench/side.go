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
	"github.com/sftproject/sft/internal/procstat"
)

// runSide is one transfer side, in a process of its own: it logs in, says
// "ready", and on the parent's word (stdin) sends or receives, then prints
// "done <first request ns> <return ns> <peak RSS KiB> <path>". Both sides
// use the relay as SFT_BENCH_RELAY says (client.RelayMode: never, always).
func runSide(ctx context.Context, args, env []string, stdout io.Writer) error {
	if len(args) != 3 {
		return errors.New("side: want ROLE USER PATH")
	}
	role, user, path := args[0], args[1], args[2]
	tgt := target{url: lookupEnv(env, "SFT_BENCH_URL"), caFile: lookupEnv(env, "SFT_BENCH_CA")}
	peer := client.PeerOptions{Timeout: time.Minute, Relay: client.RelayMode(lookupEnv(env, "SFT_BENCH_RELAY"))}
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
	var (
		t0  time.Time
		out *client.Outcome
	)
	switch role {
	case "send":
		t0 = time.Now()
		src, serr := client.FilesFrom([]string{path})
		if serr != nil {
			return serr
		}
		peer.Listen = "127.0.0.1:0"
		out, err = c.Send(ctx, client.SendOptions{
			To: "bob", Sources: src, Peer: peer, Logger: slog.New(slog.DiscardHandler),
			OnSession: func(s *api.Session, _ bool) { fmt.Fprintln(stdout, "session "+s.ID) },
		})
	case "recv":
		t0 = time.Now()
		out, err = c.Receive(ctx, client.ReceiveOptions{SessionID: word, Dir: path, Overwrite: true, Peer: peer, Logger: slog.New(slog.DiscardHandler)})
	default:
		return fmt.Errorf("side: unknown role %q", role)
	}
	if err != nil {
		return err
	}
	return sayDone(stdout, t0, out.Path)
}

// sayDone prints a side's last line: "done <start ns> <now ns> <peak RSS
// KiB> <path>", which side.finish reads.
func sayDone(stdout io.Writer, t0 time.Time, path api.Path) error {
	t1 := time.Now()
	_, peak, err := procstat.Memory(os.Getpid())
	if err != nil {
		return err
	}
	if path == "" {
		path = "unknown"
	}
	fmt.Fprintf(stdout, "done %d %d %d %s\n", t0.UnixNano(), t1.UnixNano(), peak, path)
	return nil
}

// lookupEnv is k's value in env, or "".
func lookupEnv(env []string, k string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, k+"="); ok {
			return v
		}
	}
	return ""
}
