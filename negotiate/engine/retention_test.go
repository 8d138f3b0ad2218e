package engine

import (
	"fmt"
	"testing"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// answer is what one step sent and wrote, comparable across steps.
type answer struct {
	sends  []string // type + encoded body of each message
	writes int
	err    bool
}

func answerOf(t *testing.T, out Output) answer {
	t.Helper()
	a := answer{writes: len(out.Persist), err: out.Err != nil}
	for _, o := range append(out.SendFirst, out.Send...) {
		body := o.Frame
		if body == nil {
			b, err := protocol.EncodeBody(o.Body)
			if err != nil {
				t.Fatal(err)
			}
			body = b
		}
		a.sends = append(a.sends, o.Type+":"+fmt.Sprintf("%x", body))
	}
	return a
}

// TestCoreEvictedSessionsAnswerTheSame drops every ended session from the
// engines' memory and checks that a late query about each is answered
// exactly as before (same certificate, nothing new written), that a
// session ended unsigned is refused, never signed, and that an old
// proposal cannot reopen a dropped session.
func TestCoreEvictedSessionsAnswerTheSame(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	type run struct {
		name   string
		offer  bool
		policy func(*coreNode, Event) *Decision
		want   State
	}
	runs := []run{
		{"negotiated commit", false, acceptAll, StateCommitted},
		{"offer commit", true, acceptAll, StateCommitted},
		{"offer rejected (durable refusal)", true, rejectAll, StateRejected},
		{"negotiation rejected (nothing signed)", false, rejectAll, StateRejected},
		{"negotiation rejected, first asked after the drop", false, rejectAll, StateRejected},
	}
	ids := make([]string, len(runs))
	ahs := make([]chain.Hash, len(runs))
	deadline := int64(0)
	for i, r := range runs {
		b.policy = r.policy
		var id string
		if r.offer {
			id = mustOffer(t, n, a, []*coreNode{b}, terms(t, map[string]any{"run": i}))
		} else {
			id = n.propose(a, []*coreNode{b}, terms(t, map[string]any{"run": i}), 1)
		}
		deadline = n.now + 30_000
		n.run(60_000)
		for _, nd := range n.nodes {
			if o := nd.outcomes[id]; o == nil || o.State != r.want {
				t.Fatalf("%s: %s: outcome %+v, want %s", r.name, nd.name, o, r.want)
			}
		}
		ids[i], ahs[i] = id, a.eng.sessions[id].ah
		if ahs[i] == (chain.Hash{}) {
			// Nothing was signed: ask about the agreement a peer claims.
			ahs[i] = chain.Hash(sign.Hash([]byte(id)))
		}
	}
	n.now = deadline + 1

	query := func(from, to *coreNode, i int) Output {
		return n.step(to, Input{Message: &Received{From: from.key.AgentID(), Type: protocol.TypeQuery, Session: ids[i], Body: &protocol.Query{AgreementHash: ahs[i]}}})
	}
	before := map[string]answer{}
	for i := range runs[:len(runs)-1] {
		for _, pair := range [][2]*coreNode{{b, a}, {a, b}} {
			before[fmt.Sprint(i, pair[1].name)] = answerOf(t, query(pair[0], pair[1], i))
		}
	}

	writesBefore := len(a.writes) + len(b.writes)
	for _, nd := range n.nodes {
		// From now on the engine drops ended sessions at once and reads
		// them back from the chain when named.
		nd.eng.cfg.Checkpoint, nd.eng.cfg.EndedRetentionMillis = nd.ch.Checkpoint, 0
		nd.eng.evictDue(n.now)
		if held := nd.eng.Held(); held != 0 {
			t.Fatalf("%s still holds %d sessions after the drop", nd.name, held)
		}
	}
	for i, r := range runs[:len(runs)-1] {
		for _, pair := range [][2]*coreNode{{b, a}, {a, b}} {
			got := answerOf(t, query(pair[0], pair[1], i))
			want := before[fmt.Sprint(i, pair[1].name)]
			if got.err != want.err || got.writes != 0 || len(got.sends) != len(want.sends) {
				t.Fatalf("%s: %s answers %+v after the drop, %+v before", r.name, pair[1].name, got, want)
			}
			for k := range got.sends {
				if got.sends[k] != want.sends[k] {
					t.Fatalf("%s: %s answers differently after the drop:\n%s\nbefore:\n%s", r.name, pair[1].name, got.sends[k], want.sends[k])
				}
			}
		}
		if o, err := a.eng.Outcome(ids[i]); err != nil || o == nil || o.State != r.want {
			t.Fatalf("%s: outcome after restore: %+v, %v", r.name, o, err)
		}
	}
	if len(a.writes)+len(b.writes) != writesBefore {
		t.Fatalf("answering dropped sessions wrote %d times", len(a.writes)+len(b.writes)-writesBefore)
	}

	// A session that ended unsigned and was never asked about left no
	// checkpoint: it is refused as never signed, never committed.
	last := len(runs) - 1
	out := query(b, a, last)
	if len(out.Send) != 1 || out.Send[0].Type != protocol.TypeAbort {
		t.Fatalf("query about a dropped unsigned session: %+v", answerOf(t, out))
	}
	if o, _ := a.eng.Outcome(ids[last]); o == nil || o.State == StateCommitted {
		t.Fatalf("dropped unsigned session: outcome %+v", o)
	}

	// An old proposal cannot reopen a dropped session.
	for _, nd := range n.nodes {
		nd.eng.evictDue(n.now)
	}
	out = n.step(b, Input{Message: &Received{From: a.key.AgentID(), Type: protocol.TypePropose, Session: ids[0], Body: &protocol.Propose{
		Round: 1, MaxRounds: 1, Parties: []protocol.Party{n.party(a), n.party(b)}, Terms: terms(t, map[string]any{"run": 0}), Deadline: deadline,
	}}})
	if out.Err == nil || len(out.Send) != 0 || len(out.Persist) != 0 {
		t.Fatalf("old proposal for a dropped session: err %v, %d sends, %d writes", out.Err, len(out.Send), len(out.Persist))
	}
	if s := b.eng.sessions[ids[0]]; s == nil || s.final != StateCommitted {
		t.Fatalf("dropped committed session after an old proposal: %+v", s)
	}
}

// TestCoreEvictKeepsOpenAndRecent checks what evict leaves: open sessions,
// sessions that ended less than the retention ago, and sessions whose
// deadline has not passed.
func TestCoreEvictKeepsOpenAndRecent(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	b.policy = acceptAll
	deadline := n.now + 30_000 // what propose gives
	done := n.propose(a, []*coreNode{b}, terms(t, map[string]any{"x": 1}), 1)
	n.run(1_000)
	if a.outcomes[done] == nil {
		t.Fatal("first session did not end")
	}
	ended := a.eng.sessions[done].since
	b.policy = nil // undecided: the next session stays open
	open := n.propose(a, []*coreNode{b}, terms(t, map[string]any{"x": 2}), 1)
	n.run(1_000)
	tests := []struct {
		name     string
		now      int64
		retain   int64
		wantDone bool // the ended session is still held
	}{
		{"before its deadline", deadline - 1, 0, true},
		{"within the retention", deadline + 1, deadline + 1 - ended + 1, true},
		{"after both", deadline + 1, 1, false},
	}
	for _, tc := range tests {
		a.eng.Evict(tc.now, tc.retain)
		if got := (a.eng.sessions[done] != nil); got != tc.wantDone {
			t.Errorf("%s: ended session held = %v, want %v", tc.name, got, tc.wantDone)
		}
		if a.eng.sessions[open] == nil {
			t.Fatalf("%s: the open session was dropped", tc.name)
		}
	}
	if f := a.eng.sessions[open].final; f != "" {
		t.Fatalf("the open session ended: %s", f)
	}
}

// TestCheckpointDroppable reads the state and times of real checkpoints.
func TestCheckpointDroppable(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	b.policy = acceptAll
	deadline := n.now + 30_000
	done := mustOffer(t, n, a, []*coreNode{b}, terms(t, map[string]any{"x": 1}))
	n.run(1_000)
	ended := a.eng.sessions[done].since
	b.policy = nil
	open := mustOffer(t, n, a, []*coreNode{b}, terms(t, map[string]any{"x": 2})) // a is locked and waits
	n.run(1_000)
	cp := func(id string) []byte {
		c, ok, err := a.ch.Checkpoint(id)
		if err != nil || !ok {
			t.Fatalf("no checkpoint for %s: %v", id, err)
		}
		return c
	}
	tests := []struct {
		name       string
		checkpoint []byte
		now        int64
		retain     int64
		want       bool
	}{
		{"ended, past deadline and retention", cp(done), deadline + 10, 5, true},
		{"ended, within the retention", cp(done), deadline + 10, deadline + 10 - ended + 1, false},
		{"ended, before its deadline", cp(done), deadline - 1, 0, false},
		{"open (locked, signed)", cp(open), deadline + 60_000, 0, false},
		{"not CBOR", []byte{0xff, 0x00}, deadline + 10, 0, false},
		{"empty", nil, deadline + 10, 0, false},
	}
	for _, tc := range tests {
		if got := CheckpointDroppable(tc.checkpoint, tc.now, tc.retain); got != tc.want {
			t.Errorf("%s: droppable = %v, want %v", tc.name, got, tc.want)
		}
	}
}
