package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/negotiate-dev/negotiate/internal/bench"
	"github.com/negotiate-dev/negotiate/sign"
)

func init() { commandBuilders = append(commandBuilders, benchCommand) }

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "measure session latency and throughput on this machine",
		Description: "Starts real nodes on 127.0.0.1 (mDNS off) with durable chains in a temporary\n" +
			"directory, runs sessions that every party accepts, and reports latency by\n" +
			"phase, throughput and the floor unit measured in the same run (one durable\n" +
			"chain write + one stream round trip + one signature + one verification),\n" +
			"then verifies every chain. It does not touch your home or chain. Latency runs\n" +
			"from propose until the session is durable on every party's chain (the\n" +
			"initiator's own figure is shown beside it).\n\n" +
			"--pairs P starts P groups of --parties agents; --concurrency C keeps C groups\n" +
			"busy at once (a group runs one session at a time: its chain lock). Sessions\n" +
			"are paced to the per-peer frame limit unless --no-pace.\n\n" +
			"--store shared (default) keeps every agent's chain in one durable file, so\n" +
			"all agents' writes share transactions and fsyncs (group commit), as one\n" +
			"process hosting many agents does; --store per-agent gives each agent its own\n" +
			"file, as separate `negotiate node` daemons on one disk. --transport picks the\n" +
			"libp2p transport (tcp by default; quic; both, where libp2p prefers QUIC).\n" +
			"--offer runs signed offers instead of negotiated sessions: the initiator\n" +
			"signs first, a participant's accept is its signature (see docs/protocol.md).\n\n" +
			"--idle-sessions N instead measures the heap of N sessions waiting for a\n" +
			"decision, through the pure core (no network, no disk).\n\n" +
			"--network N starts N agents in this process instead, each a real node with\n" +
			"its own key, DHT participation and chain (all chains in one shared store),\n" +
			"bootstrapped through 3 well-known nodes, on go-libp2p's in-memory mock network\n" +
			"(--transport mock, the default here) or on loopback TCP (--transport tcp, up\n" +
			"to about 250 agents here: file descriptors). Once the DHT settled it measures\n" +
			"--lookups lookups of random agents by random agents (success, hops, time),\n" +
			"--first-contacts first contacts (lookup + dial + 2-party signed offer),\n" +
			"--sessions sessions between random pairs and groups of 3-5 (default 100,\n" +
			"--concurrency at once, default 8), heap and goroutines per node. --churn 10%\n" +
			"takes that share of agents down during the lookups (half come back on new\n" +
			"addresses) and checks that departed agents fail fast and their records expire\n" +
			"(--record-lifetime, 1m by default with churn). A list of sizes is a sweep,\n" +
			"one row each; --out FILE keeps the figures for scripts/plot. Field names of\n" +
			"--json: docs/performance.md, \"Network size\".\n\n" +
			"Exits 1 if any session failed or any chain is unsound.",
		Flags: append(networkFlags(), withJSON(
			&cli.IntFlag{Name: "parties", Value: bench.DefaultParties, Usage: fmt.Sprintf("parties per session, initiator included (2..%d)", bench.MaxParties)},
			&cli.IntFlag{Name: "sessions", Value: bench.DefaultSessions, Usage: "sessions to measure"},
			&cli.IntFlag{Name: "concurrency", Value: bench.DefaultConcurrency, Usage: "groups running a session at once"},
			&cli.IntFlag{Name: "pairs", Usage: "groups of agents (default: --concurrency)"},
			&cli.StringFlag{Name: "scheme", Value: sign.DefaultScheme, Usage: "signature scheme: " + strings.Join(sign.SchemeNames(), ", ")},
			&cli.DurationFlag{Name: "timeout", Value: bench.DefaultSessionTimeout, Usage: "deadline of each session (with --network the default is 60s, as for `negotiate propose`)"},
			&cli.BoolFlag{Name: "no-pace", Usage: "start sessions as fast as possible, over the per-peer frame limit"},
			&cli.StringFlag{Name: "store", Value: bench.StoreShared, Usage: "where the chains live: shared (one file, group commit) or per-agent"},
			&cli.StringFlag{Name: "transport", Value: bench.TransportTCP, Usage: "libp2p transport: tcp, quic or both (with --network: mock, the default there, or tcp)"},
			&cli.BoolFlag{Name: "offer", Usage: "run signed offers (the initiator signs first; 2 parties commit in one round trip) instead of negotiated sessions"},
			&cli.StringFlag{Name: "memprofile", Usage: "write the allocation profile after the measured sessions to `FILE` and the one before them to FILE.start (go tool pprof -sample_index=alloc_space -diff_base FILE.start FILE)"},
			&cli.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile of the measured sessions (not start-up) to `FILE` (go tool pprof)"},
			&cli.IntFlag{Name: "gogc", Value: bench.DefaultGCPercent, Usage: "Go GC percent for the run (Go's default is 100; 0 keeps the GOGC environment variable's): many agents in one process trade memory for CPU"},
			&cli.BoolFlag{Name: "trace", Usage: "time each step of every measured session at every node (engine step, durable write, send, receive) and print the median timeline"},
			&cli.IntFlag{Name: "idle-sessions", Usage: "measure the heap of N idle sessions instead (pure core)"},
		)...),
		Action: benchAction,
	}
}

func benchAction(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	if c.IsSet("network") {
		return benchNetworkAction(c)
	}
	for _, name := range []string{"churn", "lookups", "first-contacts", "record-lifetime", "lookup-timeout", "settle-timeout", "seed", "out"} {
		if c.IsSet(name) {
			return usageErr("--%s needs --network", name)
		}
	}
	if n := c.Int("idle-sessions"); c.IsSet("idle-sessions") {
		res, err := bench.IdleHeap(n, c.String("scheme"))
		if err != nil {
			return benchErr(err)
		}
		if wantJSON(c) {
			return printJSON(c, res)
		}
		w := c.App.Writer
		fmt.Fprintf(w, "%d sessions waiting for a decision (%s, pure core)\n", res.Sessions, res.Scheme)
		fmt.Fprintf(w, "  participant heap  %.1f MiB (%.0f bytes/session)\n", res.ParticipantMiB, res.PerSessionBytes)
		fmt.Fprintf(w, "  initiator heap    %.1f MiB\n", float64(res.InitiatorBytes)/(1<<20))
		return nil
	}
	progress := progressBar(c.App.ErrWriter, "bench sessions")
	stages := map[string]func(done, total int){}
	setupProgress := func(stage string, done, total int) {
		bar := stages[stage]
		if bar == nil {
			bar = progressBar(c.App.ErrWriter, "bench "+stage)
			stages[stage] = bar
		}
		bar(done, total)
	}
	opts := bench.Options{
		Parties: c.Int("parties"), Sessions: c.Int("sessions"), Concurrency: c.Int("concurrency"),
		Pairs: c.Int("pairs"), Scheme: c.String("scheme"), SessionTimeout: c.Duration("timeout"),
		NoPace: c.Bool("no-pace"), Progress: progress, SetupProgress: setupProgress, Store: c.String("store"), Transport: c.String("transport"),
		Offer: c.Bool("offer"), Trace: c.Bool("trace"), GCPercent: c.Int("gogc"),
	}
	if err := opts.Validate(); err != nil {
		return benchErr(err)
	}
	if path := c.String("cpuprofile"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return usageErr("--cpuprofile: %v", err)
		}
		defer f.Close()
		opts.CPUProfile = f
	}
	if path := c.String("memprofile"); path != "" {
		after, err := os.Create(path)
		if err != nil {
			return usageErr("--memprofile: %v", err)
		}
		defer after.Close()
		start, err := os.Create(path + ".start")
		if err != nil {
			return usageErr("--memprofile: %v", err)
		}
		defer start.Close()
		opts.MemProfile, opts.MemProfileStart = after, start
	}
	fmt.Fprintf(c.App.ErrWriter, "bench: starting %d nodes on 127.0.0.1...\n", opts.Parties*opts.Pairs)
	res, err := bench.Run(c.Context, opts)
	if err != nil {
		return benchErr(err)
	}
	if wantJSON(c) {
		if err := printJSON(c, res); err != nil {
			return err
		}
	} else {
		printBench(c.App.Writer, res)
	}
	return res.Err()
}

// benchErr maps bad options to a usage error (exit 2).
func benchErr(err error) error {
	if errors.Is(err, bench.ErrBadOptions) {
		return usageErr("%v", err)
	}
	return err
}

func printBench(w io.Writer, r *bench.Result) {
	kind := "sessions"
	if r.Offer {
		kind = "signed offers"
	}
	fmt.Fprintf(w, "%d %s of %d parties, %s, %d pairs, concurrency %d (%d nodes, %d CPUs, %s store, %s)\n",
		r.Sessions, kind, r.Parties, r.Scheme, r.Pairs, r.Concurrency, r.Nodes, r.CPUs, r.Store, r.Transport)
	fmt.Fprintf(w, "  committed %d, failed %d in %.2f s: %.1f sessions/s", r.Committed, r.Failed, r.ElapsedSec, r.SessionsPerSec)
	if r.Paced {
		fmt.Fprintf(w, " (paced: at most %.1f/s per pair)", r.PaceCapPerPair)
	}
	fmt.Fprintln(w)
	for _, q := range []struct {
		name string
		q    bench.Quantiles
	}{{"latency", r.Latency}, {"  initiator", r.Initiator}, {"  negotiation", r.Negotiation}, {"  signing", r.Signing}} {
		fmt.Fprintf(w, "  %-14s p50 %8.2f ms  p90 %8.2f ms  p99 %8.2f ms  max %8.2f ms\n", q.name, q.q.P50, q.q.P90, q.q.P99, q.q.Max)
	}
	f := r.Floor
	fmt.Fprintf(w, "  floor unit     %.0f µs = chain write %.0f + round trip %.0f + sign %.1f + verify %.1f\n",
		f.SumUs, f.ChainWriteUs, f.RoundTripUs, f.SignUs, f.VerifyUs)
	fmt.Fprintf(w, "  p50 / floor    %.2f\n", r.P50FloorRatio)
	if r.WritesPerCommit > 0 {
		fmt.Fprintf(w, "  group commit   %.2f durable writes per journal sync", r.WritesPerCommit)
		if r.WritesPerFlush > 0 {
			fmt.Fprintf(w, ", %.0f per bbolt flush", r.WritesPerFlush)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  runtime        GOGC %d, heap %.0f MiB from the OS\n", r.GCPercent, r.HeapSysMiB)
	fmt.Fprintf(w, "  chains         %d verified, %d locks left, %d broken; %d frames rate-limited\n",
		r.ChainsVerified, r.LocksLeft, len(r.ChainsBroken), r.RateLimitedFrames)
	for _, s := range r.FailReasons {
		fmt.Fprintf(w, "  failed: %s\n", s)
	}
	for _, s := range r.ChainsBroken {
		fmt.Fprintf(w, "  broken: %s\n", s)
	}
	if len(r.Timeline) > 0 {
		fmt.Fprintf(w, "  timeline (medians of the %d of %d sessions that took the most common path; µs from Propose):\n", r.TimelineSessions, r.Committed)
		for _, t := range r.Timeline {
			what := t.Point
			if t.Type != "" {
				what += " " + t.Type
			}
			fmt.Fprintf(w, "  %9.0f  +%7.0f  %-14s %s\n", t.AtUs, t.StepUs, t.Role, what)
		}
	}
}
