package negotiate

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/internal/hooks"
	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/negotiate/transport"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

type nodeTestAgent struct {
	name string
	key  *sign.PrivateKey
	ch   *chain.Chain
	node *Node
	path string
	// outbound, when set before the node starts, becomes its Outbound hook.
	outbound func(engine.Outgoing) []engine.Outgoing
	// configure, when set before the node starts, adjusts its NodeConfig
	// and its test hooks last.
	configure func(*NodeConfig, *hooks.Hooks)
	// hooks are the running node's test hooks (Inject).
	hooks *hooks.Hooks
}

// nodeTestStart starts a node for name with a real chain file in dir.
func nodeTestStart(t testing.TB, dir, name string, policy Policy, boot *nodeTestAgent) *nodeTestAgent {
	t.Helper()
	key := hostTestKey(t, "node/"+name)
	path := filepath.Join(dir, name+".db")
	ch, err := chain.Create(path, key, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	a := &nodeTestAgent{name: name, key: key, ch: ch, path: path}
	a.startNode(t, policy, boot)
	return a
}

func (a *nodeTestAgent) startNode(t testing.TB, policy Policy, boot *nodeTestAgent) {
	t.Helper()
	var bs []string
	if boot != nil {
		bs = boot.node.Host().Addrs()[:1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := NodeConfig{
		Key: a.key, Chain: a.ch, Policy: policy, Host: transport.Config{Bootstrap: bs, Logger: hostTestLogger()},
		ResolveInitial: 300 * time.Millisecond, ResolveMax: time.Second, Logger: hostTestLogger(),
	}
	hk := &hooks.Hooks{Outbound: a.outbound}
	if a.configure != nil {
		a.configure(&cfg, hk)
	}
	n, err := StartNode(hooks.With(ctx, hk), cfg)
	if err != nil {
		t.Fatalf("start node %s: %v", a.name, err)
	}
	a.node, a.hooks = n, hk
	t.Cleanup(func() { n.Close(); a.ch.Close() })
}

func nodeTestNetwork(t testing.TB, n int, policy Policy) []*nodeTestAgent {
	t.Helper()
	return nodeTestNetworkWith(t, n, nil, policy)
}

// nodeTestNetworkWith starts n nodes: the first (the initiator in tests)
// with initPolicy, the others with policy.
func nodeTestNetworkWith(t testing.TB, n int, initPolicy, policy Policy) []*nodeTestAgent {
	t.Helper()
	dir := t.TempDir()
	var agents []*nodeTestAgent
	for i := 0; i < n; i++ {
		var boot *nodeTestAgent
		if i > 0 {
			boot = agents[0]
		}
		p := policy
		if i == 0 {
			p = initPolicy
		}
		agents = append(agents, nodeTestStart(t, dir, fmt.Sprintf("n%d", i), p, boot))
	}
	for _, a := range agents {
		for _, b := range agents {
			if a != b {
				hostTestResolve(t, a.node.Host(), b.key.AgentID())
			}
		}
	}
	return agents
}

func nodeTestTerms(t *testing.T, kv map[string]any) []byte {
	b, err := protocol.EncodeTerms(kv)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nodeTestCheck asserts the invariants on real chains.
func nodeTestCheck(t *testing.T, agents []*nodeTestAgent, session string, want State) {
	t.Helper()
	var hash chain.Hash
	for i, a := range agents {
		// A party may not have received the proposal yet (Wait refuses
		// unknown sessions at once).
		waitFor(t, func() bool { _, err := a.node.Session(session); return err == nil })
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		o, err := a.node.Wait(ctx, session)
		cancel()
		if err != nil {
			t.Fatalf("%s: wait: %v (%+v)", a.name, err, a.node.Sessions(true))
		}
		if o.State != want {
			t.Fatalf("%s: %s (%s), want %s", a.name, o.State, o.Reason, want)
		}
		if want == StateCommitted {
			if i == 0 {
				hash = o.RecordHash
			} else if o.RecordHash != hash {
				t.Fatalf("%s: record hash differs", a.name)
			}
			head, err := a.ch.Entry(a.ch.Head().Seq)
			if err != nil || head.Kind != engine.KindAgreement || chain.Hash(sign.Hash(head.Payload)) != hash {
				t.Fatalf("%s: chain head is not the record: %v", a.name, err)
			}
		}
		if l, ok := a.ch.Lock(); ok {
			t.Fatalf("%s: lock left: %+v", a.name, l)
		}
		if verr := a.ch.Verify(chain.VerifyOptions{CheckPayload: engine.CheckAgreementEntry}); verr != nil {
			t.Fatalf("%s: verify: %v", a.name, verr)
		}
	}
}

func TestNodeCommit(t *testing.T) {
	for _, size := range []int{2, 5} {
		t.Run(fmt.Sprintf("%d-party", size), func(t *testing.T) {
			agents := nodeTestNetwork(t, size, AcceptAll)
			var with []sign.AgentID
			for _, a := range agents[1:] {
				with = append(with, a.key.AgentID())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			p, err := agents[0].node.Propose(ctx, with, nodeTestTerms(t, map[string]any{"item": "book", "price": 12}), ProposeOptions{Timeout: 20 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			o, err := p.Wait(ctx)
			if err != nil || o.Err() != nil {
				t.Fatalf("outcome %+v err %v", o, err)
			}
			nodeTestCheck(t, agents, p.ID(), StateCommitted)
			rec, err := engine.DecodeRecord(o.Receipt)
			if err != nil || engine.VerifyRecord(rec) != nil || len(rec.Signatures) != size {
				t.Fatalf("receipt does not verify: %v", err)
			}
		})
	}
}

func TestNodeRejectAndManualDecisions(t *testing.T) {
	agents := nodeTestNetwork(t, 2, nil)
	a, b := agents[0], agents[1]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := a.node.Propose(ctx, []sign.AgentID{b.key.AgentID()}, nodeTestTerms(t, map[string]any{"price": 5}), ProposeOptions{Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// b sees the proposal waiting for a decision, then rejects it.
	waitFor(t, func() bool {
		s, err := b.node.Session(p.ID())
		return err == nil && s.Pending
	})
	if err := b.node.Reject(p.ID(), "too low"); err != nil {
		t.Fatal(err)
	}
	nodeTestCheck(t, agents, p.ID(), StateRejected)
	o, _ := a.node.Wait(ctx, p.ID())
	if !errors.Is(o.Err(), ErrRejected) {
		t.Fatalf("err %v, want ErrRejected", o.Err())
	}
	if err := b.node.Accept(p.ID()); err == nil {
		t.Fatal("accepting an ended session must fail")
	}
}

func TestNodeOfflineAgentFailsInsideTimeout(t *testing.T) {
	agents := nodeTestNetwork(t, 2, AcceptAll)
	a, b := agents[0], agents[1]
	b.node.Close()
	timeout := 4 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	p, err := a.node.Propose(ctx, []sign.AgentID{b.key.AgentID()}, nodeTestTerms(t, map[string]any{"x": 1}), ProposeOptions{Timeout: timeout})
	if err == nil {
		var o *Outcome
		o, err = p.Wait(ctx)
		if err == nil {
			err = o.Err()
		}
	}
	if err == nil || !errors.Is(err, ErrAborted) && !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want aborted/unreachable", err)
	}
	if el := time.Since(start); el > timeout+time.Second {
		t.Fatalf("took %v, timeout %v", el, timeout)
	}
	if want := b.key.AgentID().String(); !strings.Contains(err.Error(), want) && !strings.Contains(err.Error(), b.key.AgentID().Short()) {
		t.Fatalf("error %q does not name the agent", err)
	}
}

func TestNodeFinishedSessionSurvivesRestart(t *testing.T) {
	agents := nodeTestNetwork(t, 2, AcceptAll)
	a, b := agents[0], agents[1]
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	p, err := a.node.Propose(ctx, []sign.AgentID{b.key.AgentID()}, nodeTestTerms(t, map[string]any{"x": 2}), ProposeOptions{Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	o, err := p.Wait(ctx)
	if err != nil || o.State != StateCommitted {
		t.Fatalf("%+v %v", o, err)
	}
	// Restart b from its chain: its finished session is still known and
	// answers queries with the commit certificate.
	b.node.Close()
	b.startNode(t, AcceptAll, a)
	s, err := b.node.Session(p.ID())
	if err != nil || s.State != StateCommitted {
		t.Fatalf("after restart: %+v %v", s, err)
	}
	nodeTestCheck(t, agents, p.ID(), StateCommitted)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNodeWitnessCommit(t *testing.T) {
	agents := nodeTestNetwork(t, 3, AcceptAll)
	a, b, w := agents[0], agents[1], agents[2]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := a.node.Propose(ctx, []sign.AgentID{b.key.AgentID()}, nodeTestTerms(t, map[string]any{"x": 3}),
		ProposeOptions{Timeout: 20 * time.Second, Witness: w.key.AgentID()})
	if err != nil {
		t.Fatal(err)
	}
	nodeTestCheck(t, []*nodeTestAgent{a, b}, p.ID(), StateCommitted)
	o, _ := a.node.Wait(ctx, p.ID())
	rec, err := engine.DecodeRecord(o.Receipt)
	if err != nil || rec.Agreement.Witness == nil || len(rec.WitnessDecision) == 0 || engine.VerifyRecord(rec) != nil {
		t.Fatalf("record lacks a valid witness decision: %v", err)
	}
	ws, err := w.node.Session(p.ID())
	if err != nil || ws.Role != engine.RoleWitness || ws.State != StateCommitted {
		t.Fatalf("witness session: %+v %v", ws, err)
	}
	if head := w.ch.Head(); head.Seq != 0 {
		t.Fatalf("the witness appended to its own chain (head %d)", head.Seq)
	}
}

func nodeVerifyOptions() chain.VerifyOptions {
	return chain.VerifyOptions{CheckPayload: engine.CheckAgreementEntry}
}

// TestNodeSessionIntroducesParties: a proposal and a signed offer carry
// the agent records of every party, so participants that never looked
// one another up check the initiator and send each other their Ready
// without a single DHT lookup; only the initiator resolves the others.
func TestNodeSessionIntroducesParties(t *testing.T) {
	for _, tc := range []struct {
		name  string
		size  int
		offer bool
	}{{"4-party proposal", 4, false}, {"2-party offer", 2, true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			agents := []*nodeTestAgent{nodeTestStart(t, dir, "i0", AcceptAll, nil)}
			for i := 1; i < tc.size; i++ {
				agents = append(agents, nodeTestStart(t, dir, fmt.Sprintf("i%d", i), AcceptAll, agents[0]))
			}
			var with []sign.AgentID
			for _, a := range agents[1:] {
				hostTestResolve(t, agents[0].node.Host(), a.key.AgentID())
				with = append(with, a.key.AgentID())
			}
			before := make([]transport.Stats, len(agents))
			for i, a := range agents {
				before[i] = a.node.Host().Stats()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			p, err := agents[0].node.Propose(ctx, with, nodeTestTerms(t, map[string]any{"item": "lamp"}), ProposeOptions{Timeout: 20 * time.Second, Offer: tc.offer})
			if err != nil {
				t.Fatal(err)
			}
			if o, err := p.Wait(ctx); err != nil || o.Err() != nil {
				t.Fatalf("outcome %+v err %v", o, err)
			}
			nodeTestCheck(t, agents, p.ID(), StateCommitted)
			for i, a := range agents {
				st := a.node.Host().Stats()
				if n := st.Lookups - before[i].Lookups; n != 0 {
					t.Errorf("%s made %d DHT lookups during the session, want 0", a.name, n)
				}
				if i > 0 && st.Introduced-before[i].Introduced < uint64(tc.size-1) {
					t.Errorf("%s took %d introduced records, want at least %d (every other party)", a.name, st.Introduced-before[i].Introduced, tc.size-1)
				}
			}
		})
	}
}
