package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

const (
	caseRawTCP            = "raw TCP"
	caseSFT               = "SFT send/recv"
	caseCroc              = "croc"
	caseCrocNoCompress    = "croc --no-compress"
	caseLifecycleEmbedded = "lifecycle (embedded)"
	caseLifecycleRedis    = "lifecycle (redis + processes)"
	caseLogin             = "login"
)

// randomFile writes size random bytes: incompressible, like the files that
// matter, and fair to croc's compression.
func randomFile(ctx context.Context, dir string, size int64) (string, error) {
	path := filepath.Join(dir, "payload.bin")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	for left := size; left > 0; {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n := min(left, int64(len(buf)))
		rand.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			return "", fmt.Errorf("write test file: %w", err)
		}
		left -= n
	}
	return path, f.Close()
}

func mbps(size int64, d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }

// repeat runs one warm-up and then o.runs measured runs of fn.
func repeat(o options, c *Case, fn func(measured bool) error) *Case {
	for i := 0; i <= o.runs; i++ {
		if err := fn(i > 0); err != nil {
			return &Case{Name: c.Name, Skipped: "failed: " + err.Error()}
		}
	}
	return c
}

// benchRawTCP is the physical limit: plain io.Copy over loopback into a
// file, then fsync, no crypto and no checks.
func benchRawTCP(ctx context.Context, o options, dir, src string) *Case {
	c := newCase(caseRawTCP)
	dst := filepath.Join(dir, "raw-out.bin")
	return repeat(o, c, func(measured bool) error {
		defer os.Remove(dst)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		done := make(chan error, 1)
		t0 := time.Now()
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			defer conn.Close()
			f, err := os.Create(dst)
			if err != nil {
				done <- err
				return
			}
			defer f.Close()
			if _, err := io.Copy(f, conn); err != nil {
				done <- err
				return
			}
			done <- f.Sync()
		}()
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		f, err := os.Open(src)
		if err != nil {
			conn.Close()
			return err
		}
		_, err = io.Copy(conn, f)
		f.Close()
		conn.Close()
		if err := errors.Join(err, <-done); err != nil {
			return err
		}
		if measured {
			c.add("throughput", "MB/s", mbps(o.size, time.Since(t0)))
		}
		return nil
	})
}

// benchSFT runs sender and receiver as separate processes (this binary in
// its hidden side mode) against the embedded stack, so that CPU time and
// peak RSS are each side's own.
func benchSFT(ctx context.Context, o options, dir, src string, env []string) *Case {
	c := newCase(caseSFT)
	st, tgt, err := startEmbedded(ctx, filepath.Join(dir, "stack-sft"))
	if err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	defer st.Close()
	if err := tgt.addUsers(ctx, cheapHash, "alice", "bob"); err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	self, err := os.Executable()
	if err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	out := filepath.Join(dir, "sft-inbox")
	if err := os.MkdirAll(out, 0o700); err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	sideEnv := slices.Concat(env, []string{"SFT_BENCH_URL=" + tgt.url, "SFT_BENCH_CA=" + tgt.caFile})
	return repeat(o, c, func(measured bool) error {
		defer os.Remove(filepath.Join(out, filepath.Base(src)))
		send, err := startSide(ctx, self, sideEnv, "send", "alice", src)
		if err != nil {
			return err
		}
		defer send.kill()
		recv, err := startSide(ctx, self, sideEnv, "recv", "bob", out)
		if err != nil {
			return err
		}
		defer recv.kill()
		if err := errors.Join(send.expect("ready"), recv.expect("ready")); err != nil {
			return err
		}
		fmt.Fprintln(send.in, "go")
		id, err := send.line()
		if err != nil {
			return err
		}
		fmt.Fprintln(recv.in, strings.TrimPrefix(id, "session "))
		sres, serr := send.finish()
		rres, rerr := recv.finish()
		if err := errors.Join(serr, rerr); err != nil {
			return err
		}
		if measured {
			// From the sender's first request to the receiver's return:
			// the verified rename and the session completed.
			c.add("throughput", "MB/s", mbps(o.size, time.Unix(0, rres.t1).Sub(time.Unix(0, sres.t0))))
			c.add("sender CPU", "s", sres.cpu)
			c.add("receiver CPU", "s", rres.cpu)
			c.add("sender peak RSS", "MiB", sres.rssMiB)
			c.add("receiver peak RSS", "MiB", rres.rssMiB)
		}
		return nil
	})
}

// side is a running transfer side process.
type side struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	errb *strings.Builder
}

type sideResult struct {
	t0, t1 int64 // unix ns: first request, return
	hwmKiB int64 // the side's own VmHWM
	cpu    float64
	rssMiB float64
}

func startSide(ctx context.Context, self string, env []string, role, user, path string) (*side, error) {
	cmd := exec.CommandContext(ctx, self, modeSide, role, user, path)
	cmd.Env = env
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s := &side{cmd: cmd, in: in, out: bufio.NewScanner(outp), errb: &strings.Builder{}}
	cmd.Stderr = s.errb
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s side: %w", role, err)
	}
	return s, nil
}

func (s *side) line() (string, error) {
	if s.out.Scan() {
		return s.out.Text(), nil
	}
	_ = s.cmd.Wait()
	return "", fmt.Errorf("%s side ended early: %s", s.cmd.Args[2], strings.TrimSpace(s.errb.String()))
}

func (s *side) expect(want string) error {
	l, err := s.line()
	if err == nil && l != want {
		err = fmt.Errorf("%s side said %q, want %q", s.cmd.Args[2], l, want)
	}
	return err
}

// finish reads the side's "done t0 t1" line and its resource usage.
func (s *side) finish() (sideResult, error) {
	l, err := s.line()
	if err != nil {
		return sideResult{}, err
	}
	var r sideResult
	if _, err := fmt.Sscanf(l, "done %d %d %d", &r.t0, &r.t1, &r.hwmKiB); err != nil {
		return r, fmt.Errorf("%s side said %q", s.cmd.Args[2], l)
	}
	s.in.Close()
	if err := s.cmd.Wait(); err != nil {
		return r, fmt.Errorf("%s side: %w: %s", s.cmd.Args[2], err, s.errb.String())
	}
	if ru, ok := s.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.cpu = tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
	}
	r.rssMiB = float64(r.hwmKiB) / 1024
	return r, nil
}

func (s *side) kill() {
	if s.cmd.ProcessState == nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

func tvSeconds(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
