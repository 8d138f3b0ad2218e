package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestScenarioCommands(t *testing.T) {
	dir := shortTemp(t)
	trade := filepath.Join("..", "..", "scenarios", "two-party-trade.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: bad\ncolour: red\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runCLICases(t, []cliCase{
		{name: "sim", args: []string{"scenario", "run", "--sim", trade}, stdout: "PASS two-party-trade (sim, seed"},
		{name: "sim json replays the same trace", args: []string{"scenario", "run", "--sim", "--seed", "5", "--json", trade}, check: func(t *testing.T, r result) {
			var reps []struct {
				Scenario  string `json:"scenario"`
				Passed    bool   `json:"passed"`
				Seed      uint64 `json:"seed"`
				TraceHash string `json:"trace_hash"`
			}
			decodeJSON(t, r.stdout, &reps)
			if len(reps) != 1 || !reps[0].Passed || reps[0].Seed != 5 || reps[0].TraceHash == "" {
				t.Fatalf("reports %+v", reps)
			}
			again := runCLI(t, nil, "scenario", "run", "--sim", "--seed", "5", "--json", trade)
			if again.stdout != r.stdout {
				t.Errorf("the same seed gave another report:\n%s\n%s", r.stdout, again.stdout)
			}
		}},
		{name: "real", args: []string{"scenario", "run", trade}, stdout: "PASS two-party-trade (real"},
		{name: "explore", args: []string{"scenario", "explore", "--runs", "20", trade}, stdout: "PASS two-party-trade: 20 runs"},
		{name: "no files", args: []string{"scenario", "run"}, code: 2},
		{name: "seed without sim", args: []string{"scenario", "run", "--seed", "3", trade}, code: 2, stderr: "--sim"},
		{name: "unknown bug", args: []string{"scenario", "run", "--sim", "--bug", "nope", trade}, code: 2},
		{name: "bad scenario file", args: []string{"scenario", "run", "--sim", bad}, code: 1, stderr: "colour"},
		{name: "missing file", args: []string{"scenario", "run", "--sim", filepath.Join(dir, "none.yaml")}, code: 1, stderr: "none.yaml"},
	})
}
