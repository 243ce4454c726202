// Command sftd runs the SFT services. `sftd dev` is the all-in-one
// embedded stack; `sftd user add` manages accounts.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sftproject/sft/services/daemon"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sftd: "+err.Error())
		os.Exit(1)
	}
}

func run(ctx context.Context, args, env []string, stdout io.Writer) error {
	return daemon.Run(ctx, daemon.IO{In: os.Stdin, Out: stdout, Err: os.Stderr}, args, env)
}
