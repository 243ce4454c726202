// Package metricstest reads a running metrics server in tests: a scrape
// as a map of samples, and the status of a health endpoint.
package metricstest

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Samples are a scrape's values by series, written as the exposition
// writes them: name{label="value",...} with the labels sorted by name.
type Samples map[string]float64

// Delta is how much series grew from before to s (absent counts as 0).
func (s Samples) Delta(before Samples, series string) float64 { return s[series] - before[series] }

// Scrape reads /metrics of the server at addr.
func Scrape(t testing.TB, addr net.Addr) Samples {
	t.Helper()
	code, body := Get(t, "http://"+addr.String()+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: status %d", code)
	}
	out := Samples{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("/metrics: malformed line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics: malformed value in %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// Get fetches url and returns the status code and body.
func Get(t testing.TB, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}
