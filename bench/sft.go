package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/relay/relaybench"
)

// sftWay is how the two sides of an SFT case reach each other.
type sftWay struct {
	name  string           // the case
	dir   string           // its stack's directory in the scratch
	relay client.RelayMode // both sides'
	path  api.Path         // the path both must report
}

var (
	sftDirect = sftWay{caseSFT, "stack-sft", client.RelayNever, api.PathDirect}
	sftRelay  = sftWay{caseSFTRelay, "stack-sft-relay", client.RelayAlways, api.PathRelay}
)

// benchSFT runs sender and receiver as separate processes (this binary in
// its hidden side mode) against the embedded stack, so that CPU time and
// peak RSS are each side's own. Through the relay, the relay is a process
// of its own too (the stack offers it rather than run one), and the case
// adds its CPU per GiB of the file and its peak RSS.
func benchSFT(ctx context.Context, o options, dir, src string, env []string, way sftWay) *Case {
	c := newCase(way.name)
	self, err := os.Executable()
	if err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	var rp *relaybench.Process
	defer func() {
		if rp != nil {
			_ = rp.Stop()
		}
	}()
	st, tgt, err := startEmbedded(ctx, filepath.Join(dir, way.dir), func(cfg *config.Config) error {
		if way.relay != client.RelayAlways {
			return nil
		}
		var err error
		if rp, _, err = startRelay(ctx, self, env, cfg.SecretsPath()); err != nil {
			return err
		}
		noteStartRSS(c, rp)
		cfg.Relay.Addrs = []string{rp.Addr}
		return nil
	})
	if err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	defer st.Close()
	if err := tgt.addUsers(ctx, cheapHash, "alice", "bob"); err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	out := filepath.Join(dir, "sft-inbox")
	if err := os.MkdirAll(out, 0o700); err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	c.Notes["path"] = fmt.Sprintf("%s (both sides --relay %s)", way.path, way.relay)
	sideEnv := slices.Concat(env, []string{"SFT_BENCH_URL=" + tgt.url, "SFT_BENCH_CA=" + tgt.caFile, "SFT_BENCH_RELAY=" + string(way.relay)})
	return repeat(o, c, func(measured bool) error {
		defer os.Remove(filepath.Join(out, filepath.Base(src)))
		send, err := startSide(ctx, self, sideEnv, modeSide, "send", "alice", src)
		if err != nil {
			return err
		}
		defer send.kill()
		recv, err := startSide(ctx, self, sideEnv, modeSide, "recv", "bob", out)
		if err != nil {
			return err
		}
		defer recv.kill()
		if err := errors.Join(send.expect("ready"), recv.expect("ready")); err != nil {
			return err
		}
		var relay0 relaybench.Usage
		if rp != nil {
			if relay0, err = rp.Usage(); err != nil {
				return err
			}
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
		if sres.path != way.path || rres.path != way.path {
			return fmt.Errorf("the link went %s (sender) and %s (receiver), not %s", sres.path, rres.path, way.path)
		}
		if !measured {
			return nil
		}
		// From the sender's first request to the receiver's return:
		// the verified rename and the session completed.
		addSides(c, o.size, sres, rres)
		if rp != nil {
			relay1, err := rp.Usage()
			if err != nil {
				return err
			}
			c.add("relay CPU", "s/GiB", (relay1.CPU-relay0.CPU).Seconds()/gib(o.size))
			c.add("relay peak RSS", "MiB", mib(relay1.PeakRSSKiB))
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
	path   api.Path
	cpu    float64
	rssMiB float64
}

// addSides adds a transfer's figures: MB/s from the sender's start to the
// receiver's return, and each side process's CPU and peak RSS.
func addSides(c *Case, size int64, send, recv sideResult) {
	c.add("throughput", "MB/s", mbps(size, time.Unix(0, recv.t1).Sub(time.Unix(0, send.t0))))
	c.add("sender CPU", "s", send.cpu)
	c.add("receiver CPU", "s", recv.cpu)
	c.add("sender peak RSS", "MiB", send.rssMiB)
	c.add("receiver peak RSS", "MiB", recv.rssMiB)
}

// startSide starts this binary in a hidden side mode (modeSide, modeFloor)
// as role, with more arguments.
func startSide(ctx context.Context, self string, env []string, mode, role string, args ...string) (*side, error) {
	cmd := exec.CommandContext(ctx, self, append([]string{mode, role}, args...)...)
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

// finish reads the side's "done t0 t1 hwm path" line and its resource
// usage.
func (s *side) finish() (sideResult, error) {
	l, err := s.line()
	if err != nil {
		return sideResult{}, err
	}
	var r sideResult
	if _, err := fmt.Sscanf(l, "done %d %d %d %s", &r.t0, &r.t1, &r.hwmKiB, &r.path); err != nil {
		return r, fmt.Errorf("%s side said %q", s.cmd.Args[2], l)
	}
	s.in.Close()
	if err := s.cmd.Wait(); err != nil {
		return r, fmt.Errorf("%s side: %w: %s", s.cmd.Args[2], err, s.errb.String())
	}
	if ru, ok := s.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.cpu = tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
	}
	r.rssMiB = mib(r.hwmKiB)
	return r, nil
}

func (s *side) kill() {
	if s.cmd.ProcessState == nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

func tvSeconds(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
