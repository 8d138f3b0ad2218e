package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate/engine"
)

// TestRunTiny runs a real two-party bench of five sessions, with the
// shared store and with a file per agent, and checks that the figures are
// sane and the chains sound.
func TestRunTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real nodes")
	}
	for _, tc := range []struct {
		store string
		offer bool
	}{{StoreShared, false}, {StorePerAgent, false}, {StoreShared, true}} {
		name := tc.store
		if tc.offer {
			name += "/offer"
		}
		t.Run(name, func(t *testing.T) { runTiny(t, tc.store, tc.offer) })
	}
}

func runTiny(t *testing.T, store string, offer bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var calls, last int
	var setupMu sync.Mutex
	setup := map[string][2]int{} // stage -> last done, total
	var memStart, memAfter bytes.Buffer
	res, err := Run(ctx, Options{Parties: 2, Sessions: 5, Store: store, Offer: offer, Dir: t.TempDir(), MemProfile: &memAfter, MemProfileStart: &memStart, Progress: func(done, total int) {
		calls++
		last = done
		if total != 5 {
			t.Errorf("progress total %d, want 5", total)
		}
	}, SetupProgress: func(stage string, done, total int) {
		setupMu.Lock()
		setup[stage] = [2]int{done, total}
		setupMu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		ok   bool
	}{
		{"committed == 5", res.Committed == 5},
		{"both allocation profiles written (gzipped pprof)", bytes.HasPrefix(memStart.Bytes(), []byte{0x1f, 0x8b}) && bytes.HasPrefix(memAfter.Bytes(), []byte{0x1f, 0x8b})},
		{"failed == 0", res.Failed == 0},
		{"progress called 5 times up to 5", calls == 5 && last == 5},
		{"setup progress reached nodes 2/2, peers 1/1, warm-up 1/1", func() bool {
			setupMu.Lock()
			defer setupMu.Unlock()
			return setup["nodes"] == [2]int{2, 2} && setup["peers"] == [2]int{1, 1} && setup["warm-up"] == [2]int{1, 1}
		}()},
		{"p50 > 0", res.Latency.P50 > 0},
		{"p50 <= p90 <= p99 <= max", res.Latency.P50 <= res.Latency.P90 && res.Latency.P90 <= res.Latency.P99 && res.Latency.P99 <= res.Latency.Max},
		{"phases timed for every session", res.Negotiation.N == 5 && res.Signing.N == 5},
		{"phases within the total", res.Negotiation.P50 > 0 && res.Signing.P50 > 0 && res.Negotiation.P50 < res.Latency.Max && res.Signing.P50 < res.Latency.Max},
		{"floor parts > 0", res.Floor.ChainWriteUs > 0 && res.Floor.RoundTripUs > 0 && res.Floor.SignUs > 0 && res.Floor.VerifyUs > 0},
		{"floor sum is the sum", abs(res.Floor.SumUs-(res.Floor.ChainWriteUs+res.Floor.RoundTripUs+res.Floor.SignUs+res.Floor.VerifyUs)) < 0.01},
		{"ratio > 0", res.P50FloorRatio > 0},
		{"sessions/s > 0", res.SessionsPerSec > 0},
		{"both chains verified, no lock", res.ChainsVerified == 2 && res.LocksLeft == 0 && len(res.ChainsBroken) == 0},
		{"store and kind reported", res.Store == store && res.Offer == offer},
		{"group-commit factor only with the shared store", (res.WritesPerCommit >= 1) == (store == StoreShared)},
		// Each session counts until its last chain is durable, which is no
		// sooner than the initiator's own commit (negotiation + signing).
		{"every chain durable no sooner than the initiator's commit", res.Initiator.N == 5 && res.Latency.Mean >= res.Negotiation.Mean+res.Signing.Mean-0.002},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: not so in %+v", c.name, res)
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// TestRunBadOptions checks that out-of-range options fail before anything starts.
func TestRunBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"one party", Options{Parties: 1}},
		{"too many parties", Options{Parties: MaxParties + 1}},
		{"negative sessions", Options{Sessions: -1}},
		{"too many sessions", Options{Sessions: MaxSessions + 1}},
		{"concurrency above pairs", Options{Concurrency: 4, Pairs: 2}},
		{"too many nodes", Options{Parties: 32, Pairs: 9}},
		{"unknown scheme", Options{Scheme: "rot13"}},
		{"negative GC percent", Options{GCPercent: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.opts.Dir = dir
			_, err := Run(context.Background(), tc.opts)
			if !errors.Is(err, ErrBadOptions) {
				t.Fatalf("err = %v, want ErrBadOptions", err)
			}
		})
	}
}

// TestIdleHeap checks that sessions left pending are counted and cost heap.
func TestIdleHeap(t *testing.T) {
	// More than one peer may hold open with an agent: several initiators.
	res, err := IdleHeap(engine.MaxOpenSessionsPerPeer+50, "ed25519")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Sessions != engine.MaxOpenSessionsPerPeer+50 || res.ParticipantBytes == 0 || res.PerSessionBytes < 100 {
		t.Fatalf("implausible: %+v", res)
	}
	if _, err := IdleHeap(0, "ed25519"); !errors.Is(err, ErrBadOptions) {
		t.Fatalf("0 sessions: err = %v, want ErrBadOptions", err)
	}
}

// BenchmarkRun runs b.N real two-party sessions (after node start-up) with
// 1, 8 and 32 groups busy at once (shared store, TCP); profile it with
// -cpuprofile.
func BenchmarkRun(b *testing.B) {
	for _, c := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("concurrency=%d", c), func(b *testing.B) {
			res, err := Run(context.Background(), Options{Sessions: max(b.N, c), Concurrency: c, Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			if err := res.Err(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(res.Latency.P50, "p50-ms")
			b.ReportMetric(res.P50FloorRatio, "p50/floor")
			b.ReportMetric(res.SessionsPerSec, "sessions/s")
		})
	}
}

// A small run needs few files and passes the check; the estimate grows
// with the nodes and is capped per node by the connection manager.
func TestNeededFDs(t *testing.T) {
	if err := ensureFDs(2); err != nil {
		t.Fatalf("2 nodes: %v", err)
	}
	if a, b := neededFDs(10), neededFDs(100); a >= b {
		t.Fatalf("needed files do not grow with nodes: %d, %d", a, b)
	}
	if got, capped := neededFDs(MaxNodes), uint64(MaxNodes*(connsPerNode*3/2+fdsPerNode)+fdsSpare); got != capped {
		t.Fatalf("neededFDs(%d) = %d, want the per-node cap %d", MaxNodes, got, capped)
	}
}

// TestRunTrace runs signed offers with Options.Trace and a GC percent of
// its own (reported, and the process's restored after), and checks the
// median timeline: it starts with the initiator's step, its moments never go back
// in time, it passes the participant receiving the offer and sending its
// Ready, and it ends with the initiator's append being durable.
func TestRunTrace(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real nodes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	before := debug.SetGCPercent(-1)
	debug.SetGCPercent(before)
	res, err := Run(ctx, Options{Parties: 2, Sessions: 12, Offer: true, Trace: true, GCPercent: 250, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	after := debug.SetGCPercent(before)
	if res.GCPercent != 250 || after != before || res.HeapSysMiB <= 0 {
		t.Fatalf("ran with GC percent %d (asked 250), left %d (was %d), heap %v MiB", res.GCPercent, after, before, res.HeapSysMiB)
	}
	tl := res.Timeline
	if len(tl) == 0 || res.TimelineSessions < res.Committed/2 {
		t.Fatalf("timeline of %d steps from %d of %d sessions", len(tl), res.TimelineSessions, res.Committed)
	}
	if tl[0].Role != "initiator" || tl[0].Point != "step" {
		t.Fatalf("timeline starts with %+v", tl[0])
	}
	last := tl[len(tl)-1]
	if last.Role != "initiator" || last.Point != "written" {
		t.Fatalf("timeline ends with %+v", last)
	}
	seen := map[string]bool{}
	for i, s := range tl {
		if i > 0 && s.AtUs < tl[i-1].AtUs {
			t.Fatalf("step %d (%+v) goes back in time", i, s)
		}
		seen[s.Role+" "+s.Point+" "+s.Type] = true
	}
	for _, want := range []string{"participant 1 received offer", "participant 1 sent ready", "initiator received ready"} {
		if !seen[want] {
			t.Errorf("timeline lacks %q: %+v", want, tl)
		}
	}
}
