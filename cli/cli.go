// Package cli implements the sft-cli commands: login, send, recv, watch,
// ls, cancel and admin status. It only parses, prompts and prints; the work happens in
// package client.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"golang.org/x/term"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sftproject/sft/broker"
	"github.com/sftproject/sft/cli/client"
	"github.com/sftproject/sft/config"
)

// IO is where a command reads and writes. Err gets progress, prompts and
// messages; Out gets results, so scripts can read them.
type IO struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// Run executes sft-cli with args (without the program name) and the given
// environment.
func Run(ctx context.Context, stdio IO, args, env []string) error {
	a := &app{io: stdio, env: env}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	return root.ExecuteContext(ctx)
}

type app struct {
	io         IO
	env        []string
	configFile string
	cfg        config.Config
	log        *slog.Logger
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "sft-cli",
		Short:         "Send and receive files securely through SFT",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(a.env, a.configFile, config.FlagsOf(cmd.Flags()))
			if err != nil {
				return err
			}
			a.cfg = cfg
			a.log = cfg.Log.Logger(a.io.Err, slog.LevelWarn)
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.configFile, "config", "", "config file (default <config dir>/sft.yaml)")
	a.bind(pf, "nats.url", "server", "", "NATS server URL (default tls://127.0.0.1:4222)")
	a.bind(pf, "nats.ca_file", "ca", "", "CA certificate of the NATS server (default: the dev CA)")
	a.bind(pf, "config_dir", "config-dir", "", "directory for the login token and config file")
	a.bind(pf, "log.level", "log-level", "", "log level: debug, info, warn, error (default warn)")
	root.AddCommand(a.loginCmd(), a.logoutCmd(), a.sendCmd(), a.recvCmd(), a.watchCmd(), a.lsCmd(), a.cancelCmd(), a.adminCmd())
	return root
}

// bind declares a string flag that sets config key.
func (a *app) bind(fs *pflag.FlagSet, key, name, short, usage string) {
	config.Flag(fs, key, name, short, usage)
}

// connOptions is where and how to reach NATS, with the client certificate
// a broker that verifies clients (mTLS) asks for, when configured; the
// credentials are added by client.DialPassword or client.DialToken.
func (a *app) connOptions() broker.ConnOptions {
	return broker.ConnOptions{
		URL: a.cfg.NATS.URL, CAFile: a.cfg.CAFile(),
		CertFile: a.cfg.NATS.CertFile, KeyFile: a.cfg.NATS.KeyFile,
		Name: "sft-cli", Logger: a.log,
	}
}

// session connects with the cached login token.
func (a *app) session(ctx context.Context) (*client.Client, func(), error) {
	tok, err := loadToken(a.cfg.ConfigDir, a.cfg.NATS.URL)
	if err != nil {
		return nil, nil, err
	}
	nc, err := client.DialToken(ctx, a.connOptions(), tok.User, tok.Token)
	if err != nil {
		return nil, nil, err
	}
	return client.New(nc, tok.User, tok.Token), nc.Close, nil
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	// A character device is not enough: /dev/null is one.
	return ok && term.IsTerminal(int(f.Fd()))
}

var errUsage = errors.New("usage")

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}
