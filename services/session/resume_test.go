package session_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/services/devstack/devstacktest"
	"github.com/sftproject/sft/services/rpc"
)

// joinAt joins as responder; with addr the responder listens there.
func joinAt(ctx context.Context, c *client.Client, id, addr string) (*api.Session, error) {
	var s api.Session
	return &s, rpc.Call(ctx, c.Conn(), api.SubjectSessionJoin, c.Token(), api.JoinRequest{SessionID: id, PeerAddrs: addrList(addr)}, &s)
}

// resume re-attaches c to a session; addr is the listener's new address.
func resume(ctx context.Context, c *client.Client, id, addr string) (*api.Session, error) {
	var s api.Session
	return &s, rpc.Call(ctx, c.Conn(), api.SubjectSessionResume, c.Token(), api.ResumeRequest{SessionID: id, PeerAddrs: addrList(addr)}, &s)
}

// addrList is the address list of one comma-separated string ("": none).
func addrList(addrs string) []string {
	if addrs == "" {
		return nil
	}
	return strings.Split(addrs, ",")
}

// peerAddr is a session's announced addresses, comma-separated.
func peerAddr(s *api.Session) string { return strings.Join(s.PeerAddrs, ",") }

// createdAddr is the initiator's address in every session createReq opens.
var createdAddr = strings.Join(createReq("bob").PeerAddrs, ",")

func (w *world) testJoinListener(t *testing.T) {
	tests := []struct {
		name     string
		addr     string
		code     api.Code
		listener api.Role
		peerAddr string
	}{
		{"initiator listens", "", "", api.RoleInitiator, createdAddr},
		{"responder listens", "192.0.2.7:5000", "", api.RoleResponder, "192.0.2.7:5000"},
		{"responder listens on IPv6", "[::1]:1", "", api.RoleResponder, "[::1]:1"},
		{"responder listens at several", "192.0.2.7:5000,[2001:db8::7]:5000", "", api.RoleResponder, "192.0.2.7:5000,[2001:db8::7]:5000"},
		{"too many addresses", strings.Repeat("192.0.2.7:5000,", api.MaxPeerAddrs) + "192.0.2.7:5000", api.CodeInvalid, "", ""},
		{"no port", "192.0.2.7", api.CodeInvalid, "", ""},
		{"port 0", "192.0.2.7:0", api.CodeInvalid, "", ""},
		{"port 70000", "192.0.2.7:70000", api.CodeInvalid, "", ""},
		{"empty host", ":5000", api.CodeInvalid, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := w.create(t, "alice", "bob")
			if s.Listener != api.RoleInitiator {
				t.Errorf("created with listener %q, want %s", s.Listener, api.RoleInitiator)
			}
			got, err := joinAt(ctx, w.bob, s.ID, tc.addr)
			wantCode(t, "join", err, tc.code)
			stored, err := w.alice.Get(ctx, s.ID)
			if err != nil {
				t.Fatal(err)
			}
			if tc.code != "" {
				// A refused join changes nothing.
				if stored.State != api.StateWaiting || stored.Listener != api.RoleInitiator || peerAddr(stored) != createdAddr {
					t.Errorf("after a refused join: %s, listener %s at %s", stored.State, stored.Listener, peerAddr(stored))
				}
				if n := eventCounts(t, w.svc, s.ID)[api.EventJoined]; n != 0 {
					t.Errorf("%d joined events after a refused join", n)
				}
				return
			}
			for who, sess := range map[string]*api.Session{"join reply": got, "alice's read": stored} {
				if sess.State != api.StateJoined || sess.Listener != tc.listener || peerAddr(sess) != tc.peerAddr {
					t.Errorf("%s: %s, listener %s at %s; want joined, %s at %s", who, sess.State, sess.Listener, peerAddr(sess), tc.listener, tc.peerAddr)
				}
			}
			if n := eventCounts(t, w.svc, s.ID)[api.EventJoined]; n != 1 {
				t.Errorf("%d joined events, want 1", n)
			}
		})
	}
}

func (w *world) testResume(t *testing.T) {
	const newAddr = "198.51.100.9:7000"
	waiting := func(t *testing.T) *api.Session { return w.create(t, "alice", "bob") }
	joined := func(t *testing.T) *api.Session { return w.joined(t) }
	responderListens := func(t *testing.T) *api.Session {
		s := w.create(t, "alice", "bob")
		s, err := joinAt(testCtx(t), w.bob, s.ID, "192.0.2.7:5000")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	reported := func(t *testing.T) *api.Session {
		s := w.joined(t)
		s, err := w.alice.Report(testCtx(t), s.ID, checks("x"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	ended := func(end func(id string) error) func(*testing.T) *api.Session {
		return func(t *testing.T) *api.Session {
			s := w.joined(t)
			if err := end(s.ID); err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	completed := ended(func(id string) error {
		for _, c := range []*client.Client{w.alice, w.bob} {
			if _, err := c.Report(testCtx(t), id, checks("x")); err != nil {
				return err
			}
		}
		return nil
	})
	failed := ended(func(id string) error { _, err := w.bob.Report(testCtx(t), id, failure("disk full")); return err })
	cancelled := ended(func(id string) error { _, err := w.alice.Cancel(testCtx(t), id, ""); return err })

	tests := []struct {
		name  string
		start func(*testing.T) *api.Session
		as    string
		addr  string
		code  api.Code
		msg   string // in the error message
		// relayOnly: a listener resuming with no address, reachable
		// through the relay only from now on.
		relayOnly bool
	}{
		{name: "waiting initiator", start: waiting, as: "alice", addr: newAddr},
		{name: "waiting initiator, relay only", start: waiting, as: "alice", relayOnly: true},
		{name: "waiting responder", start: waiting, as: "bob", code: api.CodeConflict, msg: "join it"},
		{name: "waiting responder with address", start: waiting, as: "bob", addr: newAddr, code: api.CodeConflict, msg: "join it"},
		{name: "joined listener", start: joined, as: "alice", addr: newAddr},
		{name: "joined listener, relay only", start: joined, as: "alice", relayOnly: true},
		{name: "joined listener, port 0", start: joined, as: "alice", addr: "198.51.100.9:0", code: api.CodeInvalid},
		{name: "joined listener, no port", start: joined, as: "alice", addr: "198.51.100.9", code: api.CodeInvalid},
		{name: "joined dialer", start: joined, as: "bob"},
		{name: "joined dialer with address", start: joined, as: "bob", addr: newAddr, code: api.CodeInvalid, msg: "without peer_addrs"},
		{name: "listening responder", start: responderListens, as: "bob", addr: newAddr},
		{name: "listening responder, relay only", start: responderListens, as: "bob", relayOnly: true},
		{name: "dialing initiator", start: responderListens, as: "alice"},
		{name: "dialing initiator with address", start: responderListens, as: "alice", addr: newAddr, code: api.CodeInvalid, msg: "without peer_addrs"},
		{name: "after a report", start: reported, as: "bob"},
		{name: "outsider", start: joined, as: "carol", code: api.CodeForbidden},
		{name: "admin", start: joined, as: devstacktest.Admin, code: api.CodeForbidden},
		{name: "completed", start: completed, as: "alice", addr: newAddr, code: api.CodeConflict, msg: "completed"},
		{name: "failed", start: failed, as: "bob", code: api.CodeConflict, msg: "disk full"},
		{name: "cancelled", start: cancelled, as: "bob", code: api.CodeConflict, msg: "cancelled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			before, err := w.alice.Get(ctx, tc.start(t).ID)
			if err != nil {
				t.Fatal(err)
			}
			counts := eventCounts(t, w.svc, before.ID)
			got, err := resume(ctx, w.as(tc.as), before.ID, tc.addr)
			wantCode(t, tc.as+" resume", err, tc.code)
			if err != nil && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
			stored, err := w.alice.Get(ctx, before.ID)
			if err != nil {
				t.Fatal(err)
			}
			wantAddr, wantResumed := peerAddr(before), uint64(0)
			if tc.code == "" {
				wantResumed = 1
				if tc.addr != "" || tc.relayOnly {
					wantAddr = tc.addr
				}
				if got.ID != before.ID || peerAddr(got) != wantAddr || got.State != before.State || got.Listener != before.Listener {
					t.Errorf("resume returned %+v", got)
				}
			}
			if peerAddr(stored) != wantAddr || stored.State != before.State || stored.Listener != before.Listener {
				t.Errorf("stored %s, listener %s at %s; want %s, listener %s at %s",
					stored.State, stored.Listener, peerAddr(stored), before.State, before.Listener, wantAddr)
			}
			after := eventCounts(t, w.svc, before.ID)
			if after[api.EventResumed] != wantResumed {
				t.Errorf("%d resumed events, want %d", after[api.EventResumed], wantResumed)
			}
			// Nothing but the resumed event was added: no earlier event republished under a new id.
			delete(after, api.EventResumed)
			for typ, n := range after {
				if counts[typ] != n {
					t.Errorf("%d %s events after the resume, %d before", n, typ, counts[typ])
				}
			}
		})
	}
	t.Run("unknown session", func(t *testing.T) {
		_, err := resume(testCtx(t), w.alice, randomID(t), newAddr)
		wantCode(t, "resume", err, api.CodeNotFound)
	})
	t.Run("malformed id", func(t *testing.T) {
		_, err := resume(testCtx(t), w.alice, "NOT-AN-ID", newAddr)
		wantCode(t, "resume", err, api.CodeInvalid)
	})
}

// testResumeFlow runs a transfer whose peer link drops once, with the
// requests spread over the replicas: every event reaches a watcher once,
// in order, and the listener's new address is what the dialer reads.
func (w *world) testResumeFlow(t *testing.T) {
	for _, responderListens := range []bool{false, true} {
		t.Run(fmt.Sprintf("responder listens %v", responderListens), func(t *testing.T) {
			ctx := testCtx(t)
			s := w.create(t, "alice", "bob")
			listener, dialer, joinAddr := w.alice, w.bob, ""
			if responderListens {
				listener, dialer, joinAddr = w.bob, w.alice, "192.0.2.7:5000"
			}
			steps := []func() (*api.Session, error){
				func() (*api.Session, error) { return joinAt(ctx, w.bob, s.ID, joinAddr) },
				func() (*api.Session, error) { return resume(ctx, listener, s.ID, "198.51.100.9:7000") },
				func() (*api.Session, error) { return resume(ctx, dialer, s.ID, "") },
				func() (*api.Session, error) { return w.alice.Report(ctx, s.ID, checks("data")) },
				func() (*api.Session, error) { return w.bob.Report(ctx, s.ID, checks("data")) },
			}
			for i, step := range steps {
				got, err := step()
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if i == 2 && peerAddr(got) != "198.51.100.9:7000" {
					t.Errorf("the dialer reads %s, not the listener's new address", peerAddr(got))
				}
			}
			evs, err := collectWatch(ctx, w.alice, s.ID)
			if !errors.Is(err, client.ErrWatchEnded) {
				t.Fatalf("watch: %v", err)
			}
			checkFlow(t, evs, listener.User(), dialer.User())
			checkCounts(t, eventCounts(t, w.svc, s.ID), map[api.EventType]uint64{
				api.EventCreated: 1, api.EventJoined: 1, api.EventResumed: 2, api.EventReported: 2, api.EventCompleted: 1,
			})
		})
	}
}

// checkFlow checks the events of a create, join, two resumes (listener
// first when it is named) and two reports.
func checkFlow(t *testing.T, evs []api.Event, listener, dialer string) {
	t.Helper()
	if got := types(evs); got != "created,joined,resumed,resumed,reported,reported,completed" {
		t.Fatalf("a watcher saw %s", got)
	}
	seen := map[string]bool{}
	for i, ev := range evs {
		if seen[ev.ID] {
			t.Errorf("event id %s twice", ev.ID)
		}
		seen[ev.ID] = true
		if i > 0 && ev.Seq <= evs[i-1].Seq {
			t.Errorf("event %d: sequence %d after %d", i, ev.Seq, evs[i-1].Seq)
		}
	}
	resumed := map[string]api.Role{evs[2].Actor: evs[2].Role, evs[3].Actor: evs[3].Role}
	want := map[string]api.Role{"alice": api.RoleInitiator, "bob": api.RoleResponder}
	if len(resumed) != 2 || resumed["alice"] != want["alice"] || resumed["bob"] != want["bob"] {
		t.Errorf("resumed events by %s (%s) and %s (%s)", evs[2].Actor, evs[2].Role, evs[3].Actor, evs[3].Role)
	}
	if listener != "" && (evs[2].Actor != listener || evs[3].Actor != dialer) {
		t.Errorf("resumed by %s then %s, want %s then %s", evs[2].Actor, evs[3].Actor, listener, dialer)
	}
	for _, ev := range evs[2:4] {
		if ev.State != api.StateJoined {
			t.Errorf("resumed event in state %s", ev.State)
		}
	}
}

func checkCounts(t *testing.T, got, want map[api.EventType]uint64) {
	t.Helper()
	for typ, n := range got {
		if want[typ] != n {
			t.Errorf("%d %s events in the stream, want %d", n, typ, want[typ])
		}
	}
	for typ, n := range want {
		if _, ok := got[typ]; !ok {
			t.Errorf("no %s event in the stream, want %d", typ, n)
		}
	}
}

// testConcurrentResumes races both members' resumes, then their reports,
// across replicas: whichever replica reads a write before its request
// published the event, each event reaches the stream once.
func (w *world) testConcurrentResumes(t *testing.T) {
	ctx := testCtx(t)
	for round := range 10 {
		s := w.joined(t)
		both := func(f func(c *client.Client) error) {
			t.Helper()
			for i, err := range parallel(2, func(i int) error { return f([]*client.Client{w.alice, w.bob}[i]) }) {
				if err != nil {
					t.Fatalf("round %d: member %d: %v", round, i, err)
				}
			}
		}
		both(func(c *client.Client) error {
			addr := ""
			if c == w.alice {
				addr = "198.51.100.9:7000"
			}
			_, err := resume(ctx, c, s.ID, addr)
			return err
		})
		both(func(c *client.Client) error { _, err := c.Report(ctx, s.ID, checks("same")); return err })
		evs, err := collectWatch(ctx, w.bob, s.ID)
		if !errors.Is(err, client.ErrWatchEnded) {
			t.Fatalf("round %d: watch: %v", round, err)
		}
		checkFlow(t, evs, "", "")
		checkCounts(t, eventCounts(t, w.svc, s.ID), map[api.EventType]uint64{
			api.EventCreated: 1, api.EventJoined: 1, api.EventResumed: 2, api.EventReported: 2, api.EventCompleted: 1,
		})
	}
}

// testUnpublishedWrite stands in for a replica from before the outbox that
// wrote a change and has not published its event yet (or died before it
// could): it changes the stored record directly, leaving no outbox. The
// next request on the session publishes the missing event before its own,
// as that write's own event, not an earlier one again.
func (w *world) testUnpublishedWrite(t *testing.T) {
	st := w.h.Stack.Store
	tests := []struct {
		name  string
		start func(*testing.T) *api.Session
		write func(*api.Session) // the change nobody published
		next  func(ctx context.Context, id string) error
		want  string
		at    int                              // the republished event's place in want
		check func(t *testing.T, ev api.Event) // the republished event
	}{
		{
			name:  "resume after the join",
			start: w.joined,
			write: func(s *api.Session) {
				s.PeerAddrs, s.LastEvent, s.LastRole = []string{"198.51.100.9:7000"}, api.EventResumed, api.RoleInitiator
			},
			next: func(ctx context.Context, id string) error { _, err := w.bob.Report(ctx, id, checks("x")); return err },
			want: "created,joined,resumed,reported",
			at:   2,
			check: func(t *testing.T, ev api.Event) {
				if ev.Actor != "alice" || ev.Role != api.RoleInitiator || ev.State != api.StateJoined {
					t.Errorf("republished %+v", ev)
				}
			},
		},
		{
			name: "resume after a report",
			start: func(t *testing.T) *api.Session {
				s := w.joined(t)
				if _, err := w.alice.Report(testCtx(t), s.ID, checks("x")); err != nil {
					t.Fatal(err)
				}
				return s
			},
			write: func(s *api.Session) { s.LastEvent, s.LastRole = api.EventResumed, api.RoleResponder },
			next:  func(ctx context.Context, id string) error { _, err := w.bob.Report(ctx, id, checks("x")); return err },
			want:  "created,joined,reported,resumed,reported,completed",
			at:    3,
			check: func(t *testing.T, ev api.Event) {
				if ev.Actor != "bob" || ev.Role != api.RoleResponder || ev.Report != nil {
					t.Errorf("republished %+v", ev)
				}
			},
		},
		{
			name:  "resume while waiting",
			start: func(t *testing.T) *api.Session { return w.create(t, "alice", "bob") },
			write: func(s *api.Session) {
				s.PeerAddrs, s.LastEvent, s.LastRole = []string{"198.51.100.9:7000"}, api.EventResumed, api.RoleInitiator
			},
			next: func(ctx context.Context, id string) error { _, err := w.bob.Join(ctx, id, nil); return err },
			want: "created,resumed,joined",
			at:   1,
			check: func(t *testing.T, ev api.Event) {
				if ev.Actor != "alice" || ev.State != api.StateWaiting {
					t.Errorf("republished %+v", ev)
				}
			},
		},
		{
			name:  "report",
			start: w.joined,
			write: func(s *api.Session) {
				rep := checks("x")
				rep.At = time.Now().UTC()
				s.Reports = map[api.Role]api.Report{api.RoleInitiator: rep}
				s.LastEvent, s.LastRole = api.EventReported, api.RoleInitiator
			},
			next: func(ctx context.Context, id string) error { _, err := resume(ctx, w.bob, id, ""); return err },
			want: "created,joined,reported,resumed",
			at:   2,
			check: func(t *testing.T, ev api.Event) {
				if ev.Actor != "alice" || ev.Role != api.RoleInitiator || ev.Report == nil || ev.Report.Bytes != 1 {
					t.Errorf("republished %+v", ev)
				}
			},
		},
		{
			// A replica that predates LastEvent joined: the last write is inferred.
			name:  "join by an older replica",
			start: func(t *testing.T) *api.Session { return w.create(t, "alice", "bob") },
			write: func(s *api.Session) { s.State, s.LastEvent, s.LastRole, s.Listener = api.StateJoined, "", "", "" },
			next: func(ctx context.Context, id string) error {
				_, err := resume(ctx, w.alice, id, "198.51.100.9:7000")
				return err
			},
			want: "created,joined,resumed",
			at:   1,
			check: func(t *testing.T, ev api.Event) {
				if ev.Actor != "bob" || ev.State != api.StateJoined {
					t.Errorf("republished %+v", ev)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := tc.start(t)
			sess, rev, err := st.GetSession(ctx, s.ID)
			if err != nil {
				t.Fatal(err)
			}
			tc.write(sess)
			sess.UpdatedAt = time.Now().UTC()
			sess.Outbox, sess.Request = nil, ""
			if _, err := st.UpdateSession(ctx, sess, rev, time.Hour); err != nil {
				t.Fatal(err)
			}
			if err := tc.next(ctx, s.ID); err != nil {
				t.Fatal(err)
			}
			want := strings.Split(tc.want, ",")
			wt, err := openWatch(t, w.h.ConnFor(w.alice), w.alice.Token(), s.ID, false)
			if err != nil {
				t.Fatal(err)
			}
			evs := wt.until(t, isEvent(s.ID, api.EventType(want[len(want)-1])))
			if got := types(evs); got != tc.want {
				t.Fatalf("a watcher saw %s, want %s", got, tc.want)
			}
			tc.check(t, evs[tc.at])
			counts := map[api.EventType]uint64{}
			for _, typ := range want {
				counts[api.EventType(typ)]++
			}
			checkCounts(t, eventCounts(t, w.svc, s.ID), counts)
		})
	}
}
