package scenarios

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// exploreRuns is the seed count per scenario in go test; set
// SCENARIO_EXPLORE_RUNS (e.g. 2000) for a deeper exploration.
func exploreRuns(t *testing.T, def int) int {
	if v := os.Getenv("SCENARIO_EXPLORE_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("SCENARIO_EXPLORE_RUNS=%q: give a positive number", v)
		}
		return n
	}
	if testing.Short() {
		return def / 10
	}
	return def
}

// exploreBudget is the seeds per scenario that go test (and so CI) explores:
// 8,000 seeds in all, over scenarios with crashes, contention, a byzantine
// initiator and signed offers (a 2-party one, whose participant signs and
// commits in one write, and a 3-party one under message loss).
var exploreBudget = []struct {
	file string
	runs int
}{
	{"3-party-agreement.yaml", 2000},
	{"crash-participant-after-ready-sent.yaml", 2000},
	{"busy-chain.yaml", 1000},
	{"equivocation.yaml", 1000},
	{"offer-crash-participant-after-append.yaml", 1000},
	{"offer-message-loss.yaml", 1000},
}

func TestExploreInvariantsHold(t *testing.T) {
	for _, b := range exploreBudget {
		file := b.file
		t.Run(file, func(t *testing.T) {
			scs, err := Load(file)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			rep, err := Explore(context.Background(), scs[0], ExploreOptions{Runs: exploreRuns(t, b.runs)})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d runs in %v (%.0f runs/s), outcomes %v, %d crashes", rep.Runs, time.Since(start).Round(time.Millisecond), rep.RunsPerSecond, rep.Outcomes, rep.Crashes)
			for _, f := range rep.Failures {
				t.Errorf("seed %d: %+v\n  replay: %s", f.Seed, f.Violations, f.Replay)
			}
		})
	}
}

// TestExploreAllShipped explores every shipped scenario; it runs only when
// SCENARIO_EXPLORE_RUNS is set (e.g. SCENARIO_EXPLORE_RUNS=2000).
func TestExploreAllShipped(t *testing.T) {
	if os.Getenv("SCENARIO_EXPLORE_RUNS") == "" {
		t.Skip("set SCENARIO_EXPLORE_RUNS=2000 to explore every shipped scenario")
	}
	scs, err := Load(".")
	if err != nil {
		t.Fatal(err)
	}
	seal := os.Getenv("SCENARIO_SEAL") != ""
	for _, sc := range scs {
		t.Run(sc.Name, func(t *testing.T) {
			rep, err := Explore(context.Background(), sc, ExploreOptions{Runs: exploreRuns(t, 300), Seal: seal})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Skipped != "" {
				t.Skip(rep.Skipped)
			}
			t.Logf("%d runs (%.0f/s), outcomes %v", rep.Runs, rep.RunsPerSecond, rep.Outcomes)
			for _, f := range rep.Failures {
				t.Errorf("seed %d: %+v\n  replay: %s", f.Seed, f.Violations, f.Replay)
			}
		})
	}
}

// TestExploreDropEnded explores every shipped scenario with nodes that
// drop each ended session from memory once its deadline passed and read
// it back from its checkpoint when named (a Node with a zero
// EndedRetention): the invariants must hold under the same random
// faults, and every seed must end exactly as it does with sessions kept.
func TestExploreDropEnded(t *testing.T) {
	scs, err := Load(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range scs {
		t.Run(sc.Name, func(t *testing.T) {
			opts := ExploreOptions{Runs: exploreRuns(t, 40), Seed: 500}
			kept, err := Explore(context.Background(), sc, opts)
			if err != nil {
				t.Fatal(err)
			}
			if kept.Skipped != "" {
				t.Skip(kept.Skipped)
			}
			opts.DropEnded = true
			dropped, err := Explore(context.Background(), sc, opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range dropped.Failures {
				t.Errorf("seed %d: %+v\n  replay: %s", f.Seed, f.Violations, f.Replay)
			}
			if fmt.Sprint(kept.Outcomes) != fmt.Sprint(dropped.Outcomes) {
				t.Errorf("outcomes differ: kept %v, dropped %v", kept.Outcomes, dropped.Outcomes)
			}
		})
	}
}

// TestExploreHeadCheck explores every shipped scenario with a HeadCheck on
// every node, so every participant waits for the initiator's statement
// before it signs (and asks for it again when it is lost): the invariants
// must hold under the same random faults, and sessions still commit.
func TestExploreHeadCheck(t *testing.T) {
	scs, err := Load(".")
	if err != nil {
		t.Fatal(err)
	}
	committed := 0
	for _, sc := range scs {
		t.Run(sc.Name, func(t *testing.T) {
			rep, err := Explore(context.Background(), sc, ExploreOptions{Runs: exploreRuns(t, 40), Seed: 700, HeadCheck: true})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Skipped != "" {
				t.Skip(rep.Skipped)
			}
			for _, f := range rep.Failures {
				t.Errorf("seed %d: %+v\n  replay: %s", f.Seed, f.Violations, f.Replay)
			}
			committed += rep.Outcomes["committed"]
		})
	}
	t.Logf("%d first sessions committed with a HeadCheck", committed)
	if committed == 0 {
		t.Fatal("no session committed with a HeadCheck")
	}
}
