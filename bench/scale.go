package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/internal/procstat"
	"github.com/sftproject/sft/services/auth"
	"github.com/sftproject/sft/services/launch"
)

// The waiting-sessions cases (issue 14, scale-out) fill a control plane
// with sessions nobody joins, as many users leave them waiting, and show
// that what one user does costs the same with few or many sessions of
// other users: creating one, and listing one's own (`sft-cli ls`, which
// reads only that user's member index). They also give each process's
// memory at that size.

// scaleTopology is where a waiting-sessions case runs.
type scaleTopology string

const (
	// scaleDev is `sftd dev` in a process of its own: embedded NATS,
	// JetStream KV state and the three services. (Not named after sftd:
	// `--only SFT` picks the transfer cases.)
	scaleDev scaleTopology = "dev stack"
	// scaleRedis is the production topology of the lifecycle case:
	// redis-server, nats-server, and each sftd service its own process.
	scaleRedis scaleTopology = "redis + processes"
)

var scaleTopologies = []scaleTopology{scaleDev, scaleRedis}

// scaleSlowdown is the most an operation may slow down between a control
// plane holding one window of sessions and one holding them all, for its
// independence target: far under the hundredfold growth in sessions, far
// over this shared machine's noise.
const scaleSlowdown = 1.5

// scalePerUser is how many sessions each user starts, as the ratio
// figures' names say.
const scalePerUser = 20

// The ratio figures; settleScale turns them into targets.
const (
	scaleListOwnRatio    = "list (20 own) p50, at all / at the start"
	scaleListSpreadRatio = "list (20 own, spread) p50 at all / (20 own) at the start"
	scaleListNoneRatio   = "list (none own) p50, at all / at the start"
	scaleCreateRatio     = "create p50, last / first"
)

// scalePlan is the shape of a waiting-sessions case.
type scalePlan struct {
	total   int // sessions waiting at the end
	perUser int // sessions each initiator starts (limits.open_sessions is raised to it)
	window  int // creations timed one at a time at the start and at the end
	workers int // connections creating at once in between
	samples int // list requests timed for each list figure
}

// scalePlanFor is the plan of --waiting sessions; --quick times fewer
// lists on fewer connections.
func scalePlanFor(o options) scalePlan {
	if o.quick {
		return scalePlan{total: o.waiting, perUser: scalePerUser, window: 100, workers: 4, samples: 50}
	}
	return scalePlan{total: o.waiting, perUser: scalePerUser, window: 100, workers: 8, samples: 200}
}

// check tells whether the plan can run: whole users, and between a first
// and a last window of whole users, enough users to spread one user's
// sessions over.
func (p scalePlan) check() error {
	switch {
	case p.perUser < 1 || p.window < 1 || p.workers < 1 || p.samples < 1:
		return fmt.Errorf("every count must be positive: %+v", p)
	case p.total%p.perUser != 0 || p.window%p.perUser != 0:
		return fmt.Errorf("%d sessions and windows of %d are not whole users of %d sessions", p.total, p.window, p.perUser)
	case p.users()-2*p.windowUsers()-1 < p.perUser:
		return fmt.Errorf("%d sessions leave too few users between windows of %d to spread %d sessions over", p.total, p.window, p.perUser)
	}
	return nil
}

// users is how many users start sessions; windowUsers how many of them
// start the sessions of one window.
func (p scalePlan) users() int       { return p.total / p.perUser }
func (p scalePlan) windowUsers() int { return p.window / p.perUser }

func scaleCase(o options, t scaleTopology) string {
	return fmt.Sprintf("%s waiting sessions (%s)", thousands(scalePlanFor(o).total), t)
}

// thousands writes n with commas between groups of three digits.
func thousands(n int) string {
	if n < 0 {
		return "-" + thousands(-n)
	}
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// scaleLimits are the settings each topology runs with: a user may hold
// as many waiting sessions as the plan has them start (the default is 16),
// and the per-minute creation limit is lifted as in the lifecycle cases
// (20 creations fit its default burst of 60 anyway).
func scaleLimits(p scalePlan) []string {
	return []string{
		fmt.Sprintf("SFT_LIMITS_OPEN_SESSIONS=%d", p.perUser),
		fmt.Sprintf("SFT_LIMITS_SESSIONS_PER_MINUTE=%d", unlimitedRate),
	}
}

func benchScale(ctx context.Context, o options, dir string, env []string, t scaleTopology) *Case {
	c := newCase(scaleCase(o, t))
	p := scalePlanFor(o)
	if err := p.check(); err != nil {
		return &Case{Name: c.Name, Skipped: err.Error()}
	}
	var procs procGroup
	defer procs.stop()
	var (
		tgt target
		err error
	)
	switch t {
	case scaleDev:
		tgt, err = startDev(ctx, filepath.Join(dir, "scale-dev"), scaleLimits(p), &procs)
		c.Notes["topology"] = "sftd dev (embedded NATS, JetStream KV state, auth, session and key services) in one process"
	case scaleRedis:
		if o.skipRedis {
			return &Case{Name: c.Name, Skipped: "--skip-redis"}
		}
		redisBin, natsBin, terr := topologyTools()
		if terr != nil {
			return &Case{Name: c.Name, Skipped: terr.Error()}
		}
		tgt, err = startTopology(ctx, filepath.Join(dir, "scale-topology"), redisBin, natsBin, env, 1, 1, "", &procs, scaleLimits(p))
		c.Notes["topology"] = "redis-server (appendfsync always), nats-server (deploy/nats-server.conf), sftd auth, sftd session, sftd key"
	default:
		err = fmt.Errorf("no topology %q", t)
	}
	if err != nil {
		return &Case{Name: c.Name, Skipped: "failed to start: " + err.Error()}
	}
	c.Notes["limits"] = fmt.Sprintf("limits.open_sessions raised from 16 to %d (SFT_LIMITS_OPEN_SESSIONS) so each user holds %d waiting sessions; limits.sessions_per_minute lifted as in the lifecycle cases", p.perUser, p.perUser)
	if err := waitingSessions(ctx, p, c, tgt, &procs); err != nil {
		return &Case{Name: c.Name, Skipped: "failed: " + err.Error()}
	}
	return c
}

// startDev runs `sftd dev` as a process of its own (this binary in its
// sftd mode), with its data under dir and settings added to its
// environment, and returns the target and a store on it for adding users.
func startDev(ctx context.Context, dir string, settings []string, procs *procGroup) (target, error) {
	data := filepath.Join(dir, "data")
	home := filepath.Join(dir, "home")
	for _, d := range []string{data, home} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return target{}, err
		}
	}
	self, err := os.Executable()
	if err != nil {
		return target{}, err
	}
	env := append([]string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "SFT_DATA_DIR=" + data}, settings...)
	p, err := procs.start(ctx, "sftd dev", dir, env, self, modeSftd, "dev", "--listen", "127.0.0.1:0")
	if err != nil {
		return target{}, err
	}
	if err := p.waitFor(ctx, "CA certificate at"); err != nil {
		return target{}, err
	}
	url, caFile, err := devReady(p.out.String())
	if err != nil {
		return target{}, err
	}
	cfg, err := config.Load(append(env, "SFT_NATS_URL="+url, "SFT_NATS_CA_FILE="+caFile), "", nil)
	if err != nil {
		return target{}, err
	}
	// Users are the auth service's to write, as for `sftd user add`.
	log := slog.New(slog.DiscardHandler)
	nc, err := launch.Connect(ctx, cfg, broker.ServiceAuth, "sft-bench-users", log)
	if err != nil {
		return target{}, err
	}
	procs.onStop(nc.Close)
	st, err := launch.OpenStore(ctx, cfg, nc, log)
	if err != nil {
		return target{}, err
	}
	procs.onStop(func() { _ = st.Close() })
	return target{url: url, caFile: caFile, store: st}, nil
}

var (
	devURL = regexp.MustCompile(`sftd dev: NATS at (\S+)`)
	devCA  = regexp.MustCompile(`sftd dev: CA certificate at (\S+)`)
)

// devReady reads where `sftd dev` serves and its CA from what it printed.
func devReady(out string) (url, caFile string, err error) {
	u, ca := devURL.FindStringSubmatch(out), devCA.FindStringSubmatch(out)
	if u == nil || ca == nil {
		return "", "", fmt.Errorf("sftd dev did not say where it serves: %s", out)
	}
	return u[1], ca[1], nil
}

// scaleHash is the password hash of the waiting-sessions users. Logins
// are not what these cases measure, and at cheapHash's 8 MiB apiece,
// several at once would make the auth service's memory (and that of
// `sftd dev`, which runs it) about them.
var scaleHash = auth.HashParams{Memory: 64, Time: 1, Threads: 1}

// scaleUser starts sessions to a user of its own, who never logs in.
type scaleUser struct{ name, to, token string }

// waitingSessions fills the control plane to p.total waiting sessions and
// times, on the way, the first and last window of creations (one at a
// time, so that the two compare) and the creations in between (p.workers
// at once); it times lists at the start and at the end, of a user whose
// sessions are the first ones, of a user with none, and (at the end) of a
// user who started one session every so often during the fill, so that
// theirs lie spread among everyone else's; and it reads each process's
// memory at both points. Every user logs in before the start, so that
// what the memory grows by in between is the sessions'.
func waitingSessions(ctx context.Context, p scalePlan, c *Case, tgt target, procs *procGroup) error {
	users := make([]scaleUser, p.users())
	for i := range users {
		users[i] = scaleUser{name: fmt.Sprintf("ws%05d", i), to: fmt.Sprintf("wr%05d", i)}
	}
	// The last user is idle: it starts no sessions and has none.
	users = append(users, scaleUser{name: "ws-idle"})
	if err := addScaleUsers(ctx, tgt, users); err != nil {
		return err
	}
	if err := each(ctx, users, p.workers, func(ctx context.Context, u *scaleUser) error { return logIn(ctx, tgt, u) }); err != nil {
		return err
	}
	w := p.windowUsers()
	users, idle := users[:len(users)-1], users[len(users)-1]
	first, fill, last := users[:w], users[w:len(users)-w], users[len(users)-w:]
	spread, fill := fill[0], fill[1:]
	// The users whose lists are timed stay connected.
	var probes [3]*client.Client
	for i, u := range []scaleUser{first[0], idle, spread} {
		cl, err := tgt.dial(ctx, u)
		if err != nil {
			return err
		}
		defer cl.Conn().Close()
		probes[i] = cl
	}
	own, none, spreadCl := probe{probes[0], p.perUser}, probe{probes[1], 0}, probe{probes[2], p.perUser}

	firstLat, err := createSessions(ctx, own.cl, first[0].to, p.perUser)
	if err != nil {
		return err
	}
	more, err := createAs(ctx, tgt, first[1:], p.perUser, 1)
	if err != nil {
		return err
	}
	firstLat = append(firstLat, more...)
	at0, err := timeLists(ctx, p.samples, own, none)
	if err != nil {
		return err
	}
	mem0, err := procs.memory()
	if err != nil {
		return err
	}

	t0 := time.Now()
	var fillLat []time.Duration
	for k := range p.perUser {
		if _, err := createSessions(ctx, spreadCl.cl, spread.to, 1); err != nil {
			return err
		}
		lat, err := createAs(ctx, tgt, part(fill, k, p.perUser), p.perUser, p.workers)
		if err != nil {
			return err
		}
		fillLat = append(fillLat, lat...)
	}
	fillTime := time.Since(t0)
	lastLat, err := createAs(ctx, tgt, last, p.perUser, 1)
	if err != nil {
		return err
	}
	at1, err := timeLists(ctx, p.samples, own, none, spreadCl)
	if err != nil {
		return err
	}
	mem1, err := procs.memory()
	if err != nil {
		return err
	}

	start, all := thousands(p.window), thousands(p.total)
	c.Notes["load"] = fmt.Sprintf("%s users each start %d sessions to a user of their own, who never joins; the first and last %d creations one at a time, those in between on %d connections at once, but for one user's (\"spread\"), one about every %s; %d timed lists each (\"start\": %s sessions exist, \"all\": %s)",
		thousands(p.users()), p.perUser, p.window, p.workers, thousands(p.total/p.perUser), p.samples, start, all)
	c.Notes["RSS growth per session"] = fmt.Sprintf("is a process's VmRSS with %s sessions less that with %s, over the %s sessions between", all, start, thousands(p.total-p.window))
	c.add("create p50, first "+start, "ms", percentile(firstLat, 0.50))
	c.add("create p99, first "+start, "ms", percentile(firstLat, 0.99))
	c.add("create p50, last "+start, "ms", percentile(lastLat, 0.50))
	c.add("create p99, last "+start, "ms", percentile(lastLat, 0.99))
	c.add(fmt.Sprintf("create p50, %d at once", p.workers), "ms", percentile(fillLat, 0.50))
	c.add(fmt.Sprintf("create p99, %d at once", p.workers), "ms", percentile(fillLat, 0.99))
	c.add(fmt.Sprintf("creations, %d at once", p.workers), "/s", float64(len(fillLat)+p.perUser)/fillTime.Seconds())
	own20 := fmt.Sprintf("list (%d own)", p.perUser)
	for _, l := range []struct {
		what, at string
		lat      []time.Duration
	}{
		{own20, start, at0[0]}, {own20, all, at1[0]},
		{fmt.Sprintf("list (%d own, spread)", p.perUser), all, at1[2]},
		{"list (none own)", start, at0[1]}, {"list (none own)", all, at1[1]},
	} {
		c.add(fmt.Sprintf("%s p50 at %s", l.what, l.at), "ms", percentile(l.lat, 0.50))
		c.add(fmt.Sprintf("%s p99 at %s", l.what, l.at), "ms", percentile(l.lat, 0.99))
	}
	c.add(scaleListOwnRatio, "x", percentile(at1[0], 0.50)/percentile(at0[0], 0.50))
	c.add(scaleListSpreadRatio, "x", percentile(at1[2], 0.50)/percentile(at0[0], 0.50))
	c.add(scaleListNoneRatio, "x", percentile(at1[1], 0.50)/percentile(at0[1], 0.50))
	c.add(scaleCreateRatio, "x", percentile(lastLat, 0.50)/percentile(firstLat, 0.50))
	for i, m := range mem1 {
		c.add(m.name+" peak RSS", "MiB", mib(m.peakKiB))
		c.add(m.name+" RSS growth per session", "B", rssPerSession(mem0[i].rssKiB, m.rssKiB, p.total-p.window))
	}
	return nil
}

// part is the k-th of n nearly equal consecutive parts of items.
func part[T any](items []T, k, n int) []T {
	return items[k*len(items)/n : (k+1)*len(items)/n]
}

// addScaleUsers creates users, each with its own password, and their
// receivers, who never log in and so share one password hash.
func addScaleUsers(ctx context.Context, tgt target, users []scaleUser) error {
	names := make([]string, len(users))
	for i, u := range users {
		names[i] = u.name
	}
	if err := tgt.addUsers(ctx, scaleHash, names...); err != nil {
		return err
	}
	hash, err := auth.HashPassword("never used", scaleHash)
	if err != nil {
		return err
	}
	for _, u := range users {
		if u.to == "" {
			continue
		}
		if err := tgt.storeUser(ctx, u.to, hash); err != nil {
			return err
		}
	}
	return nil
}

// logIn logs u in, keeps its token, and lists its sessions once, as a
// user's first request after a login does: the services remember a token
// they verified, which is the login's memory, not the sessions'.
func logIn(ctx context.Context, tgt target, u *scaleUser) error {
	cl, nc, err := tgt.login(ctx, u.name)
	if err != nil {
		return err
	}
	defer nc.Close()
	u.token = cl.Token()
	if _, err := cl.List(ctx, ""); err != nil {
		return fmt.Errorf("%s lists sessions: %w", u.name, err)
	}
	return nil
}

// dial connects as u with the token of its login.
func (t target) dial(ctx context.Context, u scaleUser) (*client.Client, error) {
	nc, err := client.DialToken(ctx, broker.ConnOptions{URL: t.url, CAFile: t.caFile, Name: "sft-bench"}, u.name, u.token)
	if err != nil {
		return nil, fmt.Errorf("connect as %s: %w", u.name, err)
	}
	return client.New(nc, u.name, u.token), nil
}

// createAs has each of users start perUser sessions on a connection of
// its own that it closes after, workers users at a time. It returns each
// creation's latency.
func createAs(ctx context.Context, tgt target, users []scaleUser, perUser, workers int) ([]time.Duration, error) {
	var (
		mu  sync.Mutex
		lat []time.Duration
	)
	err := each(ctx, users, workers, func(ctx context.Context, u *scaleUser) error {
		cl, err := tgt.dial(ctx, *u)
		if err != nil {
			return err
		}
		defer cl.Conn().Close()
		mine, err := createSessions(ctx, cl, u.to, perUser)
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
		return err
	})
	return lat, err
}

// each runs fn on every item, workers at a time, and returns the first
// error; after one, the items not started yet are not, and fn's context
// ends.
func each[T any](ctx context.Context, items []T, workers int, fn func(context.Context, *T) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan *T)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for it := range next {
				if err := fn(ctx, it); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
feed:
	for i := range items {
		select {
		case next <- &items[i]:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// createSessions has cl start n sessions to responder, one after the
// other, and returns their latencies.
func createSessions(ctx context.Context, cl *client.Client, responder string, n int) ([]time.Duration, error) {
	lat := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		_, err := cl.Create(ctx, api.CreateRequest{Responder: responder, PeerAddrs: []string{"127.0.0.1:9"},
			Manifest: api.Manifest{Files: []api.File{{Name: "waiting.bin", Size: 1 << 20}}}})
		if err != nil {
			return nil, fmt.Errorf("%s creates a session: %w", cl.User(), err)
		}
		lat = append(lat, time.Since(t0))
	}
	return lat, nil
}

// probe is a user whose lists are timed, and how many sessions it has.
type probe struct {
	cl   *client.Client
	want int
}

// timeLists times samples lists of each probe's sessions, the probes
// taking turns so that all see the same moments, after a few untimed
// ones; out[i] are probes[i]'s.
func timeLists(ctx context.Context, samples int, probes ...probe) ([][]time.Duration, error) {
	const warmup = 5
	out := make([][]time.Duration, len(probes))
	for i := range samples + warmup {
		for j, pr := range probes {
			d, err := timeList(ctx, pr.cl, pr.want)
			if err != nil {
				return nil, err
			}
			if i >= warmup {
				out[j] = append(out[j], d)
			}
		}
	}
	return out, nil
}

// timeList lists cl's sessions and checks it gets want of them.
func timeList(ctx context.Context, cl *client.Client, want int) (time.Duration, error) {
	t0 := time.Now()
	rep, err := cl.ListReply(ctx, "")
	d := time.Since(t0)
	if err != nil {
		return 0, fmt.Errorf("%s lists sessions: %w", cl.User(), err)
	}
	if len(rep.Sessions) != want || rep.Omitted != 0 {
		return 0, fmt.Errorf("%s listed %d sessions (%d omitted), want %d", cl.User(), len(rep.Sessions), rep.Omitted, want)
	}
	return d, nil
}

// procMemory is one process's memory at a moment.
type procMemory struct {
	name            string
	rssKiB, peakKiB int64
}

// memory reads the memory of every process of the group, named as
// procLabels names them.
func (g *procGroup) memory() ([]procMemory, error) {
	names := make([]string, len(g.procs))
	for i, p := range g.procs {
		names[i] = p.name
	}
	out := make([]procMemory, len(g.procs))
	for i, label := range procLabels(names) {
		rss, peak, err := procstat.Memory(g.procs[i].cmd.Process.Pid)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", label, err)
		}
		out[i] = procMemory{name: label, rssKiB: rss, peakKiB: peak}
	}
	return out, nil
}

// procLabels tells processes of the same name apart by number (replicas),
// so that each has figures of its own.
func procLabels(names []string) []string {
	count := map[string]int{}
	for _, n := range names {
		count[n]++
	}
	seen := map[string]int{}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n
		if count[n] > 1 {
			seen[n]++
			out[i] = fmt.Sprintf("%s #%d", n, seen[n])
		}
	}
	return out
}

// rssPerSession is the growth from rss0 to rss1 (KiB) in bytes per
// session of the n added in between.
func rssPerSession(rss0, rss1 int64, n int) float64 {
	if n <= 0 {
		return 0
	}
	return float64(rss1-rss0) * 1024 / float64(n)
}

// settleScale turns each waiting-sessions case's ratios into targets:
// neither listing one's own sessions nor creating one may slow down with
// the number of other users' sessions.
func (r *Results) settleScale() {
	for _, c := range r.Cases {
		if c.Skipped != "" {
			continue
		}
		for _, m := range []string{scaleListOwnRatio, scaleListSpreadRatio, scaleListNoneRatio, scaleCreateRatio} {
			if s := c.Metrics[m]; s != nil && len(s.Values) > 0 {
				r.target(fmt.Sprintf("%s: %s <= %.1f", c.Name, m, scaleSlowdown), s.Median, scaleSlowdown, true)
			}
		}
	}
}
