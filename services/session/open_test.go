package session_test

import (
	"maps"
	"testing"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
)

// Every replica counts the open sessions of all of them, by state, from
// the store: those it served and those another replica served alike.
func TestOpenSessionsAcrossReplicas(t *testing.T) {
	t.Parallel()
	b := startBareStack(t)
	ctx := testCtx(t)
	replicas := []*replica{b.startReplica("a"), b.startReplica("b")}
	addUsers(t, replicas[0].store, "alice", "bob")
	alice, bob := b.client("alice"), b.client("bob")

	var ids []string
	create := func() {
		for range 3 {
			s, err := alice.Create(ctx, createReq("bob"))
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			ids = append(ids, s.ID)
		}
	}
	join := func(i int) func() {
		return func() {
			if _, err := bob.Join(ctx, ids[i], nil); err != nil {
				t.Fatalf("join: %v", err)
			}
		}
	}
	complete := func(i int) func() {
		return func() {
			for _, c := range []*client.Client{alice, bob} {
				if _, err := c.Report(ctx, ids[i], checks("x")); err != nil {
					t.Fatalf("report: %v", err)
				}
			}
		}
	}
	for _, step := range []struct {
		name            string
		do              func()
		waiting, joined int
	}{
		{"none", func() {}, 0, 0},
		{"three created", create, 3, 0},
		{"one joined", join(0), 2, 1},
		{"the joined one completed", complete(0), 2, 0},
		{"one cancelled", func() {
			if _, err := alice.Cancel(ctx, ids[1], ""); err != nil {
				t.Fatalf("cancel: %v", err)
			}
		}, 1, 0},
		{"the last one joined", join(2), 0, 1},
	} {
		step.do()
		want := map[api.State]int{api.StateWaiting: step.waiting, api.StateJoined: step.joined}
		for _, r := range replicas {
			got, err := r.svc.OpenSessions(ctx)
			if err != nil {
				t.Fatalf("%s: replica %s: OpenSessions: %v", step.name, r.name, err)
			}
			if !maps.Equal(got, want) {
				t.Errorf("%s: replica %s counts %v, want %v", step.name, r.name, got, want)
			}
		}
	}
}
