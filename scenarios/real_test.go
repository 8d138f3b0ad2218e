package scenarios

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// realParallel bounds the real runs at once (2-core machine, libp2p hosts).
const realParallel = 6

// realSlow lists the shipped scenarios that run longest in real mode, to
// start them first: message-loss loses every commit until the faults heal
// (30 s deadline + 1 s), offer-message-loss likewise (5 s deadline), the
// others wait for a deadline or a restart.
var realSlow = []string{"message-loss.yaml", "crash-initiator-after-propose.yaml", "witness-abort.yaml",
	"partition-during-signing.yaml", "offer-message-loss.yaml", "expiry.yaml", "offer-undecided.yaml", "16-party-agreement.yaml"}

// TestRealShipped runs every shipped scenario with real libp2p nodes on
// 127.0.0.1 and real bbolt chains, faults included (crashes at protocol
// steps, partitions, loss, byzantine parties): none may be skipped.
func TestRealShipped(t *testing.T) {
	if testing.Short() {
		t.Skip("real nodes: skipped in -short")
	}
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) < 27 {
		t.Fatalf("shipped scenarios: %v (%d files)", err, len(files))
	}
	slices.SortStableFunc(files, func(a, b string) int {
		ia, ib := slices.Index(realSlow, a), slices.Index(realSlow, b)
		if ia < 0 {
			ia = len(realSlow)
		}
		if ib < 0 {
			ib = len(realSlow)
		}
		return ia - ib
	})
	sem := make(chan struct{}, realParallel)
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			t.Parallel()
			sem <- struct{}{}
			defer func() { <-sem }()
			scs, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			r, err := RunReal(ctx, scs[0], RealOptions{Progress: func(l string) { t.Log(l) }})
			if err != nil {
				t.Fatal(err)
			}
			if r.Status == "skipped" {
				t.Fatalf("skipped: %s", r.Skipped)
			}
			if !r.Passed {
				b, _ := json.MarshalIndent(r, "", "  ")
				t.Fatalf("%s", b)
			}
			if losesMessages(scs[0]) && r.Crashes+r.Dropped == 0 {
				t.Fatalf("faults %+v: no crash and no dropped message: the fault was not injected", scs[0].Faults)
			}
		})
	}
}

// losesMessages reports whether a scenario's faults must crash a party
// or lose a message.
func losesMessages(sc *Scenario) bool {
	for _, f := range sc.Faults {
		if f.Crash != nil || f.Partition != nil || f.Drop != nil {
			return true
		}
	}
	return false
}
