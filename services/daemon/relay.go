package daemon

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/sftproject/sft/services/launch"
	"github.com/sftproject/sft/services/metrics"
)

// relayCmd runs the relay until SIGINT or SIGTERM, then stops taking
// connections, sends away those still waiting for their peer, lets the
// relayed sessions finish for up to drainTimeout and exits.
func (d *daemon) relayCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:         "relay",
		Short:       "Run the relay: carries the peer link, still end-to-end encrypted, between clients that cannot reach each other",
		Args:        cobra.NoArgs,
		Annotations: map[string]string{servesKey: "yes"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			// The relay's context outlives the signal: relayed sessions
			// get their time to finish.
			svcCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
			defer cancel()
			log := d.log.With("service", "relay")
			m := metrics.NewMetrics()
			srv, addr, stopMetrics, err := d.serveMetrics(ctx, m)
			if err != nil {
				return err
			}
			defer stopMetrics()
			r, err := launch.Relay(svcCtx, d.cfg, log, m)
			if err != nil {
				return fmt.Errorf("start relay: %w", err)
			}
			launch.ReadyRelay(srv, r)
			log.Info("serving", "listen", r.Addr.String())
			fmt.Fprintf(d.io.Out, "sftd relay: serving on %s\n%s", r.Addr, metricsLine("relay", addr))
			<-ctx.Done()
			log.Info("stopping: letting relayed sessions finish", "sessions", r.Server.Stats().ActivePairs)
			dctx, dcancel := context.WithTimeout(context.Background(), drainTimeout)
			if err := r.Server.Drain(dctx); err != nil {
				log.Warn("stopping: relayed sessions cut short", "sessions", r.Server.Stats().ActivePairs)
			}
			dcancel()
			cancel()
			err = r.Wait()
			log.Info("stopped")
			return err
		},
	}
	d.bind(cmd.Flags(), "relay.listen", "listen", "address to accept relay clients on (default 0.0.0.0:4223)")
	d.bindMetrics(cmd)
	return cmd
}
