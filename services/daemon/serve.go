package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/sftproject/sft/services/launch"
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
			// The service's context outlives the signal: in-flight work
			// finishes before it ends.
			svcCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
			defer cancel()
			r, err := launch.Services[name](svcCtx, d.cfg, nc, st, d.log.With("service", name))
			if err != nil {
				return fmt.Errorf("start %s service: %w", name, err)
			}
			d.log.Info("serving", "service", name, "nats", d.cfg.NATS.URL, "store", d.cfg.Store.Backend)
			fmt.Fprintf(d.io.Out, "sftd %s: serving on %s\n", name, d.cfg.NATS.URL)
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
	return cmd
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
