package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/internal/hermetic"
	"github.com/sftproject/sft/internal/procstat"
	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/sftproject/sft/services/daemon"
	"github.com/sftproject/sft/services/launch"
)

// runSftd is `sftd` itself, for the production-topology case. A first
// argument --cpuprofile=FILE writes the process's CPU profile to FILE
// when it stops (--cpuprofile of the bench asks for it).
func runSftd(ctx context.Context, args, env []string, stdout io.Writer) error {
	if len(args) > 0 {
		if file, ok := strings.CutPrefix(args[0], "--cpuprofile="); ok {
			stop, err := startCPUProfile(file)
			if err != nil {
				return err
			}
			defer stop()
			args = args[1:]
		}
	}
	return daemon.Run(ctx, daemon.IO{In: os.Stdin, Out: stdout, Err: os.Stderr}, args, env)
}

// benchLifecycleRedis runs the lifecycle load against the production
// topology: redis-server (AOF, fsync always, as in docker-compose.yml),
// nats-server with deploy/nats-server.conf, and `sftd auth`, `sftd session`
// and `sftd key` as separate processes.
func benchLifecycleRedis(ctx context.Context, o options, dir string, env []string) *Case {
	return benchTopology(ctx, o, newCase(caseLifecycleRedis), filepath.Join(dir, "topology"), env, 1)
}

// benchCluster runs the same load against the same topology on a 3-node
// NATS cluster (deploy/nats-cluster, nats.replicas 3), or, with nodes 1,
// on the one node of the case above: the cluster case runs both, one
// after the other, so that its ratio compares the two on the same machine.
func benchCluster(ctx context.Context, o options, dir string, env []string, nodes int) *Case {
	name := caseClusterOne
	if nodes > 1 {
		name = caseClusterThree
	}
	return benchTopology(ctx, o, newCase(name), filepath.Join(dir, fmt.Sprintf("cluster-%d", nodes)), env, nodes)
}

func benchTopology(ctx context.Context, o options, c *Case, dir string, env []string, nodes int) *Case {
	if o.skipRedis {
		return &Case{Name: c.Name, Skipped: "--skip-redis (the session store is Redis)"}
	}
	redisBin, natsBin, err := topologyTools()
	if err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	var procs procGroup
	defer procs.stop()
	tgt, err := startTopology(ctx, dir, redisBin, natsBin, env, o.replicas, nodes, o.cpuProfile, &procs, nil)
	if err != nil {
		return &Case{Name: c.Name, Skipped: "failed to start: " + err.Error()}
	}
	c.Notes["limits"] = "per-user session creation rate limit lifted for the load"
	nats := "nats-server (deploy/nats-server.conf)"
	if nodes > 1 {
		nats = fmt.Sprintf("%d x nats-server (deploy/nats-cluster, nats.replicas %d; clients and services given every URL)", nodes, nodes)
	}
	c.Notes["topology"] = fmt.Sprintf("redis-server (the session store; appendfsync always), %s, sftd auth, %d x sftd session, %d x sftd key", nats, o.replicas, o.replicas)
	return lifecycles(ctx, o, c, tgt, procs.cpu)
}

// topologyTools finds what the production topology runs: redis-server and
// nats-server.
func topologyTools() (redisBin, natsBin string, err error) {
	if redisBin, err = exec.LookPath("redis-server"); err != nil {
		return "", "", errors.New("redis-server not on PATH (Debian: apt-get install redis-server)")
	}
	if natsBin, err = exec.LookPath("nats-server"); err != nil {
		return "", "", errors.New("nats-server not on PATH (go install github.com/nats-io/nats-server/v2@v2.15.2)")
	}
	return redisBin, natsBin, nil
}

// startTopology starts Redis, NATS (one server, or a cluster of nodes with
// streams kept on as many replicas) and the sftd services under dir;
// settings are more SFT_* variables for the services, after the bench's own.
// With profile set, each sftd process writes its CPU profile to profile
// plus its name and index (cpu.pprof.session-0).
func startTopology(ctx context.Context, dir, redisBin, natsBin string, env []string, replicas, nodes int, profile string, procs *procGroup, settings []string) (target, error) {
	data := filepath.Join(dir, "data")
	home := filepath.Join(dir, "home")
	for _, d := range []string{data, home, filepath.Join(dir, "redis")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return target{}, err
		}
	}
	var errb bytes.Buffer
	base := []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "SFT_DATA_DIR=" + data}
	if err := daemon.Run(ctx, daemon.IO{In: strings.NewReader(""), Out: io.Discard, Err: &errb}, []string{"certs", "--host", "nats"}, base); err != nil {
		return target{}, fmt.Errorf("sftd certs: %w: %s", err, errb.String())
	}

	redisPort, err := freePort()
	if err != nil {
		return target{}, err
	}
	if _, err := procs.start(ctx, "redis-server", filepath.Join(dir, "redis"), nil, redisBin,
		"--port", redisPort, "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", "."); err != nil {
		return target{}, err
	}
	if err := waitDial(ctx, "127.0.0.1:"+redisPort); err != nil {
		return target{}, fmt.Errorf("redis-server: %w", err)
	}

	natsURL, err := startNATS(ctx, filepath.Join(dir, "nats"), data, natsBin, nodes, procs)
	if err != nil {
		return target{}, err
	}

	redisURL := "redis://127.0.0.1:" + redisPort
	svcEnv := append(base, "SFT_NATS_URL="+natsURL, "SFT_NATS_CA_FILE="+data+"/pki/ca.pem", fmt.Sprintf("SFT_NATS_REPLICAS=%d", nodes),
		"SFT_STORE_BACKEND=redis", "SFT_REDIS_URL="+redisURL, fmt.Sprintf("SFT_LIMITS_SESSIONS_PER_MINUTE=%d", unlimitedRate))
	svcEnv = append(svcEnv, settings...)
	self, err := os.Executable()
	if err != nil {
		return target{}, err
	}
	var svcs []*proc
	names := []string{"auth"}
	for range replicas {
		names = append(names, "session", "key")
	}
	seen := map[string]int{}
	for _, name := range names {
		args := []string{modeSftd, name}
		if profile != "" {
			args = []string{modeSftd, fmt.Sprintf("--cpuprofile=%s.%s-%d", profile, name, seen[name]), name}
			seen[name]++
		}
		p, err := procs.start(ctx, "sftd "+name, dir, svcEnv, self, args...)
		if err != nil {
			return target{}, err
		}
		svcs = append(svcs, p)
	}
	for _, p := range svcs {
		if err := p.waitFor(ctx, "serving on"); err != nil {
			return target{}, err
		}
	}

	cfg, err := config.Load(svcEnv, "", nil)
	if err != nil {
		return target{}, err
	}
	st, err := launch.OpenStore(ctx, cfg, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return target{}, err
	}
	procs.onStop(func() { _ = st.Close() })
	return target{url: natsURL, caFile: data + "/pki/ca.pem", store: st}, nil
}

// startNATS lays out the repository's NATS configuration under dir with the
// certificates and keys of data, as deploy/nats-server.conf and
// deploy/nats-cluster/cluster.conf describe, and starts one server or a
// cluster of nodes on free ports. It returns the client URLs,
// comma-separated.
func startNATS(ctx context.Context, dir, data, natsBin string, nodes int, procs *procGroup) (string, error) {
	files := map[string]string{
		"deploy/nats-server.conf": "nats-server.conf",
	}
	if nodes > 1 {
		if nodes > 3 {
			return "", fmt.Errorf("deploy/nats-cluster has 3 nodes, not %d", nodes)
		}
		for _, f := range []string{"cluster.conf", "nats-1.conf", "nats-2.conf", "nats-3.conf"} {
			files["deploy/nats-cluster/"+f] = "nats-cluster/" + f
		}
	}
	for src, dst := range files {
		p, err := findRepoFile(src)
		if err != nil {
			return "", err
		}
		if err := copyFile(p, filepath.Join(dir, dst)); err != nil {
			return "", err
		}
	}
	for _, f := range []string{"pki/ca.pem", "pki/server.pem", "pki/server-key.pem", "secrets/nats-auth.conf"} {
		if err := copyFile(filepath.Join(data, f), filepath.Join(dir, f)); err != nil {
			return "", err
		}
	}
	// Every node listens for clients and monitoring on free ports; a
	// cluster's routes go to "localhost", the DNS name the server
	// certificate has and the routes' TLS checks, as nats-1... have in
	// production.
	args := [][]string{{"-c", "nats-server.conf"}}
	if nodes > 1 {
		args = nil
		var ports, routes []string
		for range nodes {
			p, err := freePort()
			if err != nil {
				return "", err
			}
			ports = append(ports, p)
			routes = append(routes, "nats-route://localhost:"+p)
		}
		for i, p := range ports {
			args = append(args, []string{"-c", fmt.Sprintf("nats-cluster/nats-%d.conf", i+1),
				"--cluster", "nats://127.0.0.1:" + p, "--routes", strings.Join(routes, ",")})
		}
	}
	// Start every node before waiting for any: a cluster node is healthy
	// only once JetStream has its quorum.
	var portsDirs []string
	for i, a := range args {
		portsDir := filepath.Join(dir, fmt.Sprintf("ports-%d", i+1))
		if err := os.MkdirAll(portsDir, 0o700); err != nil {
			return "", err
		}
		portsDirs = append(portsDirs, portsDir)
		// The configuration reads variables ($SFT_AUTH_NKEY, ...) that only
		// its include may define.
		name := "nats-server"
		if len(args) > 1 {
			name = fmt.Sprintf("nats-server %d", i+1)
		}
		if _, err := procs.start(ctx, name, dir, hermetic.Environ(), natsBin,
			append(a, "-a", "127.0.0.1", "-p", "-1", "-m", "-1", "--ports_file_dir", portsDir)...); err != nil {
			return "", err
		}
	}
	var urls []string
	for _, d := range portsDirs {
		u, err := waitNATS(ctx, d)
		if err != nil {
			return "", err
		}
		urls = append(urls, u)
	}
	return strings.Join(urls, ","), nil
}

// procGroup owns the processes of the topology and stops them in reverse
// order of start.
type procGroup struct {
	procs []*proc
	stops []func()
}

type proc struct {
	name string
	cmd  *exec.Cmd
	out  syncbuf.Buffer
	done chan struct{}
}

func (g *procGroup) onStop(f func()) { g.stops = append(g.stops, f) }

func (g *procGroup) start(ctx context.Context, name, dir string, env []string, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	g.procs = append(g.procs, p)
	g.onStop(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p, nil
}

// cpu is the CPU time (user+system) the group's processes used so far,
// summed by process name (the replicas of a service together).
func (g *procGroup) cpu() (map[string]time.Duration, error) {
	by := map[string]time.Duration{}
	for _, p := range g.procs {
		d, err := procstat.CPU(p.cmd.Process.Pid)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		by[p.name] += d
	}
	return by, nil
}

func (g *procGroup) stop() {
	for i := len(g.stops) - 1; i >= 0; i-- {
		g.stops[i]()
	}
	g.stops = nil
}

func (p *proc) waitFor(ctx context.Context, want string) error {
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.out.String(), want) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %s", p.name, p.out.String())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not say %q in 30s: %s", p.name, want, p.out.String())
		}
	}
	return nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}

func waitDial(ctx context.Context, addr string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitNATS reads the ports file nats-server writes and waits for /healthz
// (JetStream included).
func waitNATS(ctx context.Context, portsDir string) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if files, _ := filepath.Glob(filepath.Join(portsDir, "*.ports")); len(files) == 1 {
			var ports struct {
				NATS       []string `json:"nats"`
				Monitoring []string `json:"monitoring"`
			}
			if b, err := os.ReadFile(files[0]); err == nil && json.Unmarshal(b, &ports) == nil && len(ports.NATS) > 0 && len(ports.Monitoring) > 0 {
				if resp, err := http.Get(ports.Monitoring[0] + "/healthz"); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						return ports.NATS[0], nil
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
	return "", errors.New("nats-server not ready in 30s")
}

func copyFile(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	return os.WriteFile(dst, b, st.Mode().Perm())
}

// findRepoFile finds rel under the module root above the working directory
// (`go run ./bench` runs there).
func findRepoFile(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, rel)
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("%s not found: run the bench from the repository", rel)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%s not found: run the bench from the repository", rel)
		}
		dir = parent
	}
}
