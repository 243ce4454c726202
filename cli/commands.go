package cli

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/internal/prompt"
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
	var to, name, text string
	var of outputFlags
	var pf pathFlags
	cmd := &cobra.Command{
		Use:   "send FILE|FOLDER... --to USER",
		Short: "Offer files, folders, standard input (-) or a text to a user, and send them once they accept",
		Long: "Offer files and folders (streamed, with relative paths, modes and times), standard input\n" +
			"(`send - --name NAME`) or a short text (`send --text MSG`) to --to USER. Running the same send\n" +
			"again while its session is open resumes it where it stopped.",
		Example: "  sft-cli send report.pdf photos/ --to bob\n" +
			"  tar c dir | sft-cli send - --name dir.tar --to bob\n" +
			"  sft-cli send --text \"the door code is 4711\" --to bob",
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usageErr("send needs --to USER")
			}
			src, err := a.sources(args, name, text)
			if err != nil {
				return err
			}
			peer, err := a.peerOptions(pf)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			c, closeFn, err := a.session(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			o := a.newOutput(of)
			for _, p := range src.Skipped {
				o.say("skipping %s: not a regular file or folder", p)
			}
			m := src.Manifest
			out, err := c.Send(ctx, client.SendOptions{
				To: to, Sources: src, Peer: peer,
				OnSession: func(s *api.Session, resumed bool) {
					if resumed {
						o.say("Session %s: resuming the transfer to %s", s.ID, to)
					} else {
						o.say("Session %s: waiting for %s to run `sft-cli recv %s`", s.ID, to, s.ID)
					}
					if !m.Text {
						o.start(m, "sent")
					}
				},
				Progress: o.update, Notify: o.say, Logger: a.log,
			})
			o.finish(m, err == nil)
			if err != nil {
				return err
			}
			o.result(fmt.Sprintf("sent %s (%s) to %s%s: verified, crc32c %08x, sha256 %s, session %s completed",
				m.Summary(), humanBytes(out.Result.Bytes), to, pathNote(out), out.Result.CRC32C,
				hex.EncodeToString(out.Result.SHA256[:]), out.Session.ID), newResult(out))
			return nil
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "user to send to")
	cmd.Flags().StringVar(&name, "name", "", "name to give standard input (with -)")
	cmd.Flags().StringVar(&text, "text", "", "send this text instead of files; the receiver sees it")
	of.add(cmd.Flags())
	pf.add(cmd.Flags())
	a.bind(cmd.Flags(), "peer.listen", "listen", "", "address to accept the peer on (default :0, every interface)")
	a.bind(cmd.Flags(), "peer.advertise", "advertise", "", "addresses (comma-separated) the receiver should try first (NAT, port forwarding)")
	a.bind(cmd.Flags(), "peer.connect_timeout", "timeout", "", "how long to wait for the peer to connect, or to come back after a drop (default 1m)")
	return cmd
}

// sources turns send's arguments into what to send.
func (a *app) sources(args []string, name, text string) (*client.Sources, error) {
	switch {
	case text != "":
		if len(args) > 0 || name != "" {
			return nil, usageErr("--text sends only the text: drop the file arguments and --name")
		}
		return client.TextFrom(text)
	case len(args) == 1 && args[0] == "-":
		if name == "" {
			return nil, usageErr("standard input needs a name: send - --name NAME")
		}
		return client.StreamFrom(a.io.In, name)
	case len(args) == 0:
		return nil, usageErr("nothing to send: name files or folders, - for standard input, or --text")
	case name != "":
		return nil, usageErr("--name applies to standard input (-) only")
	case slices.Contains(args, "-"):
		return nil, usageErr("- (standard input) cannot be sent with other entries")
	}
	return client.FilesFrom(args)
}

func (a *app) recvCmd() *cobra.Command {
	var dir, listen, reason string
	var overwrite, yes, decline bool
	var of outputFlags
	var pf pathFlags
	cmd := &cobra.Command{
		Use:   "recv [SESSION_ID]",
		Short: "Receive a transfer; without an id, the one session waiting for you",
		Long: "Receive the files of a session into a directory (-o DIR, default .), or a single file to standard\n" +
			"output (-o -). A text is shown. Running recv again for a session whose transfer was cut resumes it.\n" +
			"When recv cannot receive (a name is taken, too little space) the sender is told why and the session\n" +
			"waits for another try; answering no, or --decline, ends it.",
		Example: "  sft-cli recv\n" +
			"  sft-cli recv k3v9q2xw7m4tbp5a -o ~/Downloads --yes\n" +
			"  sft-cli recv -o - > dir.tar\n" +
			"  sft-cli recv --listen 0.0.0.0:7000 --advertise 203.0.113.5:7000\n" +
			"  sft-cli recv --decline --reason \"not expecting this\"",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason != "" && !decline {
				return usageErr("--reason goes with --decline")
			}
			toStdout := dir == "-"
			if toStdout && of.json {
				return usageErr("-o - writes the file to standard output; it cannot be combined with --json")
			}
			peer, err := a.peerOptions(pf)
			if err != nil {
				return err
			}
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
			if decline {
				s, err := c.DeclineSession(ctx, id, reason)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.io.Out, "session %s %s: %s\n", s.ID, s.State, s.Reason)
				return nil
			}
			o := a.newOutput(of)
			if toStdout {
				o.out = io.Discard // the file's bytes own standard output
			}
			var m api.Manifest
			ro := client.ReceiveOptions{
				SessionID: id, Dir: dir, Overwrite: overwrite, Listen: listen, Peer: peer,
				OnSession: func(s *api.Session, resumed bool) {
					m = s.Manifest
					verb := "receiving"
					if resumed {
						verb = "resuming"
					}
					o.say("Session %s: %s %s (%s) from %s", s.ID, verb, s.Manifest.Summary(), sessionSize(s), s.Initiator)
					if resumed { // no question to ask: it was accepted before
						o.start(s.Manifest, "received")
					}
				},
				Confirm: func(s *api.Session, need, free int64) error {
					if s.Manifest.Text {
						return nil // a few bytes, shown at once: no progress
					}
					if yes || !isTerminal(a.io.In) {
						o.start(s.Manifest, "received")
						return nil
					}
					q := fmt.Sprintf("Receive %s (%s) from %s into %s?", s.Manifest.Summary(), humanBytes(need), s.Initiator, dir)
					if free >= 0 {
						q += fmt.Sprintf(" %s free.", humanBytes(free))
					}
					ok, err := prompt.Confirm(a.io.In, a.io.Err, q)
					if err != nil {
						return err
					}
					if !ok {
						return client.ErrDeclined
					}
					o.start(s.Manifest, "received")
					return nil
				},
				Progress: o.update, Notify: o.say, Logger: a.log,
			}
			if toStdout {
				ro.Dir, ro.Out = "", a.io.Out
			}
			out, err := c.Receive(ctx, ro)
			o.finish(m, err == nil)
			if err != nil {
				return err
			}
			if out.Session.Manifest.Text {
				if of.json {
					o.result("", newResult(out))
					return nil
				}
				fmt.Fprintf(a.io.Err, "Text from %s:\n", out.Session.Initiator)
				fmt.Fprintln(a.io.Out, cleanTerminalText(out.Text))
				return nil
			}
			where := "standard output"
			if !toStdout {
				where = destination(dir, out.Session.Manifest)
			}
			line := fmt.Sprintf("received %s (%s) from %s%s into %s: verified, crc32c %08x, sha256 %s, session %s completed",
				out.Session.Manifest.Summary(), humanBytes(out.Result.Bytes), out.Session.Initiator, pathNote(out), where, out.Result.CRC32C,
				hex.EncodeToString(out.Result.SHA256[:]), out.Session.ID)
			if toStdout {
				if !of.quiet {
					fmt.Fprintln(a.io.Err, line)
				}
				return nil
			}
			o.result(line, newResult(out))
			return nil
		},
	}
	cmd.Flags().StringVarP(&dir, "output", "o", ".", "directory to save into, or - for standard output (a single file)")
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "replace existing files of the same names")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "accept without asking (the question is asked only on a terminal)")
	cmd.Flags().BoolVar(&decline, "decline", false, "refuse the session instead of receiving it; the sender is told")
	cmd.Flags().StringVar(&reason, "reason", "", "with --decline: why, shown to the sender")
	cmd.Flags().StringVar(&listen, "listen", "", "listen for the sender on HOST:PORT instead of dialing it (the sender dials out)")
	a.bind(cmd.Flags(), "peer.advertise", "advertise", "", "with --listen: addresses (comma-separated) the sender should try first")
	of.add(cmd.Flags())
	pf.add(cmd.Flags())
	a.bind(cmd.Flags(), "peer.connect_timeout", "timeout", "", "how long to try reaching the sender, or to wait for it after a drop (default 1m)")
	return cmd
}

// destination names where a transfer landed: the one top-level entry all
// entries share, or the directory when there are several.
func destination(dir string, m api.Manifest) string {
	top := ""
	for _, f := range m.Files {
		t, _, _ := strings.Cut(f.Name, "/")
		if top != "" && t != top {
			return dir
		}
		top = t
	}
	return filepath.Join(dir, filepath.FromSlash(top))
}

// cleanTerminalText keeps a received text from driving the terminal:
// control characters other than newline and tab are shown escaped.
func cleanTerminalText(s string) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069):
			fmt.Fprintf(&b, "\\u%04x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
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
			err = c.WatchStatus(ctx, id, func(ev api.Event) error {
				if asJSON {
					return enc.Encode(ev)
				}
				_, err := fmt.Fprintln(a.io.Out, formatEvent(ev))
				return err
			}, func(ce client.ConnEvent) {
				// Silence would read as "nothing is happening": say the
				// server is away, and when the events flow again.
				if asJSON {
					_ = enc.Encode(newConnectionJSON(ce))
					return
				}
				fmt.Fprintln(a.io.Err, formatConnEvent(ce))
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
	cmd.Flags().BoolVar(&asJSON, "json", false, `print one JSON object per event, and {"type":"connection",...} when the server goes away or comes back`)
	return cmd
}

// connectionJSON is what `watch --json` prints, among the events, when the
// server goes away and when it is back.
type connectionJSON struct {
	Type  string     `json:"type"`  // "connection"
	State string     `json:"state"` // "lost" or "restored"
	At    time.Time  `json:"at"`
	Since *time.Time `json:"since,omitempty"` // restored: when it was lost
	Error string     `json:"error,omitempty"` // lost: why
}

func newConnectionJSON(ce client.ConnEvent) connectionJSON {
	j := connectionJSON{Type: "connection", State: string(ce.State), At: ce.At}
	if ce.State == client.ConnRestored {
		j.Since = &ce.Since
	}
	if ce.Err != nil {
		j.Error = ce.Err.Error()
	}
	return j
}

func formatConnEvent(ce client.ConnEvent) string {
	at := ce.At.Local().Format("15:04:05.000")
	if ce.State == client.ConnLost {
		return fmt.Sprintf("%s  server unreachable (%v); retrying, and what happens meanwhile is shown once it is back", at, ce.Err)
	}
	return fmt.Sprintf("%s  server reachable again after %s; what happened meanwhile follows", at, ce.Outage())
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
	if ev.Path != "" {
		fmt.Fprintf(&b, "  %s via %s", ev.Path, ev.Via)
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
			rep, err := c.ListReply(ctx, api.State(state))
			if err != nil {
				return err
			}
			all := rep.Sessions
			if rep.Omitted > 0 {
				fmt.Fprintf(a.io.Err, "%d older sessions not shown: their manifests do not fit in one reply\n", rep.Omitted)
			}
			if asJSON {
				return json.NewEncoder(a.io.Out).Encode(all)
			}
			tw := tabwriter.NewWriter(a.io.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SESSION\tSTATE\tFROM\tTO\tWHAT\tSIZE\tCREATED")
			for _, s := range all {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.State, s.Initiator, s.Responder, s.Manifest.Summary(), sessionSize(&s), s.CreatedAt.Local().Format(time.DateTime))
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

// pathFlags are the flags that choose how the peers connect.
type pathFlags struct{ relay, noRelay bool }

func (f *pathFlags) add(fs *pflag.FlagSet) {
	fs.BoolVar(&f.relay, "relay", false, "go through the relay only (for networks where direct attempts are slow to fail)")
	fs.BoolVar(&f.noRelay, "no-relay", false, "never use the relay: the bytes go only over a direct connection")
}

// peerOptions is how this run connects to its peer: the configuration,
// with --relay or --no-relay over peer.relay.
func (a *app) peerOptions(f pathFlags) (client.PeerOptions, error) {
	p := a.cfg.Peer
	mode := client.RelayMode(p.Relay)
	switch {
	case f.relay && f.noRelay:
		return client.PeerOptions{}, usageErr("--relay and --no-relay contradict each other: give one")
	case f.relay:
		mode = client.RelayAlways
	case f.noRelay:
		mode = client.RelayNever
	}
	return client.PeerOptions{Listen: p.Listen, Advertise: p.Advertise, Timeout: p.ConnectTimeout, Relay: mode, RelayDelay: p.RelayDelay}, nil
}

// pathNote says how the bytes went, for the result line.
func pathNote(out *client.Outcome) string {
	switch out.Path {
	case api.PathRelay:
		return " through the relay at " + out.Via
	case api.PathDirect:
		return " directly (" + out.Via + ")"
	}
	return ""
}
