package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/internal/hermetic"
)

// The clustered stack: docker-compose.yml with deploy/compose.cluster.yml
// on top, and, on a machine without a registry, the stand-ins of both.
const (
	clusterFile        = "deploy/compose.cluster.yml"
	clusterStandinFile = "deploy/compose.cluster.standin.yml"
)

var (
	natsNodes = []string{"nats-1", "nats-2", "nats-3"}
	sentinels = []string{"sentinel-1", "sentinel-2", "sentinel-3"}
	// redisServers are the data servers; the first is the primary until a
	// failover.
	redisServers = []string{"redis-1", "redis-2", "redis-3"}
)

// wantClusterReplicas is what runs in the clustered stack: no single NATS
// server or Redis, two replicas of every service on the bus.
var wantClusterReplicas = map[string]int{
	"nats-1": 1, "nats-2": 1, "nats-3": 1,
	"redis-1": 1, "redis-2": 1, "redis-3": 1,
	"sentinel-1": 1, "sentinel-2": 1, "sentinel-3": 1,
	"auth": 2, "session": 2, "key": 2, "relay": 1,
}

// wantNATSPorts are the host ports the nodes publish by default, on
// loopback like docker-compose.yml's nats (the first is its port).
var wantNATSPorts = map[string]string{"nats-1": "4222", "nats-2": "4224", "nats-3": "4225"}

// sentinelMonitor is the line of a sentinel's configuration that names
// the primary it watches: name, address, port, quorum; sentinelPort the
// line with the port it serves.
var (
	sentinelMonitor = regexp.MustCompile(`(?m)^sentinel monitor (\S+) (.+) (\d+) (\d+)$`)
	sentinelPort    = regexp.MustCompile(`(?m)^port (\d+)$`)
)

// TestComposeCluster checks that deploy/compose.cluster.yml, over
// docker-compose.yml, is the clustered stack the services can run on: three
// NATS nodes whose configurations, laid out as their mounts lay them out,
// route to each other by their service names; Redis data servers and
// sentinels on the internal network, the sentinels watching the primary
// the services ask for; the services given every node, three replicas
// and the sentinels, and started only once all of those are healthy.
func TestComposeCluster(t *testing.T) {
	base := loadCompose(t)
	p := loadComposeFiles(t, "docker-compose.yml", clusterFile)

	t.Run("services", func(t *testing.T) {
		got := map[string]int{}
		for name, s := range p.Services {
			got[name] = s.GetScale()
		}
		if !maps.Equal(got, wantClusterReplicas) {
			t.Errorf("services and replicas %v, want %v", got, wantClusterReplicas)
		}
		// Replaced, not merely joined: their port and volumes stay free.
		for _, name := range []string{"nats", "redis"} {
			if _, ok := p.DisabledServices[name]; !ok {
				t.Errorf("docker-compose.yml's %s still runs", name)
			}
		}
		if p.Name == base.Name {
			t.Errorf("project %q is the single stack's: one's down would remove the other", p.Name)
		}
	})

	t.Run("ports", func(t *testing.T) {
		for name, s := range p.Services {
			var want []types.ServicePortConfig
			switch {
			case wantNATSPorts[name] != "":
				want = []types.ServicePortConfig{{Mode: "ingress", HostIP: "127.0.0.1", Target: 4222, Published: wantNATSPorts[name], Protocol: "tcp"}}
			case name == "relay":
				want = wantPorts["relay"]
			}
			if !reflect.DeepEqual(s.Ports, want) {
				t.Errorf("%s publishes %+v, want %+v", name, s.Ports, want)
			}
		}
	})

	t.Run("nats nodes", func(t *testing.T) {
		data := sftdCerts(t, filepath.Join(t.TempDir(), deployDir))
		root := repoRoot(t)
		hostPath := func(src string) string {
			rel, err := filepath.Rel(root, src)
			if err != nil {
				t.Fatal(err)
			}
			if rest, ok := strings.CutPrefix(filepath.ToSlash(rel), deployDir+"/"); ok {
				return filepath.Join(data, filepath.FromSlash(rest))
			}
			return src
		}
		names := map[string]bool{}
		for _, node := range natsNodes {
			s := p.Services[node]
			conf := fmt.Sprintf("/nats/nats-cluster/%s.conf", node)
			if !slices.Equal(s.Command, []string{"-c", conf, "--no_advertise"}) {
				t.Errorf("%s: command %q, want -c %s --no_advertise", node, s.Command, conf)
			}
			// nats-server resolves TLS files and store_dir against its
			// working directory.
			fs := containerFS(t, s, hostPath)
			t.Chdir(filepath.Join(fs, s.WorkingDir))
			opts, err := server.ProcessConfigFile(filepath.Join(fs, conf))
			if err != nil {
				t.Fatalf("%s: %v", node, err)
			}
			names[opts.ServerName] = true
			if opts.Port != int(s.Ports[0].Target) {
				t.Errorf("%s: clients on port %d, published %d", node, opts.Port, s.Ports[0].Target)
			}
			var routes []string
			for _, r := range opts.Routes {
				if r.Port() != strconv.Itoa(opts.Cluster.Port) {
					t.Errorf("%s: route %s is not to the cluster port %d", node, r, opts.Cluster.Port)
				}
				routes = append(routes, r.Hostname())
			}
			slices.Sort(routes)
			if !slices.Equal(routes, natsNodes) {
				t.Errorf("%s: routes to %v, want the nodes' service names %v", node, routes, natsNodes)
			}
			store := path.Join(s.WorkingDir, opts.StoreDir)
			if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
				return v.Type == types.VolumeTypeVolume && strings.HasPrefix(store, v.Target+"/")
			}) {
				t.Errorf("%s: JetStream in %s, on no volume", node, store)
			}
			if hc := s.HealthCheck; hc == nil || !slices.Contains(hc.Test, fmt.Sprintf("http://127.0.0.1:%d/healthz", opts.HTTPPort)) {
				t.Errorf("%s: health check %v, want the monitoring port's /healthz", node, hc)
			}
		}
		if len(names) != len(natsNodes) {
			t.Errorf("server names %v, want one per node", slices.Collect(maps.Keys(names)))
		}
	})

	// What each sentinel writes into its configuration at its first start.
	var master, quorum, port string
	t.Run("redis", func(t *testing.T) {
		for _, name := range slices.Concat(redisServers, sentinels) {
			s := p.Services[name]
			for n := range s.Networks {
				if !p.Networks[n].Internal {
					t.Errorf("%s is on network %s, which is not internal", name, n)
				}
			}
			if len(s.Networks) == 0 {
				t.Errorf("%s is on the default network", name)
			}
			// The command is a script; the shell must take it as written.
			if len(s.Command) != 3 || s.Command[0] != "sh" {
				t.Fatalf("%s: command %q, want sh -c SCRIPT", name, s.Command)
			}
			if out, err := exec.Command("sh", "-n", "-c", s.Command[2]).CombinedOutput(); err != nil {
				t.Errorf("%s: script: %v\n%s", name, err, out)
			}
			// /data: the working directory of the redis image and of the
			// sentinels.
			if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
				return v.Type == types.VolumeTypeVolume && v.Target == "/data"
			}) {
				t.Errorf("%s keeps its state on no volume", name)
			}
		}
		for _, name := range redisServers {
			script := p.Services[name].Command[2]
			if !strings.Contains(script, "--appendonly yes --appendfsync always") {
				t.Errorf("%s: want the append-only file, fsynced on every write:\n%s", name, script)
			}
			// It replicates the primary the sentinels name.
			for _, s := range sentinels {
				if !strings.Contains(script, s) {
					t.Errorf("%s does not ask %s for the primary", name, s)
				}
			}
		}
		for _, name := range sentinels {
			m := sentinelMonitor.FindStringSubmatch(p.Services[name].Command[2])
			if m == nil {
				t.Fatalf("%s writes no `sentinel monitor` line:\n%s", name, p.Services[name].Command[2])
			}
			if master != "" && (m[1] != master || m[4] != quorum) {
				t.Errorf("%s watches %s with quorum %s, another sentinel %s with %s", name, m[1], m[4], master, quorum)
			}
			master, quorum = m[1], m[4]
			// It watches whichever data server is primary when it starts.
			for _, r := range redisServers {
				if !strings.Contains(p.Services[name].Command[2], r) {
					t.Errorf("%s does not ask %s whether it is primary", name, r)
				}
			}
			if pm := sentinelPort.FindStringSubmatch(p.Services[name].Command[2]); pm != nil {
				port = pm[1]
			} else {
				t.Errorf("%s writes no `port` line", name)
			}
		}
		if quorum != strconv.Itoa(len(sentinels)/2+1) {
			t.Errorf("quorum %s of %d sentinels, want a majority", quorum, len(sentinels))
		}
	})

	t.Run("services on the bus", func(t *testing.T) {
		for _, name := range []string{"auth", "session", "key"} {
			s := p.Services[name]
			env := []string{"HOME=" + t.TempDir()}
			for k, v := range s.Environment {
				env = append(env, k+"="+deref(v))
			}
			c, err := config.Load(env, "", nil)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var hosts []string
			for u := range strings.SplitSeq(c.NATS.URL, ",") {
				pu, err := url.Parse(u)
				if err != nil || pu.Scheme != "tls" || pu.Port() != "4222" {
					t.Errorf("%s: NATS URL %q, want tls:// to a node's client port", name, u)
					continue
				}
				hosts = append(hosts, pu.Hostname())
			}
			slices.Sort(hosts)
			if !slices.Equal(hosts, natsNodes) {
				t.Errorf("%s: NATS at %v, want every node %v", name, hosts, natsNodes)
			}
			if c.NATS.Replicas != len(natsNodes) {
				t.Errorf("%s: nats.replicas %d, want %d", name, c.NATS.Replicas, len(natsNodes))
			}
			if c.Store.Backend != "redis" || c.Redis.SentinelMaster != master {
				t.Errorf("%s: store %s, Sentinel master %q; want redis, through the sentinels' %q", name, c.Store.Backend, c.Redis.SentinelMaster, master)
			}
			var addrs []string
			for _, a := range c.Redis.SentinelAddrs {
				host, p, err := net.SplitHostPort(a)
				if err != nil || p != port {
					t.Errorf("%s: sentinel %q, want host:%s (the sentinels' port)", name, a, port)
				}
				addrs = append(addrs, host)
			}
			if !slices.Equal(addrs, sentinels) {
				t.Errorf("%s: sentinels %v, want %v", name, addrs, sentinels)
			}
			deps := slices.Sorted(maps.Keys(s.DependsOn))
			if want := slices.Sorted(slices.Values(slices.Concat(natsNodes, sentinels))); !slices.Equal(deps, want) {
				t.Errorf("%s waits for %v, want %v", name, deps, want)
			}
		}
	})

	t.Run("health", func(t *testing.T) {
		for name, s := range p.Services {
			if hc := s.HealthCheck; hc == nil || hc.Disable || len(hc.Test) < 2 {
				t.Errorf("%s has no health check", name)
			}
			if s.Restart != types.RestartPolicyUnlessStopped {
				t.Errorf("%s: restart %q, want %s", name, s.Restart, types.RestartPolicyUnlessStopped)
			}
			for dep, d := range s.DependsOn {
				if _, ok := p.Services[dep]; !ok || d.Condition != types.ServiceConditionHealthy {
					t.Errorf("%s: depends on %s being %s; want a service of the stack, healthy", name, dep, d.Condition)
				}
			}
		}
	})

	t.Run("stand-ins", func(t *testing.T) {
		over := loadComposeFiles(t, "docker-compose.yml", clusterFile, standinFile, clusterStandinFile)
		checkStandins(t, p, over)
		nats := loadComposeFiles(t, "docker-compose.yml", standinFile).Services["nats"].Image
		for _, node := range natsNodes {
			if got := over.Services[node].Image; got != nats {
				t.Errorf("%s stand-in %s, want the single stack's %s", node, got, nats)
			}
		}
	})

	// The compose plugin, where it is installed, reads the files as the
	// library above does.
	t.Run("docker compose config", func(t *testing.T) {
		if err := exec.Command("docker", "compose", "version").Run(); err != nil {
			t.Skipf("no docker compose plugin (%v); deploy/docker-env.sh setup installs one", err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "docker", "compose", "config", "--format", "json")
		cmd.Dir = repoRoot(t)
		// Nothing of the shell's compose settings either (project, profiles).
		env := slices.DeleteFunc(hermetic.Environ(hermetic.Home(t.TempDir())...), func(kv string) bool { return strings.HasPrefix(kv, "COMPOSE_") })
		cmd.Env = append(env, "COMPOSE_FILE=docker-compose.yml:"+clusterFile)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("docker compose config: %v\n%s", err, out)
		}
		var got struct {
			Name     string
			Services map[string]struct {
				Deploy *struct{ Replicas *int }
			}
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("docker compose config: %v\n%s", err, out)
		}
		replicas := map[string]int{}
		for name, s := range got.Services {
			replicas[name] = 1
			if s.Deploy != nil && s.Deploy.Replicas != nil {
				replicas[name] = *s.Deploy.Replicas
			}
		}
		if got.Name != p.Name || !maps.Equal(replicas, wantClusterReplicas) {
			t.Errorf("docker compose config: project %s with %v, want %s with %v", got.Name, replicas, p.Name, wantClusterReplicas)
		}
	})
}

// clusterProject names the stack of TestDockerComposeCluster: neither
// TestDockerCompose's nor a user's, so both may run on the same engine.
const clusterProject = "sft-clustertest"

// TestDockerComposeCluster runs the clustered stack under a real Docker
// engine as the README tells a user to: `task up:cluster` until every
// service is healthy, users added in a one-off auth container, and sft-cli
// on this host moving 16 MiB through the published NATS ports while the
// receiver holds back and the NATS node with the most clients and the Redis
// primary are killed (SIGKILL); the transfer completes once the sentinels
// have promoted a replica and the other nodes lead every stream. The next
// `task up:cluster` brings the two back, the Redis server as a replica of
// the new primary; `task down:cluster` leaves nothing of the stack running.
func TestDockerComposeCluster(t *testing.T) {
	if os.Getenv(envRequireDocker) != "1" {
		t.Skipf("runs the clustered compose stack under Docker; run deploy/docker-env.sh setup, then set %s=1", envRequireDocker)
	}
	root := repoRoot(t)
	dir := t.TempDir()
	// Host ports of its own, so that the stack runs beside another one.
	ports := map[string]bool{}
	for len(ports) < len(natsNodes)+1 {
		ports[freePort(t)] = true
	}
	published := slices.Collect(maps.Keys(ports))
	env := []string{
		"COMPOSE_FILE=" + strings.Join([]string{"docker-compose.yml", clusterFile, standinFile, clusterStandinFile}, ":"),
		"COMPOSE_PROJECT_NAME=" + clusterProject,
		"SFT_PUBLISH_RELAY=" + published[len(natsNodes)],
	}
	var urls []string
	for i := range natsNodes {
		env = append(env, fmt.Sprintf("SFT_PUBLISH_NATS_%d=%s", i+1, published[i]))
		urls = append(urls, "tls://127.0.0.1:"+published[i])
	}
	d := startDocker(t, root, dockerEnv(t, filepath.Join(dir, "home"), env...))
	d.up("up:cluster", wantClusterReplicas)

	bin := buildBinaries(t)
	as := d.users(dir, strings.Join(urls, ","), bin)
	transfer := transfers(t, dir, 16<<20, as, bin)
	var promoted string
	transfer("killed", func(string) {
		node, server := d.busiestNATS()
		primary := d.redisPrimary("")
		d.run(time.Minute, nil, "docker", "kill", node, primary)
		began := time.Now()
		d.waitLeaders(server)
		led := time.Since(began).Round(100 * time.Millisecond)
		promoted = d.redisPrimary(primary)
		t.Logf("killed %s and %s, the Redis primary: the other nodes led every stream after %s, %s was primary with a replica after %s",
			node, primary, led, promoted, time.Since(began).Round(100*time.Millisecond))
	})

	// What died comes back with the next `task up:cluster`: the Redis
	// server as a replica of the new primary.
	d.up("up:cluster", wantClusterReplicas)
	if got := d.redisPrimary(""); got != promoted {
		t.Errorf("the primary is %s after the killed server came back, want %s still", got, promoted)
	}
	if info, err := d.inContainer(promoted, "redis-cli", "info", "replication"); err != nil || strings.Count(info, "state=online") != len(redisServers)-1 {
		t.Errorf("%s has not every other server as a replica in sync: %v\n%s", promoted, err, info)
	}

	d.run(2*time.Minute, nil, "go", "tool", "task", "down:cluster")
	d.checkGone(clusterProject, "task down:cluster")
}

// container is the name of the first container of a service of the
// clustered stack.
func container(service string) string { return clusterProject + "-" + service + "-1" }

// inContainer runs a command in a running container and returns its
// output.
func (d *dockerStack) inContainer(c string, args ...string) (string, error) {
	return d.exec(time.Minute, nil, "docker", append([]string{"exec", c}, args...)...)
}

// natsMonitor decodes what a node's monitoring endpoint answers at path.
func (d *dockerStack) natsMonitor(node, path string, v any) {
	d.t.Helper()
	out, err := d.inContainer(node, "wget", "-q", "-O", "-", "http://127.0.0.1:8222"+path)
	if err != nil {
		d.t.Fatalf("%s %s: %v\n%s", node, path, err, out)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		d.t.Fatalf("%s %s: %v\n%s", node, path, err, out)
	}
}

// busiestNATS is the container of the node that serves the most clients,
// and its server name.
func (d *dockerStack) busiestNATS() (node, server string) {
	d.t.Helper()
	most := -1
	for _, n := range natsNodes {
		var v struct {
			Name string `json:"server_name"`
			N    int    `json:"connections"`
		}
		d.natsMonitor(container(n), "/varz", &v)
		if v.N > most {
			node, server, most = container(n), v.Name, v.N
		}
	}
	return node, server
}

// waitLeaders waits until the nodes still running lead every stream
// without dead (a server name).
func (d *dockerStack) waitLeaders(dead string) {
	d.t.Helper()
	d.waitFor("the other nodes to lead every stream", func() bool {
		for _, n := range natsNodes {
			var v struct {
				Name     string `json:"server_name"`
				Accounts []struct {
					Streams []jszStream `json:"stream_detail"`
				} `json:"account_details"`
			}
			if out, err := d.inContainer(container(n), "wget", "-q", "-O", "-", "http://127.0.0.1:8222/jsz?streams=true"); err != nil ||
				json.Unmarshal([]byte(out), &v) != nil || v.Name == dead {
				continue // the dead one
			}
			led := len(v.Accounts) > 0
			for _, a := range v.Accounts {
				for _, s := range a.Streams {
					led = led && s.Cluster.Leader != "" && s.Cluster.Leader != dead
				}
			}
			return led
		}
		return false
	})
}

// redisPrimary waits until every sentinel names the same primary, not the
// container dead, and that primary has a replica in sync (the store's
// writes wait for one), and returns its container.
func (d *dockerStack) redisPrimary(dead string) string {
	d.t.Helper()
	var primary string
	d.waitFor("the sentinels to agree on a primary with a replica", func() bool {
		addrs := map[string]bool{}
		for _, s := range sentinels {
			out, err := d.inContainer(container(s), "redis-cli", "-p", "26379", "sentinel", "get-master-addr-by-name", "sft")
			if err != nil {
				return false
			}
			addr, _, _ := strings.Cut(out, "\n")
			addrs[addr] = true
		}
		if len(addrs) != 1 {
			return false
		}
		for _, r := range redisServers {
			c := container(r)
			ip, err := d.exec(time.Minute, nil, "docker", "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", c)
			if err != nil || c == dead || !addrs[strings.TrimSpace(ip)] {
				continue
			}
			info, err := d.inContainer(c, "redis-cli", "info", "replication")
			primary = c
			return err == nil && strings.Contains(info, "role:master") && strings.Contains(info, "state=online")
		}
		return false
	})
	return primary
}

// waitFor polls cond for a minute, failing the test if it never holds.
func (d *dockerStack) waitFor(what string, cond func() bool) {
	d.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			d.t.Fatalf("waited a minute for %s", what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
