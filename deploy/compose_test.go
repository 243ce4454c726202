package deploy_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/internal/syncbuf"
	"github.com/sftproject/sft/services/daemon"
	"github.com/sftproject/sft/services/relay"
	"github.com/sftproject/sft/services/secrets"
	"github.com/sftproject/sft/services/store/redisstore/redistest"
)

// deployDir is where docker-compose.yml expects `sftd certs` output, relative
// to the project directory (task certs writes it there).
const deployDir = ".deploy"

// wantMounts lists, per service, the host files it mounts, relative to the
// project directory: each sftd service gets the CA and just the secrets it
// reads, its own NATS identity and client certificate and no other's;
// nothing mounts the CA key.
var wantMounts = map[string][]string{
	"nats": {
		"deploy/nats-server.conf",
		deployDir + "/pki/" + broker.CACertName,
		deployDir + "/pki/" + broker.ServerCertName,
		deployDir + "/pki/" + broker.ServerKeyName,
		deployDir + "/secrets/" + daemon.NATSAuthFile,
	},
	"redis": nil,
	"auth": {
		deployDir + "/pki/" + broker.CACertName,
		deployDir + "/secrets/" + secrets.ServiceKeyFile(broker.ServiceAuth),
		deployDir + "/secrets/" + secrets.ServiceCertFile(broker.ServiceAuth),
		deployDir + "/secrets/" + secrets.ServiceCertKeyFile(broker.ServiceAuth),
		deployDir + "/secrets/" + secrets.SigningKeyFile,
		deployDir + "/secrets/" + secrets.SealKeyFile,
		deployDir + "/secrets/" + secrets.CalloutIssuerFile,
		deployDir + "/secrets/" + secrets.CalloutXKeyFile,
	},
	"session": {
		deployDir + "/pki/" + broker.CACertName,
		deployDir + "/secrets/" + secrets.ServiceKeyFile(broker.ServiceSession),
		deployDir + "/secrets/" + secrets.ServiceCertFile(broker.ServiceSession),
		deployDir + "/secrets/" + secrets.ServiceCertKeyFile(broker.ServiceSession),
		deployDir + "/secrets/" + secrets.TokenPublicKeyFile,
		deployDir + "/secrets/" + secrets.RelayTicketKeyFile,
	},
	"key": {
		deployDir + "/pki/" + broker.CACertName,
		deployDir + "/secrets/" + secrets.ServiceKeyFile(broker.ServiceKey),
		deployDir + "/secrets/" + secrets.ServiceCertFile(broker.ServiceKey),
		deployDir + "/secrets/" + secrets.ServiceCertKeyFile(broker.ServiceKey),
		deployDir + "/secrets/" + secrets.TokenPublicKeyFile,
		deployDir + "/secrets/" + secrets.KEKFile,
	},
	"relay": {
		deployDir + "/secrets/" + secrets.RelayTicketPublicKeyFile,
	},
}

var wantReplicas = map[string]int{"nats": 1, "redis": 1, "auth": 1, "session": 2, "key": 2, "relay": 1}

// wantPorts are the ports published: NATS's client port on loopback, the
// relay's on every interface (peers on other machines dial it).
var wantPorts = map[string][]types.ServicePortConfig{
	"nats":  {{Mode: "ingress", HostIP: "127.0.0.1", Target: 4222, Published: "4222", Protocol: "tcp"}},
	"relay": {{Mode: "ingress", Target: 4223, Published: "4223", Protocol: "tcp"}},
}

// sftdDrain is how long sftd waits for requests under way after SIGTERM;
// the stop grace period must leave it that time.
const sftdDrain = 10 * time.Second

// loadCompose loads docker-compose.yml from the repository root as docker
// compose would, with an empty environment so every variable takes its
// default.
func loadCompose(t testing.TB) *types.Project {
	t.Helper()
	return loadComposeFiles(t, "docker-compose.yml")
}

// loadComposeFiles loads compose files (relative to the repository root,
// later ones overriding earlier ones) as docker compose would with
// COMPOSE_FILE naming them, with an empty environment.
func loadComposeFiles(t testing.TB, files ...string) *types.Project {
	t.Helper()
	root := repoRoot(t)
	paths := make([]string, len(files))
	for i, f := range files {
		paths[i] = filepath.Join(root, filepath.FromSlash(f))
	}
	opts, err := cli.NewProjectOptions(paths, cli.WithWorkingDirectory(root), cli.WithEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(files, " + "), err)
	}
	return p
}

// isSftd tells the services built from this repository.
func isSftd(s types.ServiceConfig) bool { return s.Build != nil }

// onBus tells the sftd services that work on NATS and the store: all but
// the relay, which needs neither.
func onBus(s types.ServiceConfig) bool {
	return isSftd(s) && !slices.Equal(s.Command, []string{"relay"})
}

// relSource is a bind mount's host path relative to the project directory.
func relSource(t testing.TB, p *types.Project, v types.ServiceVolumeConfig) string {
	t.Helper()
	rel, err := filepath.Rel(p.WorkingDir, v.Source)
	if err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("bind mount source %s is outside the project", v.Source)
	}
	return filepath.ToSlash(rel)
}

func TestCompose(t *testing.T) {
	t.Parallel()
	p := loadCompose(t)
	root := repoRoot(t)

	t.Run("services", func(t *testing.T) {
		got := slices.Sorted(slices.Values(p.ServiceNames()))
		want := slices.Sorted(func(yield func(string) bool) {
			for k := range wantReplicas {
				if !yield(k) {
					return
				}
			}
		})
		if !slices.Equal(got, want) {
			t.Fatalf("services %v, want %v", got, want)
		}
		for name, n := range wantReplicas {
			s := p.Services[name]
			if got := s.GetScale(); got != n {
				t.Errorf("%s: %d replicas, want %d", name, got, n)
			}
		}
	})

	t.Run("ports", func(t *testing.T) {
		for name, s := range p.Services {
			if want := wantPorts[name]; !reflect.DeepEqual(s.Ports, want) {
				t.Errorf("%s publishes %+v, want %+v", name, s.Ports, want)
			}
			if len(s.Expose) != 0 {
				t.Errorf("%s exposes %v", name, s.Expose)
			}
		}
		// The relay listens where its port is published.
		if got := deref(p.Services["relay"].Environment["SFT_RELAY_LISTEN"]); got != "0.0.0.0:4223" {
			t.Errorf("relay: SFT_RELAY_LISTEN=%s, want 0.0.0.0:4223 (the published port, every interface)", got)
		}
	})

	t.Run("sftd commands", func(t *testing.T) {
		var cmds []string
		for name, s := range p.Services {
			if !isSftd(s) {
				continue
			}
			if len(s.Command) != 1 {
				t.Errorf("%s: command %q, want one sftd subcommand", name, s.Command)
				continue
			}
			cmds = append(cmds, s.Command[0])
			var out, errOut bytes.Buffer
			err := daemon.Run(t.Context(), daemon.IO{In: strings.NewReader(""), Out: &out, Err: &errOut},
				append(slices.Clone(s.Command), "--help"), []string{"HOME=" + t.TempDir()})
			if err != nil || !strings.Contains(out.String(), "sftd "+s.Command[0]+" [flags]") {
				t.Errorf("%s: sftd %s --help: %v\n%s%s", name, s.Command[0], err, out.String(), errOut.String())
			}
			if s.Build.Context != root || s.Build.Dockerfile != "deploy/Dockerfile" {
				t.Errorf("%s: build %s with %s, want the repository root with deploy/Dockerfile", name, s.Build.Context, s.Build.Dockerfile)
			}
		}
		slices.Sort(cmds)
		if want := []string{"auth", "key", "relay", "session"}; !slices.Equal(cmds, want) {
			t.Errorf("sftd services run %v, want each of %v once", cmds, want)
		}
		if _, err := os.Stat(filepath.Join(root, "deploy", "Dockerfile")); err != nil {
			t.Error(err)
		}
	})

	t.Run("sftd environment", func(t *testing.T) {
		known := map[string]bool{}
		for _, k := range config.Keys(nil) {
			known[k.Env()] = true
		}
		want := map[string]string{
			"SFT_NATS_URL":      "tls://nats:4222",
			"SFT_STORE_BACKEND": "redis",
			"SFT_REDIS_URL":     "redis://redis:6379/0",
			"SFT_LOG_FORMAT":    "json",
		}
		for name, s := range p.Services {
			if !isSftd(s) {
				continue
			}
			var env []string
			for k, v := range s.Environment {
				if !known[k] {
					t.Errorf("%s: %s is no sftd setting", name, k)
				}
				if v == nil {
					t.Errorf("%s: %s has no value", name, k)
					continue
				}
				env = append(env, k+"="+*v)
			}
			if got := deref(s.Environment["SFT_LOG_FORMAT"]); got != "json" {
				t.Errorf("%s: SFT_LOG_FORMAT=%s, want json", name, got)
			}
			if !onBus(s) {
				// Nothing of the bus or the store: it reaches neither.
				for k := range s.Environment {
					if strings.HasPrefix(k, "SFT_NATS_") || strings.HasPrefix(k, "SFT_REDIS_") || strings.HasPrefix(k, "SFT_STORE_") {
						t.Errorf("%s: %s is set, but it uses neither NATS nor the store", name, k)
					}
				}
				if _, err := config.Load(append(env, "HOME="+t.TempDir()), "", nil); err != nil {
					t.Errorf("%s: %v", name, err)
				}
				continue
			}
			for k, v := range want {
				if got := s.Environment[k]; got == nil || *got != v {
					t.Errorf("%s: %s=%v, want %s", name, k, deref(got), v)
				}
			}
			// Its own client certificate, where its mount puts it.
			dir := deref(s.Environment["SFT_SECRETS_DIR"])
			for k, file := range map[string]string{
				"SFT_NATS_CERT_FILE": secrets.ServiceCertFile(s.Command[0]),
				"SFT_NATS_KEY_FILE":  secrets.ServiceCertKeyFile(s.Command[0]),
			} {
				if got, want := deref(s.Environment[k]), path.Join(dir, file); got != want {
					t.Errorf("%s: %s=%s, want %s", name, k, got, want)
				}
			}
			if _, err := config.Load(append(env, "HOME="+t.TempDir()), "", nil); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	})

	t.Run("mounts", func(t *testing.T) {
		for name, s := range p.Services {
			var got []string
			for _, v := range s.Volumes {
				if v.Type != types.VolumeTypeBind {
					if v.Type != types.VolumeTypeVolume || p.Volumes[v.Source].Name == "" {
						t.Errorf("%s: %s mount of %q: only bind mounts and named volumes", name, v.Type, v.Source)
					}
					continue
				}
				src := relSource(t, p, v)
				got = append(got, src)
				if !v.ReadOnly {
					t.Errorf("%s: %s is mounted writable", name, src)
				}
				if v.Bind == nil || v.Bind.CreateHostPath {
					t.Errorf("%s: %s: set bind.create_host_path false, or a missing file becomes a directory", name, src)
				}
				checkTarget(t, p, s, src, v.Target)
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(wantMounts[name]))
			if !slices.Equal(got, want) {
				t.Errorf("%s mounts %v, want %v", name, got, want)
			}
		}
	})

	t.Run("mounted files exist", func(t *testing.T) {
		// The .deploy/ files are those `sftd certs` makes; the others are
		// in the repository.
		data := sftdCerts(t, filepath.Join(t.TempDir(), deployDir))
		for name, s := range p.Services {
			for _, v := range s.Volumes {
				if v.Type != types.VolumeTypeBind {
					continue
				}
				src := relSource(t, p, v)
				host := filepath.Join(root, filepath.FromSlash(src))
				if rest, ok := strings.CutPrefix(src, deployDir+"/"); ok {
					host = filepath.Join(data, filepath.FromSlash(rest))
				}
				if st, err := os.Stat(host); err != nil || !st.Mode().IsRegular() {
					t.Errorf("%s: %s is not a file (%v)", name, src, err)
				}
			}
		}
	})

	t.Run("health", func(t *testing.T) {
		// Every service says when it is ready (`docker compose ps`, `up
		// --wait`).
		for name, s := range p.Services {
			if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) < 2 {
				t.Errorf("%s has no health check", name)
			}
		}
		for name, s := range p.Services {
			for dep, d := range s.DependsOn {
				if d.Condition != types.ServiceConditionHealthy {
					t.Errorf("%s: depends on %s being %s, want %s", name, dep, d.Condition, types.ServiceConditionHealthy)
				}
				if hc := p.Services[dep].HealthCheck; hc == nil || hc.Disable || len(hc.Test) < 2 {
					t.Errorf("%s: depends on %s, which has no health check", name, dep)
				}
			}
			for _, dep := range []string{"nats", "redis"} {
				if _, ok := s.DependsOn[dep]; onBus(s) && !ok {
					t.Errorf("%s does not wait for %s", name, dep)
				}
			}
		}
		for name, s := range p.Services {
			if hc := s.HealthCheck; isSftd(s) && (hc == nil || !slices.Equal(hc.Test, []string{"CMD", "/sftd", "health"}) ||
				deref(s.Environment["SFT_METRICS_LISTEN"]) == "") {
				t.Errorf("%s: health check %v, want `sftd health` asking the /readyz of SFT_METRICS_LISTEN", name, hc)
			}
		}
		if hc := p.Services["nats"].HealthCheck; hc == nil || !strings.Contains(strings.Join(hc.Test, " "), "http://127.0.0.1:8222/healthz") {
			t.Errorf("nats health check %v, want the monitoring endpoint's /healthz", hc)
		}
	})

	t.Run("lifecycle", func(t *testing.T) {
		for name, s := range p.Services {
			if s.Restart != types.RestartPolicyUnlessStopped {
				t.Errorf("%s: restart %q, want %s", name, s.Restart, types.RestartPolicyUnlessStopped)
			}
			if isSftd(s) && (s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= sftdDrain) {
				t.Errorf("%s: stop_grace_period %v leaves sftd no time to drain (%s)", name, s.StopGracePeriod, sftdDrain)
			}
		}
	})

	t.Run("redis", func(t *testing.T) {
		s := p.Services["redis"]
		cmd := strings.Join(s.Command, " ")
		if !strings.Contains(cmd, "--appendonly yes") || !strings.Contains(cmd, "--appendfsync") {
			t.Errorf("redis command %q: want the append-only file", cmd)
		}
		if len(s.Networks) == 0 {
			t.Error("redis is on the default network")
		}
		for n := range s.Networks {
			if !p.Networks[n].Internal {
				t.Errorf("redis is on network %s, which is not internal", n)
			}
		}
	})
}

// checkTarget checks a bind mount lands where its reader looks: sftd finds
// the CA at SFT_NATS_CA_FILE and its secrets in SFT_SECRETS_DIR; nats-server
// finds its files relative to its working directory, as the configuration
// is laid out (see deploy/nats-server.conf).
func checkTarget(t *testing.T, p *types.Project, s types.ServiceConfig, src, target string) {
	t.Helper()
	var want string
	switch {
	case s.Name == "nats" && src == "deploy/nats-server.conf":
		want = path.Join(s.WorkingDir, "nats-server.conf")
		if i := slices.Index(s.Command, "-c"); i < 0 || i+1 >= len(s.Command) || s.Command[i+1] != want {
			t.Errorf("nats: command %q does not run the configuration at %s", s.Command, want)
		}
	case s.Name == "nats":
		want = path.Join(s.WorkingDir, strings.TrimPrefix(src, deployDir+"/"))
	case strings.HasPrefix(src, deployDir+"/pki/"):
		want = deref(s.Environment["SFT_NATS_CA_FILE"])
	default:
		want = path.Join(deref(s.Environment["SFT_SECRETS_DIR"]), path.Base(src))
	}
	if target != want {
		t.Errorf("%s: %s mounted at %s, want %s", s.Name, src, target, want)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// TestComposeStack runs the compose stack without Docker: nats-server with
// the files the nats service mounts, laid out as in its container, a
// redis-server, and each sftd service as many times as its replicas, each
// seeing only its own mounts and its compose environment. Then two users
// made as the compose file's header says log in, open a session, get the
// same key and reach each other through the relay. It does so as checked in, and with the configuration's
// `verify: true` turned on (mTLS), where the services present the
// certificates compose gives them and the users theirs from `sftd certs
// --client`.
func TestComposeStack(t *testing.T) {
	t.Parallel()
	t.Run("as checked in", func(t *testing.T) {
		t.Parallel()
		testComposeStack(t, false)
	})
	t.Run("verify clients", func(t *testing.T) {
		t.Parallel()
		testComposeStack(t, true)
	})
}

func testComposeStack(t *testing.T, verifyClients bool) {
	natsBinary(t)
	redisURL := redistest.Start(t, redistest.Options{}).URL()
	p := loadCompose(t)
	root := repoRoot(t)
	data := sftdCerts(t, filepath.Join(t.TempDir(), deployDir), "alice", "bob")
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

	nats := p.Services["nats"]
	natsFS := containerFS(t, nats, hostPath)
	conf := nats.Command[slices.Index(nats.Command, "-c")+1]
	if verifyClients {
		enableVerify(t, filepath.Join(natsFS, conf))
	}
	srv := startNATS(t, filepath.Join(natsFS, conf), filepath.Join(natsFS, nats.WorkingDir))
	for _, v := range nats.Volumes {
		if v.Type == types.VolumeTypeVolume {
			if _, err := os.Stat(filepath.Join(natsFS, v.Target, "jetstream")); err != nil {
				t.Errorf("JetStream state is not on the volume %s: %v", v.Source, err)
			}
		}
	}

	// envOf is a service's compose environment with the container's paths
	// and the broker's and Redis's addresses replaced by the test's.
	envOf := func(s types.ServiceConfig, fs string) []string {
		env := []string{"HOME=" + filepath.Join(fs, "home")}
		for k, v := range s.Environment {
			val := deref(v)
			switch {
			case k == "SFT_NATS_URL":
				val = srv.URL
			case k == "SFT_REDIS_URL":
				val = redisURL
			case k == "SFT_METRICS_LISTEN":
				val = "127.0.0.1:0" // the processes share this machine
			case path.IsAbs(val):
				val = filepath.Join(fs, val)
			}
			env = append(env, k+"="+val)
		}
		return env
	}

	ctx, stop := context.WithCancel(context.Background())
	var procs []*sftdProc
	t.Cleanup(func() {
		stop()
		for _, pr := range procs {
			if err := pr.wait(); err != nil {
				t.Errorf("%s did not stop cleanly: %v\n%s", pr.name, err, pr.out.String())
			}
		}
	})
	envs := map[string][]string{}
	for _, name := range []string{"auth", "session", "key"} {
		s := p.Services[name]
		fs := containerFS(t, s, hostPath)
		envs[name] = envOf(s, fs)
		for i := range s.GetScale() {
			pr := startSftd(ctx, name+"-"+strconv.Itoa(i+1), s.Command, envs[name])
			procs = append(procs, pr)
		}
	}
	// The relay, on a free port of loopback instead of its published one.
	rs := p.Services["relay"]
	relayProc := startSftd(ctx, "relay", rs.Command, append(envOf(rs, containerFS(t, rs, hostPath)), "SFT_RELAY_LISTEN=127.0.0.1:0"))
	procs = append(procs, relayProc)
	for _, pr := range procs {
		if err := pr.ready(); err != nil {
			t.Fatalf("%s: %v\n%s", pr.name, err, pr.out.String())
		}
		// The operators' log, JSON as compose asks, says so too (it is
		// written before the line ready waits for).
		if !strings.Contains(pr.out.String(), `"msg":"serving"`) {
			t.Errorf("%s logged no JSON line that it serves:\n%s", pr.name, pr.out.String())
		}
	}
	// Each process is ready by its own /readyz, as its health check asks.
	for _, pr := range procs {
		m := regexp.MustCompile(`readiness on (http://\S+)`).FindStringSubmatch(pr.out.String())
		if m == nil {
			t.Fatalf("%s printed no metrics address:\n%s", pr.name, pr.out.String())
		}
		var out, errOut bytes.Buffer
		if err := daemon.Run(ctx, daemon.IO{In: strings.NewReader(""), Out: &out, Err: &errOut},
			[]string{"health", "--url", m[1] + "/readyz"}, []string{"HOME=" + t.TempDir()}); err != nil {
			t.Errorf("%s: sftd health: %v", pr.name, err)
		}
	}

	// As the compose file's header says: `docker compose run --rm auth user
	// add NAME`, i.e. sftd user add in the auth service's container.
	const password = "correct horse battery staple"
	for _, user := range []string{"alice", "bob"} {
		var out, errOut bytes.Buffer
		err := daemon.Run(ctx, daemon.IO{In: strings.NewReader(password + "\n"), Out: &out, Err: &errOut},
			[]string{"user", "add", user}, envs["auth"])
		if err != nil {
			t.Fatalf("sftd user add %s with the auth service's settings: %v\n%s", user, err, errOut.String())
		}
	}

	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	connOpts := func(user string) broker.ConnOptions {
		o := broker.ConnOptions{URL: srv.URL, CAFile: filepath.Join(data, "pki", broker.CACertName), Name: user}
		if verifyClients {
			o.CertFile, o.KeyFile = daemon.ClientCertFiles(data, user)
		}
		return o
	}
	login := func(user string) *client.Client {
		c, _, err := client.LogIn(cctx, connOpts(user), user, password)
		if err != nil {
			t.Fatalf("login %s: %v", user, err)
		}
		t.Cleanup(c.Conn().Close)
		return c
	}
	alice, bob := login("alice"), login("bob")
	if verifyClients {
		o := connOpts("alice")
		o.CertFile, o.KeyFile = "", ""
		if _, _, err := client.LogIn(cctx, o, "alice", password); err == nil || !strings.Contains(err.Error(), "requires a client certificate") {
			t.Errorf("login without a certificate: %v, want a refusal that asks for one", err)
		}
	}
	s, err := alice.Create(cctx, api.CreateRequest{Responder: "bob", PeerAddrs: []string{"127.0.0.1:9"}, Manifest: api.Manifest{Files: []api.File{{Name: "x", Size: 1}}}})
	if err != nil {
		t.Fatalf("create session: %v", err)
	}
	if _, err := bob.Join(cctx, s.ID, nil); err != nil {
		t.Fatalf("join: %v", err)
	}
	ka, err := alice.Key(cctx, s.ID)
	if err != nil {
		t.Fatalf("alice's key: %v", err)
	}
	kb, err := bob.Key(cctx, s.ID)
	if err != nil {
		t.Fatalf("bob's key: %v", err)
	}
	if len(ka) != 32 || !bytes.Equal(ka, kb) {
		t.Errorf("keys differ or are not 256-bit: %s, %s", base64.StdEncoding.EncodeToString(ka), base64.StdEncoding.EncodeToString(kb))
	}

	// Both members reach each other through the relay with tickets signed
	// by the key `sftd certs` made for the session service.
	m := regexp.MustCompile(`sftd relay: serving on (\S+)`).FindStringSubmatch(relayProc.out.String())
	if m == nil {
		t.Fatalf("the relay printed no address:\n%s", relayProc.out.String())
	}
	ticketKey, err := secrets.RelayTicketKey(filepath.Join(data, "secrets"))
	if err != nil {
		t.Fatal(err)
	}
	iss := relay.NewIssuer(ticketKey)
	conns := make(chan net.Conn, 2)
	for _, role := range []api.Role{api.RoleInitiator, api.RoleResponder} {
		tk, err := iss.Issue(relay.Ticket{Session: s.ID, Role: role, ExpiresAt: time.Now().Add(time.Minute), MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := relay.Dial(cctx, m[1], tk)
			if err != nil {
				t.Errorf("%s through the relay: %v", role, err)
			}
			conns <- c
		}()
	}
	a, b := <-conns, <-conns
	if a == nil || b == nil {
		t.FailNow()
	}
	defer a.Close()
	defer b.Close()
	if _, err := a.Write([]byte("via the relay")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("via the relay"))
	if _, err := io.ReadFull(b, got); err != nil || string(got) != "via the relay" {
		t.Errorf("through the relay: %q, %v", got, err)
	}
}

// containerFS builds what a service's container sees of its mounts: each
// bind-mounted file copied (with its mode) to the same path under a new
// directory, and an empty directory for each named volume. It returns the
// directory.
func containerFS(t *testing.T, s types.ServiceConfig, hostPath func(string) string) string {
	t.Helper()
	fs := t.TempDir()
	for _, v := range s.Volumes {
		dst := filepath.Join(fs, filepath.FromSlash(v.Target))
		switch v.Type {
		case types.VolumeTypeBind:
			copyFile(t, hostPath(v.Source), dst)
		case types.VolumeTypeVolume:
			if err := os.MkdirAll(dst, 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	return fs
}

// sftdProc is one sftd service running in this process.
type sftdProc struct {
	name string
	out  *syncbuf.Buffer
	done chan struct{}
	err  error // set before done closes
}

// startSftd runs sftd with args and env until ctx ends.
func startSftd(ctx context.Context, name string, args, env []string) *sftdProc {
	pr := &sftdProc{name: name, out: &syncbuf.Buffer{}, done: make(chan struct{})}
	go func() {
		defer close(pr.done)
		pr.err = daemon.Run(ctx, daemon.IO{In: strings.NewReader(""), Out: pr.out, Err: pr.out}, args, env)
	}()
	return pr
}

// ready waits until the service serves.
func (pr *sftdProc) ready() error {
	if err := waitForOutput(pr.out, ": serving on ", pr.done); err != nil {
		select {
		case <-pr.done:
			return errors.Join(err, pr.err)
		default:
			return err
		}
	}
	return nil
}

func (pr *sftdProc) wait() error {
	select {
	case <-pr.done:
		return pr.err
	case <-time.After(sftdDrain + stopTimeout):
		return context.DeadlineExceeded
	}
}
