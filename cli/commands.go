package cli

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/cli/prompt"
	"github.com/sftproject/sft/services/api"
)

func (a *app) loginCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in and cache a token for the other commands",
		Long: "Log in as --user (or SFT_USER). The password comes from SFT_PASSWORD, a prompt on a terminal,\n" +
			"or the first line of standard input; never from a flag.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			user := a.cfg.User
			if user == "" {
				return usageErr("no user: pass --user NAME or set SFT_USER")
			}
			pw, ok := lookupEnv(a.env, "SFT_PASSWORD")
			if !ok {
				var err error
				if pw, err = prompt.Password(a.io.In, a.io.Err, "Password for "+user, false); err != nil {
					return err
				}
			}
			ctx := cmd.Context()
			// The password opens a connection that may only log in; the
			// other commands connect with the token.
			nc, err := client.DialPassword(ctx, a.connOptions(), user, pw)
			if err != nil {
				return fmt.Errorf("login: %w", err)
			}
			defer nc.Close()
			c := client.New(nc, "", "")
			rep, err := c.Login(ctx, user, pw)
			if err != nil {
				return fmt.Errorf("login: %w", err)
			}
			if err := saveToken(a.cfg.ConfigDir, cachedToken{Server: a.cfg.NATS.URL, User: user, Token: c.Token(), ExpiresAt: rep.ExpiresAt}); err != nil {
				return err
			}
			fmt.Fprintf(a.io.Err, "Logged in as %s until %s.\n", user, rep.ExpiresAt.Local().Format(time.DateTime))
			return nil
		},
	}
	a.bind(cmd.Flags(), "user", "user", "u", "user name (default $SFT_USER)")
	return cmd
}

func (a *app) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke and forget the cached token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Revoke first, so a copy of the token file is worthless too;
			// a token that no longer connects needs no revoking.
			c, closeFn, err := a.session(cmd.Context())
			switch {
			case err == nil:
				err = c.Logout(cmd.Context())
				closeFn()
				if err != nil {
					return fmt.Errorf("logout: %w", err)
				}
			case errors.Is(err, errNotLoggedIn):
				return nil
			case api.CodeOf(err) != api.CodeUnauthorized && !errors.Is(err, errTokenUnusable):
				return fmt.Errorf("logout: %w (the cached token was kept; retry when the server is reachable)", err)
			}
			if err := os.Remove(tokenPath(a.cfg.ConfigDir)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			return nil
		},
	}
}

func (a *app) sendCmd() *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "send FILE --to USER",
		Short: "Offer a file to a user and send it once they accept",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usageErr("send needs --to USER")
			}
			ctx := cmd.Context()
			c, closeFn, err := a.session(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			bar := newProgress(a.io.Err, "sent")
			out, err := c.Send(ctx, client.SendOptions{
				To: to, Path: args[0], Listen: a.cfg.Peer.Listen, Advertise: a.cfg.Peer.Advertise, ConnectTimeout: a.cfg.Peer.ConnectTimeout,
				OnSession: func(s *api.Session) {
					fmt.Fprintf(a.io.Err, "Session %s: waiting for %s to run `sft-cli recv %s`\n", s.ID, to, s.ID)
				},
				Progress: bar.update, Logger: a.log,
			})
			bar.done()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.io.Out, "sent %s (%s) to %s: verified, crc32c %08x, sha256 %s, session %s completed\n",
				out.Session.Manifest.Files[0].Name, humanBytes(out.Result.Bytes), to, out.Result.CRC32C,
				hex.EncodeToString(out.Result.SHA256[:]), out.Session.ID)
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "user to send to")
	a.bind(cmd.Flags(), "peer.listen", "listen", "", "address to accept the peer on (default 127.0.0.1:0)")
	a.bind(cmd.Flags(), "peer.advertise", "advertise", "", "address the receiver should dial, if not the listen address (NAT, port forwarding)")
	a.bind(cmd.Flags(), "peer.connect_timeout", "timeout", "", "how long to wait for the peer to connect once it joined (default 1m)")
	return cmd
}

func (a *app) recvCmd() *cobra.Command {
	var dir string
	var overwrite bool
	cmd := &cobra.Command{
		Use:   "recv [SESSION_ID]",
		Short: "Receive a file; without an id, the one session waiting for you",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, closeFn, err := a.session(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			bar := newProgress(a.io.Err, "received")
			out, err := c.Receive(ctx, client.ReceiveOptions{
				SessionID: id, Dir: dir, Overwrite: overwrite, ConnectTimeout: a.cfg.Peer.ConnectTimeout,
				OnSession: func(s *api.Session) {
					f := s.Manifest.Files[0]
					fmt.Fprintf(a.io.Err, "Session %s: receiving %s (%s) from %s\n", s.ID, f.Name, humanBytes(f.Size), s.Initiator)
				},
				Progress: bar.update, Logger: a.log,
			})
			bar.done()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.io.Out, "received %s (%s) from %s: verified, crc32c %08x, sha256 %s, session %s completed\n",
				out.Path, humanBytes(out.Result.Bytes), out.Session.Initiator, out.Result.CRC32C,
				hex.EncodeToString(out.Result.SHA256[:]), out.Session.ID)
			return nil
		},
	}
	cmd.Flags().StringVarP(&dir, "output", "o", ".", "directory to write the file into")
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "replace an existing file of the same name")
	a.bind(cmd.Flags(), "peer.connect_timeout", "timeout", "", "how long to try reaching the sender (default 1m)")
	return cmd
}

func (a *app) watchCmd() *cobra.Command {
	var id string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Print session events live (your sessions; with --session, one session from its start)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, closeFn, err := a.session(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			enc := json.NewEncoder(a.io.Out)
			err = c.Watch(ctx, id, func(ev api.Event) error {
				if asJSON {
					return enc.Encode(ev)
				}
				_, err := fmt.Fprintln(a.io.Out, formatEvent(ev))
				return err
			})
			switch {
			case errors.Is(err, context.Canceled):
				return nil // Ctrl-C is how a watch normally ends
			case errors.Is(err, client.ErrWatchEnded) && id != "" && strings.Contains(err.Error(), "session "):
				return nil // the watched session ended
			}
			return err
		},
	}
	cmd.Flags().StringVar(&id, "session", "", "watch one session, replaying its events from the start")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per event")
	return cmd
}

func formatEvent(ev api.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s  %-9s  %s → %s", ev.At.Local().Format("15:04:05.000"), ev.Session, ev.Type, ev.Initiator, ev.Responder)
	if ev.Actor != "" {
		fmt.Fprintf(&b, "  by %s", ev.Actor)
	}
	if ev.Report != nil {
		if ev.Report.OK {
			fmt.Fprintf(&b, "  %s: %s crc32c %08x", ev.Role, humanBytes(ev.Report.Bytes), ev.Report.CRC32C)
		} else {
			fmt.Fprintf(&b, "  %s: failed", ev.Role)
		}
	}
	if ev.Reason != "" {
		fmt.Fprintf(&b, "  (%s)", ev.Reason)
	}
	return b.String()
}

func (a *app) lsCmd() *cobra.Command {
	var asJSON bool
	var state string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List your sessions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, closeFn, err := a.session(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			all, err := c.List(ctx, api.State(state))
			if err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(a.io.Out).Encode(all)
			}
			tw := tabwriter.NewWriter(a.io.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SESSION\tSTATE\tFROM\tTO\tFILE\tSIZE\tCREATED")
			for _, s := range all {
				f := s.Manifest.Files[0]
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.State, s.Initiator, s.Responder, f.Name, humanBytes(f.Size), s.CreatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&state, "state", "", "only sessions in this state (waiting, joined, completed, ...)")
	return cmd
}

func (a *app) cancelCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "cancel SESSION_ID",
		Short: "Cancel a session that has not ended",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, closeFn, err := a.session(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			s, err := c.Cancel(ctx, args[0], reason)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.io.Out, "session %s %s\n", s.ID, s.State)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown to the other member")
	return cmd
}

func lookupEnv(env []string, name string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}
