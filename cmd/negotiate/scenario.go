package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/negotiate-dev/negotiate/scenarios"
)

// errScenarioFailed marks a scenario run whose expectations or invariants failed (exit 1).
var errScenarioFailed = errors.New("scenario failed")

// maxExploreRuns bounds --runs so a typo cannot run for days.
const maxExploreRuns = 1_000_000

func init() { commandBuilders = append(commandBuilders, scenarioCommand) }

var knownBugs = []scenarios.Bug{scenarios.BugNone, scenarios.BugReleaseLockAtDeadline, scenarios.BugSkipVotePersist}

func parseBug(s string) (scenarios.Bug, error) {
	for _, b := range knownBugs {
		if string(b) == s {
			return b, nil
		}
	}
	return "", usageErr("--bug %q: use %s or %s (tests of the invariant checker only)", s, scenarios.BugReleaseLockAtDeadline, scenarios.BugSkipVotePersist)
}

func scenarioCommand() *cli.Command {
	return &cli.Command{
		Name:  "scenario",
		Usage: "run scripted multi-party scenarios (see scenarios/README.md)",
		Subcommands: []*cli.Command{
			{
				Name:      "run",
				Usage:     "run scenario files (a directory runs every *.yaml in it)",
				ArgsUsage: "FILE|DIR...",
				Description: "Without --sim: real nodes on 127.0.0.1 with real chains in a temporary\n" +
					"directory; faults act on the real nodes and messages.\n" +
					"With --sim: the deterministic simulator; --seed replays a run exactly.\n" +
					"Exit 0 when every scenario passed or was skipped, 1 when one failed.\n" +
					"--json: an array of reports.",
				Flags: withJSON(
					&cli.BoolFlag{Name: "sim", Usage: "run in the deterministic simulator"},
					&cli.Uint64Flag{Name: "seed", Usage: "simulator seed (0 = the scenario's own)"},
					&cli.BoolFlag{Name: "random-faults", Usage: "simulator: add seeded random faults (checks invariants only)"},
					&cli.BoolFlag{Name: "seal", Usage: "simulator: sign and verify every message with the real wire format"},
					&cli.BoolFlag{Name: "trace", Usage: "simulator: print the trace"},
					&cli.StringFlag{Name: "bug", Usage: "simulator: inject a deliberate durability bug (checker tests only)"},
					&cli.BoolFlag{Name: "keep", Usage: "real: keep the temporary directory with the chains"},
				),
				Action: scenarioRun,
			},
			{
				Name:      "explore",
				Usage:     "run scenarios under many seeds with random faults and check the invariants",
				ArgsUsage: "FILE|DIR...",
				Flags: withJSON(
					&cli.IntFlag{Name: "runs", Value: scenarios.DefaultExploreRuns, Usage: "seeds per scenario"},
					&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "first seed"},
					&cli.BoolFlag{Name: "seal", Usage: "sign and verify every message with the real wire format (slower)"},
					&cli.BoolFlag{Name: "stop-at-first", Usage: "stop at the first failing seed"},
					&cli.StringFlag{Name: "bug", Usage: "inject a deliberate durability bug (checker tests only)"},
				),
				Action: scenarioExplore,
			},
		},
	}
}

func loadScenarios(c *cli.Context) ([]*scenarios.Scenario, error) {
	pos, err := args(c)
	if err != nil {
		return nil, err
	}
	if len(pos) == 0 {
		return nil, usageErr("name scenario files or directories, e.g. `negotiate scenario %s scenarios/`", c.Command.Name)
	}
	return scenarios.Load(pos...)
}

func scenarioRun(c *cli.Context) error {
	scs, err := loadScenarios(c)
	if err != nil {
		return err
	}
	bug, err := parseBug(c.String("bug"))
	if err != nil {
		return err
	}
	sim := c.Bool("sim")
	if !sim && (bug != scenarios.BugNone || c.Bool("random-faults") || c.IsSet("seed")) {
		return usageErr("--seed, --random-faults and --bug need --sim")
	}
	reports := []*scenarios.Report{}
	failed := 0
	w := c.App.Writer
	for _, sc := range scs {
		var rep *scenarios.Report
		if sim {
			rep, err = scenarios.RunSim(c.Context, sc, scenarios.SimOptions{
				Seed: c.Uint64("seed"), RandomFaults: c.Bool("random-faults"), Seal: c.Bool("seal"), Trace: c.Bool("trace"), Bug: bug,
			})
		} else {
			rep, err = scenarios.RunReal(c.Context, sc, scenarios.RealOptions{
				KeepDir:  c.Bool("keep"),
				Progress: func(line string) { fmt.Fprintf(c.App.ErrWriter, "  %s: %s\n", sc.Name, line) },
			})
		}
		if err != nil {
			return fmt.Errorf("scenario %s: %w", sc.Name, err)
		}
		reports = append(reports, rep)
		if rep.Status == "failed" {
			failed++
		}
		if !wantJSON(c) {
			printReport(c, rep)
		}
	}
	if wantJSON(c) {
		if err := printJSON(c, reports); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(w, "%d scenarios: %d passed, %d failed, %d skipped\n", len(reports), countStatus(reports, "passed"), failed, countStatus(reports, "skipped"))
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d of %d scenarios failed", errScenarioFailed, failed, len(reports))
	}
	return nil
}

func countStatus(rs []*scenarios.Report, status string) int {
	n := 0
	for _, r := range rs {
		if r.Status == status {
			n++
		}
	}
	return n
}

func printReport(c *cli.Context, rep *scenarios.Report) {
	w := c.App.Writer
	switch rep.Status {
	case "skipped":
		fmt.Fprintf(w, "SKIP %s (%s): %s\n", rep.Scenario, rep.Mode, strings.TrimPrefix(rep.Skipped, "skipped: "))
		return
	case "passed":
		if rep.Mode == "sim" {
			fmt.Fprintf(w, "PASS %s (sim, seed %d, %d messages, %d ms virtual, trace %s)\n", rep.Scenario, rep.Seed, rep.Messages, rep.VirtualMillis, shortTrace(rep.TraceHash))
		} else {
			fmt.Fprintf(w, "PASS %s (%s, %d ms)\n", rep.Scenario, rep.Mode, rep.VirtualMillis)
		}
	default:
		fmt.Fprintf(w, "FAIL %s (%s, seed %d, trace %s)\n", rep.Scenario, rep.Mode, rep.Seed, shortTrace(rep.TraceHash))
		for _, l := range rep.Failures() {
			fmt.Fprintf(w, "     %s: %s\n", l.Name, l.Detail)
		}
		if rep.Replay != "" {
			fmt.Fprintf(w, "     replay: %s\n", rep.Replay)
		}
	}
	if rep.Status != "skipped" {
		for _, l := range rep.Lines() {
			mark := "ok  "
			if !l.Passed {
				mark = "FAIL"
			}
			fmt.Fprintf(w, "     %s %s\n", mark, l.Name)
		}
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "     note: %s\n", n)
	}
	for _, t := range rep.Trace {
		fmt.Fprintf(w, "     %s\n", t)
	}
}

func scenarioExplore(c *cli.Context) error {
	scs, err := loadScenarios(c)
	if err != nil {
		return err
	}
	bug, err := parseBug(c.String("bug"))
	if err != nil {
		return err
	}
	runs := c.Int("runs")
	if runs < 1 || runs > maxExploreRuns {
		return usageErr("--runs %d: use 1 to %d", runs, maxExploreRuns)
	}
	reports := []*scenarios.ExploreReport{}
	failed := 0
	w := c.App.Writer
	for _, sc := range scs {
		rep, err := scenarios.Explore(c.Context, sc, scenarios.ExploreOptions{
			Runs: runs, Seed: c.Uint64("seed"), Seal: c.Bool("seal"), Bug: bug, StopAtFirst: c.Bool("stop-at-first"),
			Progress: progressBar(c.App.ErrWriter, sc.Name+" runs"),
		})
		if err != nil {
			return fmt.Errorf("explore %s: %w", sc.Name, err)
		}
		reports = append(reports, rep)
		if !rep.Passed && rep.Skipped == "" {
			failed++
		}
		if wantJSON(c) {
			continue
		}
		switch {
		case rep.Skipped != "":
			fmt.Fprintf(w, "SKIP %s: %s\n", rep.Scenario, rep.Skipped)
		case rep.Passed:
			fmt.Fprintf(w, "PASS %s: %d runs from seed %d, %d crashes, %.0f runs/s\n", rep.Scenario, rep.Runs, rep.FirstSeed, rep.Crashes, rep.RunsPerSecond)
		default:
			fmt.Fprintf(w, "FAIL %s: %d of %d runs failed\n", rep.Scenario, rep.FailedRuns, rep.Runs)
			for _, f := range rep.Failures {
				for _, v := range f.Violations {
					fmt.Fprintf(w, "     seed %d: %s: %s\n", f.Seed, v.Name, v.Detail)
				}
				fmt.Fprintf(w, "     replay: %s\n", f.Replay)
			}
		}
	}
	if wantJSON(c) {
		if err := printJSON(c, reports); err != nil {
			return err
		}
	}
	if failed > 0 {
		return fmt.Errorf("%w: %d of %d scenarios failed exploration", errScenarioFailed, failed, len(reports))
	}
	return nil
}

// shortTrace abbreviates a trace hash for human output (--json has it whole).
func shortTrace(h string) string {
	if h == "" {
		return "-"
	}
	if len(h) > 16 {
		return h[:16]
	}
	return h
}

// progressBar draws "[#####     ] done/total name" on w (stderr), redrawn
// in place on a terminal; elsewhere (logs, CI) it prints a line every 10%.
func progressBar(w io.Writer, name string) func(done, total int) {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	last := -1
	return func(done, total int) {
		if total <= 0 {
			return
		}
		if !tty {
			if tenth := done * 10 / total; tenth != last {
				last = tenth
				fmt.Fprintf(w, "  %s: %d/%d\n", name, done, total)
			}
			return
		}
		step := done * 50 / total
		if step == last && done != total {
			return
		}
		last = step
		fmt.Fprintf(w, "\r[%-50s] %d/%d %s", strings.Repeat("#", step), done, total, name)
		if done == total {
			fmt.Fprintln(w)
		}
	}
}
