// Package daemon implements the sftd commands: `dev` runs the all-in-one
// stack, `user` manages accounts, `certs` makes a deployment's keys, and
// `auth`, `session`, `key` and `relay` run one service each, and `health`
// checks a running one.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sftproject/sft/api"
	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/config"
	"github.com/sftproject/sft/internal/prompt"
	"github.com/sftproject/sft/services/auth"
	"github.com/sftproject/sft/services/devstack"
	"github.com/sftproject/sft/services/launch"
	"github.com/sftproject/sft/services/secrets"
	"github.com/sftproject/sft/services/store"
)

// IO is where a command reads and writes.
type IO struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// Run executes sftd with args (without the program name).
func Run(ctx context.Context, stdio IO, args, env []string) error {
	d := &daemon{io: stdio, env: env}
	root := &cobra.Command{
		Use:           "sftd",
		Short:         "SFT services",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(d.env, d.configFile, config.FlagsOf(cmd.Flags()))
			if err != nil {
				return err
			}
			d.cfg = cfg
			d.log = cfg.Log.Logger(stdio.Err, defaultLevel(cmd))
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&d.configFile, "config", "", "config file (default <config dir>/sft.yaml)")
	d.bind(pf, "data_dir", "data-dir", "directory for keys, certificates and JetStream data")
	d.bind(pf, "log.level", "log-level", "log level: debug, info, warn, error (default info for dev and the services, warn for the other commands)")
	d.bind(pf, "log.format", "log-format", "log format: text or json")
	root.AddCommand(d.devCmd(), d.userCmd(), d.certsCmd(),
		d.serviceCmd("auth", "Run the auth service (logins, tokens) against an external NATS"),
		d.serviceCmd("session", "Run the session service (state machine, events, watch relay) against an external NATS"),
		d.serviceCmd("key", "Run the key service (session keys) against an external NATS"),
		d.relayCmd(), d.healthCmd(),
	)
	root.SetArgs(args)
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	return root.ExecuteContext(ctx)
}

// servesKey is the annotation of the commands that run until stopped (dev
// and the services), whose logs are for operators.
const servesKey = "sftd-serves"

// defaultLevel is the log level of cmd when none was chosen: info for a
// command that serves, warn for one a person types and waits for (user,
// certs), which says what it did in its own words.
func defaultLevel(cmd *cobra.Command) slog.Level {
	if cmd.Annotations[servesKey] != "" {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

type daemon struct {
	io         IO
	env        []string
	configFile string
	cfg        config.Config
	log        *slog.Logger
}

func (d *daemon) bind(fs *pflag.FlagSet, key, name, usage string) {
	config.Flag(fs, key, name, "", usage)
}

func (d *daemon) devCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:         "dev",
		Short:       "Run everything in one process: embedded NATS (TLS, JetStream), state store, auth, session and key services",
		Args:        cobra.NoArgs,
		Annotations: map[string]string{servesKey: "yes"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			st, err := devstack.Start(ctx, d.cfg, d.log)
			if err != nil {
				return err
			}
			d.printDevReady(st)
			<-ctx.Done()
			d.log.Info("shutting down")
			st.Close()
			return nil
		},
	}
	d.bind(cmd.Flags(), "dev.listen", "listen", "address of the embedded NATS server (default 127.0.0.1:4222; 0.0.0.0:4222 serves other machines too)")
	config.ListFlag(cmd.Flags(), "dev.hosts", "host", "another name or address clients reach the server by, for its certificate (repeatable)")
	d.bind(cmd.Flags(), "session.ttl", "session-ttl", "session lifetime (default 15m)")
	d.bind(cmd.Flags(), "auth.token_ttl", "token-ttl", "login token lifetime (default 12h)")
	d.bindMetrics(cmd)
	return cmd
}

// caFileName is the name the printed example gives the CA file once
// copied to another machine.
const caFileName = "sft-ca.pem"

// printDevReady tells the person who started `sftd dev` where clients
// connect: one URL per line, the CA file, what a client on another machine
// runs (or how to let other machines in), and whether clients need a
// certificate. It is one write, so a reader that sees the first line sees
// them all.
func (d *daemon) printDevReady(st *devstack.Stack) {
	var b strings.Builder
	fmt.Fprintf(&b, "sftd dev: NATS at %s\n", st.URL)
	for _, u := range st.RemoteURLs {
		if u != st.URL {
			fmt.Fprintf(&b, "sftd dev: NATS at %s\n", u)
		}
	}
	fmt.Fprintf(&b, "sftd dev: relay at %s (for peers that cannot reach each other; it sees only ciphertext)\n", strings.Join(st.RelayAddrs, ", "))
	b.WriteString(metricsLine("dev", st.MetricsAddr))
	fmt.Fprintf(&b, "sftd dev: CA certificate at %s (clients: --ca or SFT_NATS_CA_FILE; the default when on this machine)\n", st.CAFile)
	if len(st.RemoteURLs) == 0 {
		_, port, _ := net.SplitHostPort(d.cfg.Dev.Listen)
		fmt.Fprintf(&b, "sftd dev: only this machine can connect; `sftd dev --listen %s` lets other machines in\n", net.JoinHostPort("0.0.0.0", port))
	} else {
		fmt.Fprintf(&b, "sftd dev: on another machine, copy the CA file to ~/%s and run: export SFT_NATS_URL=%s SFT_NATS_CA_FILE=$HOME/%s; sft-cli login --user NAME\n",
			caFileName, st.RemoteURLs[0], caFileName)
	}
	if d.cfg.NATS.VerifyClients {
		fmt.Fprintf(&b, "sftd dev: clients must present a certificate of this CA (nats.verify_clients): `sftd certs --client NAME` issues one for sft-cli (SFT_NATS_CERT_FILE, SFT_NATS_KEY_FILE); the services' are in %s\n", d.cfg.SecretsPath())
	}
	_, _ = io.WriteString(d.io.Out, b.String())
}

func (d *daemon) userCmd() *cobra.Command {
	user := &cobra.Command{Use: "user", Short: "Manage users (of the dev stack; it must be running)"}
	d.bind(user.PersistentFlags(), "nats.url", "server", "NATS server URL (default tls://127.0.0.1:4222)")
	var admin bool
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Create a user; the password comes from a prompt or standard input",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := api.ValidUserName(name); err != nil {
				return err
			}
			// Fail before the prompt when there is no installation to add to.
			if d.cfg.Store.Backend != "redis" {
				if _, err := secrets.ServiceKey(d.cfg.SecretsPath(), broker.ServiceAuth); err != nil {
					return err
				}
			}
			pw, err := prompt.Password(d.io.In, d.io.Err, "Password for "+name, true)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			st, closeFn, err := d.openStore(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			hash, err := auth.HashPassword(pw, auth.DefaultHashParams)
			if err != nil {
				return err
			}
			role := roleUser
			if admin {
				role = roleAdmin
			}
			err = st.CreateUser(ctx, &store.User{Name: name, PasswordHash: hash, Role: role, CreatedAt: time.Now().UTC()})
			if errors.Is(err, store.ErrExists) {
				return fmt.Errorf("user %q already exists (sftd user set-role changes its role)", name)
			}
			if err != nil {
				return fmt.Errorf("create user: %w", err)
			}
			// Where it went, so a command run without the servers' store
			// settings shows at once that it wrote to another store.
			fmt.Fprintf(d.io.Out, "user %s created (role %s) in %s\n", name, role, storeName(d.cfg))
			return nil
		},
	}
	add.Flags().BoolVar(&admin, "admin", false, "give the user the admin role (may watch every session)")
	setRole := &cobra.Command{
		Use:   "set-role NAME user|admin",
		Short: "Change a user's role; it takes effect at the user's next login",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, role := args[0], args[1]
			if err := api.ValidUserName(name); err != nil {
				return err
			}
			if role != roleUser && role != roleAdmin {
				return fmt.Errorf("role %q: use %s or %s", role, roleUser, roleAdmin)
			}
			ctx := cmd.Context()
			st, closeFn, err := d.openStore(ctx)
			if err != nil {
				return err
			}
			defer closeFn()
			u, err := st.GetUser(ctx, name)
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("no user named %q (sftd user add creates one)", name)
			}
			if err != nil {
				return fmt.Errorf("read user: %w", err)
			}
			if u.Role == role {
				fmt.Fprintf(d.io.Out, "user %s already has role %s\n", name, role)
				return nil
			}
			u.Role = role
			if err := st.UpdateUser(ctx, u); err != nil {
				return fmt.Errorf("update user: %w", err)
			}
			fmt.Fprintf(d.io.Out, "user %s now has role %s (from their next login)\n", name, role)
			return nil
		},
	}
	user.AddCommand(add, setRole)
	return user
}

// Roles a user record may carry.
const (
	roleUser  = "user"
	roleAdmin = "admin"
)

// connect opens a connection to the broker with service's NATS identity
// (and the client certificate, when one is configured).
func (d *daemon) connect(ctx context.Context, service, name string) (*nats.Conn, error) {
	return launch.Connect(ctx, d.cfg, service, name, d.log)
}

// storeName names the store the user commands reach, without any
// password a URL carries.
func storeName(cfg config.Config) string {
	if cfg.Store.Backend == "redis" {
		if cfg.Redis.SentinelMaster != "" {
			return fmt.Sprintf("the Redis store of Sentinel master %s (%s)", cfg.Redis.SentinelMaster, strings.Join(cfg.Redis.SentinelAddrs, ","))
		}
		return "the Redis store at " + hostsOf(cfg.Redis.URL)
	}
	return "the JetStream store on " + hostsOf(cfg.NATS.URL)
}

// hostsOf is the host:port of each of the comma-separated URLs in list.
func hostsOf(list string) string {
	var hosts []string
	for raw := range strings.SplitSeq(list, ",") {
		raw = strings.TrimSpace(raw)
		if u, err := url.Parse(raw); err == nil && u.Host != "" {
			hosts = append(hosts, u.Host)
		} else if !strings.Contains(raw, "@") {
			hosts = append(hosts, raw)
		}
	}
	return strings.Join(hosts, ",")
}

// openStore opens the configured store for the user commands. Accounts
// are the auth service's data, so with the JetStream store they are
// reached with its identity; Redis needs no broker at all.
func (d *daemon) openStore(ctx context.Context) (launch.Store, func(), error) {
	var nc *nats.Conn
	if d.cfg.Store.Backend != "redis" {
		var err error
		if nc, err = d.connect(ctx, broker.ServiceAuth, "sftd-admin"); err != nil {
			return nil, nil, err
		}
	}
	closeConn := func() {
		if nc != nil {
			nc.Close()
		}
	}
	st, err := launch.OpenStore(ctx, d.cfg, nc, d.log)
	if err != nil {
		closeConn()
		return nil, nil, err
	}
	return st, func() { _ = st.Close(); closeConn() }, nil
}
