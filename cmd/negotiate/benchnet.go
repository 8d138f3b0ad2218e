package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/negotiate-dev/negotiate/internal/bench"
)

// networkFlags are the flags of `bench --network`.
func networkFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "network", Usage: "measure a network of `N` agents (or a sweep: 50,100,250,500,1000): lookups, first contacts, sessions; see below"},
		&cli.StringFlag{Name: "churn", Usage: "with --network: share of agents that go down while lookups are measured, e.g. 10% (half come back on new addresses)"},
		&cli.IntFlag{Name: "lookups", Value: bench.DefaultNetworkLookups, Usage: "with --network: lookups to measure"},
		&cli.IntFlag{Name: "first-contacts", Value: bench.DefaultFirstContacts, Usage: "with --network: first contacts (lookup + dial + 2-party signed offer) to measure"},
		&cli.IntFlag{Name: "max-connections", Usage: fmt.Sprintf("with --network: each node's connection manager high watermark, trimmed to half above it (default %d on the mock network, %d on tcp)", bench.DefaultNetworkConns, bench.DefaultTCPNetworkConns)},
		&cli.DurationFlag{Name: "record-lifetime", Usage: "with --network: agent record lifetime (default 1h; with --churn 1m, or 240ms per agent when longer)"},
		&cli.DurationFlag{Name: "lookup-timeout", Value: bench.DefaultLookupTimeout, Usage: "with --network: deadline of each lookup"},
		&cli.DurationFlag{Name: "settle-timeout", Value: bench.DefaultSettleTimeout, Usage: "with --network: longest wait for the DHT to settle"},
		&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "with --network: seed of the random choices"},
		&cli.StringFlag{Name: "out", Usage: "with --network: also write the results to `FILE` (JSON, for scripts/plot -network-from)"},
	}
}

// NetworkSweep is what `bench --network --out FILE` writes.
type NetworkSweep struct {
	Date string                 `json:"date"`
	Runs []*bench.NetworkResult `json:"runs"`
}

func benchNetworkAction(c *cli.Context) error {
	sizes, err := bench.ParseSizes(c.String("network"))
	if err != nil {
		return benchErr(err)
	}
	churn := 0.0
	if c.IsSet("churn") {
		if churn, err = bench.ParseChurn(c.String("churn")); err != nil {
			return benchErr(err)
		}
	}
	for _, name := range []string{"parties", "pairs", "offer", "no-pace", "store", "trace", "idle-sessions", "memprofile"} {
		if c.IsSet(name) {
			return usageErr("--%s does not apply to --network", name)
		}
	}
	base := bench.NetworkOptions{
		Transport: bench.TransportMock, Churn: churn, Lookups: c.Int("lookups"), FirstContacts: c.Int("first-contacts"),
		RecordLifetime: c.Duration("record-lifetime"), LookupTimeout: c.Duration("lookup-timeout"),
		SettleTimeout: c.Duration("settle-timeout"), Scheme: c.String("scheme"), Seed: c.Uint64("seed"),
		MaxConnections: c.Int("max-connections"),
	}
	if c.IsSet("transport") {
		base.Transport = c.String("transport")
	}
	if c.IsSet("sessions") {
		base.Sessions = c.Int("sessions")
	}
	if c.IsSet("concurrency") {
		base.Concurrency = c.Int("concurrency")
	}
	if c.IsSet("timeout") {
		base.SessionTimeout = c.Duration("timeout")
	}
	if c.IsSet("gogc") {
		base.GCPercent = c.Int("gogc")
		if base.GCPercent == 0 {
			base.GCPercent = -1 // keep GOGC, as --gogc 0 does without --network
		}
	}
	// Check every size before the first starts: a sweep may take an hour.
	for _, n := range sizes {
		o := base
		o.Nodes = n
		if err := o.Validate(); err != nil {
			return benchErr(err)
		}
	}
	if path := c.String("cpuprofile"); path != "" {
		if len(sizes) > 1 {
			return usageErr("--cpuprofile takes one network size, not a sweep")
		}
		f, err := os.Create(path)
		if err != nil {
			return usageErr("--cpuprofile: %v", err)
		}
		defer f.Close()
		base.CPUProfile = f
	}
	var out *os.File
	if path := c.String("out"); path != "" {
		if out, err = os.Create(path); err != nil {
			return usageErr("--out: %v", err)
		}
		defer out.Close()
	}
	sweep := &NetworkSweep{Date: time.Now().UTC().Format(time.RFC3339)}
	if !wantJSON(c) {
		printNetworkHeader(c.App.Writer)
	}
	var errs []error
	for _, n := range sizes {
		o := base
		o.Nodes = n
		bars := map[string]func(done, total int){}
		o.Progress = func(stage string, done, total int) {
			bar := bars[stage]
			if bar == nil {
				bar = progressBar(c.App.ErrWriter, fmt.Sprintf("network %d: %s", n, stage))
				bars[stage] = bar
			}
			bar(done, total)
		}
		fmt.Fprintf(c.App.ErrWriter, "bench: network of %d agents (%s transport, churn %.0f%%)...\n", n, o.Transport, churn*100)
		res, err := bench.RunNetwork(c.Context, o)
		if err != nil {
			return benchErr(err)
		}
		sweep.Runs = append(sweep.Runs, res)
		if !wantJSON(c) {
			if res.NoChurn != nil {
				printNetworkRow(c.App.Writer, res.NoChurn)
			}
			printNetworkRow(c.App.Writer, res)
		}
		if err := res.Err(); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "bench: network of %d: %v\n", n, err)
			errs = append(errs, err)
		}
		if out != nil {
			if err := writeSweep(out, sweep); err != nil {
				return err
			}
		}
	}
	if wantJSON(c) {
		if len(sizes) == 1 {
			if err := printJSON(c, sweep.Runs[0]); err != nil {
				return err
			}
		} else if err := printJSON(c, sweep.Runs); err != nil {
			return err
		}
	}
	if len(errs) > 0 {
		return silent(errs[0])
	}
	return nil
}

// writeSweep rewrites f with the sweep so far.
func writeSweep(f *os.File, s *NetworkSweep) error {
	js, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode sweep: %w", err)
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	if _, err := f.WriteAt(append(js, '\n'), 0); err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return nil
}

func printNetworkHeader(w io.Writer) {
	fmt.Fprintf(w, "%6s %-5s %5s | %8s %9s %11s %6s | %11s | %9s | %8s %8s | %9s %6s | %7s\n",
		"nodes", "net", "churn", "lookup", "hops", "lookup ms", "lookup", "1st contact", "sessions", "heap MiB", "gorout.", "departed", "expiry", "settle")
	fmt.Fprintf(w, "%6s %-5s %5s | %8s %9s %11s %6s | %11s | %9s | %8s %8s | %9s %6s | %7s\n",
		"", "", "", "success", "p50/p90", "p50/p99", "RTTs", "ms p50/p99", "ok/failed", "per node", "per node", "probes ok", "served", "s")
}

func printNetworkRow(w io.Writer, r *bench.NetworkResult) {
	departed, served := "-", "-"
	if r.Churn > 0 {
		departed = fmt.Sprintf("%d/%d", r.DepartedProbesOK, r.DepartedProbes)
		served = fmt.Sprintf("%d/%d", r.ExpiredServed, r.ExpiredLookups)
	}
	fmt.Fprintf(w, "%6d %-5s %4.0f%% | %7.2f%% %4.0f/%-4.0f %5.0f/%-5.0f %6.1f | %5.0f/%-5.0f | %4d/%-4d | %8.2f %8.0f | %9s %6s | %7.0f\n",
		r.Nodes, r.Transport, r.Churn*100, r.LookupSuccessRate*100, r.LookupHopsP50, r.LookupHopsP90, r.LookupMsP50, r.LookupMsP99, r.LookupRoundTripsP50,
		r.FirstContactMsP50, r.FirstContactMsP99, r.SessionsCommitted+r.FirstContactCommitted, r.SessionsFailed+r.FirstContacts-r.FirstContactCommitted,
		r.HeapMiBPerNode, r.GoroutinesPerNode, departed, served, r.SettleSec)
	for _, f := range r.LookupFailures {
		fmt.Fprintf(w, "  lookup failed: %s\n", f)
	}
	for _, f := range r.DepartedFailures {
		fmt.Fprintf(w, "  departed probe failed: %s\n", f)
	}
	for _, f := range r.FailReasons {
		fmt.Fprintf(w, "  session failed: %s\n", f)
	}
	for _, f := range r.ChainsBroken {
		fmt.Fprintf(w, "  broken: %s\n", f)
	}
}
