package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const crocModule = "github.com/schollz/croc/v10@v10.7.0"

// crocScript runs relay, sender and receiver inside a network namespace
// that has only loopback: croc v10 looks up a public host name at start
// and its relay binds 0.0.0.0 whatever --host says, and neither may reach
// past this machine. It prints the transfer's start and end in ns.
const crocScript = `set -e
ip link set lo up
"$CROC" relay --host 127.0.0.1 --ports 9009,9010,9011,9012,9013 >"$WORK/relay.log" 2>&1 &
relay=$!
trap 'kill $relay 2>/dev/null; wait $relay 2>/dev/null || true' EXIT
for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/9009) 2>/dev/null && break; sleep 0.05; done
t0=$(date +%s%N)
"$CROC" --ignore-stdin --disable-clipboard --relay 127.0.0.1:9009 $EXTRA send --no-local "$SRC" >"$WORK/send.log" 2>&1 &
sender=$!
"$CROC" --yes --overwrite --ignore-stdin --disable-clipboard --relay 127.0.0.1:9009 --ip 127.0.0.1:9009 $EXTRA --out "$OUT" >"$WORK/recv.log" 2>&1
t1=$(date +%s%N)
wait $sender
echo "$t0 $t1"
`

// crocBinary finds croc v10 on PATH or installs the pinned version into a
// temporary GOBIN (kept between runs of the bench).
func crocBinary(ctx context.Context, env []string, install bool, say func(string, ...any)) (string, error) {
	if p, err := exec.LookPath("croc"); err == nil {
		if out, err := exec.CommandContext(ctx, p, "--version").CombinedOutput(); err == nil && strings.Contains(string(out), "10.7.0") {
			return p, nil
		}
	}
	gobin := filepath.Join(os.TempDir(), "sft-bench-croc-v10.7.0")
	bin := filepath.Join(gobin, "croc")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if !install {
		return "", errors.New("not installed, and --quick does not build it (a full run does)")
	}
	say("installing %s into %s", crocModule, gobin)
	cmd := exec.CommandContext(ctx, "go", "install", crocModule)
	cmd.Env = append(env, "GOBIN="+gobin)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s: %v: %s", crocModule, err, lastLine(out))
	}
	return bin, nil
}

func lastLine(b []byte) string {
	l := strings.Split(strings.TrimSpace(string(b)), "\n")
	return l[len(l)-1]
}

var crocOnce struct {
	bin, skip string
	done      bool
}

func benchCroc(ctx context.Context, o options, dir, src string, env []string, noCompress bool, say func(string, ...any)) *Case {
	name := caseCroc
	if noCompress {
		name = caseCrocNoCompress
	}
	if !crocOnce.done {
		crocOnce.done = true
		bin, err := crocBinary(ctx, env, !o.quick, say)
		if err != nil {
			crocOnce.skip = "croc could not be installed: " + err.Error()
		} else if out, err := exec.CommandContext(ctx, "unshare", "-n", "sh", "-c", "ip link set lo up").CombinedOutput(); err != nil {
			crocOnce.skip = fmt.Sprintf("cannot make a loopback-only network namespace (unshare -n, needs root or user namespaces): %v %s", err, bytes.TrimSpace(out))
		} else {
			crocOnce.bin = bin
		}
	}
	if crocOnce.skip != "" {
		return &Case{Name: name, Skipped: crocOnce.skip}
	}
	c := newCase(name)
	work := filepath.Join(dir, "croc")
	out := filepath.Join(work, "out")
	if err := os.MkdirAll(out, 0o700); err != nil {
		return &Case{Name: name, Skipped: err.Error()}
	}
	extra := ""
	if noCompress {
		extra = "--no-compress"
	}
	return repeat(o, c, func(measured bool) error {
		defer os.RemoveAll(out)
		if err := os.MkdirAll(out, 0o700); err != nil {
			return err
		}
		secret := make([]byte, 8)
		rand.Read(secret)
		cmd := exec.CommandContext(ctx, "unshare", "-n", "bash", "-c", crocScript)
		cmd.Dir = work
		// HOME in scratch: croc keeps its settings there.
		cmd.Env = slices.Concat(env, []string{"CROC=" + crocOnce.bin, "SRC=" + src, "OUT=" + out, "WORK=" + work, "EXTRA=" + extra,
			"CROC_SECRET=bench-" + hex.EncodeToString(secret), "HOME=" + work})
		cmd.WaitDelay = 10 * time.Second
		b, err := cmd.Output()
		if err != nil {
			logs, _ := os.ReadFile(filepath.Join(work, "recv.log"))
			return fmt.Errorf("croc: %v: %s", err, lastLine(logs))
		}
		var t0, t1 int64
		if _, err := fmt.Sscanf(string(b), "%d %d", &t0, &t1); err != nil {
			return fmt.Errorf("croc script said %q", b)
		}
		got, err := os.Stat(filepath.Join(out, filepath.Base(src)))
		if err != nil || got.Size() != o.size {
			return fmt.Errorf("croc did not deliver the file: %v", err)
		}
		if measured {
			c.add("throughput", "MB/s", mbps(o.size, time.Duration(t1-t0)))
		}
		return nil
	})
}
