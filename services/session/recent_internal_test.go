package session

import (
	"testing"
	"time"

	"github.com/sftproject/sft/api"
)

// What recent hands out is a copy: a change to it leaves the remembered
// record as it was stored. It forgets ended sessions, records past their
// keep and sessions due to expire, and remembers at most max.
func TestRecentRecords(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	live := func(id string) *api.Session {
		return &api.Session{
			ID: id, State: api.StateJoined, ExpiresAt: t0.Add(time.Hour),
			PeerAddrs: []string{"192.0.2.1:9"}, Manifest: api.Manifest{Files: []api.File{{Name: "a", Size: 1}}},
			Reports: map[api.Role]api.Report{api.RoleInitiator: {OK: true}},
			Outbox:  []api.Event{{ID: "e1", Type: api.EventJoined}},
		}
	}
	r := newRecent(time.Minute, 2)
	r.put(t0, live("a"), 7)
	got, rev, ok := r.get(t0, "a")
	if !ok || rev != 7 || got.ID != "a" {
		t.Fatalf("get = %v, %d, %v; want a at revision 7", got, rev, ok)
	}
	got.State = api.StateCompleted
	got.PeerAddrs[0] = "changed"
	got.Manifest.Files[0].Name = "changed"
	got.Reports[api.RoleResponder] = api.Report{}
	got.Outbox[0].ID = "changed"
	again, _, _ := r.get(t0, "a")
	if again.State != api.StateJoined || again.PeerAddrs[0] != "192.0.2.1:9" || again.Manifest.Files[0].Name != "a" ||
		len(again.Reports) != 1 || again.Outbox[0].ID != "e1" {
		t.Fatalf("a change to a copy reached the remembered record: %+v", again)
	}

	for _, tc := range []struct {
		name string
		at   time.Time
		id   string
		want bool
	}{
		{"within keep", t0.Add(59 * time.Second), "a", true},
		{"past keep", t0.Add(61 * time.Second), "a", false},
		{"never stored", t0, "b", false},
	} {
		if _, _, ok := r.get(tc.at, tc.id); ok != tc.want {
			t.Errorf("%s: remembered %v, want %v", tc.name, ok, tc.want)
		}
	}

	due := live("due")
	due.ExpiresAt = t0.Add(time.Second)
	r.put(t0, due, 1)
	if _, _, ok := r.get(t0.Add(time.Second), "due"); ok {
		t.Error("a session due to expire was handed out")
	}
	r.put(t0, live("full"), 1) // a and due fill it
	if _, _, ok := r.get(t0, "full"); ok {
		t.Error("remembered more than max")
	}
	ended := live("a")
	ended.State = api.StateCompleted
	r.put(t0, ended, 8)
	if _, _, ok := r.get(t0, "a"); ok {
		t.Error("an ended session is still remembered")
	}
	r.put(t0, live("full"), 2) // room again
	r.forget("full")
	if _, _, ok := r.get(t0, "full"); ok {
		t.Error("a forgotten session is still remembered")
	}
}
