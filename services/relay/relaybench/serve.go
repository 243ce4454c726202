// Package relaybench measures the relay apart from its clients: a relay in
// a process of its own (Serve in the child, or ServeTestChild when it is a
// test binary; Start and Process in the parent, which reads the child's
// CPU time and memory from /proc) and sessions of raw connections that
// load it (Connect, Pairs.Move). The relay's benchmark and `go tool task
// bench` both use it.
package relaybench

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"

	"github.com/sftproject/sft/services/relay"
)

// Serve is the relay process. It serves a relay with the default limits
// and no logs on a random port of 127.0.0.1, admitting the tickets key
// verifies; prints the relay's address as the first line of out; answers
// each line of in with the number of Go heap allocations the process has
// made so far; and stops when in ends (the parent closed it, or is gone)
// or ctx ends, returning once the relay has stopped. When ctx ends first,
// the goroutine reading in stays blocked until in ends or the process
// exits: a read of standard input cannot be interrupted.
func Serve(ctx context.Context, key ed25519.PublicKey, in io.Reader, out io.Writer) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("relay process: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := relay.New(relay.Options{TicketKey: key, Logger: slog.New(slog.DiscardHandler)})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	if _, err := fmt.Fprintln(out, ln.Addr()); err != nil {
		cancel()
		return errors.Join(fmt.Errorf("relay process: %w", err), <-served)
	}
	answered := make(chan error, 1)
	go func() { answered <- answer(in, out) }()
	select {
	case err = <-answered:
	case <-ctx.Done():
	case err = <-served:
		return fmt.Errorf("relay process: %w", err)
	}
	cancel()
	return errors.Join(err, <-served)
}

// answer writes the allocation count for each line of in until in ends.
func answer(in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if _, err := fmt.Fprintln(out, ms.Mallocs); err != nil {
			return fmt.Errorf("relay process: %w", err)
		}
	}
	return sc.Err()
}
