package deploy_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/internal/hermetic"
)

// The cluster of deploy/nats-cluster as three nats-server processes on
// loopback, with the services and clients given all three URLs and the
// JetStream store kept on three replicas: a transfer completes, and one
// completes too when the node most clients are connected to dies
// (SIGKILL) while its session waits, with every event of that session
// delivered once and in order to a watcher connected throughout.
func TestNATSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a dozen processes")
	}
	natsBinary(t)
	bin := buildBinaries(t)
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	data := sftdCerts(t, filepath.Join(dir, "data"))
	base := append(hermetic.Home(home), "PATH="+os.Getenv("PATH"), "SFT_DATA_DIR="+data)

	nodes, natsURL := startNATSCluster(t, data)
	env := append(base,
		"SFT_NATS_URL="+natsURL,
		"SFT_NATS_CA_FILE="+data+"/pki/ca.pem",
		"SFT_NATS_REPLICAS=3",
		"SFT_STORE_BACKEND=jetstream",
	)
	var svcs []*proc
	for _, svc := range []string{"auth", "session", "key"} {
		svcs = append(svcs, start(t, svc, dir, env, bin("sftd"), svc))
	}
	for _, p := range svcs {
		p.waitFor(t, "serving on")
	}
	as := aliceAndBob(t, dir, env, bin)
	transfer := transfers(t, dir, 4<<20, as, bin)
	transfer("first", func(string) {})
	for _, s := range []string{api.EventStream, "SFT_TIMERS", "KV_SFT_SESSIONS", "KV_SFT_REVOKED_TOKENS"} {
		if n := stream(t, nodes[0].Monitor, s).Config.Replicas; n != 3 {
			t.Errorf("stream %s has %d replicas, want 3 (nats.replicas)", s, n)
		}
	}
	if !stream(t, nodes[0].Monitor, "SFT_TIMERS").Config.AllowMsgSchedules {
		t.Error("stream SFT_TIMERS does not allow the expiry schedules")
	}
	// A follower may answer a direct read before it has a write: the
	// state store reads from the leader.
	for _, s := range []string{"KV_SFT_SESSIONS", "KV_SFT_USERS", "KV_SFT_KEYS"} {
		if stream(t, nodes[0].Monitor, s).Config.AllowDirect {
			t.Errorf("bucket %s allows direct reads on 3 replicas", s)
		}
	}

	var watch *proc
	transfer("node-killed", func(id string) {
		watch = start(t, "watch", dir, as("alice"), bin("sft-cli"), "watch", "--session", id, "--json")
		watch.waitFor(t, `"type":"created"`)
		busiest, _ := busiestNode(t, nodes)
		dead := serverName(t, busiest.Monitor)
		busiest.kill()
		// Bob comes once the other two nodes have taken over every stream
		// the dead one led; the sender and the watcher wait through the
		// takeover.
		for _, n := range nodes {
			if n != busiest {
				waitLeaders(t, n.Monitor, dead)
				break
			}
		}
	})
	if err := watch.wait(startTimeout); err != nil {
		t.Fatalf("watch: %v\n%s", err, watch.output())
	}
	checkEventsOnce(t, watch.output())
}

// startNATSCluster runs the cluster of deploy/nats-cluster as three
// nats-server processes on loopback and returns them, once each is ready,
// with the URL list the services and clients take (nats.url).
func startNATSCluster(t *testing.T, data string) (nodes []*natsProc, url string) {
	t.Helper()
	// The layout deploy/nats-cluster/cluster.conf describes; the nodes
	// share it, each with a JetStream directory of its own.
	natsDir := natsLayout(t, data)
	// The flags put the routes on free ports; "localhost" is the DNS name
	// the server certificate has, as nats-1... have in production.
	ports := []string{freePort(t), freePort(t), freePort(t)}
	var routes []string
	for _, p := range ports {
		routes = append(routes, "nats-route://localhost:"+p)
	}
	for i, p := range ports {
		nodes = append(nodes, launchNATS(t, fmt.Sprintf("nats-cluster/nats-%d.conf", i+1), natsDir,
			"--cluster", "nats://127.0.0.1:"+p, "--routes", strings.Join(routes, ",")))
	}
	var urls []string
	for _, n := range nodes {
		n.ready(t)
		urls = append(urls, "tls://127.0.0.1:"+n.URL[strings.LastIndex(n.URL, ":")+1:])
	}
	return nodes, strings.Join(urls, ",")
}

// busiestNode is the node of nodes that serves the most clients, and how
// many it serves.
func busiestNode(t *testing.T, nodes []*natsProc) (*natsProc, int) {
	t.Helper()
	var busiest *natsProc
	most := -1
	for _, n := range nodes {
		if c := connections(t, n.Monitor); c > most {
			busiest, most = n, c
		}
	}
	return busiest, most
}

// checkEventsOnce checks a watch's JSON lines hold one session's events once
// each, from its creation to its completion, in order.
func checkEventsOnce(t *testing.T, out string) {
	t.Helper()
	var types []string
	seen := map[string]bool{}
	for line := range strings.Lines(out) {
		var ev api.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Type == "connection" {
			continue
		}
		if seen[ev.ID] {
			t.Errorf("event %s (%s) delivered twice", ev.ID, ev.Type)
		}
		seen[ev.ID] = true
		types = append(types, string(ev.Type))
	}
	got := strings.Join(types, " ")
	if !strings.HasPrefix(got, "created joined ") || !strings.HasSuffix(got, " completed") || strings.Count(got, "completed") != 1 {
		t.Fatalf("events of the session: %q, want created, joined, ..., completed\n%s", got, out)
	}
}

// serverName is the name of the node at monitor.
func serverName(t *testing.T, monitor string) string {
	t.Helper()
	var v struct {
		Name string `json:"server_name"`
	}
	getJSON(t, monitor+"/varz", &v)
	return v.Name
}

// waitLeaders waits until the node at monitor sees a leader other than
// dead for every stream.
func waitLeaders(t *testing.T, monitor, dead string) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		all := streams(t, monitor)
		moved := len(all) > 0
		for _, s := range all {
			if l := s.Cluster.Leader; l == "" || l == dead {
				moved = false
			}
		}
		if moved {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("streams still without a leader after %s: %+v", startTimeout, all)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// connections is how many clients the node at monitor serves.
func connections(t *testing.T, monitor string) int {
	t.Helper()
	var v struct {
		N int `json:"num_connections"`
	}
	getJSON(t, monitor+"/connz", &v)
	return v.N
}

// jszStream is what the monitoring endpoint /jsz tells of a stream.
type jszStream struct {
	Name   string `json:"name"`
	Config struct {
		Replicas          int  `json:"num_replicas"`
		AllowDirect       bool `json:"allow_direct"`
		AllowMsgSchedules bool `json:"allow_msg_schedules"`
	} `json:"config"`
	Cluster struct {
		Leader string `json:"leader"`
	} `json:"cluster"`
}

// streams lists the streams the node at monitor knows.
func streams(t *testing.T, monitor string) []jszStream {
	t.Helper()
	var v struct {
		Accounts []struct {
			Streams []jszStream `json:"stream_detail"`
		} `json:"account_details"`
	}
	getJSON(t, monitor+"/jsz?streams=true&config=true", &v)
	var out []jszStream
	for _, a := range v.Accounts {
		out = append(out, a.Streams...)
	}
	return out
}

// stream is a stream as the node at monitor reports it.
func stream(t *testing.T, monitor, name string) jszStream {
	t.Helper()
	for _, s := range streams(t, monitor) {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no stream %s on %s", name, monitor)
	return jszStream{}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}
