package negotiate

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate/engine"

	"github.com/negotiate-dev/negotiate/chain"
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

// TestNodeBusyRace: a session reaches participant c while c's chain is
// locked by another session (a's, whose Ready and Commit to c are lost
// once, so c holds its lock until its query resolves it). b's session is
// refused as busy and aborts cleanly; a's commits; b retries once c is free
// and commits. Every chain verifies and no lock is left.
func TestNodeBusyRace(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	lost := map[string]bool{}
	var cID sign.AgentID
	loseOnce := func(o engine.Outgoing) []engine.Outgoing {
		mu.Lock()
		defer mu.Unlock()
		if o.To == cID && (o.Type == protocol.TypeReady || o.Type == protocol.TypeCommit) && !lost[o.Type] {
			lost[o.Type] = true
			return nil
		}
		return []engine.Outgoing{o}
	}
	c := nodeTestStart(t, dir, "c", AcceptAll, nil)
	cID = c.key.AgentID()
	start := func(name string, outbound func(engine.Outgoing) []engine.Outgoing) *nodeTestAgent {
		key := hostTestKey(t, "node/"+name)
		path := filepath.Join(dir, name+".db")
		ch, err := chain.Create(path, key, time.Now().UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		ag := &nodeTestAgent{name: name, key: key, ch: ch, path: path, outbound: outbound}
		ag.startNode(t, nil, c)
		hostTestResolve(t, ag.node.Host(), cID)
		hostTestResolve(t, c.node.Host(), key.AgentID())
		return ag
	}
	a, b := start("a", loseOnce), start("b", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	propose := func(init *nodeTestAgent) *Pending {
		p, err := init.node.Propose(ctx, []sign.AgentID{cID}, nodeTestTerms(t, map[string]any{"from": init.name}), ProposeOptions{Timeout: 15 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	pa := propose(a)
	waitFor(t, func() bool {
		s, err := c.node.Session(pa.ID())
		return err == nil && s.Phase == PhaseSigning && s.LockHolder == pa.ID()
	})
	ob, err := propose(b).Wait(ctx)
	if err != nil || ob.State != StateAborted || !ob.Busy || !errors.Is(ob.Err(), ErrBusy) {
		t.Fatalf("b's session while c is locked: %+v %v, want aborted busy", ob, err)
	}
	if oa, err := pa.Wait(ctx); err != nil || oa.State != StateCommitted {
		t.Fatalf("a's session: %+v %v", oa, err)
	}
	waitFor(t, func() bool { _, locked := c.ch.Lock(); return !locked })
	if o, err := propose(b).Wait(ctx); err != nil || o.State != StateCommitted {
		t.Fatalf("b's retry: %+v %v", o, err)
	}
	for _, ag := range []*nodeTestAgent{a, b, c} {
		waitFor(t, func() bool { return len(ag.node.Sessions(false)) == 0 })
		if l, ok := ag.ch.Lock(); ok {
			t.Fatalf("%s: lock left: %+v", ag.name, l)
		}
		if verr := ag.ch.Verify(nodeVerifyOptions()); verr != nil {
			t.Fatalf("%s: %v", ag.name, verr)
		}
	}
	if got := c.ch.Head().Seq; got != 2 {
		t.Fatalf("c's chain has %d records, want 2 (a's and b's retry)", got)
	}
}
