package session_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/services/rpc"
)

// testOutbox stands in for a replica that stored a change with its events
// (the outbox) and died before it published them: it writes the record
// directly. Whatever request comes next on the session publishes them
// first, once each — looking them up in the stream when the write is older
// than the stream's de-duplication window lets it rely on.
func (w *world) testOutbox(t *testing.T) {
	st := w.h.Stack.Store
	// completed is the write of bob's report that completes a session
	// alice reported on; published says whether its events reached the
	// stream before the writer died.
	completed := func(t *testing.T, published bool, age time.Duration) *api.Session {
		ctx := testCtx(t)
		s := w.joined(t)
		if _, err := w.alice.Report(ctx, s.ID, checks("x")); err != nil {
			t.Fatal(err)
		}
		if published {
			if _, err := w.bob.Report(ctx, s.ID, checks("x")); err != nil {
				t.Fatal(err)
			}
		}
		sess, rev, err := st.GetSession(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !published {
			completeUnpublished(sess)
		}
		sess.UpdatedAt = time.Now().Add(-age).UTC()
		if _, err := st.UpdateSession(ctx, sess, rev, time.Hour); err != nil {
			t.Fatal(err)
		}
		return sess
	}
	const old = 3 * time.Minute // past the de-duplication window
	refusedCancel := func(ctx context.Context, id string) {
		if _, err := w.alice.Cancel(ctx, id, ""); api.CodeOf(err) != api.CodeConflict {
			t.Errorf("cancel of a completed session: %v, want conflict", err)
		}
	}
	tests := []struct {
		name      string
		published bool
		age       time.Duration
		next      func(ctx context.Context, id string)
	}{
		{"unpublished, a refused request next", false, 0, refusedCancel},
		{"unpublished long ago, a refused request next", false, old, refusedCancel},
		{"published long ago, a refused request next", true, old, refusedCancel},
		{"unpublished, alice's report sent again next", false, 0, func(ctx context.Context, id string) {
			if _, err := w.alice.Report(ctx, id, checks("x")); err != nil {
				t.Errorf("alice's report sent again: %v, want it answered as done", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := completed(t, tc.published, tc.age)
			tc.next(ctx, s.ID)
			wt, err := openWatch(t, w.h.ConnFor(w.alice), w.alice.Token(), s.ID, false)
			if err != nil {
				t.Fatal(err)
			}
			evs := wt.until(t, isEvent(s.ID, api.EventCompleted))
			if got, want := types(evs), "created,joined,reported,reported,completed"; got != want {
				t.Fatalf("a watcher saw %s, want %s", got, want)
			}
			checkCounts(t, eventCounts(t, w.svc, s.ID), map[api.EventType]uint64{
				api.EventCreated: 1, api.EventJoined: 1, api.EventReported: 2, api.EventCompleted: 1,
			})
		})
	}
}

// testRetriedRequests sends requests again with the same request id, as the
// client does when an answer is lost: each is answered as its first
// attempt was, and applied once.
func (w *world) testRetriedRequests(t *testing.T) {
	ctx := testCtx(t)
	call := func(as string, subject, id string, req any) (*api.Session, error) {
		var s api.Session
		return &s, rpc.CallID(ctx, w.h.ConnFor(w.as(as)), subject, w.as(as).Token(), id, req, &s)
	}
	createID := api.NewID()
	first, err := call("alice", api.SubjectSessionCreate, createID, createReq("bob"))
	if err != nil {
		t.Fatal(err)
	}
	if first.ID != createID {
		t.Errorf("created session %s, want the request id %s", first.ID, createID)
	}
	again, err := call("alice", api.SubjectSessionCreate, createID, createReq("bob"))
	if err != nil || again.ID != first.ID || again.State != api.StateWaiting {
		t.Fatalf("create sent again: %+v, %v; want session %s", again, err, first.ID)
	}
	if _, err := call("carol", api.SubjectSessionCreate, createID, createReq("bob")); api.CodeOf(err) != api.CodeConflict {
		t.Errorf("another user's create with a used request id: %v, want conflict", err)
	}
	changed := createReq("bob")
	changed.Manifest.Files[0].Size++
	if _, err := call("alice", api.SubjectSessionCreate, createID, changed); api.CodeOf(err) != api.CodeConflict {
		t.Errorf("another create with a used request id: %v, want conflict", err)
	}
	joinID := api.NewID()
	for range 2 {
		if s, err := call("bob", api.SubjectSessionJoin, joinID, api.JoinRequest{SessionID: first.ID}); err != nil || s.State != api.StateJoined {
			t.Fatalf("join: %+v, %v", s, err)
		}
	}
	if _, err := call("bob", api.SubjectSessionJoin, api.NewID(), api.JoinRequest{SessionID: first.ID}); api.CodeOf(err) != api.CodeConflict {
		t.Errorf("a second join (a new request): %v, want conflict", err)
	}
	report := api.ReportRequest{SessionID: first.ID, Report: checks("x")}
	reportID := api.NewID()
	for range 2 {
		if _, err := call("alice", api.SubjectSessionReport, reportID, report); err != nil {
			t.Fatalf("report: %v", err)
		}
	}
	// A different outcome is a different report, whatever its id.
	other := api.ReportRequest{SessionID: first.ID, Report: checks("y")}
	if _, err := call("alice", api.SubjectSessionReport, api.NewID(), other); api.CodeOf(err) != api.CodeConflict {
		t.Errorf("a second, different report: %v, want conflict", err)
	}
	if _, err := call("bob", api.SubjectSessionReport, api.NewID(), report); err != nil {
		t.Fatal(err)
	}
	// Alice's report once more, its answer lost before bob's report: done.
	if s, err := call("alice", api.SubjectSessionReport, reportID, report); err != nil || s.State != api.StateCompleted {
		t.Errorf("report sent again after the session completed: %+v, %v", s, err)
	}
	// The create once more, after the session moved on: still its session.
	if s, err := call("alice", api.SubjectSessionCreate, createID, createReq("bob")); err != nil || s.ID != first.ID || s.State != api.StateCompleted {
		t.Errorf("create sent again after the session completed: %+v, %v", s, err)
	}
	if s, err := w.alice.Get(ctx, first.ID); err != nil || s.Outbox != nil || s.Request != "" {
		t.Errorf("get shows the server's bookkeeping: %+v, %v", s, err)
	}
	checkCounts(t, eventCounts(t, w.svc, first.ID), map[api.EventType]uint64{
		api.EventCreated: 1, api.EventJoined: 1, api.EventReported: 2, api.EventCompleted: 1,
	})
	var bad api.Session
	err = rpc.CallID(ctx, w.h.ConnFor(w.alice), api.SubjectSessionCreate, w.alice.Token(), "not-an-id", createReq("bob"), &bad)
	if api.CodeOf(err) != api.CodeInvalid || !strings.Contains(err.Error(), "request id") {
		t.Errorf("a malformed request id: %v, want invalid", err)
	}
}

// completeUnpublished makes sess, joined with alice's report, the record of
// bob's report that completes it, as a replica stores it before it
// publishes the events in the outbox.
func completeUnpublished(sess *api.Session) {
	rep := checks("x")
	rep.At = time.Now().UTC()
	sess.Reports[api.RoleResponder] = rep
	sess.State = api.StateCompleted
	ev := func(typ api.EventType, n int) api.Event {
		return api.Event{
			ID: fmt.Sprintf("%s.test.%d.%s", sess.ID, n, typ), Type: typ, Session: sess.ID,
			State: api.StateCompleted, Initiator: "alice", Responder: "bob", Actor: "bob", At: rep.At,
		}
	}
	reported := ev(api.EventReported, 0)
	reported.Role, reported.Report = api.RoleResponder, &rep
	sess.Outbox = []api.Event{reported, ev(api.EventCompleted, 1)}
}
