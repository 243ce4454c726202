package daemon

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/sftproject/sft/services/launch"
	"github.com/sftproject/sft/services/metrics"
)

// serviceCmd runs one service against an external NATS (and Redis) until
// SIGINT or SIGTERM, then stops taking requests, lets those under way
// finish, and exits. Run as many replicas as load needs: they share the
// queue group.
func (d *daemon) serviceCmd(name, short string) *cobra.Command {
	cmd := &cobra.Command{
		Use:         name,
		Short:       short,
		Args:        cobra.NoArgs,
		Annotations: map[string]string{servesKey: "yes"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			nc, err := d.connect(ctx, name, "sftd-"+name)
			if err != nil {
				return err
			}
			defer nc.Close()
			st, err := launch.OpenStore(ctx, d.cfg, nc, d.log.With("component", "store"))
			if err != nil {
				return err
			}
			defer st.Close()
			m := metrics.NewMetrics()
			observed := launch.Observe(m, name, nc, st)
			// The metrics server comes first, so /healthz answers (and
			// /readyz says "starting") while the service starts; it ends
			// with the signal, so an orchestrator sees the replica go as
			// soon as it drains.
			srv, addr, stopMetrics, err := d.serveMetrics(ctx, m)
			if err != nil {
				return err
			}
			defer stopMetrics()
			// The service's context outlives the signal: in-flight work
			// finishes before it ends.
			svcCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
			defer cancel()
			r, err := launch.Services[name](svcCtx, d.cfg, nc, observed, d.log.With("service", name), m)
			if err != nil {
				return fmt.Errorf("start %s service: %w", name, err)
			}
			launch.Ready(srv, name, nc, observed, r)
			d.log.Info("serving", "service", name, "nats", d.cfg.NATS.URL, "store", d.cfg.Store.Backend)
			fmt.Fprintf(d.io.Out, "sftd %s: serving on %s\n%s", name, d.cfg.NATS.URL, metricsLine(name, addr))
			<-ctx.Done()
			d.log.Info("stopping: draining requests under way", "service", name)
			r.Stop()
			drain(nc, drainTimeout)
			cancel()
			r.Wait()
			d.log.Info("stopped", "service", name)
			return nil
		},
	}
	d.bind(cmd.Flags(), "nats.url", "server", "NATS server URL")
	d.bind(cmd.Flags(), "store.backend", "store", "state store: jetstream or redis")
	d.bindMetrics(cmd)
	return cmd
}

// bindMetrics gives a serving command the --metrics flag.
func (d *daemon) bindMetrics(cmd *cobra.Command) {
	d.bind(cmd.Flags(), "metrics.listen", "metrics", "address of the HTTP server with /metrics, /healthz and /readyz, e.g. 127.0.0.1:9464 (default: none)")
}

// serveMetrics starts the metrics server of a serving command on
// metrics.listen (none when unset). It stops when ctx (the signal) ends or
// stop is called; stop waits until it has.
func (d *daemon) serveMetrics(ctx context.Context, m *metrics.Metrics) (srv *metrics.Server, addr net.Addr, stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	srv, addr, err = launch.Metrics(ctx, d.cfg, m, d.log.With("component", "metrics"))
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return srv, addr, func() {
		cancel()
		if srv != nil {
			_ = srv.Wait()
		}
	}, nil
}

// metricsLine is the line after the ready line that says where the
// metrics server of command runs; empty without one.
func metricsLine(command string, addr net.Addr) string {
	if addr == nil {
		return ""
	}
	return fmt.Sprintf("sftd %s: metrics, health and readiness on http://%s (/metrics, /healthz, /readyz)\n", command, addr)
}

// drainTimeout bounds how long a stopping service lets the work under way
// finish (docker-compose.yml's stop grace period leaves it that time).
const drainTimeout = 10 * time.Second

// drain flushes what nc still has to send and closes it, waiting at most d.
func drain(nc *nats.Conn, d time.Duration) {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		return
	}
	select {
	case <-closed:
	case <-time.After(d):
	}
}
