package metrics_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/services/metrics"
	"github.com/sftproject/sft/services/metrics/metricstest"
)

// /healthz answers while the server runs; /readyz only once it has checks
// and all hold, naming those that do not (and never their reasons).
func TestServerReadiness(t *testing.T) {
	m := metrics.NewMetrics()
	srv := metrics.New(metrics.Options{Listen: "127.0.0.1:0", Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	addr, err := srv.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := srv.Wait(); err != nil {
			t.Error(err)
		}
	})
	base := "http://" + addr.String()
	failing := errors.New("secret reason")
	var storeErr error
	for _, step := range []struct {
		name     string
		add      func()
		code     int
		contains string
	}{
		{"no checks yet", func() {}, http.StatusServiceUnavailable, "starting"},
		{"all hold", func() {
			srv.AddCheck("nats", func(context.Context) error { return nil })
			srv.AddCheck("store", func(context.Context) error { return storeErr })
		}, http.StatusOK, "ready"},
		{"the store fails", func() { storeErr = failing }, http.StatusServiceUnavailable, "not ready: store"},
		{"the store is back", func() { storeErr = nil }, http.StatusOK, "ready"},
		{"a check that hangs times out", func() {
			srv.AddCheck("slow", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
		}, http.StatusServiceUnavailable, "not ready: slow"},
	} {
		step.add()
		code, body := metricstest.Get(t, base+"/readyz")
		if code != step.code || !strings.Contains(body, step.contains) || strings.Contains(body, failing.Error()) {
			t.Errorf("%s: /readyz %d %q, want %d with %q", step.name, code, body, step.code, step.contains)
		}
		if code, _ := metricstest.Get(t, base+"/healthz"); code != http.StatusOK {
			t.Errorf("%s: /healthz %d", step.name, code)
		}
	}
}

// The metrics of a process: counters by their labels, function-read
// gauges with and without a label, and a nil *Metrics that records nothing.
func TestMetricsScrape(t *testing.T) {
	m := metrics.NewMetrics()
	m.Request("sft.v1.session.create", "ok", 3*time.Millisecond)
	m.Request("sft.v1.session.create", "throttled", time.Millisecond)
	m.Session("created")
	m.Transferred(1234)
	m.StoreOp("session", "get_session", time.Millisecond, true)
	m.Gauge("sft_test_open", "test", "state", func() map[string]float64 { return map[string]float64{"waiting": 2} })
	m.Counter("sft_test_bytes_total", "test", "", func() map[string]float64 { return map[string]float64{"": 7} })
	srv := metrics.New(metrics.Options{Listen: "127.0.0.1:0", Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	addr, err := srv.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = srv.Wait() })
	got := metricstest.Scrape(t, addr)
	for series, want := range map[string]float64{
		`sft_requests_total{code="ok",subject="sft.v1.session.create"}`:        1,
		`sft_requests_total{code="throttled",subject="sft.v1.session.create"}`: 1,
		`sft_request_duration_seconds_count{subject="sft.v1.session.create"}`:  2,
		`sft_sessions_total{event="created"}`:                                  1,
		`sft_sessions_total{event="expired"}`:                                  0,
		`sft_transfer_bytes_total`:                                             1234,
		`sft_store_errors_total{op="get_session",service="session"}`:           1,
		`sft_test_open{state="waiting"}`:                                       2,
		`sft_test_bytes_total`:                                                 7,
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (present: %t), want %v", series, v, ok, want)
		}
	}
	if _, ok := got["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}

	var none *metrics.Metrics // records nothing, and does not panic
	none.Request("x", "ok", 0)
	none.Session("created")
	none.Gauge("x", "x", "", nil)
}
