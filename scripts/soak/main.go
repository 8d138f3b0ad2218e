// Command soak is the crash soak: 5 `negotiate node` daemons on 127.0.0.1
// run continuous random sessions (2 to 4 parties, negotiated and signed
// offers, policy rejections and counters) while a random daemon is
// SIGKILLed at random moments and restarted on the same home. At the end
// it lets the sessions resolve, stops the daemons and checks every chain
// (internal/soak). It prints progress while it runs and exits 1 on any
// invariant violation:
//
//	go run ./scripts/soak --minutes 20
//	go run ./scripts/soak --duration 45s --json
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/negotiate-dev/negotiate/internal/soak"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	minutes := fs.Float64("minutes", 0, "run for this many minutes (settling comes on top)")
	duration := fs.Duration("duration", 0, "run for this long instead of --minutes (e.g. 45s)")
	nodes := fs.Int("nodes", soak.DefaultNodes, "number of daemons")
	workers := fs.Int("workers", soak.DefaultWorkers, "sessions in flight")
	timeout := fs.Duration("session-timeout", soak.DefaultSessionTimeout, "each session's deadline (propose --timeout)")
	killMin := fs.Duration("kill-min", soak.DefaultKillMin, "shortest pause between two kills")
	killMax := fs.Duration("kill-max", soak.DefaultKillMax, "longest pause between two kills")
	downMax := fs.Duration("down-max", soak.DefaultDownMax, "longest time a killed daemon stays down")
	noKill := fs.Bool("no-kill", false, "kill nothing (a baseline)")
	offers := fs.Int("offer-percent", 40, "share of signed offers (0 to 100; 0 keeps the default, -1 none)")
	settle := fs.Duration("settle", soak.DefaultSettleTimeout, "how long to wait for every session to end after the run")
	seed := fs.Uint64("seed", 0, "seed of the driver's choices (0: random)")
	bin := fs.String("bin", "", "negotiate binary (default: build ./cmd/negotiate into the work directory)")
	dir := fs.String("dir", "", "work directory for homes and logs (default: a new temporary directory)")
	keep := fs.Bool("keep", false, "keep the work directory after a successful run (it is always kept after a failure)")
	progressEvery := fs.Duration("progress", soak.DefaultProgressEvery, "interval of progress lines on stderr")
	asJSON := fs.Bool("json", false, "print the summary as JSON on stdout")
	verbose := fs.Bool("v", false, "log every kill and restart on stderr")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "soak: unexpected arguments %q\n", fs.Args())
		return 2
	}
	d := *duration
	if d == 0 {
		d = time.Duration(*minutes * float64(time.Minute))
	}
	if d <= 0 {
		fmt.Fprintln(os.Stderr, "soak: say how long: --minutes N or --duration D")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	work := *dir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "negotiate-soak-"); err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			return 1
		}
	}
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "soak: building cmd/negotiate")
		b, err := soak.BuildBinary(ctx, work)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		*bin = b
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	opts := soak.Options{
		Bin: *bin, Dir: work, Nodes: *nodes, Duration: d, Workers: *workers, SessionTimeout: *timeout,
		KillMin: *killMin, KillMax: *killMax, DownMax: *downMax, NoKill: *noKill, OfferPercent: *offers,
		SettleTimeout: *settle, Seed: *seed, Progress: os.Stderr, ProgressEvery: *progressEvery,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
	}
	fmt.Fprintf(os.Stderr, "soak: %d daemons in %s for %s\n", *nodes, work, d)
	rep, err := soak.Run(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		fmt.Fprintf(os.Stderr, "soak: homes and daemon logs kept in %s\n", work)
		if errors.Is(err, context.Canceled) {
			return 130
		}
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(os.Stderr, "soak:", err)
			return 1
		}
	} else {
		rep.WriteText(os.Stdout)
	}
	if !rep.OK() {
		fmt.Fprintf(os.Stderr, "soak: %d invariant violation(s); homes and daemon logs kept in %s\n", len(rep.Violations), work)
		return 1
	}
	if *keep || *dir != "" {
		fmt.Fprintf(os.Stderr, "soak: homes and daemon logs in %s\n", work)
	} else if err := os.RemoveAll(work); err != nil {
		fmt.Fprintln(os.Stderr, "soak: remove work directory:", err)
	}
	return 0
}
