// Command sft-cli sends and receives files through SFT.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/sftproject/sft/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Environ(), os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sft-cli: "+err.Error())
		os.Exit(1)
	}
}

func run(ctx context.Context, args, env []string, stdout io.Writer) error {
	return cli.Run(ctx, cli.IO{In: os.Stdin, Out: stdout, Err: os.Stderr}, args, env)
}
