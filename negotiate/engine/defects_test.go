package engine

import (
	"fmt"
	"strings"
	"testing"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// TestCoreAbortCertificateNotSentBackToRefuser: when a participant refuses
// (or rejects an offer), the initiator forwards the abort certificate to
// the other participants only, never back to the party that signed it.
func TestCoreAbortCertificateNotSentBackToRefuser(t *testing.T) {
	for _, parties := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d-party offer", parties), func(t *testing.T) {
			n := newCoreNet(t, []string{"a", "b", "c"}[:parties]...)
			for _, nd := range n.nodes[1:] {
				nd.policy = acceptAll
			}
			refuser := n.nodes[parties-1]
			refuser.policy = rejectAll
			aborts := map[string]int{} // recipient → abort frames from the initiator
			n.drop = func(from, to *coreNode, typ string) bool {
				if from == n.nodes[0] && typ == protocol.TypeAbort {
					aborts[to.name]++
				}
				return false
			}
			id := mustOffer(t, n, n.nodes[0], n.nodes[1:], terms(t, map[string]any{"price": 99}))
			n.run(60_000)
			n.checkInvariants(id, n.nodes, StateRejected)
			if aborts[refuser.name] != 0 {
				t.Fatalf("the initiator sent %d abort certificates back to %s, which signed the refusal", aborts[refuser.name], refuser.name)
			}
			if parties > 2 && aborts["b"] != 1 {
				t.Fatalf("b got %d abort certificates, want 1", aborts["b"])
			}
		})
	}
}

// TestCoreEarlyRefusalBySignerIsVoid: a refusal that arrives before the
// preflight, from a party whose statement over the same agreement also
// arrived early, is void as it is after the preflight (voidRefusal): the
// participant reports the violation and does not abort on it; holding both
// statements of a 2-party session, it signs and commits.
func TestCoreEarlyRefusalBySignerIsVoid(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	b.policy = acceptAll
	lost := false
	n.drop = func(from, to *coreNode, typ string) bool {
		if !lost && typ == protocol.TypePreflight {
			lost = true
			return true
		}
		return false
	}
	id := n.propose(a, []*coreNode{b}, terms(t, map[string]any{"deal": "early"}), 0)
	n.run(100) // the preflight is lost; a's Ready reaches b first and is kept
	if !lost {
		t.Fatal("no preflight was lost")
	}
	sa := a.eng.sessions[id]
	if sa == nil || sa.vote != voteSigned {
		t.Fatalf("a did not sign: %+v", sa)
	}
	// a, which signed this agreement, also sends b a refusal of it.
	cert := refusalCert(t, n, a, b, id, sa.ah)
	out := n.step(b, Input{Message: &Received{From: a.key.AgentID(), Type: protocol.TypeRefuse, Session: id,
		Body: &protocol.Refuse{AgreementHash: sa.ah, Reason: "no"}, Raw: cert}})
	if out.Err != nil || len(out.Persist) != 0 {
		t.Fatalf("early refusal: err %v, %d writes", out.Err, len(out.Persist))
	}
	n.run(60_000) // a re-sends the preflight on its resolve timer
	n.checkInvariants(id, n.nodes, StateCommitted)
	violations := 0
	for _, ev := range b.events {
		if ev.Kind == EvViolation && ev.Session == id && ev.From == a.key.AgentID() {
			violations++
		}
	}
	if violations == 0 {
		t.Fatal("b did not report a's refusal of an agreement it had signed")
	}
}

// TestCoreForkAcrossSessionsIsWarranted: b signs session 1 at its genesis
// head; in session 2 a statement of b's at seq 0 with another hash (a
// forked chain) reaches a. a reports the violation with a warrant that
// verifies and convicts b of a forked chain, and does not take the forged
// statement.
func TestCoreForkAcrossSessionsIsWarranted(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	b.policy = acceptAll
	id1 := n.propose(a, []*coreNode{b}, terms(t, map[string]any{"deal": 1}), 0)
	n.run(60_000)
	n.checkInvariants(id1, n.nodes, StateCommitted)

	// Session 2: b's real Ready is lost; a forged one, signed by b at the
	// genesis seq with another hash, arrives instead.
	n.drop = func(from, to *coreNode, typ string) bool { return from == b && typ == protocol.TypeReady }
	id2 := n.propose(a, []*coreNode{b}, terms(t, map[string]any{"deal": 2}), 0)
	n.run(100)
	s := a.eng.sessions[id2]
	if s == nil || s.agreement == nil {
		t.Fatalf("a has no agreement for session 2: %+v", s)
	}
	fork := chain.Head{Seq: 0, Hash: chain.Hash(sign.Hash([]byte("another genesis")))}
	st, err := protocol.StatementFor(s.agreement, b.key.AgentID(), fork)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := protocol.SignStatement(b.key, &st)
	if err != nil {
		t.Fatal(err)
	}
	out := n.step(a, Input{Message: &Received{From: b.key.AgentID(), Type: protocol.TypeReady, Session: id2,
		Body: &protocol.Ready{AgreementHash: s.ah, Head: fork, Signature: sig}}})
	var warrant []byte
	for _, ev := range out.Events {
		if ev.Kind == EvViolation && ev.From == b.key.AgentID() {
			warrant = ev.Warrant
		}
	}
	if warrant == nil {
		t.Fatalf("no warranted violation: events %+v", out.Events)
	}
	w, what, err := protocol.VerifyWarrant(warrant)
	if err != nil || w.Agent != b.key.AgentID() || !strings.Contains(what, "forked chain") {
		t.Fatalf("warrant: %v, %q", err, what)
	}
	if out.Err == nil || s.readys[1] != nil || len(out.Persist) != 0 {
		t.Fatalf("a took the forked statement: err %v, held %+v, %d writes", out.Err, s.readys[1], len(out.Persist))
	}
}
