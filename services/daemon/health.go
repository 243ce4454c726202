package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// healthTimeout bounds one health check; compose and Kubernetes give a
// check a few seconds.
const healthTimeout = 5 * time.Second

// healthCmd asks a running sftd process whether it is ready (or, with
// --live, alive) and exits 0 when it is, 1 when not: the health check of
// images that have no shell or curl.
func (d *daemon) healthCmd() *cobra.Command {
	var url string
	var live bool
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Check that a running sftd process is ready (/readyz) or alive (--live, /healthz); exits 0 or 1",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/readyz"
			if live {
				path = "/healthz"
			}
			switch {
			case url == "":
				base, err := localURL(d.cfg.Metrics.Listen)
				if err != nil {
					return err
				}
				url = base + path
			case !strings.Contains(strings.TrimPrefix(strings.TrimPrefix(url, "http://"), "https://"), "/"):
				url += path // a server's address alone: its readiness (or liveness)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), healthTimeout)
			defer cancel()
			body, err := probe(ctx, url)
			if err != nil {
				return err
			}
			fmt.Fprintln(d.io.Out, body)
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "URL to check, or a metrics server's http://HOST:PORT (default: /readyz at metrics.listen on this machine)")
	cmd.Flags().BoolVar(&live, "live", false, "check /healthz (the process is alive) instead of /readyz")
	d.bindMetrics(cmd)
	return cmd
}

// localURL is the base URL of the metrics server listening at listen, as
// reached from the same machine (or container).
func localURL(listen string) (string, error) {
	if listen == "" {
		return "", errors.New("no metrics server to check: set metrics.listen (SFT_METRICS_LISTEN, --metrics) as the process does, or give --url")
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("metrics.listen %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// probe GETs url and returns the first line of the answer when it is 200.
func probe(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("health: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("health: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s: %s", url, resp.Status, line)
	}
	return line, nil
}
