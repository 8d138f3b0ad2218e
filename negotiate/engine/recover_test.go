package engine

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
)

// TestCoreRecover: an engine on a chain that lost two records (a fresh
// copy of a's chain, same genesis) refuses bad input to Recover without a
// write or a change, refuses a record that does not go next, and appends
// the lost records in order as the very entries lost: the chain ends at
// the same head as the original and verifies; the sessions answer as
// committed.
func TestCoreRecover(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	b.policy = acceptAll
	var ids []string
	for i := 0; i < 2; i++ {
		ids = append(ids, n.propose(a, []*coreNode{b}, terms(t, map[string]any{"n": i}), 0))
		n.run(60_000)
		n.checkInvariants(ids[i], n.nodes, StateCommitted)
	}
	held, err := b.ch.Entries(1, 0)
	if err != nil || len(held) != 2 {
		t.Fatalf("b's records: %v %d", err, len(held))
	}
	lost, err := chain.Create(filepath.Join(t.TempDir(), "a-old.db"), a.key, t0)
	if err != nil {
		t.Fatal(err)
	}
	defer lost.Close()
	eng, err := NewEngine(CoreConfig{Key: a.key, Head: lost.Head()})
	if err != nil {
		t.Fatal(err)
	}
	tampered := append([]byte(nil), held[0].Payload...)
	tampered[len(tampered)-5] ^= 1
	for name, raw := range map[string][]byte{
		"garbage":          []byte("not a record"),
		"tampered":         tampered,
		"not next (seq 2)": held[1].Payload,
	} {
		out := eng.Step(Input{Now: n.now, Recover: &Recover{Record: raw}})
		if out.Err == nil || len(out.Persist)+len(out.Send) > 0 {
			t.Fatalf("%s: err %v, %d writes, %d sends", name, out.Err, len(out.Persist), len(out.Send))
		}
		t.Logf("%s: %v", name, out.Err)
		if eng.Head() != lost.Head() {
			t.Fatalf("%s: refused record moved the engine's head", name)
		}
	}
	if out := eng.Step(Input{Now: n.now, Recover: &Recover{Record: held[1].Payload}}); !errors.Is(out.Err, ErrNotNext) {
		t.Fatalf("record out of order: %v, want ErrNotNext", out.Err)
	}
	for i, e := range held {
		out := eng.Step(Input{Now: n.now, Recover: &Recover{Record: e.Payload}})
		if out.Err != nil || len(out.Persist) != 1 || len(out.Send) != 0 {
			t.Fatalf("recover %d: %v, %d writes, %d sends", i, out.Err, len(out.Persist), len(out.Send))
		}
		if err := lost.Apply(out.Persist[0]); err != nil {
			t.Fatal(err)
		}
	}
	if lost.Head() != a.ch.Head() || eng.Head() != a.ch.Head() {
		t.Fatalf("recovered head %+v (engine %+v), original %+v", lost.Head(), eng.Head(), a.ch.Head())
	}
	if verr := lost.Verify(chain.VerifyOptions{CheckPayload: CheckAgreementEntry}); verr != nil {
		t.Fatal(verr)
	}
	for _, id := range ids {
		if o, err := eng.Outcome(id); err != nil || o == nil || o.State != StateCommitted {
			t.Fatalf("session %s after recovery: %v %+v", id, err, o)
		}
	}
	if out := eng.Step(Input{Now: n.now, Recover: &Recover{Record: held[0].Payload}}); !errors.Is(out.Err, ErrNotNext) {
		t.Fatalf("a record recovered twice: %v, want ErrNotNext", out.Err)
	}
}

// TestCoreRewind: an offer's lock and vote could not be written (nothing
// reached the chain); Rewind forgets the session and the lock, as a
// restart would, so the engine is not left believing it is locked and
// signed: a new offer goes ahead.
func TestCoreRewind(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	parties := []protocol.Party{n.party(a), n.party(b)}
	id := protocol.NewSessionID()
	out := a.eng.Step(Input{Now: n.now, Start: &Start{Session: id, Parties: parties, Terms: terms(t, map[string]any{"x": 1}), Deadline: n.now + 30_000, Offer: true}})
	if out.Err != nil || len(out.Persist) != 1 || a.eng.Lock() == nil {
		t.Fatalf("offer: %v, %d writes, lock %v", out.Err, len(out.Persist), a.eng.Lock())
	}
	// The write is refused: nothing of it is applied.
	rw, err := a.eng.Rewind(n.now, a.ch.Head(), nil, []string{id}, a.ch.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	if len(rw.Timers) != 0 || a.eng.Lock() != nil {
		t.Fatalf("rewind: %d timers, lock %v", len(rw.Timers), a.eng.Lock())
	}
	if _, err := a.eng.Session(id); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("rewound session without a checkpoint: %v, want unknown", err)
	}
	out = a.eng.Step(Input{Now: n.now, Start: &Start{Session: protocol.NewSessionID(), Parties: parties, Terms: terms(t, map[string]any{"x": 2}), Deadline: n.now + 30_000, Offer: true}})
	if out.Err != nil || len(out.Persist) != 1 {
		t.Fatalf("offer after the rewind: %v", out.Err)
	}
}
