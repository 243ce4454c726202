package session_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/auth"
	"github.com/sftproject/sft/services/devstack/devstacktest"
	"github.com/sftproject/sft/services/rpc"
	"github.com/sftproject/sft/services/session"
	"github.com/sftproject/sft/services/store"
)

// TestSession runs the state machine against one stack with the default
// (long) TTL; expiry by time has its own stack in TestExpiry. Its many
// sessions share a few users, so the per-user limits (tested on their own
// in limits_test.go) are lifted.
func TestSession(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *config.Config) {
		c.Limits.OpenSessions = 1000
		c.Limits.SessionsPerMinute = 1000
	})
	t.Run("CreateRefused", w.testCreateRefused)
	t.Run("Create", w.testCreate)
	t.Run("StateMachine", w.testStateMachine)
	t.Run("CancelReasonSanitised", w.testCancelReason)
	t.Run("CancelJoinedEvent", w.testCancelJoinedEvent)
	t.Run("DeclineEvents", w.testDeclineEvents)
	t.Run("JoinListener", w.testJoinListener)
	t.Run("Resume", w.testResume)
	t.Run("UnpublishedWrite", w.testUnpublishedWrite)
	t.Run("Outbox", w.testOutbox)
	t.Run("RetriedRequests", w.testRetriedRequests)
	t.Run("GetAndList", w.testGetAndList)
	t.Run("LazyExpiry", w.testLazyExpiry)
	t.Run("SessionWatch", w.testSessionWatch)
	t.Run("WatchAllVisibility", w.testWatchAllVisibility)
	t.Run("WatchRefused", w.testWatchRefused)
	t.Run("WatchEndsWhenWatcherGone", w.testWatcherGone)
	t.Run("WatchCap", w.testWatchCap)
	// These spread requests over three replicas, started once and last: a
	// replica stopped while later subtests run could still take a request
	// and fail it as its context ends.
	t.Run("Replicated", func(t *testing.T) {
		extra := w.addReplicas(t, 2)
		defer logServed(t, extra)
		t.Run("ResumeFlow", w.testResumeFlow)
		t.Run("ConcurrentReports", w.testConcurrentReports)
		t.Run("ConcurrentJoins", w.testConcurrentJoins)
		t.Run("ConcurrentResumes", w.testConcurrentResumes)
	})
}

func (w *world) testCreateRefused(t *testing.T) {
	manifest := func(files ...api.File) func(*api.CreateRequest) {
		return func(r *api.CreateRequest) { r.Manifest = api.Manifest{Files: files} }
	}
	named := func(name string) func(*api.CreateRequest) { return manifest(api.File{Name: name, Size: 1}) }
	peer := func(addrs string) func(*api.CreateRequest) {
		return func(r *api.CreateRequest) { r.PeerAddrs = addrList(addrs) }
	}
	to := func(name string) func(*api.CreateRequest) { return func(r *api.CreateRequest) { r.Responder = name } }
	tests := []struct {
		name   string
		change func(*api.CreateRequest)
		want   api.Code
	}{
		{"empty responder", to(""), api.CodeInvalid},
		{"upper-case responder", to("Bob"), api.CodeInvalid},
		{"responder with dot", to("bob.x"), api.CodeInvalid},
		{"responder wildcard", to("*"), api.CodeInvalid},
		{"responder starting with digit", to("1bob"), api.CodeInvalid},
		{"responder too long", to("b" + strings.Repeat("o", 32)), api.CodeInvalid},
		{"sending to yourself", to("alice"), api.CodeInvalid},
		{"unknown responder", to("dave"), api.CodeNotFound},
		{"no files", manifest(), api.CodeInvalid},
		{"two entries with one name", manifest(api.File{Name: "a", Size: 1}, api.File{Name: "a", Size: 1}), api.CodeInvalid},
		{"negative size", manifest(api.File{Name: "a", Size: -2}), api.CodeInvalid},
		{"stream beside a file", manifest(api.File{Name: "a", Size: api.SizeUnknown}, api.File{Name: "b", Size: 1}), api.CodeInvalid},
		{"empty name", named(""), api.CodeInvalid},
		{"parent dir", named(".."), api.CodeInvalid},
		{"path traversal", named("../../etc/passwd"), api.CodeInvalid},
		{"absolute path", named("/etc/passwd"), api.CodeInvalid},
		{"backslash", named(`..\boot.ini`), api.CodeInvalid},
		{"control character", named("a\x1b[2Jb"), api.CodeInvalid},
		{"NUL", named("a\x00b"), api.CodeInvalid},
		{"drive prefix", named("C:evil"), api.CodeInvalid},
		{"windows device", named("nul.txt"), api.CodeInvalid},
		{"peer without port", peer("127.0.0.1"), api.CodeInvalid},
		{"peer port 0", peer("127.0.0.1:0"), api.CodeInvalid},
		{"peer port 70000", peer("127.0.0.1:70000"), api.CodeInvalid},
		{"peer negative port", peer("127.0.0.1:-1"), api.CodeInvalid},
		{"peer port name", peer("127.0.0.1:http"), api.CodeInvalid},
		{"peer empty host", peer(":4000"), api.CodeInvalid},
		{"peer one of two bad", peer("127.0.0.1:1,127.0.0.1"), api.CodeInvalid},
		{"peer too many", peer(strings.Repeat("127.0.0.1:1,", api.MaxPeerAddrs) + "127.0.0.1:1"), api.CodeInvalid},
		{"peer host not hex", func(r *api.CreateRequest) { r.PeerHost = "Not-Hex" }, api.CodeInvalid},
		{"peer host too long", func(r *api.CreateRequest) { r.PeerHost = strings.Repeat("a", 65) }, api.CodeInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := createReq("bob")
			tc.change(&req)
			_, err := w.alice.Create(testCtx(t), req)
			wantCode(t, "create", err, tc.want)
		})
	}
	t.Run("no token", func(t *testing.T) {
		_, err := client.New(w.h.Conn(), "", "").Create(testCtx(t), createReq("bob"))
		wantCode(t, "create without token", err, api.CodeUnauthorized)
	})
	t.Run("forged token", func(t *testing.T) {
		_, err := client.New(w.h.Conn(), "alice", w.alice.Token()+"x").Create(testCtx(t), createReq("bob"))
		wantCode(t, "create with forged token", err, api.CodeUnauthorized)
	})
	// Nothing refused may have left a session behind.
	for _, u := range []*client.Client{w.alice, w.bob} {
		list, err := u.List(testCtx(t), "")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 0 {
			t.Errorf("%s has %d sessions after refused creates, want 0", u.User(), len(list))
		}
	}
}

func (w *world) testCreate(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:40000", "[::1]:1", "peer.example:65535", "192.0.2.1:9,[2001:db8::1]:9", ""} {
		t.Run(addr, func(t *testing.T) {
			req := createReq("bob")
			req.PeerAddrs = addrList(addr)
			before := time.Now()
			s, err := w.alice.Create(testCtx(t), req)
			after := time.Now()
			if err != nil {
				t.Fatal(err)
			}
			if err := api.ValidSessionID(s.ID); err != nil {
				t.Errorf("session id: %v", err)
			}
			if s.State != api.StateWaiting || s.Initiator != "alice" || s.Responder != "bob" || peerAddr(s) != addr || s.Listener != api.RoleInitiator {
				t.Errorf("created %+v", s)
			}
			if !slices.Equal(s.Manifest.Files, req.Manifest.Files) {
				t.Errorf("manifest %+v, want %+v", s.Manifest, req.Manifest)
			}
			ttl := w.h.Cfg.Session.TTL
			if s.ExpiresAt.Before(before.Add(ttl).Add(-time.Second)) || s.ExpiresAt.After(after.Add(ttl).Add(time.Second)) {
				t.Errorf("expires at %v, want about %v", s.ExpiresAt, before.Add(ttl))
			}
			if len(s.Reports) != 0 || s.Reason != "" {
				t.Errorf("new session carries reports or a reason: %+v", s)
			}
			// What the creator got back is what is stored.
			got, err := w.bob.Get(testCtx(t), s.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != s.ID || got.State != api.StateWaiting || !got.ExpiresAt.Equal(s.ExpiresAt) {
				t.Errorf("bob reads %+v, alice was told %+v", got, s)
			}
		})
	}
	t.Run("ids are unique", func(t *testing.T) {
		seen := map[string]bool{}
		for range 20 {
			s := w.create(t, "carol", "bob")
			if seen[s.ID] {
				t.Fatalf("id %s issued twice", s.ID)
			}
			seen[s.ID] = true
		}
	})
}

// step is one request in a state-machine case.
type step struct {
	as     string
	op     string // join, report, cancel, decline
	report api.Report
	reason string
	end    bool      // decline: end the session
	code   api.Code  // "" for success
	state  api.State // the state after a successful step
}

func (w *world) testStateMachine(t *testing.T) {
	okA, okB := checks("the file"), checks("the file")
	join := step{as: "bob", op: "join", state: api.StateJoined}
	rep := func(as string, r api.Report, code api.Code, state api.State) step {
		return step{as: as, op: "report", report: r, code: code, state: state}
	}
	cancel := func(as string, code api.Code, state api.State) step {
		return step{as: as, op: "cancel", reason: "changed my mind", code: code, state: state}
	}
	decline := func(as string, end bool, code api.Code, state api.State) step {
		return step{as: as, op: "decline", reason: "report.pdf exists in the destination", end: end, code: code, state: state}
	}
	upper := okA
	upper.SHA256 = strings.ToUpper(upper.SHA256)
	short := okA
	short.SHA256 = okA.SHA256[:63]
	noSHA := okA
	noSHA.SHA256 = ""
	negative := okA
	negative.Bytes = -1
	otherCRC := okB
	otherCRC.CRC32C++
	otherSHA := okB
	otherSHA.SHA256 = strings.Repeat("0", 64)
	otherLen := okB
	otherLen.Bytes++

	tests := []struct {
		name       string
		steps      []step
		wantReason []string // substrings of the final reason
	}{
		{name: "join", steps: []step{join}},
		{name: "join twice", steps: []step{join, {as: "bob", op: "join", code: api.CodeConflict}}},
		{name: "initiator cannot join", steps: []step{{as: "alice", op: "join", code: api.CodeForbidden}}},
		{name: "outsider cannot join", steps: []step{{as: "carol", op: "join", code: api.CodeForbidden}}},
		{name: "admin cannot join", steps: []step{{as: devstacktest.Admin, op: "join", code: api.CodeForbidden}}},
		{name: "report before join", steps: []step{rep("alice", okA, api.CodeConflict, ""), rep("bob", okB, api.CodeConflict, "")}},
		{name: "upper-case sha256", steps: []step{join, rep("alice", upper, api.CodeInvalid, "")}},
		{name: "short sha256", steps: []step{join, rep("alice", short, api.CodeInvalid, "")}},
		{name: "no sha256", steps: []step{join, rep("bob", noSHA, api.CodeInvalid, "")}},
		{name: "negative bytes", steps: []step{join, rep("bob", negative, api.CodeInvalid, "")}},
		{name: "failure without error", steps: []step{join, rep("bob", failure(""), api.CodeInvalid, "")}},
		{name: "failure with blank error", steps: []step{join, rep("bob", failure(" \n\t"), api.CodeInvalid, "")}},
		{name: "outsider cannot report", steps: []step{join, rep("carol", okA, api.CodeForbidden, "")}},
		{
			name:       "responder fails",
			steps:      []step{join, rep("bob", failure("disk full"), "", api.StateFailed)},
			wantReason: []string{"responder", "bob", "disk full"},
		},
		{
			name:       "initiator fails after responder reported",
			steps:      []step{join, rep("bob", okB, "", api.StateJoined), rep("alice", failure("read error"), "", api.StateFailed)},
			wantReason: []string{"initiator", "alice", "read error"},
		},
		{name: "both agree", steps: []step{join, rep("alice", okA, "", api.StateJoined), rep("bob", okB, "", api.StateCompleted)}},
		{name: "both agree, responder first", steps: []step{join, rep("bob", okB, "", api.StateJoined), rep("alice", okA, "", api.StateCompleted)}},
		{
			name:       "crc mismatch",
			steps:      []step{join, rep("alice", okA, "", api.StateJoined), rep("bob", otherCRC, "", api.StateFailed)},
			wantReason: []string{"mismatch"},
		},
		{
			name:       "sha256 mismatch",
			steps:      []step{join, rep("alice", okA, "", api.StateJoined), rep("bob", otherSHA, "", api.StateFailed)},
			wantReason: []string{"mismatch"},
		},
		{
			name:       "length mismatch",
			steps:      []step{join, rep("bob", otherLen, "", api.StateJoined), rep("alice", okA, "", api.StateFailed)},
			wantReason: []string{"mismatch"},
		},
		// The same report again is a retry whose answer was lost: answered
		// as done, the session as it is. Another report is refused.
		{name: "same report again", steps: []step{join, rep("alice", okA, "", api.StateJoined), rep("alice", okA, "", api.StateJoined)}},
		{name: "second, different report by one role", steps: []step{join, rep("alice", okA, "", api.StateJoined), rep("alice", checks("other"), api.CodeConflict, "")}},
		{name: "same report after completed", steps: []step{join, rep("alice", okA, "", api.StateJoined), rep("bob", okB, "", api.StateCompleted), rep("bob", okB, "", api.StateCompleted)}},
		{name: "different report after completed", steps: []step{join, rep("alice", okA, "", api.StateJoined), rep("bob", okB, "", api.StateCompleted), rep("bob", failure("late"), api.CodeConflict, "")}},
		{name: "report after failed", steps: []step{join, rep("alice", failure("x"), "", api.StateFailed), rep("bob", okB, api.CodeConflict, "")}},
		{name: "report after cancel", steps: []step{join, cancel("alice", "", api.StateCancelled), rep("bob", okB, api.CodeConflict, "")}},
		{name: "initiator cancels waiting", steps: []step{cancel("alice", "", api.StateCancelled)}, wantReason: []string{"cancelled by alice (initiator)", "changed my mind"}},
		{name: "responder cancels waiting", steps: []step{cancel("bob", "", api.StateCancelled)}, wantReason: []string{"cancelled by bob (responder)"}},
		{name: "initiator cancels joined", steps: []step{join, cancel("alice", "", api.StateCancelled)}, wantReason: []string{"alice"}},
		{name: "responder cancels joined after a report", steps: []step{join, rep("alice", okA, "", api.StateJoined), cancel("bob", "", api.StateCancelled)}, wantReason: []string{"bob"}},
		{name: "outsider cannot cancel", steps: []step{cancel("carol", api.CodeForbidden, ""), cancel(devstacktest.Admin, api.CodeForbidden, "")}},
		{name: "cancel twice", steps: []step{cancel("alice", "", api.StateCancelled), cancel("bob", api.CodeConflict, "")}},
		{name: "cancel after completed", steps: []step{join, rep("alice", okA, "", api.StateJoined), rep("bob", okB, "", api.StateCompleted), cancel("alice", api.CodeConflict, "")}},
		{name: "cancel after failed", steps: []step{join, rep("bob", failure("x"), "", api.StateFailed), cancel("bob", api.CodeConflict, "")}},
		{name: "join after cancel", steps: []step{cancel("alice", "", api.StateCancelled), {as: "bob", op: "join", code: api.CodeConflict}}},
		{name: "responder declines, session waits", steps: []step{decline("bob", false, "", api.StateWaiting), decline("bob", false, "", api.StateWaiting)}},
		{name: "join after a decline", steps: []step{decline("bob", false, "", api.StateWaiting), join}},
		{name: "responder declines for good", steps: []step{decline("bob", true, "", api.StateCancelled)}, wantReason: []string{"bob declined: report.pdf exists"}},
		{name: "decline for good after a decline", steps: []step{decline("bob", false, "", api.StateWaiting), decline("bob", true, "", api.StateCancelled)}, wantReason: []string{"bob declined"}},
		{name: "initiator cannot decline", steps: []step{decline("alice", false, api.CodeForbidden, ""), decline("alice", true, api.CodeForbidden, "")}},
		{name: "outsider cannot decline", steps: []step{decline("carol", true, api.CodeForbidden, ""), decline(devstacktest.Admin, true, api.CodeForbidden, "")}},
		{name: "decline after join", steps: []step{join, decline("bob", false, api.CodeConflict, ""), decline("bob", true, api.CodeConflict, "")}},
		{name: "decline after cancel", steps: []step{cancel("alice", "", api.StateCancelled), decline("bob", false, api.CodeConflict, "")}},
		{name: "decline after completed", steps: []step{join, rep("alice", okA, "", api.StateJoined), rep("bob", okB, "", api.StateCompleted), decline("bob", true, api.CodeConflict, "")}},
		{name: "join after declining for good", steps: []step{decline("bob", true, "", api.StateCancelled), {as: "bob", op: "join", code: api.CodeConflict}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := w.create(t, "alice", "bob")
			want := api.StateWaiting
			for i, st := range tc.steps {
				c := w.as(st.as)
				var got *api.Session
				var err error
				switch st.op {
				case "join":
					got, err = c.Join(ctx, s.ID, nil)
				case "report":
					got, err = c.Report(ctx, s.ID, st.report)
				case "cancel":
					got, err = c.Cancel(ctx, s.ID, st.reason)
				case "decline":
					got, err = c.Decline(ctx, s.ID, st.reason, st.end)
				}
				wantCode(t, st.as+" "+st.op, err, st.code)
				if st.code == "" {
					want = st.state
					if got.State != want {
						t.Fatalf("step %d (%s %s): state %s, want %s", i, st.as, st.op, got.State, want)
					}
				}
			}
			// Both members read the same final record.
			for _, who := range []*client.Client{w.alice, w.bob} {
				got, err := who.Get(ctx, s.ID)
				if err != nil {
					t.Fatal(err)
				}
				if got.State != want {
					t.Errorf("%s reads state %s, want %s", who.User(), got.State, want)
				}
				for _, sub := range tc.wantReason {
					if !strings.Contains(got.Reason, sub) {
						t.Errorf("reason %q does not mention %q", got.Reason, sub)
					}
				}
				if want.Terminal() && want != api.StateCompleted && got.Reason == "" {
					t.Errorf("%s session has no reason", want)
				}
			}
		})
	}
}

func (w *world) testCancelReason(t *testing.T) {
	tests := []struct{ name, reason string }{
		{"terminal escapes", "\x1b[2J\x1b]0;pwned\x07wrong file"},
		{"line breaks", "line one\r\nline two\u2028three"},
		{"8-bit CSI", "a\u009b31mred"},
		{"bidi override", "invoice\u202egpj.exe"},
		{"invalid UTF-8", "bad \xff\xfe bytes"},
		{"long", strings.Repeat("é", 2000)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := w.create(t, "alice", "bob")
			got, err := w.bob.Cancel(testCtx(t), s.ID, tc.reason)
			if err != nil {
				t.Fatal(err)
			}
			prefix := "cancelled by bob (responder): "
			why, ok := strings.CutPrefix(got.Reason, prefix)
			if !ok {
				t.Fatalf("reason %q lacks %q", got.Reason, prefix)
			}
			checkClean(t, why)
			if why == "" {
				t.Error("the reason was dropped entirely")
			}
		})
	}
	t.Run("blank", func(t *testing.T) {
		s := w.create(t, "alice", "bob")
		got, err := w.alice.Cancel(testCtx(t), s.ID, " \n ")
		if err != nil {
			t.Fatal(err)
		}
		if got.Reason != "cancelled by alice (initiator)" {
			t.Errorf("reason %q", got.Reason)
		}
	})
	t.Run("report error", func(t *testing.T) {
		s := w.joined(t)
		got, err := w.bob.Report(testCtx(t), s.ID, failure("\x1b[31mdisk\nfull"+strings.Repeat("!", 1000)))
		if err != nil {
			t.Fatal(err)
		}
		checkClean(t, got.Reports[api.RoleResponder].Error)
		checkClean(t, got.Reason)
	})
}

// testCancelJoinedEvent cancels joined sessions, as Ctrl-C on either side
// does: the cancelled event ends a watch and tells the other member who
// cancelled and why.
func (w *world) testCancelJoinedEvent(t *testing.T) {
	tests := []struct {
		name    string
		as      string
		resumed bool // a member re-attached before the cancel
		reason  string
		want    string
	}{
		{"initiator", "alice", false, "interrupted", "cancelled by alice (initiator): interrupted"},
		{"responder", "bob", false, "interrupted", "cancelled by bob (responder): interrupted"},
		{"responder after a resume", "bob", true, "interrupted", "cancelled by bob (responder): interrupted"},
		{"initiator without a reason", "alice", false, "", "cancelled by alice (initiator)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			s := w.joined(t)
			wantTypes := "created,joined,cancelled"
			if tc.resumed {
				if _, err := resume(ctx, w.alice, s.ID, "127.0.0.1:40001"); err != nil {
					t.Fatal(err)
				}
				wantTypes = "created,joined,resumed,cancelled"
			}
			// The other member watches while the cancel happens.
			other := w.alice
			if tc.as == "alice" {
				other = w.bob
			}
			wt, err := openWatch(t, w.h.ConnFor(other), other.Token(), s.ID, false)
			if err != nil {
				t.Fatal(err)
			}
			got, err := w.as(tc.as).Cancel(ctx, s.ID, tc.reason)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != api.StateCancelled || got.Reason != tc.want {
				t.Errorf("cancel returned %s (%q), want cancelled (%q)", got.State, got.Reason, tc.want)
			}
			evs := wt.until(t, isEvent(s.ID, api.EventCancelled))
			if types(evs) != wantTypes {
				t.Errorf("the other member saw %s, want %s", types(evs), wantTypes)
			}
			ev := evs[len(evs)-1]
			if ev.Reason != tc.want || ev.Actor != tc.as || ev.State != api.StateCancelled {
				t.Errorf("cancelled event by %s in %s with reason %q; want by %s, %q", ev.Actor, ev.State, ev.Reason, tc.as, tc.want)
			}
			select {
			case <-wt.ended:
			case <-time.After(20 * time.Second):
				t.Error("the session watch did not end after the cancel")
			}
			if n := eventCounts(t, w.svc, s.ID)[api.EventCancelled]; n != 1 {
				t.Errorf("%d cancelled events, want 1", n)
			}
		})
	}
}

// testDeclineEvents: the initiator, watching, sees each refusal at once as
// a declined event by the responder with its reason, made safe for a
// terminal, while the session waits; a decline that ends the session is
// its cancelled event, which names who declined and why.
func (w *world) testDeclineEvents(t *testing.T) {
	ctx := testCtx(t)
	s := w.create(t, "alice", "bob")
	wt, err := openWatch(t, w.h.ConnFor(w.alice), w.alice.Token(), s.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	reasons := []struct{ sent, want string }{
		{"report.pdf exists in the destination", "report.pdf exists in the destination"},
		{"\x1b[2Jnot enough\r\nfree space\u202e", "[2Jnot enough  free space"},
		{"", ""},
	}
	for _, r := range reasons {
		got, err := w.bob.Decline(ctx, s.ID, r.sent, false)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != api.StateWaiting || got.Reason != "" {
			t.Fatalf("decline left the session %s (%q), want waiting without a reason", got.State, got.Reason)
		}
		evs := wt.until(t, isEvent(s.ID, api.EventDeclined))
		ev := evs[len(evs)-1]
		if ev.Reason != r.want || ev.Actor != "bob" || ev.State != api.StateWaiting {
			t.Errorf("declined event by %s in %s with reason %q; want by bob, waiting, %q", ev.Actor, ev.State, ev.Reason, r.want)
		}
	}
	long, err := w.bob.Decline(ctx, s.ID, strings.Repeat("é", 2000), true)
	if err != nil {
		t.Fatal(err)
	}
	if long.State != api.StateCancelled || !strings.HasPrefix(long.Reason, "bob declined: éé") {
		t.Fatalf("decline with end left the session %s (%q), want cancelled, saying bob declined", long.State, long.Reason)
	}
	checkClean(t, long.Reason)
	evs := wt.until(t, isEvent(s.ID, api.EventCancelled))
	if ev := evs[len(evs)-1]; ev.Reason != long.Reason || ev.Actor != "bob" {
		t.Errorf("cancelled event by %s with reason %q, want by bob with %q", ev.Actor, ev.Reason, long.Reason)
	}
	select {
	case <-wt.ended:
	case <-time.After(20 * time.Second):
		t.Error("the session watch did not end after the decline")
	}
	counts := eventCounts(t, w.svc, s.ID)
	if counts[api.EventDeclined] != uint64(len(reasons)) || counts[api.EventCancelled] != 1 {
		t.Errorf("events published: %v, want %d declined and 1 cancelled", counts, len(reasons))
	}
}

// checkClean asserts text is what may reach another user's terminal.
func checkClean(t *testing.T, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Errorf("%q is not valid UTF-8", s)
	}
	for _, r := range s {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == '\u2028' || r == '\u2029' {
			t.Errorf("%q contains %U", s, r)
		}
	}
	if len(s) > session.MaxReason+len("…")+100 { // the prefix naming the member
		t.Errorf("%d bytes long, the cap is %d", len(s), session.MaxReason)
	}
}

func (w *world) testGetAndList(t *testing.T) {
	ctx := testCtx(t)
	waiting := w.create(t, "alice", "bob")
	joined := w.joined(t)
	cancelled := w.create(t, "alice", "bob")
	if _, err := w.alice.Cancel(ctx, cancelled.ID, ""); err != nil {
		t.Fatal(err)
	}
	mine := w.create(t, "carol", "bob")

	t.Run("get", func(t *testing.T) {
		tests := []struct {
			as   string
			id   string
			want api.Code
		}{
			{"alice", waiting.ID, ""},
			{"bob", waiting.ID, ""},
			{"carol", waiting.ID, api.CodeForbidden},
			{devstacktest.Admin, waiting.ID, api.CodeForbidden},
			{"carol", mine.ID, ""},
			{"alice", mine.ID, api.CodeForbidden},
			{"alice", randomID(t), api.CodeNotFound},
			{"alice", "", api.CodeInvalid},
			{"alice", "NOT-AN-ID", api.CodeInvalid},
			{"alice", "aaaaaaaaaaaaaaa*", api.CodeInvalid},
			{"alice", waiting.ID + "a", api.CodeInvalid},
		}
		for _, tc := range tests {
			got, err := w.as(tc.as).Get(ctx, tc.id)
			wantCode(t, tc.as+" get "+tc.id, err, tc.want)
			if tc.want == "" && got.ID != tc.id {
				t.Errorf("%s get %s returned %s", tc.as, tc.id, got.ID)
			}
		}
	})

	ids := func(list []api.Session) []string {
		var out []string
		for _, s := range list {
			out = append(out, s.ID)
		}
		return out
	}
	t.Run("list", func(t *testing.T) {
		all, err := w.alice.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		got := ids(all)
		for _, s := range []*api.Session{waiting, joined, cancelled} {
			if !slices.Contains(got, s.ID) {
				t.Errorf("alice's list lacks %s", s.ID)
			}
		}
		if slices.Contains(got, mine.ID) {
			t.Errorf("alice's list shows carol's session %s", mine.ID)
		}
		if !slices.IsSortedFunc(all, func(a, b api.Session) int { return b.CreatedAt.Compare(a.CreatedAt) }) {
			t.Error("list is not newest first")
		}
		// Created one after the other, so newest first puts them in reverse.
		pos := func(id string) int { return slices.Index(got, id) }
		if !(pos(cancelled.ID) < pos(joined.ID) && pos(joined.ID) < pos(waiting.ID)) {
			t.Errorf("order %v: want %s, %s, %s", got, cancelled.ID, joined.ID, waiting.ID)
		}
		for _, s := range all {
			if s.Initiator != "alice" && s.Responder != "alice" {
				t.Errorf("alice's list shows %s→%s", s.Initiator, s.Responder)
			}
		}
	})
	t.Run("list by state", func(t *testing.T) {
		for _, tc := range []struct {
			state api.State
			has   *api.Session
		}{
			{api.StateWaiting, waiting},
			{api.StateJoined, joined},
			{api.StateCancelled, cancelled},
		} {
			list, err := w.bob.List(ctx, tc.state)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(ids(list), tc.has.ID) {
				t.Errorf("bob's %s list lacks %s", tc.state, tc.has.ID)
			}
			for _, s := range list {
				if s.State != tc.state {
					t.Errorf("%s list holds %s in state %s", tc.state, s.ID, s.State)
				}
			}
		}
		list, err := w.alice.List(ctx, api.StateCompleted)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc([]*api.Session{waiting, joined, cancelled}, func(s *api.Session) bool { return slices.Contains(ids(list), s.ID) }) {
			t.Errorf("completed list %v holds sessions that did not complete", ids(list))
		}
	})
	t.Run("outsider list", func(t *testing.T) {
		list, err := w.carol.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list {
			if s.Initiator != "carol" && s.Responder != "carol" {
				t.Errorf("carol's list shows %s (%s→%s)", s.ID, s.Initiator, s.Responder)
			}
		}
		if !slices.Contains(ids(list), mine.ID) {
			t.Errorf("carol's list lacks her own session %s", mine.ID)
		}
	})
}

// testLazyExpiry plants sessions whose time is up but whose timer never
// existed, so only the expiry on read can end them.
func (w *world) testLazyExpiry(t *testing.T) {
	ctx := testCtx(t)
	plant := func(t *testing.T, state api.State) *api.Session {
		t.Helper()
		past := time.Now().UTC().Add(-time.Hour)
		s := &api.Session{
			ID: randomID(t), State: state, Initiator: "alice", Responder: "bob",
			Manifest: createReq("bob").Manifest, PeerAddrs: []string{"127.0.0.1:1"},
			CreatedAt: past, UpdatedAt: past, ExpiresAt: past.Add(time.Minute),
		}
		if _, err := w.h.Stack.Store.CreateSession(ctx, s, time.Hour); err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Run("get", func(t *testing.T) {
		s := plant(t, api.StateJoined)
		list, err := w.alice.List(ctx, api.StateExpired)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(list, func(l api.Session) bool { return l.ID == s.ID }) {
			t.Errorf("the expired list lacks %s", s.ID)
		}
		got, err := w.alice.Get(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != api.StateExpired || !strings.Contains(got.Reason, "expired") {
			t.Errorf("read %s (%q), want expired", got.State, got.Reason)
		}
		stored, _, err := w.h.Stack.Store.GetSession(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if stored.State != api.StateExpired {
			t.Errorf("stored state %s: the read did not record the expiry", stored.State)
		}
		evs, err := collectWatch(ctx, w.bob, s.ID)
		if !errors.Is(err, client.ErrWatchEnded) || !strings.Contains(err.Error(), "expired") {
			t.Errorf("watch ended with %v", err)
		}
		if types(evs) != "expired" {
			t.Errorf("events %s, want expired", types(evs))
		}
		for _, op := range []func() error{
			func() error { _, err := w.bob.Join(ctx, s.ID, nil); return err },
			func() error { _, err := w.bob.Report(ctx, s.ID, checks("x")); return err },
			func() error { _, err := w.alice.Cancel(ctx, s.ID, ""); return err },
			func() error { _, err := resume(ctx, w.alice, s.ID, "127.0.0.1:1"); return err },
			func() error { _, err := resume(ctx, w.bob, s.ID, ""); return err },
		} {
			wantCode(t, "change after expiry", op(), api.CodeExpired)
		}
	})
	t.Run("join", func(t *testing.T) {
		s := plant(t, api.StateWaiting)
		_, err := w.bob.Join(ctx, s.ID, nil)
		wantCode(t, "join", err, api.CodeExpired)
		if n := eventCounts(t, w.svc, s.ID)[api.EventExpired]; n != 1 {
			t.Errorf("%d expired events, want 1", n)
		}
	})
}

func (w *world) testSessionWatch(t *testing.T) {
	ctx := testCtx(t)
	s := w.create(t, "alice", "bob")

	// A live watch started now, and a replay once it is over, see the same.
	type result struct {
		evs []api.Event
		err error
	}
	live := make(chan result, 1)
	go func() {
		evs, err := collectWatch(ctx, w.bob, s.ID)
		live <- result{evs, err}
	}()
	if _, err := w.bob.Join(ctx, s.ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.alice.Report(ctx, s.ID, checks("data")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.bob.Report(ctx, s.ID, checks("data")); err != nil {
		t.Fatal(err)
	}
	check := func(name string, evs []api.Event, err error) {
		t.Helper()
		if !errors.Is(err, client.ErrWatchEnded) || !strings.Contains(err.Error(), "session completed") {
			t.Errorf("%s watch ended with %v, want %v: session completed", name, err, client.ErrWatchEnded)
		}
		if got := types(evs); got != "created,joined,reported,reported,completed" {
			t.Fatalf("%s watch saw %s", name, got)
		}
		actors := []string{"alice", "bob", "alice", "bob", "bob"}
		seen := map[string]bool{}
		for i, ev := range evs {
			if ev.Session != s.ID || ev.Initiator != "alice" || ev.Responder != "bob" || ev.Actor != actors[i] {
				t.Errorf("%s event %d: %+v", name, i, ev)
			}
			if i > 0 && ev.Seq <= evs[i-1].Seq {
				t.Errorf("%s event %d: sequence %d after %d", name, i, ev.Seq, evs[i-1].Seq)
			}
			if seen[ev.ID] {
				t.Errorf("%s: event id %s twice", name, ev.ID)
			}
			seen[ev.ID] = true
		}
		if evs[2].Role != api.RoleInitiator || evs[3].Role != api.RoleResponder || evs[2].Report == nil || !evs[3].Report.OK {
			t.Errorf("%s: reported events %+v, %+v", name, evs[2], evs[3])
		}
		if evs[4].State != api.StateCompleted {
			t.Errorf("%s: completed event in state %s", name, evs[4].State)
		}
	}
	select {
	case r := <-live:
		check("live", r.evs, r.err)
	case <-time.After(20 * time.Second):
		t.Fatal("live session watch did not end after completion")
	}
	evs, err := collectWatch(ctx, w.alice, s.ID)
	check("replay", evs, err)
}

func (w *world) testWatchAllVisibility(t *testing.T) {
	ctx := testCtx(t)
	aliceW, err := openWatch(t, w.h.ConnFor(w.alice), w.alice.Token(), "", false)
	if err != nil {
		t.Fatal(err)
	}
	carolW, err := openWatch(t, w.h.ConnFor(w.carol), w.carol.Token(), "", false)
	if err != nil {
		t.Fatal(err)
	}
	adminW, err := openWatch(t, w.h.ConnFor(w.admin), w.admin.Token(), "", false)
	if err != nil {
		t.Fatal(err)
	}

	ab := w.joined(t)
	if _, err := w.alice.Cancel(ctx, ab.ID, "test"); err != nil {
		t.Fatal(err)
	}
	// Then a session carol is in: events reach each relay in stream order,
	// so once carol sees this one she has been offered everything before.
	bc := w.create(t, "bob", "carol")
	if _, err := w.bob.Cancel(ctx, bc.ID, "test"); err != nil {
		t.Fatal(err)
	}

	for _, ev := range carolW.until(t, isEvent(bc.ID, api.EventCancelled)) {
		if ev.Session == ab.ID || (ev.Initiator != "carol" && ev.Responder != "carol") {
			t.Errorf("carol saw %s of %s (%s→%s)", ev.Type, ev.Session, ev.Initiator, ev.Responder)
		}
	}
	abEvents := func(evs []api.Event) string {
		return types(slices.DeleteFunc(evs, func(ev api.Event) bool { return ev.Session != ab.ID }))
	}
	if got := abEvents(aliceW.until(t, isEvent(ab.ID, api.EventCancelled))); got != "created,joined,cancelled" {
		t.Errorf("alice's watch-all saw %s of her session", got)
	}
	adminEvs := adminW.until(t, isEvent(bc.ID, api.EventCancelled))
	if got := abEvents(slices.Clone(adminEvs)); got != "created,joined,cancelled" {
		t.Errorf("admin saw %s of alice's session", got)
	}
	if !slices.ContainsFunc(adminEvs, isEvent(bc.ID, api.EventCreated)) {
		t.Error("admin did not see bob's session created")
	}
	// alice is not in bob→carol.
	select {
	case ev := <-aliceW.events:
		if ev.Session == bc.ID {
			t.Errorf("alice saw %s of bob→carol", ev.Type)
		}
	case <-time.After(300 * time.Millisecond):
	}
}

func (w *world) testWatchRefused(t *testing.T) {
	s := w.create(t, "alice", "bob")
	err := w.carol.Watch(testCtx(t), s.ID, func(api.Event) error { return nil })
	wantCode(t, "carol watching alice's session", err, api.CodeForbidden)
	// An admin may watch any session: here one that ended, replayed whole.
	if _, err := w.alice.Cancel(testCtx(t), s.ID, ""); err != nil {
		t.Fatal(err)
	}
	var seen []api.EventType
	err = w.admin.Watch(testCtx(t), s.ID, func(ev api.Event) error { seen = append(seen, ev.Type); return nil })
	if !errors.Is(err, client.ErrWatchEnded) || !slices.Equal(seen, []api.EventType{api.EventCreated, api.EventCancelled}) {
		t.Errorf("admin watching alice's session: %v, %v", seen, err)
	}
	err = w.admin.Watch(testCtx(t), randomID(t), func(api.Event) error { return nil })
	wantCode(t, "admin watching an unknown session", err, api.CodeNotFound)
	err = w.alice.Watch(testCtx(t), randomID(t), func(api.Event) error { return nil })
	wantCode(t, "watching an unknown session", err, api.CodeNotFound)
	err = w.alice.Watch(testCtx(t), "bad id", func(api.Event) error { return nil })
	wantCode(t, "watching a malformed id", err, api.CodeInvalid)

	nc := w.h.ConnFor(w.alice)
	for _, deliver := range []string{
		"", "sft.v1.session.create", "sft.v1.events.x", "_SFT_SVC_INBOX.x", "_INBOX", "_INBOX.>", "_INBOX.*",
		"_INBOX.a b", "_INBOX.a\tb", "_INBOXES.x", "_INBOX." + strings.Repeat("x", 300),
		// Only alice's own inbox, one token under her prefix.
		"_INBOX.bob.x", "_INBOX.alice", "_INBOX.alice.", "_INBOX.alice.>", "_INBOX.alice.x.y", "_INBOX.alicex.y",
	} {
		var rep api.WatchReply
		err := rpc.Call(testCtx(t), nc, api.SubjectSessionWatch, w.alice.Token(), api.WatchRequest{Deliver: deliver}, &rep)
		wantCode(t, "deliver "+deliver, err, api.CodeInvalid)
	}
	var rep api.WatchReply
	err = rpc.Call(testCtx(t), nc, api.SubjectSessionWatch, "", api.WatchRequest{Deliver: nc.NewInbox()}, &rep)
	wantCode(t, "watch without a token", err, api.CodeUnauthorized)
}

// testWatcherGone shows the heartbeat at work: a relay whose watcher
// answers lives on, and ends once the watcher's connection is gone. An
// observer on the same inbox (another connection of alice's) sees the
// heartbeats and the end marker without answering.
func (w *world) testWatcherGone(t *testing.T) {
	watcherConn := w.h.ConnFor(w.alice)
	wt, err := openWatch(t, watcherConn, w.alice.Token(), "", false)
	if err != nil {
		t.Fatal(err)
	}
	observer, err := w.h.ConnFor(w.alice).SubscribeSync(wt.Deliver)
	if err != nil {
		t.Fatal(err)
	}
	defer observer.Unsubscribe()

	// Several heartbeats answered: the relay must still be there.
	for i := range 4 {
		select {
		case <-wt.beats:
		case why := <-wt.ended:
			t.Fatalf("relay ended (%s) after %d heartbeats although the watcher answers", why, i)
		case <-time.After(10 * time.Second):
			t.Fatalf("no heartbeat %d", i+1)
		}
	}
	s := w.create(t, "alice", "bob")
	wt.until(t, isEvent(s.ID, api.EventCreated))

	watcherConn.Close()
	deadline := time.Now().Add(testHeartbeat + testHeartbeatTimeout + 10*time.Second)
	for {
		m, err := observer.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("relay did not end after the watcher left: %v", err)
		}
		if why := m.Header.Get(api.WatchEndHeader); why != "" {
			if why != "watcher gone" {
				t.Errorf("relay ended with %q, want watcher gone", why)
			}
			return
		}
	}
}

// testWatchCap fills a fresh user's watch allowance (other tests' relays
// may still be winding down), then frees it by dropping the connection: the
// freed slots also prove the relays stopped.
func (w *world) testWatchCap(t *testing.T) {
	hash, err := auth.HashPassword(devstacktest.Password("erin"), auth.HashParams{Memory: 8 << 10, Time: 1, Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.h.Stack.Store.CreateUser(testCtx(t), &store.User{Name: "erin", PasswordHash: hash, Role: "user", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	erin := w.h.Login("erin")
	conn := w.h.ConnFor(erin)
	for i := range session.MaxWatchesUser {
		if _, err := openWatch(t, conn, erin.Token(), "", false); err != nil {
			t.Fatalf("watch %d: %v", i+1, err)
		}
	}
	_, err = openWatch(t, w.h.ConnFor(erin), erin.Token(), "", false)
	wantCode(t, "one watch too many", err, api.CodeThrottled)
	// A session watch counts too.
	s := w.create(t, "alice", "erin")
	_, err = openWatch(t, w.h.ConnFor(erin), erin.Token(), s.ID, false)
	wantCode(t, "session watch over the cap", err, api.CodeThrottled)
	// The cap is per user.
	if _, err := openWatch(t, w.h.ConnFor(w.bob), w.bob.Token(), "", false); err != nil {
		t.Fatalf("bob's watch refused because of erin's: %v", err)
	}

	conn.Close()
	other := w.h.ConnFor(erin)
	eventually(t, testHeartbeat+testHeartbeatTimeout+10*time.Second, "a watch slot freed", func() bool {
		_, err := openWatch(t, other, erin.Token(), "", false)
		if err != nil && api.CodeOf(err) != api.CodeThrottled {
			t.Fatal(err)
		}
		return err == nil
	})
}

// testConcurrentReports races both members' reports, many times, across
// replicas.
func (w *world) testConcurrentReports(t *testing.T) {
	ctx := testCtx(t)
	svc := w.svc
	for round := range 20 {
		s := w.joined(t)
		var states [2]api.State
		errs := parallel(2, func(i int) error {
			c := []*client.Client{w.alice, w.bob}[i]
			got, err := c.Report(ctx, s.ID, checks("same bytes"))
			if err == nil {
				states[i] = got.State
			}
			return err
		})
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: report %d: %v", round, i, err)
			}
		}
		// One report lands first and leaves the session joined; the other
		// sees it and completes.
		slices.Sort(states[:])
		if states != [2]api.State{api.StateCompleted, api.StateJoined} {
			t.Errorf("round %d: the two reports returned states %v", round, states)
		}
		got, err := w.alice.Get(ctx, s.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != api.StateCompleted || len(got.Reports) != 2 {
			t.Errorf("round %d: ended %s with %d reports", round, got.State, len(got.Reports))
			continue // a session watch would wait for an end that never comes
		}
		// Whatever the interleaving, a watcher sees both reports before
		// the end.
		evs, err := collectWatch(ctx, w.bob, s.ID)
		if !errors.Is(err, client.ErrWatchEnded) {
			t.Fatalf("round %d: watch: %v", round, err)
		}
		if got := types(evs); got != "created,joined,reported,reported,completed" {
			t.Errorf("round %d: a watcher saw %s", round, got)
		}
		counts := eventCounts(t, svc, s.ID)
		want := map[api.EventType]uint64{api.EventCreated: 1, api.EventJoined: 1, api.EventReported: 2, api.EventCompleted: 1}
		if len(counts) != len(want) {
			t.Errorf("round %d: events %v, want %v", round, counts, want)
		}
		for typ, n := range want {
			if counts[typ] != n {
				t.Errorf("round %d: %d %s events, want %d", round, counts[typ], typ, n)
			}
		}
	}
}

// testConcurrentJoins races the responder against itself, across replicas.
func (w *world) testConcurrentJoins(t *testing.T) {
	ctx := testCtx(t)
	for round := range 20 {
		s := w.create(t, "alice", "bob")
		errs := parallel(6, func(int) error {
			_, err := w.bob.Join(ctx, s.ID, nil)
			return err
		})
		ok := 0
		for _, err := range errs {
			switch api.CodeOf(err) {
			case "":
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				ok++
			case api.CodeConflict:
			default:
				t.Errorf("round %d: join: %v", round, err)
			}
		}
		if ok != 1 {
			t.Errorf("round %d: %d joins succeeded, want exactly 1", round, ok)
		}
		if n := eventCounts(t, w.svc, s.ID)[api.EventJoined]; n != 1 {
			t.Errorf("round %d: %d joined events, want 1", round, n)
		}
	}
}

// logServed shows how the requests spread, to tell a race that was not
// exercised from one that was handled.
func logServed(t *testing.T, rs []*replica) {
	for _, r := range rs {
		t.Logf("replica %s served %d requests", r.name, r.served())
	}
}
