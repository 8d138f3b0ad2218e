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

// TestBenchNetworkFlags checks that `bench --network` refuses bad flags
// with exit 2 and a message naming the flag, before starting anything.
func TestBenchNetworkFlags(t *testing.T) {
	runCLICases(t, []cliCase{
		{name: "too small", args: []string{"bench", "--network", "2"}, code: 2, stderr: "network of 2 nodes"},
		{name: "not a size", args: []string{"bench", "--network", "50,lots"}, code: 2, stderr: `network size "lots"`},
		{name: "churn too high", args: []string{"bench", "--network", "50", "--churn", "80%"}, code: 2, stderr: `churn "80%"`},
		{name: "churn not a share", args: []string{"bench", "--network", "50", "--churn", "some"}, code: 2, stderr: "want a share"},
		{name: "churn without network", args: []string{"bench", "--churn", "10%"}, code: 2, stderr: "--churn needs --network"},
		{name: "few connections", args: []string{"bench", "--network", "50", "--max-connections", "2"}, code: 2, stderr: "max connections 2"},
		{name: "quic", args: []string{"bench", "--network", "50", "--transport", "quic"}, code: 2, stderr: `network transport "quic"`},
		{name: "parties", args: []string{"bench", "--network", "50", "--parties", "3"}, code: 2, stderr: "--parties does not apply to --network"},
		{name: "short lifetime", args: []string{"bench", "--network", "50", "--record-lifetime", "1s"}, code: 2, stderr: "record lifetime 1s"},
		{name: "sweep profile", args: []string{"bench", "--network", "50,100", "--cpuprofile", "x.prof"}, code: 2, stderr: "one network size"},
	})
}
