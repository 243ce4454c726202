package deploy_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/internal/hermetic"
	"github.com/sftproject/sft/internal/syncbuf"
)

// envRequireDocker runs TestDockerCompose, which needs a Docker engine, the
// compose plugin and the stand-in images (deploy/docker-env.sh), takes a
// few minutes and holds this machine's ports 4222 and 4223.
const envRequireDocker = "SFT_REQUIRE_DOCKER"

// composeFiles is docker-compose.yml with the stand-ins for the images this
// machine cannot pull (COMPOSE_FILE, relative to the repository root).
const composeFiles = "docker-compose.yml:deploy/compose.standin.yml"

// dockerProject names the test's stack, so that it never touches one a user
// started (project sft), and its cleanup removes only its own.
const dockerProject = "sft-dockertest"

// transferSize is what each transfer moves, as `task demo` does.
const transferSize = 64 << 20

// TestDockerCompose runs docker-compose.yml under a real Docker engine as the
// README tells a user to: `task up` until every service is healthy, users
// added in a one-off auth container, sft-cli on this host against the
// published NATS port moving 64 MiB while `sft-cli watch` shows the
// events; then a session and a key replica killed in the middle of a
// transfer, Redis restarted under a waiting session whose bytes then go
// through the relay container, and `task down`, after which nothing of the
// stack runs.
func TestDockerCompose(t *testing.T) {
	if os.Getenv(envRequireDocker) != "1" {
		t.Skipf("runs the compose stack under Docker; run deploy/docker-env.sh setup, then set %s=1", envRequireDocker)
	}
	root := repoRoot(t)
	dir := t.TempDir()
	d := startDocker(t, root, dockerEnv(t, filepath.Join(dir, "home"), "COMPOSE_FILE="+composeFiles, "COMPOSE_PROJECT_NAME="+dockerProject))
	// The published ports: a stack already on them would take the test's
	// transfers.
	for _, addr := range []string{"127.0.0.1:4222", ":4223"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("port %s is taken, and the compose stack publishes it: %v", addr, err)
		}
		ln.Close()
	}

	d.up("up", map[string]int{"nats": 1, "redis": 1, "auth": 1, "session": 2, "key": 2, "relay": 1})
	d.checkLogs("auth-1", "session-1", "session-2", "key-1", "key-2", "relay-1")

	bin := buildBinaries(t)
	as := d.users(dir, "tls://127.0.0.1:4222", bin)
	src := filepath.Join(dir, "payload.bin")
	writeRandom(t, src, transferSize)
	want := fileHash(t, src)

	// send starts alice's send and a watch of its session, and returns
	// both and the session's id.
	send := func(t *testing.T, name string, flags ...string) (sender, watch *proc, id string) {
		args := append([]string{"send", src, "--to", "bob"}, flags...)
		sender = start(t, "send-"+name, dir, as("alice"), bin("sft-cli"), args...)
		id = sessionID(t, sender)
		watch = start(t, "watch-"+name, dir, as("alice"), bin("sft-cli"), "watch", "--session", id, "--json")
		return sender, watch, id
	}
	// finish waits for the sender and the watch, which ends with the
	// session; the watch must have shown the session from creation to
	// completion by path.
	finish := func(t *testing.T, sender, watch *proc, id string, path api.Path) {
		t.Helper()
		if err := sender.wait(2 * time.Minute); err != nil {
			t.Fatalf("%s: %v\n%s", sender.name, err, sender.output())
		}
		if err := watch.wait(time.Minute); err != nil {
			t.Fatalf("%s: %v\n%s", watch.name, err, watch.output())
		}
		checkEvents(t, watch.output(), id, path)
	}

	// Each step needs the one before it.
	ok := t.Run("transfer", func(t *testing.T) {
		sender, watch, id := send(t, "first")
		out := mkdir(t, filepath.Join(dir, "inbox"))
		mustRun(t, as("bob"), nil, bin("sft-cli"), "recv", id, "-o", out)
		finish(t, sender, watch, id, api.PathDirect)
		if got := fileHash(t, filepath.Join(out, "payload.bin")); got != want {
			t.Fatal("the received file differs from the one sent")
		}
		t.Logf("sft-cli watch --session %s --json:\n%s", id, watch.output())
	})

	ok = ok && t.Run("replicas killed mid-transfer", func(t *testing.T) {
		sender, watch, id := send(t, "killed")
		// bob receives to a pipe this test reads: once part of the file
		// is through, it stops reading, so the transfer is held in the
		// middle while the replicas die.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		recv := exec.CommandContext(ctx, bin("sft-cli"), "recv", id, "-o", "-")
		recv.Env = hermetic.Environ(as("bob")...)
		var recvErr syncbuf.Buffer
		recv.Stderr = &recvErr
		pipe, err := recv.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := recv.Start(); err != nil {
			t.Fatal(err)
		}
		// On a failure, the receiver goes before the test does.
		defer func() {
			cancel()
			_ = recv.Wait()
		}()
		h := sha256.New()
		if _, err := io.CopyN(h, pipe, transferSize/4); err != nil {
			t.Fatalf("first quarter: %v\n%s", err, recvErr.String())
		}
		d.run(time.Minute, nil, "docker", "kill", dockerProject+"-session-1", dockerProject+"-key-1")
		if _, err := io.Copy(h, pipe); err != nil {
			t.Fatalf("the rest: %v", err)
		}
		if err := recv.Wait(); err != nil {
			t.Fatalf("recv: %v\n%s", err, recvErr.String())
		}
		finish(t, sender, watch, id, api.PathDirect)
		if fmt.Sprintf("%x", h.Sum(nil)) != want {
			t.Fatal("the received bytes differ from the file sent")
		}
	})

	// The bytes go through the relay container, at the published port the
	// session service names (SFT_RELAY_ADDRS).
	ok = ok && t.Run("redis restarted under a waiting session, then the relay", func(t *testing.T) {
		sender, watch, id := send(t, "redis", "--relay")
		d.run(time.Minute, nil, "docker", "restart", dockerProject+"-redis-1")
		d.waitHealthy(dockerProject + "-redis-1")
		out := mkdir(t, filepath.Join(dir, "inbox-redis"))
		mustRun(t, as("bob"), nil, bin("sft-cli"), "recv", id, "-o", out)
		finish(t, sender, watch, id, api.PathRelay)
		if got := fileHash(t, filepath.Join(out, "payload.bin")); got != want {
			t.Fatal("the received file differs from the one sent")
		}
	})

	if !ok {
		return
	}
	ls := mustRun(t, as("alice"), nil, bin("sft-cli"), "ls")
	if n := strings.Count(ls, "completed"); n != 3 {
		t.Errorf("alice's sessions, want 3 completed:\n%s", ls)
	}

	d.run(2*time.Minute, nil, "go", "tool", "task", "down")
	d.checkGone(dockerProject, "task down")
}

// dockerStack runs docker, compose and task in the repository root for the
// test's stack.
type dockerStack struct {
	t    *testing.T
	root string
	env  []string
}

// startDocker checks that what a Docker test needs is installed, brings the
// stand-in images up to date with this tree, and removes what a run that
// was itself killed may have left of the test's stack (the project env
// names); the stack goes again, volumes and all, however the test ends.
func startDocker(t *testing.T, root string, env []string) *dockerStack {
	t.Helper()
	d := &dockerStack{t: t, root: root, env: env}
	for _, bin := range []string{"docker", "bash", "go"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s: %v (deploy/docker-env.sh setup installs what this test needs)", bin, err)
		}
	}
	d.run(5*time.Minute, nil, "bash", "deploy/docker-env.sh", "images")
	d.down()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("compose logs:\n%s", d.output(time.Minute, nil, "docker", "compose", "logs", "--no-color", "--tail", "100"))
		}
		d.down()
	})
	return d
}

// up starts the stack with a task (up, up:cluster) and checks it runs
// replicas containers of each service, all healthy.
func (d *dockerStack) up(task string, replicas map[string]int) {
	d.t.Helper()
	began := time.Now()
	d.run(5*time.Minute, nil, "go", "tool", "task", task)
	d.t.Logf("task %s: every service healthy after %s", task, time.Since(began).Round(time.Second))
	d.checkHealthy(replicas)
}

// dockerEnv is the environment of the commands that run the stack: nothing
// of SFT's or compose's from the shell (hermetic.Environ), a home of their
// own (so neither the shell's docker configuration nor SFT's), Go's caches
// where they are, and vars: the compose files and project of the test, and
// any setting of its own. Docker finds its plugin system-wide and the
// engine as DOCKER_HOST or its default says.
func dockerEnv(t *testing.T, home string, vars ...string) []string {
	t.Helper()
	goVars := []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOENV"}
	out, err := exec.Command("go", append([]string{"env"}, goVars...)...).Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	vals := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(vals) != len(goVars) {
		t.Fatalf("go env: %q", out)
	}
	env := hermetic.Home(home)
	for i, v := range goVars {
		env = append(env, v+"="+vals[i])
	}
	return slices.DeleteFunc(hermetic.Environ(append(env, vars...)...), func(kv string) bool {
		return strings.HasPrefix(kv, "COMPOSE_") && !slices.Contains(vars, kv)
	})
}

// users adds alice and bob as the README says: sftd user add in a one-off
// auth container, the password on standard input; and logs both in with
// sft-cli on this host, through natsURL (the published ports) with the CA
// file `task certs` made. as gives the environment of sft-cli as one of
// them.
func (d *dockerStack) users(dir, natsURL string, bin func(string) string) (as func(user string) []string) {
	d.t.Helper()
	ids := []string{"SFT_UID=" + strconv.Itoa(os.Getuid()), "SFT_GID=" + strconv.Itoa(os.Getgid())}
	as = func(user string) []string {
		return append(hermetic.Home(filepath.Join(dir, user)),
			"SFT_NATS_URL="+natsURL,
			"SFT_NATS_CA_FILE="+filepath.Join(d.root, ".deploy", "pki", "ca.pem"),
			"SFT_USER="+user, "SFT_PASSWORD="+user+"-password")
	}
	for _, user := range []string{"alice", "bob"} {
		d.run(2*time.Minute, strings.NewReader(user+"-password\n"),
			"env", append(ids, "docker", "compose", "run", "--rm", "auth", "user", "add", user)...)
		mustRun(d.t, as(user), nil, bin("sft-cli"), "login")
	}
	return as
}

// checkGone checks that nothing of project runs or remains after how (a
// task that stops the stack), but its volumes.
func (d *dockerStack) checkGone(project, how string) {
	d.t.Helper()
	label := "label=com.docker.compose.project=" + project
	if left := d.run(time.Minute, nil, "docker", "ps", "--all", "--quiet", "--filter", label); strings.TrimSpace(left) != "" {
		d.t.Errorf("containers left after %s: %s", how, left)
	}
	if left := d.run(time.Minute, nil, "docker", "network", "ls", "--quiet", "--filter", label); strings.TrimSpace(left) != "" {
		d.t.Errorf("networks left after %s: %s", how, left)
	}
}

// down removes the test's stack, volumes and all.
func (d *dockerStack) down() {
	d.t.Helper()
	if out, err := d.exec(2*time.Minute, nil, "docker", "compose", "down", "--volumes", "--remove-orphans", "--timeout", "5"); err != nil {
		d.t.Errorf("docker compose down: %v\n%s", err, out)
	}
}

// output runs a command and returns its combined output, whether or not it
// succeeded (cleanup and diagnostics).
func (d *dockerStack) output(timeout time.Duration, stdin io.Reader, name string, args ...string) string {
	out, _ := d.exec(timeout, stdin, name, args...)
	return out
}

// run runs a command and fails the test unless it succeeds.
func (d *dockerStack) run(timeout time.Duration, stdin io.Reader, name string, args ...string) string {
	d.t.Helper()
	out, err := d.exec(timeout, stdin, name, args...)
	if err != nil {
		d.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func (d *dockerStack) exec(timeout time.Duration, stdin io.Reader, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = d.root
	cmd.Env = d.env
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (timed out after %s)", err, timeout)
	}
	return string(out), err
}

// checkHealthy checks the stack runs replicas containers of each service,
// every one of them healthy.
func (d *dockerStack) checkHealthy(replicas map[string]int) {
	d.t.Helper()
	out := d.run(time.Minute, nil, "docker", "compose", "ps", "--all", "--format", "json")
	got := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var c struct{ Name, Service, State, Health string }
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			d.t.Fatalf("docker compose ps: %v\n%s", err, out)
		}
		if c.State != "running" || c.Health != "healthy" {
			d.t.Errorf("%s is %s, %s; want running, healthy", c.Name, c.State, c.Health)
		}
		got[c.Service]++
	}
	for s, n := range replicas {
		if got[s] != n {
			d.t.Errorf("%s runs %d containers, want %d", s, got[s], n)
		}
	}
	if len(got) != len(replicas) {
		d.t.Errorf("services %v, want %v", got, replicas)
	}
}

// checkLogs runs `task logs` until it has shown each of containers (as
// compose names them in its log prefix) log that it serves, and then stops
// it: task and the `docker compose logs -f` it runs, a process group.
func (d *dockerStack) checkLogs(containers ...string) {
	d.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "tool", "task", "logs")
	cmd.Dir, cmd.Env = d.root, d.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = stopTimeout
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		d.t.Fatalf("task logs: %v", err)
	}
	defer func() {
		cancel()
		_ = cmd.Wait()
	}()
	missing := func() []string {
		serving := map[string]bool{}
		for line := range strings.Lines(out.String()) {
			name, msg, ok := strings.Cut(line, "|")
			if ok && strings.Contains(msg, `"msg":"serving"`) {
				serving[strings.TrimSpace(name)] = true
			}
		}
		return slices.DeleteFunc(slices.Clone(containers), func(c string) bool { return serving[c] })
	}
	deadline := time.Now().Add(time.Minute)
	for len(missing()) > 0 {
		if time.Now().After(deadline) {
			d.t.Fatalf("task logs showed no %q line of %v in a minute:\n%s", `"msg":"serving"`, missing(), out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitHealthy waits until a container's health check passes again.
func (d *dockerStack) waitHealthy(container string) {
	d.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st := strings.TrimSpace(d.run(time.Minute, nil, "docker", "inspect", "--format", "{{.State.Health.Status}}", container))
		if st == "healthy" {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s is %s after a minute", container, st)
		}
		time.Sleep(time.Second)
	}
}

var sessionLine = regexp.MustCompile(`Session (\S+): waiting for`)

// sessionID waits for a sender to say which session it waits in.
func sessionID(t *testing.T, sender *proc) string {
	t.Helper()
	sender.waitFor(t, "waiting for")
	m := sessionLine.FindStringSubmatch(sender.output())
	if m == nil {
		t.Fatalf("%s named no session:\n%s", sender.name, sender.output())
	}
	return m[1]
}

// checkEvents checks that a `watch --json` of session id showed it from
// creation to completion.
func checkEvents(t *testing.T, out, id string, path api.Path) {
	t.Helper()
	var types []api.EventType
	var got api.Path
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var ev api.Event
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("watch output: %v\n%s", err, out)
		}
		if ev.Session == id {
			types = append(types, ev.Type)
		}
		if ev.Session == id && ev.Type == api.EventCompleted {
			got = ev.Path
		}
	}
	for _, want := range []api.EventType{api.EventCreated, api.EventJoined, api.EventCompleted} {
		if !slices.Contains(types, want) {
			t.Errorf("watch showed %v of session %s, no %s:\n%s", types, id, want, out)
		}
	}
	if got != path {
		t.Errorf("session %s completed %s, want %s:\n%s", id, got, path, out)
	}
}

// fileHash is the hex SHA-256 of a file's bytes.
func fileHash(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}
