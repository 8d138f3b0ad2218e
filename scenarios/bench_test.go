package scenarios

import (
	"context"
	"testing"
)

// BenchmarkSim3PartyFaults measures simulated 3-party sessions with random
// faults (crashes, partitions, drops, duplicates, reorders, loss) per
// second; the target is at least 200 on a 2-core machine.
func BenchmarkSim3PartyFaults(b *testing.B) {
	for _, seal := range []bool{false, true} {
		name := "fast"
		if seal {
			name = "sealed"
		}
		b.Run(name, func(b *testing.B) {
			scs, err := Load("3-party-agreement.yaml")
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r, err := RunSim(context.Background(), scs[0], SimOptions{Seed: uint64(i + 1), RandomFaults: true, Seal: seal})
				if err != nil || !r.Passed {
					b.Fatalf("seed %d: %v %+v", i+1, err, r.Failures())
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sessions/s")
		})
	}
}
