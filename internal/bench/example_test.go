package bench_test

import (
	"context"
	"fmt"

	"github.com/negotiate-dev/negotiate/internal/bench"
)

// Run measures a short two-party run on loopback nodes.
func ExampleRun() {
	res, err := bench.Run(context.Background(), bench.Options{Parties: 2, Sessions: 3})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("committed:", res.Committed, "failed:", res.Failed, "chains ok:", res.Err() == nil, "ratio > 0:", res.P50FloorRatio > 0)
	// Output: committed: 3 failed: 0 chains ok: true ratio > 0: true
}

// IdleHeap measures the heap of sessions waiting for a decision.
func ExampleIdleHeap() {
	res, err := bench.IdleHeap(100, "ed25519")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("sessions:", res.Sessions, "heap used:", res.ParticipantBytes > 0)
	// Output: sessions: 100 heap used: true
}
