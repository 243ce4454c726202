package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/services/devstack/devstacktest"
)

// `sft-cli admin status` shows every replica of every service, two of
// each here, with their endpoints' figures and the open sessions; to
// anyone but an admin it is forbidden.
func TestAdminStatus(t *testing.T) {
	h := start(t, nil)
	for _, svc := range broker.Services() {
		h.Replica(svc)
	}
	ctx := within(t, time.Minute)
	alice, root := h.as("alice"), h.as(devstacktest.Admin)

	// One open session, and one request the status must count.
	if _, err := alice.client().Create(ctx, api.CreateRequest{Responder: "bob", PeerAddrs: []string{"127.0.0.1:9"}, Manifest: api.Manifest{Files: []api.File{{Name: "a.txt", Size: 1}}}}); err != nil {
		t.Fatal(err)
	}

	var rep api.StatusReply
	waitFor(t, "two replicas of each service and the open session", func() bool {
		out, errOut, err := root.run(ctx, "admin", "status", "--json")
		if err != nil {
			t.Fatalf("admin status: %v (%s)", err, errOut)
		}
		rep = api.StatusReply{}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("admin status --json: %v\n%s", err, out)
		}
		replicas := map[string]int{}
		for _, s := range rep.Services {
			replicas[s.Name]++
		}
		return replicas["sft-auth"] == 2 && replicas["sft-session"] == 2 && replicas["sft-key"] == 2 &&
			rep.OpenSessions[api.StateWaiting] == 1
	})
	seen := map[string]bool{}
	var created int
	for _, s := range rep.Services {
		if seen[s.Replica] {
			t.Errorf("replica %s listed twice", s.Replica)
		}
		seen[s.Replica] = true
		if s.Version == "" || s.Started.IsZero() || s.Uptime(rep.At) < 0 || len(s.Endpoints) == 0 {
			t.Errorf("replica %+v lacks its version, start or endpoints", s)
		}
		want := h.Cfg.Instances
		if s.Name == "sft-auth" {
			want = 1
		}
		if s.Instances != want {
			t.Errorf("%s replica %s: %d instances, want %d", s.Name, s.Replica, s.Instances, want)
		}
		for _, e := range s.Endpoints {
			if e.Subject == api.SubjectSessionCreate {
				created += e.Requests
			}
		}
	}
	if created != 1 {
		t.Errorf("the replicas answered %d create requests together, want 1", created)
	}

	out, _, err := root.run(ctx, "admin", "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sft-auth", "sft-session", "sft-key", "create", "open sessions: joined 0, waiting 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("admin status does not show %q:\n%s", want, out)
		}
	}

	if _, _, err := alice.run(ctx, "admin", "status"); api.CodeOf(err) != api.CodeForbidden {
		t.Errorf("a user's admin status: %v, want forbidden", err)
	}
}
