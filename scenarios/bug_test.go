package scenarios

import (
	"context"
	"testing"
)

// TestExploreFindsInjectedBugs proves the checker can fail: with a
// durability bug injected around the (unchanged) engine, Explore must
// report an invariant violation within 2,000 seeds.
func TestExploreFindsInjectedBugs(t *testing.T) {
	scs, err := Load("3-party-agreement.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, bug := range []Bug{BugSkipVotePersist, BugReleaseLockAtDeadline} {
		t.Run(string(bug), func(t *testing.T) {
			rep, err := Explore(context.Background(), scs[0], ExploreOptions{Runs: 2000, Bug: bug, StopAtFirst: true})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Passed || len(rep.Failures) == 0 {
				t.Fatalf("%d seeds with bug %s found no violation", rep.Runs, bug)
			}
			f := rep.Failures[0]
			t.Logf("bug %s found at seed %d after %d runs: %+v\n  replay: %s", bug, f.Seed, rep.Runs, f.Violations, f.Replay)
			// The failing seed replays to the same failure and trace.
			r, err := RunSim(context.Background(), scs[0], SimOptions{Seed: f.Seed, RandomFaults: true, Bug: bug})
			if err != nil {
				t.Fatal(err)
			}
			if r.Passed || r.TraceHash != f.TraceHash {
				t.Fatalf("replay of seed %d: passed=%v trace %s, want failure with trace %s", f.Seed, r.Passed, r.TraceHash, f.TraceHash)
			}
		})
	}
}
