package negotiate

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/internal/hooks"
	"github.com/negotiate-dev/negotiate/negotiate/engine"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// TestNodeDropsEndedSessionsAndAnswersFromCheckpoints runs real nodes that
// keep ended sessions in memory for 1 ms: a committed session leaves the
// initiator's memory once its deadline passed, yet Session, Receipt, Wait
// and Sessions(true) still report it, and a peer's late query about it is
// answered with the commit, read back from the checkpoint.
func TestNodeDropsEndedSessionsAndAnswersFromCheckpoints(t *testing.T) {
	dir := t.TempDir()
	var commitsToB atomic.Int32
	start := func(name string, policy Policy, boot *nodeTestAgent, inbound func(sign.AgentID, string) bool) *nodeTestAgent {
		key := hostTestKey(t, "node/"+name)
		path := filepath.Join(dir, name+".db")
		ch, err := chain.Create(path, key, time.Now().UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		a := &nodeTestAgent{name: name, key: key, ch: ch, path: path, configure: func(cfg *NodeConfig, hk *hooks.Hooks) {
			cfg.EndedRetention = time.Millisecond
			hk.Inbound = inbound
		}}
		a.startNode(t, policy, boot)
		return a
	}
	a := start("retain-a", nil, nil, nil)
	b := start("retain-b", AcceptAll, a, func(_ sign.AgentID, typ string) bool {
		if typ == protocol.TypeCommit {
			commitsToB.Add(1)
		}
		return true
	})
	hostTestResolve(t, a.node.Host(), b.key.AgentID())
	hostTestResolve(t, b.node.Host(), a.key.AgentID())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	propose := func(x int) (string, *Outcome) {
		p, err := a.node.Propose(ctx, []sign.AgentID{b.key.AgentID()}, nodeTestTerms(t, map[string]any{"x": x}),
			ProposeOptions{Offer: true, Timeout: 1500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		o, err := p.Wait(ctx)
		if err != nil || o.State != StateCommitted {
			t.Fatalf("session %d: %+v, %v", x, o, err)
		}
		return p.ID(), o
	}
	id, first := propose(1)
	time.Sleep(1600 * time.Millisecond) // past the first session's deadline
	propose(2)                          // any step drops what is due
	a.node.mu.Lock()
	held := a.node.eng.Holds(id)
	a.node.mu.Unlock()
	if held {
		t.Fatal("the ended session is still in the initiator's memory")
	}

	info, err := a.node.Session(id)
	if err != nil || info.State != StateCommitted || info.RecordHash != first.RecordHash.String() {
		t.Fatalf("Session after the drop: %+v, %v", info, err)
	}
	receipt, hash, err := a.node.Receipt(id)
	if err != nil || hash != first.RecordHash {
		t.Fatalf("Receipt after the drop: %v, %v", hash, err)
	}
	if o, err := a.node.Wait(ctx, id); err != nil || o.State != StateCommitted || o.RecordHash != first.RecordHash {
		t.Fatalf("Wait after the drop: %+v, %v", o, err)
	}
	listed := false
	for _, s := range a.node.Sessions(true) {
		if s.ID == id && s.State == StateCommitted {
			listed = true
		}
	}
	if !listed {
		t.Fatal("Sessions(true) leaves out the dropped session")
	}

	// b asks again, as a party that missed the outcome would.
	a.node.mu.Lock()
	a.node.eng.Evict(time.Now().UnixMilli(), 0)
	a.node.mu.Unlock()
	rec, err := engine.DecodeRecord(receipt)
	if err != nil {
		t.Fatal(err)
	}
	before := commitsToB.Load()
	if err := b.hooks.Inject(engine.Outgoing{To: a.key.AgentID(), Type: protocol.TypeQuery, Session: id,
		Body: &protocol.Query{AgreementHash: engine.AgreementHash(&rec.Agreement)}, Expires: time.Now().Add(30 * time.Second).UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return commitsToB.Load() > before })

	// A restart leaves ended sessions past their retention on disk.
	latest := a.node.Sessions(true)
	for _, s := range latest {
		if wait := time.Until(time.UnixMilli(s.Deadline)); wait > 0 {
			time.Sleep(wait + 10*time.Millisecond)
		}
	}
	a.node.Close()
	a.startNode(t, nil, nil)
	a.node.mu.Lock()
	count := a.node.eng.Held()
	a.node.mu.Unlock()
	if count != 0 {
		t.Fatalf("after a restart the node holds %d ended sessions in memory, want 0", count)
	}
	if info, err := a.node.Session(id); err != nil || info.State != StateCommitted {
		t.Fatalf("Session after a restart: %+v, %v", info, err)
	}
	if got := len(a.node.Sessions(true)); got != len(latest) {
		t.Fatalf("Sessions(true) after a restart lists %d sessions, before %d", got, len(latest))
	}
}
