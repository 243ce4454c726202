package session_test

import (
	"testing"
	"time"

	"github.com/sftproject/sft/api"
)

// A replica builds a session's next change on the record it stored last;
// when another replica moved the record on since, the change is judged on
// the stored record: neither refused nor applied on the remembered one.
func TestRememberedRecordMovedOn(t *testing.T) {
	b := startBareStack(t)
	r := b.startReplica("a")
	addUsers(t, r.store, "alice", "bob")
	ctx := testCtx(t)
	alice, bob := b.client("alice"), b.client("bob")
	elsewhere := b.store(b.serviceConn()) // writes as another replica would
	moveOn := func(id string, change func(*api.Session)) {
		t.Helper()
		sess, rev, err := elsewhere.GetSession(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		change(sess)
		if _, err := elsewhere.UpdateSession(ctx, sess, rev, time.Hour); err != nil {
			t.Fatal(err)
		}
	}

	s, err := alice.Create(ctx, createReq("bob"))
	if err != nil {
		t.Fatal(err)
	}
	// The replica remembers the session waiting, which would refuse a
	// report; it was joined elsewhere, so the report is taken.
	moveOn(s.ID, func(sess *api.Session) { sess.State = api.StateJoined })
	if _, err := alice.Report(ctx, s.ID, checks("x")); err != nil {
		t.Fatalf("a report to a session joined elsewhere: %v", err)
	}
	// The replica remembers it joined, which would take bob's report; it
	// was cancelled elsewhere, so the report is refused.
	moveOn(s.ID, func(sess *api.Session) { sess.State, sess.Reason = api.StateCancelled, "cancelled elsewhere" })
	_, err = bob.Report(ctx, s.ID, checks("x"))
	wantCode(t, "a report to a session cancelled elsewhere", err, api.CodeConflict)
	if got, err := alice.Get(ctx, s.ID); err != nil || got.State != api.StateCancelled {
		t.Fatalf("the session is %v (%v), want it cancelled as it was elsewhere", got, err)
	}
}
