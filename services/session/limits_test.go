package session_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/metrics/metricstest"
	"github.com/sftproject/sft/services/store/redisstore/redistest"
)

func TestManifestLimits(t *testing.T) {
	w := newWorld(t, func(c *config.Config) {
		c.Limits.ManifestEntries = 2
		c.Limits.ManifestBytes = 1000
	})
	files := func(sizes ...int64) api.Manifest {
		var m api.Manifest
		for i, s := range sizes {
			m.Files = append(m.Files, api.File{Name: string(rune('a'+i)) + ".bin", Size: s})
		}
		return m
	}
	for _, tc := range []struct {
		name string
		m    api.Manifest
		msg  string // in the error; "" for success
	}{
		{"over the entry cap", files(1, 1, 1), "manifest lists 3 files; the limit is 2"},
		{"at the entry cap", files(1, 1), ""},
		{"a stream", files(api.SizeUnknown), ""},
		{"over the size cap", files(1001), "more than 1000 bytes"},
		{"at the size cap", files(1000), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := createReq("bob")
			req.Manifest = tc.m
			_, err := w.alice.Create(testCtx(t), req)
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("create: %v", err)
				}
				return
			}
			wantCode(t, "create", err, api.CodeInvalid)
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

// TestOpenSessionLimit runs on both stores: on Redis a create is checked
// and stored in one round trip (CreateChecked).
func TestOpenSessionLimit(t *testing.T) {
	for _, backend := range []string{"jetstream", "redis"} {
		t.Run(backend, func(t *testing.T) {
			var url string
			if backend == "redis" {
				url = redistest.Start(t, redistest.Options{}).URL()
			}
			w := newWorld(t, func(c *config.Config) {
				c.Limits.OpenSessions = 2
				c.Metrics.Listen = "127.0.0.1:0"
				if url != "" {
					c.Store.Backend, c.Redis.URL = "redis", url
				}
			})
			ctx := testCtx(t)
			first := w.create(t, "alice", "bob")
			w.create(t, "alice", "carol")
			_, err := w.alice.Create(ctx, createReq("bob"))
			wantCode(t, "third open session", err, api.CodeThrottled)
			if !strings.Contains(err.Error(), "2 open sessions") {
				t.Errorf("error %q does not say how many sessions are open", err)
			}
			// Sessions others start towards alice are not hers to count.
			w.create(t, "bob", "alice")
			w.create(t, "carol", "alice")
			// Ending one frees a place.
			if _, err := w.alice.Cancel(ctx, first.ID, "make room"); err != nil {
				t.Fatal(err)
			}
			w.create(t, "alice", "bob")
			// Nobody can be sent to a user who does not exist.
			_, err = w.bob.Create(ctx, createReq("nobody"))
			wantCode(t, "session to an unknown user", err, api.CodeNotFound)
			if !strings.Contains(err.Error(), `no user named "nobody"`) {
				t.Errorf("error %q does not name the unknown user", err)
			}
			// Seven creates were checked: in one round trip each on Redis.
			const oneTrip = `sft_store_operation_duration_seconds_count{op="create_checked",service="session"}`
			if n := metricstest.Scrape(t, w.h.Stack.MetricsAddr)[oneTrip]; (n == 7) != (backend == "redis") {
				t.Errorf("%s: %v creates checked in one round trip", backend, n)
			}
		})
	}
}

func TestCreateRateLimit(t *testing.T) {
	w := newWorld(t, func(c *config.Config) { c.Limits.SessionsPerMinute = 2 })
	ctx := testCtx(t)
	w.create(t, "alice", "bob")
	w.create(t, "alice", "bob")
	_, err := w.alice.Create(ctx, createReq("bob"))
	wantCode(t, "third session in a minute", err, api.CodeThrottled)
	if !strings.Contains(err.Error(), "more than 2 new sessions in a minute") {
		t.Errorf("error %q does not say the rate", err)
	}
	// Each user has a bucket of their own.
	w.create(t, "bob", "alice")
}

// A user's sessions may hold large manifests; list answers with the newest
// that fit in one broker message and counts the others, instead of a reply
// the broker would refuse.
func TestListFitsOneMessage(t *testing.T) {
	w := newWorld(t, func(c *config.Config) { c.Limits.RequestBytes = 512 << 10 })
	ctx := testCtx(t)
	req := createReq("bob")
	req.Manifest.Files = nil
	for i := range 3500 { // ≈ 400 KB of JSON: two fit in the embedded server's 1 MiB, three do not
		req.Manifest.Files = append(req.Manifest.Files, api.File{Name: fmt.Sprintf("tree/%05d-%s", i, strings.Repeat("x", 80)), Size: 1})
	}
	var ids []string
	for range 3 {
		s, err := w.alice.Create(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	rep, err := w.alice.ListReply(ctx, "")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var got []string
	for _, s := range rep.Sessions {
		got = append(got, s.ID)
	}
	if want := []string{ids[2], ids[1]}; !slices.Equal(got, want) || rep.Omitted != 1 {
		t.Fatalf("list gave %v and %d omitted, want the newest two %v and 1 omitted", got, rep.Omitted, want)
	}
	// Small lists are whole.
	rep, err = w.bob.ListReply(ctx, api.StateCompleted)
	if err != nil || len(rep.Sessions) != 0 || rep.Omitted != 0 {
		t.Fatalf("bob's completed sessions: %v, %+v", err, rep)
	}
}
