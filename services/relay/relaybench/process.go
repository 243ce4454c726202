package relaybench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sftproject/sft/internal/procstat"
	"github.com/sftproject/sft/internal/syncbuf"
)

// stopGrace is how long Stop waits for the process to end once its
// standard input closed, before killing it.
const stopGrace = 10 * time.Second

// Process is a relay process that runs Serve, started by Start.
type Process struct {
	Addr string // where the relay listens

	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	errb syncbuf.Buffer // its standard error, for messages
	mu   sync.Mutex     // one question at a time
	stop func() error
}

// Usage is what a process has used so far.
type Usage struct {
	CPU        time.Duration // user and system time, in steps of 10 ms
	RSSKiB     int64         // resident now (VmRSS)
	PeakRSSKiB int64         // resident at most since it started (VmHWM)
}

// Start starts cmd, which runs Serve on its standard input and output
// (Start connects both, and keeps its standard error for messages), and
// returns once the relay listens. ctx bounds the start only; from then on
// the Process owns the process, and Stop, which the caller must call, ends
// it. On error no process is left.
func Start(ctx context.Context, cmd *exec.Cmd) (*Process, error) {
	p := &Process{cmd: cmd}
	cmd.Stderr = &p.errb
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		in.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the relay process: %w", err)
	}
	p.in, p.out = in, bufio.NewScanner(out)
	p.stop = sync.OnceValue(p.end)
	kill := context.AfterFunc(ctx, func() { _ = cmd.Process.Kill() })
	ok := p.out.Scan()
	if !kill() {
		_ = p.stop()
		return nil, fmt.Errorf("start the relay process: %w", ctx.Err())
	}
	if !ok {
		err := p.stop()
		return nil, fmt.Errorf("the relay process printed no address (%v): %s", err, strings.TrimSpace(p.errb.String()))
	}
	p.Addr = p.out.Text()
	return p, nil
}

// Stop closes the process's standard input, which ends it, and waits for
// it, killing it if it has not ended after 10 s. It returns how the
// process ended; calling it again returns the same.
func (p *Process) Stop() error { return p.stop() }

func (p *Process) end() error {
	p.in.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(stopGrace):
		_ = p.cmd.Process.Kill()
		err = fmt.Errorf("did not end within %s of its input closing, killed: %w", stopGrace, <-done)
	}
	if err != nil {
		return fmt.Errorf("relay process: %w: %s", err, strings.TrimSpace(p.errb.String()))
	}
	return nil
}

// Usage reads the process's CPU time and memory from /proc (Linux only).
func (p *Process) Usage() (Usage, error) {
	pid := p.cmd.Process.Pid
	cpu, err := procstat.CPU(pid)
	if err != nil {
		return Usage{}, fmt.Errorf("relay process: %w", err)
	}
	rss, peak, err := procstat.Memory(pid)
	if err != nil {
		return Usage{}, fmt.Errorf("relay process: %w", err)
	}
	return Usage{CPU: cpu, RSSKiB: rss, PeakRSSKiB: peak}, nil
}

// Mallocs asks the process how many Go heap allocations it has made so
// far. If ctx ends before the answer, the process is killed.
func (p *Process) Mallocs(ctx context.Context) (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	kill := context.AfterFunc(ctx, func() { _ = p.cmd.Process.Kill() })
	defer kill()
	if _, err := io.WriteString(p.in, "mallocs\n"); err != nil {
		return 0, fmt.Errorf("relay process: %w", err)
	}
	if !p.out.Scan() {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("relay process: no answer: %w", err)
		}
		return 0, fmt.Errorf("relay process: no answer: %s", strings.TrimSpace(p.errb.String()))
	}
	n, err := strconv.ParseUint(p.out.Text(), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("relay process said %q", p.out.Text())
	}
	return n, nil
}
