package devstack_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/internal/hermetic"
	"github.com/sftproject/sft/services/daemon"
	"github.com/sftproject/sft/services/devstack/devstacktest"
	"github.com/sftproject/sft/services/metrics/metricstest"
	"github.com/sftproject/sft/services/store/redisstore/redistest"
)

// /readyz turns 503 when the store goes away under running services and
// 200 again when it is back, while /healthz stays 200; `sftd health`
// exits accordingly.
func TestReadinessFollowsTheStore(t *testing.T) {
	redis := redistest.Start(t, redistest.Options{})
	h := devstacktest.Start(t, func(c *config.Config) {
		c.Store.Backend, c.Redis.URL = "redis", redis.URL()
		c.Metrics.Listen = "127.0.0.1:0"
	})
	base := "http://" + h.Stack.MetricsAddr.String()
	status := func(path string) (int, string) { return metricstest.Get(t, base+path) }
	until := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	if code, body := status("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz of a running stack: %d %s", code, body)
	}
	if err := sftdHealth(t, base+"/readyz"); err != nil {
		t.Fatalf("sftd health of a ready stack: %v", err)
	}

	redis.Kill()
	var body string
	until("/readyz to answer 503", func() bool {
		var code int
		code, body = status("/readyz")
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "store") {
		t.Errorf("/readyz without the store says %q, which does not name the store", body)
	}
	if code, _ := status("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz without the store: %d; the process is still alive", code)
	}
	if err := sftdHealth(t, base+"/readyz"); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("sftd health of a stack without its store: %v, want a 503 error", err)
	}

	redis.Restart()
	until("/readyz to answer 200 again", func() bool {
		code, _ := status("/readyz")
		return code == http.StatusOK
	})
	if err := sftdHealth(t, base+"/healthz"); err != nil {
		t.Errorf("sftd health --url /healthz: %v", err)
	}
}

// sftdHealth runs `sftd health --url url` in a home of its own.
func sftdHealth(t *testing.T, url string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	return daemon.Run(ctx, daemon.IO{In: strings.NewReader(""), Out: &out, Err: &errOut}, []string{"health", "--url", url}, hermetic.Home(t.TempDir()))
}
