package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sftproject/sft/api"
)

func (a *app) adminCmd() *cobra.Command {
	admin := &cobra.Command{Use: "admin", Short: "Look after the system (admin role only)"}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show every service replica on the bus, its requests, errors and latency, and the open sessions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, closeFn, err := a.session(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			rep, err := c.Status(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.io.Out).Encode(rep)
			}
			return printStatus(a.io.Out, rep)
		},
	}
	status.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	admin.AddCommand(status)
	return admin
}

// printStatus prints one line per replica, one per endpoint of each, and
// the open sessions.
func printStatus(w io.Writer, rep *api.StatusReply) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tREPLICA\tHOST\tVERSION\tINSTANCES\tUPTIME\tREQUESTS\tERRORS\tAVG LATENCY")
	for _, s := range rep.Services {
		var reqs, errs int
		var total time.Duration
		for _, e := range s.Endpoints {
			reqs, errs = reqs+e.Requests, errs+e.Errors
			total += e.AverageLatency * time.Duration(e.Requests)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\n", s.Name, s.Replica, s.Host, s.Version, s.Instances,
			s.Uptime(rep.At).Round(time.Second), reqs, errs, average(total, reqs))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "SERVICE\tREPLICA\tENDPOINT\tREQUESTS\tERRORS\tAVG LATENCY")
	for _, s := range rep.Services {
		for _, e := range s.Endpoints {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", s.Name, s.Replica, e.Name, e.Requests, e.Errors, average(e.AverageLatency*time.Duration(e.Requests), e.Requests))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var open []string
	for _, st := range slices.Sorted(maps.Keys(rep.OpenSessions)) {
		open = append(open, fmt.Sprintf("%s %d", st, rep.OpenSessions[st]))
	}
	_, err := fmt.Fprintf(w, "\nopen sessions: %s\n", strings.Join(open, ", "))
	return err
}

// average is total/n for display, "-" without requests.
func average(total time.Duration, n int) string {
	if n == 0 {
		return "-"
	}
	d := total / time.Duration(n)
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}
