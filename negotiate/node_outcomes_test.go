package negotiate

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// counterUntilPolicy counters +10 on price until it reaches limit, then
// accepts; as initiator it accepts every counter.
func counterUntilPolicy(limit int64) Policy {
	return PolicyFunc(func(p Proposal) (Decision, bool) {
		if p.Kind == EvCounter {
			return Decision{Action: ActAccept}, true
		}
		price, _ := p.Terms["price"].(int64)
		if u, ok := p.Terms["price"].(uint64); ok {
			price = int64(u)
		}
		if price >= limit {
			return Decision{Action: ActAccept}, true
		}
		t, _ := protocol.EncodeTerms(map[string]any{"price": price + 10})
		return Decision{Action: ActCounter, Terms: t}, true
	})
}

// TestNodeNegotiationOutcomes runs each negotiation outcome over real nodes
// and chains: every party ends the same way, no lock is left.
func TestNodeNegotiationOutcomes(t *testing.T) {
	tests := []struct {
		name       string
		policy     Policy // participants' (and, for counters, the initiator's)
		maxRounds  uint32
		timeout    time.Duration
		want       State
		wantRounds uint32
	}{
		{"three counters then accept", counterUntilPolicy(40), 8, 20 * time.Second, StateCommitted, 4},
		{"reject", PolicyFunc(func(p Proposal) (Decision, bool) {
			return Decision{Action: ActReject, Reason: "no"}, true
		}), 8, 20 * time.Second, StateRejected, 1},
		{"round cap", counterUntilPolicy(1000), 3, 20 * time.Second, StateRejected, 3},
		{"expiry", nil, 8, 2 * time.Second, StateAborted, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The initiator decides counters with the same policy.
			agents := nodeTestNetworkWith(t, 3, tc.policy, tc.policy)
			a := agents[0]
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			defer cancel()
			p, err := a.node.Propose(ctx, []sign.AgentID{agents[1].key.AgentID(), agents[2].key.AgentID()},
				nodeTestTerms(t, map[string]any{"price": 10}), ProposeOptions{Timeout: tc.timeout, MaxRounds: tc.maxRounds})
			if err != nil {
				t.Fatal(err)
			}
			nodeTestCheck(t, agents, p.ID(), tc.want)
			o, _ := a.node.Wait(ctx, p.ID())
			if o.Round != tc.wantRounds {
				t.Fatalf("rounds = %d, want %d", o.Round, tc.wantRounds)
			}
		})
	}
}

// TestNodeBusyRace: two initiators race for one participant. At most one
// commits; the other is refused as busy or commits after the first ended.
// Every chain verifies and no lock is left.
func TestNodeBusyRace(t *testing.T) {
	// c decides slowly, so both proposals are accepted before either
	// preflight arrives: the preflights then race for c's lock.
	slowAccept := PolicyFunc(func(p Proposal) (Decision, bool) {
		time.Sleep(200 * time.Millisecond)
		return Decision{Action: ActAccept}, true
	})
	agents := nodeTestNetwork(t, 3, slowAccept)
	a, b, c := agents[0], agents[1], agents[2]
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	busy, committed := 0, 0
	for round := 0; round < 10 && busy == 0; round++ {
		var wg sync.WaitGroup
		outcomes := make([]*Outcome, 2)
		for i, init := range []*nodeTestAgent{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p, err := init.node.Propose(ctx, []sign.AgentID{c.key.AgentID()}, nodeTestTerms(t, map[string]any{"x": fmt.Sprint(i, round)}), ProposeOptions{Timeout: 15 * time.Second})
				if err != nil {
					t.Error(err)
					return
				}
				outcomes[i], _ = p.Wait(ctx)
			}()
		}
		wg.Wait()
		for _, o := range outcomes {
			switch {
			case o == nil:
				t.Fatal("no outcome")
			case o.State == StateCommitted:
				committed++
			case o.State == StateAborted && o.Busy:
				busy++
			default:
				t.Fatalf("outcome %s (%s): want committed or busy", o.State, o.Reason)
			}
		}
	}
	if busy == 0 {
		t.Fatalf("in 10 races no session was refused as busy (%d committed)", committed)
	}
	for _, ag := range agents {
		// Participants finish a moment after the initiators return.
		waitFor(t, func() bool { return len(ag.node.Sessions(false)) == 0 })
		if l, ok := ag.ch.Lock(); ok {
			t.Fatalf("%s: lock left: %+v", ag.name, l)
		}
		if verr := ag.ch.Verify(nodeVerifyOptions()); verr != nil {
			t.Fatalf("%s: %v", ag.name, verr)
		}
	}
}
