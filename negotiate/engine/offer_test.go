package engine

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// proposeOffer starts a signed offer from init to others.
func (n *coreNet) proposeOffer(init *coreNode, others []*coreNode, tm cbor.RawMessage) (string, error) {
	id := protocol.NewSessionID()
	parties := []protocol.Party{n.party(init)}
	for _, o := range others {
		parties = append(parties, n.party(o))
	}
	out := n.step(init, Input{Start: &Start{Session: id, Parties: parties, Terms: tm, Deadline: n.now + 30_000, Offer: true}})
	return id, out.Err
}

func mustOffer(t *testing.T, n *coreNet, init *coreNode, others []*coreNode, tm cbor.RawMessage) string {
	t.Helper()
	id, err := n.proposeOffer(init, others, tm)
	if err != nil {
		t.Fatalf("offer: %v", err)
	}
	return id
}

// lockWrites counts the writes that took a chain lock.
func lockWrites(nd *coreNode) int {
	c := 0
	for _, w := range nd.writes {
		if w.AcquireLock != nil {
			c++
		}
	}
	return c
}

func rejectAll(n *coreNode, ev Event) *Decision {
	if ev.Kind == EvProposal {
		return &Decision{Session: ev.Session, Action: ActReject, Reason: "too dear"}
	}
	return nil
}

func TestCoreOfferCommits(t *testing.T) {
	for _, parties := range []int{2, 3, 5} {
		t.Run(fmt.Sprintf("%d-party", parties), func(t *testing.T) {
			n := newCoreNet(t, []string{"a", "b", "c", "d", "e"}[:parties]...)
			for _, nd := range n.nodes[1:] {
				nd.policy = acceptAll
			}
			init := n.nodes[0]
			id := mustOffer(t, n, init, n.nodes[1:], terms(t, map[string]any{"item": "lamp", "price": 40}))
			if len(init.writes) != 1 || lockWrites(init) != 1 {
				t.Fatalf("initiator made %d writes before the offer left, want its one lock + vote write", len(init.writes))
			}
			n.run(60_000)
			n.checkInvariants(id, n.nodes, StateCommitted)
			others := parties - 1
			want := map[string]int{protocol.TypeOffer: others, protocol.TypeReady: others}
			if parties > 2 {
				want[protocol.TypeCommit] = others
			}
			total := 0
			for typ, c := range n.sent {
				total += c
				if c != want[typ] {
					t.Fatalf("%d %s frames (%v), want %v", c, typ, n.sent, want)
				}
			}
			if total != 2*others+want[protocol.TypeCommit] {
				t.Fatalf("%d frames, want %d", total, 2*others+want[protocol.TypeCommit])
			}
			if parties == 2 {
				b := n.nodes[1]
				if len(b.writes) != 1 || lockWrites(b) != 0 || b.writes[0].Append == nil {
					t.Fatalf("participant made %d writes (%d locks), want one that signs and appends", len(b.writes), lockWrites(b))
				}
			}
			if o := init.outcomes[id]; o.Round != 1 {
				t.Fatalf("round %d, want 1", o.Round)
			}
		})
	}
}

func TestCoreOfferRejected(t *testing.T) {
	for _, parties := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d-party", parties), func(t *testing.T) {
			n := newCoreNet(t, []string{"a", "b", "c"}[:parties]...)
			for _, nd := range n.nodes[1:] {
				nd.policy = acceptAll
			}
			n.nodes[parties-1].policy = rejectAll
			id := mustOffer(t, n, n.nodes[0], n.nodes[1:], terms(t, map[string]any{"price": 99}))
			n.run(60_000)
			// Every party ends rejected, the one that signed too (freed by
			// the rejection, its abort certificate).
			for _, nd := range n.nodes {
				want := StateRejected
				o := nd.outcomes[id]
				if o == nil || o.State != want {
					t.Fatalf("%s: outcome %+v, want %s", nd.name, o, want)
				}
				if len(o.AbortCertificate) == 0 {
					t.Fatalf("%s: no abort certificate", nd.name)
				}
				if _, locked := nd.ch.Lock(); locked {
					t.Fatalf("%s: chain still locked", nd.name)
				}
				if nd.ch.Head().Seq != 0 {
					t.Fatalf("%s: something was appended", nd.name)
				}
			}
			if !errors.Is(n.nodes[0].outcomes[id].Err(), ErrRejected) || !strings.Contains(n.nodes[0].outcomes[id].Reason, "too dear") {
				t.Fatalf("initiator outcome %v, want rejected with the reason", n.nodes[0].outcomes[id].Err())
			}
		})
	}
}

func TestCoreOfferNoCounter(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	id := mustOffer(t, n, a, []*coreNode{b}, terms(t, map[string]any{"price": 10}))
	n.run(100)
	info, err := b.eng.Session(id)
	if err != nil || !info.Offer || !info.Pending {
		t.Fatalf("participant session %+v (%v), want a pending offer", info, err)
	}
	out := n.step(b, Input{Decision: &Decision{Session: id, Action: ActCounter, Terms: terms(t, map[string]any{"price": 8})}})
	if !errors.Is(out.Err, ErrNotYourTurn) || len(out.Persist)+len(out.Send) != 0 {
		t.Fatalf("counter on an offer: err %v, %d writes, %d sends; want ErrNotYourTurn and nothing done", out.Err, len(out.Persist), len(out.Send))
	}
	n.step(b, Input{Decision: &Decision{Session: id, Action: ActAccept}})
	n.run(60_000)
	n.checkInvariants(id, n.nodes, StateCommitted)
}

// A participant that never decides is asked (and answers "not yet") until
// its deadline, then refuses durably, which frees the initiator.
func TestCoreOfferUndecidedUntilDeadline(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	id := mustOffer(t, n, a, []*coreNode{b}, terms(t, map[string]any{"price": 10}))
	n.run(20_000) // resolve timers fire at 2, 4, 8, 16 s
	if n.sent[protocol.TypeQuery] == 0 {
		t.Fatal("the initiator never asked the silent participant")
	}
	if _, locked := a.ch.Lock(); !locked || a.outcomes[id] != nil || b.outcomes[id] != nil {
		t.Fatalf("before the deadline: locked=%v, outcomes %v / %v; want still open", locked, a.outcomes[id], b.outcomes[id])
	}
	n.run(60_000)
	n.checkInvariants(id, n.nodes, StateAborted)
	if !strings.Contains(a.outcomes[id].Reason, "deadline") {
		t.Fatalf("initiator reason %q, want the participant's deadline refusal", a.outcomes[id].Reason)
	}
	// A late accept changes nothing.
	if out := n.step(b, Input{Decision: &Decision{Session: id, Action: ActAccept}}); out.Err == nil {
		t.Fatal("accept after the deadline refusal succeeded")
	}
}

func TestCoreOfferBusy(t *testing.T) {
	n := newCoreNet(t, "a", "b", "c")
	a, b, c := n.nodes[0], n.nodes[1], n.nodes[2]
	// b's chain is locked by an offer it made to c, which does not answer yet.
	held := mustOffer(t, n, b, []*coreNode{c}, terms(t, map[string]any{"price": 1}))
	n.run(100)
	// An initiator cannot make a second offer while locked.
	if _, err := n.proposeOffer(b, []*coreNode{c}, terms(t, map[string]any{"price": 2})); !errors.Is(err, ErrBusy) {
		t.Fatalf("second offer while locked: %v, want ErrBusy", err)
	}
	// A participant whose chain is locked refuses as busy.
	b.policy = acceptAll
	id := mustOffer(t, n, a, []*coreNode{b}, terms(t, map[string]any{"price": 3}))
	n.run(100)
	if o := a.outcomes[id]; o == nil || o.State != StateAborted || !o.Busy {
		t.Fatalf("offer to a busy agent: %+v, want aborted busy", o)
	}
	if _, locked := a.ch.Lock(); locked {
		t.Fatal("initiator still locked after the busy refusal")
	}
	c.policy = acceptAll
	n.step(c, Input{Decision: &Decision{Session: held, Action: ActAccept}})
	n.run(60_000)
	n.checkInvariants(held, []*coreNode{b, c}, StateCommitted)
}

// Lost frames and crashes: the offer and the participant's Ready are both
// recovered by the resolve timer; a crash of the initiator right after its
// vote re-sends the offer on restart.
func TestCoreOfferRecovers(t *testing.T) {
	cases := []struct {
		name string
		lose string // the first frame of this type is lost
		down bool   // the initiator crashes after its vote, before the offer leaves
	}{
		{name: "offer lost", lose: protocol.TypeOffer},
		{name: "participant's ready lost", lose: protocol.TypeReady},
		{name: "initiator crashes after its vote", down: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := newCoreNet(t, "a", "b")
			a, b := n.nodes[0], n.nodes[1]
			b.policy = acceptAll
			lost := false
			n.drop = func(from, to *coreNode, typ string) bool {
				if tc.lose != "" && !lost && typ == tc.lose {
					lost = true
					return true
				}
				return false
			}
			id := mustOffer(t, n, a, []*coreNode{b}, terms(t, map[string]any{"price": 5}))
			if tc.down {
				n.queue = nil // the offer never left
				n.timers = nil
				n.restart(a)
			}
			n.run(60_000)
			n.checkInvariants(id, n.nodes, StateCommitted)
			if tc.lose != "" && !lost {
				t.Fatal("no frame was lost")
			}
		})
	}
}

// A participant restarted after it refused an offer refuses it again when
// the offer comes back; one that never knew it may still decide.
func TestCoreOfferRefusalIsDurable(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	b.policy = rejectAll
	id := mustOffer(t, n, a, []*coreNode{b}, terms(t, map[string]any{"price": 5}))
	offer := n.queue[0]
	n.run(60_000)
	n.checkInvariants(id, n.nodes, StateRejected)
	n.restart(b)
	b.policy = acceptAll
	n.queue = append(n.queue, offer) // the offer again (a replay past the guard)
	n.run(60_000)
	if b.ch.Head().Seq != 0 {
		t.Fatal("the participant signed an offer it had refused")
	}
	if n.sent["cert"] < 2 {
		t.Fatalf("the replayed offer got no refusal (%v)", n.sent)
	}
}

func TestTruncateUTF8(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"},             // é is 2 bytes: not split
		{"a\xffb", 10, "a\uFFFDb"}, // invalid bytes replaced
		{"", 0, ""},
	} {
		if got := truncateUTF8(tc.in, tc.n); got != tc.want {
			t.Errorf("truncateUTF8(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// A refusal reason over the wire limit (a long SignCheck error) is cut, not
// a panic; a decision with a reason over the limit is refused unchanged.
func TestCoreOfferLongReasons(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	b.eng.cfg.SignCheck = func(*protocol.Agreement) error { return errors.New(strings.Repeat("x", 3*protocol.MaxReasonBytes)) }
	b.policy = acceptAll
	id := mustOffer(t, n, a, []*coreNode{b}, terms(t, map[string]any{"price": 1}))
	n.run(60_000)
	n.checkInvariants(id, n.nodes, StateAborted)

	id2 := mustOffer(t, n, a, []*coreNode{b}, terms(t, map[string]any{"price": 2}))
	b.policy = nil
	n.run(100)
	for _, act := range []Action{ActAbort, ActReject} {
		out := n.step(b, Input{Decision: &Decision{Session: id2, Action: act, Reason: strings.Repeat("r", protocol.MaxReasonBytes+1)}})
		if out.Err == nil || len(out.Persist)+len(out.Send) != 0 {
			t.Fatalf("%s with a long reason: err %v, %d writes, %d sends; want refused, nothing done", act, out.Err, len(out.Persist), len(out.Send))
		}
	}
}

// In a negotiated 2-party session whose preflight is lost, the initiator's
// Ready arrives first and is kept; when the preflight comes again the
// participant holds both statements as it signs, so it signs and commits in
// one durable write (never visibly locked).
func TestCoreEarlyReadySignsAndCommitsInOneWrite(t *testing.T) {
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
	n.run(60_000)
	n.checkInvariants(id, n.nodes, StateCommitted)
	if !lost {
		t.Fatal("no preflight was lost")
	}
	if len(b.writes) != 1 || lockWrites(b) != 0 || b.writes[0].Append == nil {
		t.Fatalf("participant made %d writes (%d locks), want one that signs and appends", len(b.writes), lockWrites(b))
	}
}

func TestForOffer(t *testing.T) {
	counter := Decision{Session: "s", Action: ActCounter, Terms: []byte{0xa0}}
	if got := ForOffer(counter); got.Action != ActReject || got.Reason != OfferCounterReason || got.Session != "s" || got.Terms != nil {
		t.Fatalf("ForOffer(counter) = %+v, want a reject of session s with OfferCounterReason", got)
	}
	for _, d := range []Decision{{Session: "s", Action: ActAccept}, {Session: "s", Action: ActReject, Reason: "no"}} {
		if got := ForOffer(d); got.Action != d.Action || got.Reason != d.Reason {
			t.Fatalf("ForOffer(%+v) = %+v, want it unchanged", d, got)
		}
	}
}

// TestCoreEquivocationIsReportedThoughRefused: an initiator that sends a
// second, different proposal or offer for one session gets the input
// refused (nothing changes: no write, send, timer or other event), and the
// participant still reports the violation.
func TestCoreEquivocationIsReportedThoughRefused(t *testing.T) {
	tests := []struct {
		name  string
		offer bool
	}{{"propose", false}, {"offer", true}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newCoreNet(t, "a", "b")
			a, b := n.nodes[0], n.nodes[1] // b has no policy: the proposal waits
			var id string
			if tc.offer {
				id = mustOffer(t, n, a, []*coreNode{b}, terms(t, map[string]any{"x": 1}))
			} else {
				id = n.propose(a, []*coreNode{b}, terms(t, map[string]any{"x": 1}), 2)
			}
			n.run(100)
			s := b.eng.sessions[id]
			if s == nil || !s.pending {
				t.Fatalf("b has no pending session %s", id)
			}
			other := terms(t, map[string]any{"x": 2})
			var in Received
			if tc.offer {
				ag := *s.agreement
				ag.Terms, ag.TermsHash = other, chain.Hash(sign.Hash(other))
				ah := AgreementHash(&ag)
				in = Received{From: a.key.AgentID(), Type: protocol.TypeOffer, Session: id, Body: &protocol.Offer{
					Preflight: protocol.Preflight{Agreement: ag, AgreementHash: ah},
					Ready:     protocol.Ready{AgreementHash: ah, Head: a.ch.Head(), Signature: []byte("any")},
				}}
			} else {
				in = Received{From: a.key.AgentID(), Type: protocol.TypePropose, Session: id, Body: &protocol.Propose{
					Round: s.round, MaxRounds: s.maxRounds, Parties: s.parties, Terms: other, Deadline: s.deadline,
				}}
			}
			out := n.step(b, Input{Message: &in})
			if out.Err == nil || len(out.Persist) != 0 || len(out.Send) != 0 || len(out.Timers) != 0 {
				t.Fatalf("second %s: err %v, %d writes, %d sends, %d timers", tc.name, out.Err, len(out.Persist), len(out.Send), len(out.Timers))
			}
			if len(out.Events) != 1 || out.Events[0].Kind != EvViolation || out.Events[0].From != a.key.AgentID() {
				t.Fatalf("second %s: events %+v, want one violation by a", tc.name, out.Events)
			}
		})
	}
}

// refusalCert is from's signed refusal of agreement ah in session id: an
// abort certificate, as from's engine would seal it.
func refusalCert(t *testing.T, n *coreNet, from, to *coreNode, id string, ah chain.Hash) []byte {
	t.Helper()
	body, err := protocol.EncodeBody(&protocol.Refuse{AgreementHash: ah, Reason: "no"})
	if err != nil {
		t.Fatal(err)
	}
	frame, err := protocol.Seal(from.key, protocol.Message{Type: protocol.TypeRefuse, Session: id, To: to.key.AgentID(),
		Nonce: protocol.NewNonce(), Expires: n.now + 60_000, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	return frame
}

// TestCoreRefusalBySignerIsVoid: a party whose statement over the
// agreement this agent holds cannot end the session by refusing it (it
// signed and refused: honest parties would split), also after this agent
// restarts; a refusal by a party that never signed still ends it.
func TestCoreRefusalBySignerIsVoid(t *testing.T) {
	tests := []struct {
		name    string
		refuser int // index in n.nodes
		restart bool
		void    bool
	}{
		{"initiator, whose offer statement is held", 0, false, true},
		{"initiator, held statement survives a restart", 0, true, true},
		{"participant that never signed", 2, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newCoreNet(t, "a", "b", "c")
			a, b, c := n.nodes[0], n.nodes[1], n.nodes[2]
			b.policy = acceptAll // c stays undecided
			id := mustOffer(t, n, a, []*coreNode{b, c}, terms(t, map[string]any{"x": 1}))
			n.run(100)
			if s := c.eng.sessions[id]; s == nil || s.vote == voteSigned {
				t.Fatalf("c decided: %+v", s)
			}
			if s := b.eng.sessions[id]; s == nil || s.vote != voteSigned || s.final != "" {
				t.Fatalf("b did not sign and wait: %+v", s)
			}
			if tc.restart {
				n.restart(b)
			}
			ah := b.eng.sessions[id].ah
			refuser := n.nodes[tc.refuser]
			out := n.step(b, Input{Message: &Received{From: refuser.key.AgentID(), Type: protocol.TypeAbort, Session: id,
				Body: &protocol.Abort{Certificate: refusalCert(t, n, refuser, b, id, ah)}}})
			s := b.eng.sessions[id]
			if tc.void {
				if out.Err == nil || s.final != "" || len(out.Persist) != 0 {
					t.Fatalf("refusal by a signer ended the session: err %v, final %q", out.Err, s.final)
				}
				if len(out.Events) != 1 || out.Events[0].Kind != EvViolation {
					t.Fatalf("no violation reported: %+v", out.Events)
				}
			} else if out.Err != nil || s.final != StateAborted {
				t.Fatalf("refusal by %s: err %v, final %q, want aborted", refuser.name, out.Err, s.final)
			}
		})
	}
}

// TestCoreOfferRefusedOtherAgreementThenRestart: while it still decides an
// offer, a participant durably refuses another agreement of the session
// (an equivocating initiator asked about it); after a crash it restarts
// (the checkpoint is open and unsigned), ends the session and keeps
// refusing.
func TestCoreOfferRefusedOtherAgreementThenRestart(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1] // b undecided
	id := mustOffer(t, n, a, []*coreNode{b}, terms(t, map[string]any{"x": 1}))
	n.run(100)
	other := chain.Hash(sign.Hash([]byte("another agreement")))
	out := n.step(b, Input{Message: &Received{From: a.key.AgentID(), Type: protocol.TypeQuery, Session: id, Body: &protocol.Query{AgreementHash: other}}})
	if len(out.Persist) != 1 || len(out.Send) != 1 || out.Send[0].Type != protocol.TypeAbort {
		t.Fatalf("query about another agreement: %d writes, sends %+v", len(out.Persist), out.Send)
	}
	n.restart(b) // fails the test if the checkpoint cannot be resumed
	s := b.eng.sessions[id]
	if s == nil || s.final != StateAborted || s.vote == voteSigned {
		t.Fatalf("after the restart: %+v", s)
	}
	if out := n.step(b, Input{Decision: &Decision{Session: id, Action: ActAccept}}); out.Err == nil || len(out.Persist) != 0 {
		t.Fatalf("accept after the restart: err %v, %d writes", out.Err, len(out.Persist))
	}
	out = n.step(b, Input{Message: &Received{From: a.key.AgentID(), Type: protocol.TypeQuery, Session: id, Body: &protocol.Query{AgreementHash: other}}})
	if len(out.Send) != 1 || out.Send[0].Type != protocol.TypeAbort || len(out.Persist) != 0 {
		t.Fatalf("the refusal after the restart: %d writes, sends %+v", len(out.Persist), out.Send)
	}
}

// The initiator consults SignCheck too, before it signs anything: a
// negotiated session it would not sign aborts for every party with no
// lock or write anywhere, and a signed offer it would not sign is refused
// before anything changes.
func TestCoreInitiatorSignCheck(t *testing.T) {
	no := func(*protocol.Agreement) error { return errors.New("over the limit") }
	t.Run("negotiated", func(t *testing.T) {
		n := newCoreNet(t, "a", "b")
		a, b := n.nodes[0], n.nodes[1]
		a.eng.cfg.SignCheck = no
		b.policy = acceptAll
		id := n.propose(a, []*coreNode{b}, terms(t, map[string]any{"price": 9000}), 0)
		n.run(60_000)
		n.checkInvariants(id, n.nodes, StateAborted)
		for _, nd := range n.nodes {
			if len(nd.writes) != 0 {
				t.Errorf("%d durable writes at a party; the initiator refused before anyone signed", len(nd.writes))
			}
		}
		o, err := a.eng.Outcome(id)
		if err != nil || o == nil || !strings.Contains(o.Reason, "over the limit") {
			t.Fatalf("initiator's outcome %+v, %v: want aborted naming the check", o, err)
		}
	})
	t.Run("offer", func(t *testing.T) {
		n := newCoreNet(t, "a", "b")
		a, b := n.nodes[0], n.nodes[1]
		a.eng.cfg.SignCheck = no
		out := n.step(a, Input{Start: &Start{Session: protocol.NewSessionID(), Parties: []protocol.Party{n.party(a), n.party(b)},
			Terms: terms(t, map[string]any{"price": 9000}), Deadline: n.now + 60_000, Offer: true}})
		if out.Err == nil || !strings.Contains(out.Err.Error(), "over the limit") || len(out.Persist)+len(out.Send) != 0 || a.eng.Held() != 0 {
			t.Fatalf("offer the initiator would not sign: err %v, %d writes, %d sends, %d sessions held; want refused, nothing done", out.Err, len(out.Persist), len(out.Send), a.eng.Held())
		}
	})
}
