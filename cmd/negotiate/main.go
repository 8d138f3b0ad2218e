// Command negotiate is the CLI and daemon of negotiate: peer-to-peer
// transaction negotiation and countersigning.
//
// It is thin: it parses flags, calls the library packages and prints
// (human-readable, or JSON with --json). Exit codes are documented in
// exitCodesHelp and mapped from errors in exitCode.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the CLI with args (args[0] is the program name) and returns the
// exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	err := app.RunContext(ctx, args)
	code := exitCode(err)
	if err != nil && !isSilent(err) {
		msg := err.Error()
		if !strings.HasPrefix(msg, "negotiate: ") {
			msg = "negotiate: " + msg
		}
		fmt.Fprintln(stderr, msg)
		if code == exitUsage {
			fmt.Fprintln(stderr, "run `negotiate --help` or `negotiate <command> --help` for usage")
		}
	}
	return code
}
