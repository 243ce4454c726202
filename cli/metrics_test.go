package cli_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/services/metrics/metricstest"
)

// A scrape of the dev stack after one transfer through the relay shows
// exactly what happened: four logins, one refused password, one session
// created, joined and completed with its bytes, each request counted by
// subject and code (a get of no session: not_found), and the relay's bytes.
func TestMetricsCountATransfer(t *testing.T) {
	h := start(t, func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:0" })
	addr := h.Stack.MetricsAddr
	if addr == nil {
		t.Fatal("metrics.listen set, but the stack serves no metrics")
	}
	ctx := within(t, 2*time.Minute)
	before := metricstest.Scrape(t, addr)

	alice, bob := h.as("alice"), h.as("bob")
	if _, _, err := client.LogIn(ctx, h.ConnOptions(), "carol", "not-carols-password"); err == nil {
		t.Fatal("a wrong password logged in")
	}
	const size = 3<<20 + 17
	src := randomFile(t, t.TempDir(), "metrics.bin", size)
	sendRes := alice.runAsync(ctx, "send", src, "--to", "bob", "--relay")
	sess := waitingSession(t, bob.client(), "metrics.bin")
	waitFor(t, "the waiting session in sft_sessions_open", func() bool {
		return metricstest.Scrape(t, addr)[`sft_sessions_open{state="waiting"}`] == 1
	})
	if _, _, err := bob.run(ctx, "recv", sess.ID, "-o", t.TempDir(), "--relay"); err != nil {
		t.Fatalf("recv: %v", err)
	}
	if r := <-sendRes; r.err != nil {
		t.Fatalf("send: %v (%s)", r.err, r.errOut)
	}
	ac := alice.client()
	final, err := ac.Get(ctx, sess.ID)
	if err != nil || final.State != api.StateCompleted {
		t.Fatalf("session: %+v, %v", final, err)
	}
	if _, err := ac.Get(ctx, "aaaaaaaaaaaaaaaa"); api.CodeOf(err) != api.CodeNotFound {
		t.Fatalf("get of no session: %v, want not_found", err)
	}
	waitFor(t, "no open session in sft_sessions_open", func() bool {
		s := metricstest.Scrape(t, addr)
		return s[`sft_sessions_open{state="waiting"}`] == 0 && s[`sft_sessions_open{state="joined"}`] == 0
	})
	after := metricstest.Scrape(t, addr)

	for _, c := range []struct {
		series string
		want   float64
	}{
		// Two `sft-cli login`s, and the API clients that find the session
		// for bob and read its end for alice.
		{`sft_logins_total{outcome="ok"}`, 4},
		{`sft_logins_total{outcome="wrong_password"}`, 0},
		{`sft_auth_callout_decisions_total{outcome="password"}`, 4},
		{`sft_auth_callout_decisions_total{outcome="refused_password"}`, 1},
		{`sft_sessions_total{event="created"}`, 1},
		{`sft_sessions_total{event="joined"}`, 1},
		{`sft_sessions_total{event="completed"}`, 1},
		{`sft_sessions_total{event="failed"}`, 0},
		{`sft_sessions_total{event="cancelled"}`, 0},
		{`sft_sessions_total{event="expired"}`, 0},
		{`sft_transfer_bytes_total`, size},
		{`sft_requests_total{code="ok",subject="sft.v1.auth.login"}`, 4},
		{`sft_requests_total{code="ok",subject="sft.v1.session.create"}`, 1},
		{`sft_requests_total{code="ok",subject="sft.v1.session.join"}`, 1},
		{`sft_requests_total{code="ok",subject="sft.v1.session.report"}`, 2},
		{`sft_requests_total{code="ok",subject="sft.v1.session.relay"}`, 2},
		{`sft_requests_total{code="not_found",subject="sft.v1.session.get"}`, 1},
		{`sft_request_duration_seconds_count{subject="sft.v1.session.create"}`, 1},
		{`sft_store_operation_duration_seconds_count{op="create_session",service="session"}`, 1},
		{`sft_jetstream_publish_failures_total{stream="SFT_EVENTS"}`, 0},
		{`sft_relay_refusals_total{code="forbidden"}`, 0},
	} {
		if got := after.Delta(before, c.series); got != c.want {
			t.Errorf("%s grew by %v, want %v", c.series, got, c.want)
		}
	}
	// The relay carried the file, both ways together, with the link's framing.
	if got := after.Delta(before, "sft_relay_bytes_total"); got < size {
		t.Errorf("sft_relay_bytes_total grew by %v, want at least the file's %d bytes", got, size)
	}
	for _, series := range []string{
		`sft_relay_pairs_active`, `sft_relay_waiting`,
		`sft_nats_connected{service="auth"}`, `sft_nats_connected{service="session"}`, `sft_nats_connected{service="key"}`,
		`sft_nats_reconnects_total{service="session"}`,
		`go_goroutines`, `process_start_time_seconds`,
	} {
		if _, ok := after[series]; !ok {
			t.Errorf("no %s in the scrape", series)
		}
	}
	if after[`sft_nats_connected{service="session"}`] != 1 {
		t.Error("sft_nats_connected says the session service is not connected")
	}
	for series := range after {
		// No user names or session ids in labels.
		for _, unbounded := range []string{sess.ID, "alice", "bob", filepath.Base(src)} {
			if strings.Contains(series, unbounded) {
				t.Errorf("series %s carries %q", series, unbounded)
			}
		}
	}
}
