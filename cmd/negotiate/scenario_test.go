package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestScenarioCommands(t *testing.T) {
	dir := shortTemp(t)
	trade := filepath.Join("..", "..", "scenarios", "two-party-trade.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("name: bad\ncolour: red\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
		check  func(t *testing.T, r result)
	}{
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, nil, tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stdout, tc.stdout) {
				t.Errorf("stdout %q lacks %q", r.stdout, tc.stdout)
			}
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr %q lacks %q", r.stderr, tc.stderr)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}
