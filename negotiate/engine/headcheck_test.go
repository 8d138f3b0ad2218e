package engine

import (
	"errors"
	"strings"
	"testing"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// withHeadCheck gives nd a HeadCheck that records what it saw and answers
// with verdict, and restarts its engine with it.
func withHeadCheck(n *coreNet, nd *coreNode, verdict func(heads map[sign.AgentID]chain.Head) error) *[]map[sign.AgentID]chain.Head {
	var seen []map[sign.AgentID]chain.Head
	nd.headCheck = func(_ *protocol.Agreement, heads map[sign.AgentID]chain.Head) error {
		seen = append(seen, heads)
		return verdict(heads)
	}
	n.restart(nd)
	return &seen
}

// A participant with HeadCheck signs only after the initiator's statement,
// and HeadCheck sees the head the initiator signed at.
func TestCoreHeadCheckSeesInitiatorHead(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	b.policy = acceptAll
	seen := withHeadCheck(n, b, func(map[sign.AgentID]chain.Head) error { return nil })
	for i := 0; i < 2; i++ { // the second session starts from a moved head
		want := a.ch.Head()
		id := n.propose(a, []*coreNode{b}, terms(t, map[string]any{"item": "book", "round": i}), 0)
		n.run(60_000)
		n.checkInvariants(id, n.nodes, StateCommitted)
		if len(*seen) != i+1 {
			t.Fatalf("HeadCheck asked %d times, want %d", len(*seen), i+1)
		}
		got := (*seen)[i]
		if len(got) != 1 || got[a.key.AgentID()] != want {
			t.Fatalf("HeadCheck saw %v, want the initiator's head %v", got, want)
		}
	}
}

// A HeadCheck error refuses durably: both sides abort, no lock is left and
// nothing is appended.
func TestCoreHeadCheckRefuses(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	b.policy = acceptAll
	withHeadCheck(n, b, func(map[sign.AgentID]chain.Head) error { return errors.New("presented chain ends elsewhere") })
	before := [2]uint64{a.ch.Head().Seq, b.ch.Head().Seq}
	id := n.propose(a, []*coreNode{b}, terms(t, map[string]any{"item": "book"}), 0)
	n.run(60_000)
	n.checkInvariants(id, n.nodes, StateAborted)
	if r := a.outcomes[id].Reason; !strings.Contains(r, "presented chain ends elsewhere") {
		t.Fatalf("initiator's reason %q does not carry the check's reason", r)
	}
	if a.ch.Head().Seq != before[0] || b.ch.Head().Seq != before[1] {
		t.Fatal("a refused session appended to a chain")
	}
}

// When the initiator's Ready is lost, the waiting participant answers the
// initiator's query by asking for it, and the session still commits.
func TestCoreHeadCheckLostReadyResolves(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	b.policy = acceptAll
	seen := withHeadCheck(n, b, func(map[sign.AgentID]chain.Head) error { return nil })
	lost := false
	n.drop = func(from, to *coreNode, typ string) bool {
		if from == a && typ == protocol.TypeReady && !lost {
			lost = true
			return true
		}
		return false
	}
	want := a.ch.Head()
	id := n.propose(a, []*coreNode{b}, terms(t, map[string]any{"item": "book"}), 0)
	n.run(60_000)
	if !lost {
		t.Fatal("the initiator's ready was never sent")
	}
	n.checkInvariants(id, n.nodes, StateCommitted)
	if len(*seen) != 1 || (*seen)[0][a.key.AgentID()] != want {
		t.Fatalf("HeadCheck saw %v, want one call with the initiator's head %v", *seen, want)
	}
}
