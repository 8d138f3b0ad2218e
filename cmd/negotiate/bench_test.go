package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestBenchCommand runs `negotiate bench` as a user would: a tiny traced
// run of signed offers in JSON and in text, and a bad flag.
func TestBenchCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real nodes")
	}
	runCLICases(t, []cliCase{
		{name: "traced offers, json", args: []string{"bench", "--offer", "--sessions", "6", "--trace", "--json"}, code: 0, check: func(t *testing.T, r result) {
			var out struct {
				Committed, Failed, ChainsVerified int
				Timeline                          []struct {
					Role, Point, Type string
					AtUs              float64 `json:"at_us"`
				}
			}
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, r.stdout)
			}
			if out.Committed != 6 || out.Failed != 0 {
				t.Fatalf("committed %d, failed %d", out.Committed, out.Failed)
			}
			if len(out.Timeline) == 0 || out.Timeline[len(out.Timeline)-1].Point != "written" {
				t.Fatalf("timeline %+v", out.Timeline)
			}
		}},
		{name: "traced offers, text", args: []string{"bench", "--offer", "--sessions", "4", "--trace"}, code: 0, check: func(t *testing.T, r result) {
			for _, want := range []string{"committed 4, failed 0", "timeline (medians of", "participant 1  received offer", "per journal sync"} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("output lacks %q:\n%s", want, r.stdout)
				}
			}
		}},
		{name: "one party", args: []string{"bench", "--parties", "1"}, code: 2, stderr: "parties"},
	})
}
