package scenarios

import (
	"context"
	"encoding/json"
	"os"
	"testing"
)

// TestShippedScenariosSim runs every shipped scenario once in the
// simulator (default seed): it must run (never skip), pass, and produce
// exactly its golden trace in testdata/<name>.trace (-update rewrites them).
func TestShippedScenariosSim(t *testing.T) {
	scs, err := Load(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range scs {
		t.Run(sc.Name, func(t *testing.T) {
			r, err := RunSim(context.Background(), sc, SimOptions{Trace: true})
			if err != nil {
				t.Fatal(err)
			}
			if os.Getenv("SCENARIO_TRACE") != "" {
				for _, l := range r.Trace {
					t.Log(l)
				}
			}
			if r.Status == "skipped" {
				t.Fatalf("a shipped scenario must run, not skip: %s", r.Skipped)
			}
			if !r.Passed {
				for _, l := range r.Trace {
					t.Log(l)
				}
				b, _ := json.MarshalIndent(r.Failures(), "", "  ")
				o, _ := json.Marshal(r.Outcomes)
				t.Fatalf("failures: %s\noutcomes: %s", b, o)
			}
			checkGoldenTrace(t, sc.Name, r.Trace)
		})
	}
}
