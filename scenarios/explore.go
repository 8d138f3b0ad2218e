package scenarios

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// Explore limits.
const (
	// MaxExploreRuns bounds one Explore call; more is a loop in a script.
	MaxExploreRuns = 1_000_000
	// DefaultExploreRuns is the number of seeds when none is given.
	DefaultExploreRuns = 300
	// maxExploreFailures bounds the failures kept in a report.
	maxExploreFailures = 20
)

// ExploreOptions configures Explore.
type ExploreOptions struct {
	// Runs is how many seeds to run (default DefaultExploreRuns).
	Runs int
	// Seed is the first seed; run i uses Seed+i (default 1).
	Seed uint64
	// Seal runs every message through the real wire format (slower).
	Seal bool
	// Bug injects a deliberate durability bug (tests of the checker only).
	Bug Bug
	// DropEnded drops ended sessions from memory at once and restores them
	// from their checkpoints (SimOptions.DropEnded).
	DropEnded bool
	// HeadCheck makes every participant sign only after the initiator's
	// statement (SimOptions.HeadCheck).
	HeadCheck bool
	// StopAtFirst ends the exploration at the first failing seed.
	StopAtFirst bool
	// Progress, if set, is called after every run with the runs done and the total.
	Progress func(done, total int)
}

// ExploreFailure is one failing seed.
type ExploreFailure struct {
	Seed       uint64 `json:"seed"`
	Violations []Line `json:"violations"`
	TraceHash  string `json:"trace_hash"`
	Replay     string `json:"replay"`
}

// ExploreReport sums up an exploration. It marshals to JSON.
type ExploreReport struct {
	Scenario  string `json:"scenario"`
	File      string `json:"file,omitempty"`
	Runs      int    `json:"runs"`
	FirstSeed uint64 `json:"first_seed"`
	Passed    bool   `json:"passed"`
	Skipped   string `json:"skipped,omitempty"`
	Bug       Bug    `json:"bug,omitempty"`
	// Outcomes counts the outcomes of the first session seen by its initiator.
	Outcomes       map[string]int   `json:"outcomes"`
	FailedRuns     int              `json:"failed_runs"`
	Failures       []ExploreFailure `json:"failures,omitempty"`
	Messages       int              `json:"messages"`
	Crashes        int              `json:"crashes"`
	ElapsedMillis  int64            `json:"elapsed_ms"`
	RunsPerSecond  float64          `json:"runs_per_second"`
	InvariantNames []string         `json:"invariants"`
}

// Explore runs sc under opts.Runs seeds with random faults and checks the
// invariants after every run (expectations are not checked: the faults
// change outcomes). A failing seed is reported with the command that
// replays it. It stops early when ctx is cancelled, reporting the runs done.
func Explore(ctx context.Context, sc *Scenario, opts ExploreOptions) (*ExploreReport, error) {
	if sc == nil {
		return nil, errors.New("scenarios: Explore: no scenario")
	}
	runs := opts.Runs
	if runs == 0 {
		runs = DefaultExploreRuns
	}
	if runs < 0 || runs > MaxExploreRuns {
		return nil, fmt.Errorf("scenarios: explore: %d runs: give 1 to %d", runs, MaxExploreRuns)
	}
	first := opts.Seed
	if first == 0 {
		first = 1
	}
	rep := &ExploreReport{
		Scenario: sc.Name, File: sc.File, FirstSeed: first, Passed: true, Bug: opts.Bug, Outcomes: map[string]int{},
		InvariantNames: []string{InvAtomicity, InvAgreement, InvNoStuckLock, InvConsent, InvIntegrity, InvDurability, InvTermination, InvHonest},
	}
	start := time.Now()
	for i := 0; i < runs; i++ {
		if ctx.Err() != nil {
			break
		}
		seed := first + uint64(i)
		r, err := RunSim(ctx, sc, SimOptions{Seed: seed, RandomFaults: true, Seal: opts.Seal, Bug: opts.Bug, DropEnded: opts.DropEnded, HeadCheck: opts.HeadCheck})
		if err != nil {
			return nil, fmt.Errorf("scenarios: explore seed %d: %w", seed, err)
		}
		rep.Runs++
		if r.Status == "skipped" {
			rep.Skipped = r.Skipped
			break
		}
		rep.Messages += r.Messages
		rep.Crashes += r.Crashes
		if ids := sc.sessionIDs(); len(ids) > 0 {
			init := ""
			for _, st := range sc.Steps {
				if st.Propose != nil {
					init = st.Propose.From
					break
				}
			}
			rep.Outcomes[r.Outcomes[ids[0]][init].State]++
		}
		if !r.Passed {
			rep.Passed = false
			rep.FailedRuns++
			if len(rep.Failures) < maxExploreFailures {
				rep.Failures = append(rep.Failures, ExploreFailure{Seed: seed, Violations: r.Failures(), TraceHash: r.TraceHash, Replay: r.Replay})
			}
			if opts.StopAtFirst {
				if opts.Progress != nil {
					opts.Progress(i+1, runs)
				}
				break
			}
		}
		if opts.Progress != nil {
			opts.Progress(i+1, runs)
		}
	}
	sort.Slice(rep.Failures, func(i, j int) bool { return rep.Failures[i].Seed < rep.Failures[j].Seed })
	el := time.Since(start)
	rep.ElapsedMillis = el.Milliseconds()
	if el > 0 {
		rep.RunsPerSecond = float64(rep.Runs) / el.Seconds()
	}
	return rep, nil
}
