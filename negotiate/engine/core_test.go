package engine

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// coreNet runs engines over real chains (bbolt in a temp dir) with an
// in-memory, FIFO message queue and a virtual clock. Frames are really
// sealed and opened, so the wire path is exercised.
type coreNet struct {
	t      *testing.T
	now    int64
	nodes  []*coreNode
	byID   map[sign.AgentID]*coreNode
	queue  []coreMsg
	timers []coreTimer
	drop   func(from, to *coreNode, typ string) bool
	sent   map[string]int
}

type coreNode struct {
	name   string
	key    *sign.PrivateKey
	ch     *chain.Chain
	eng    *Engine
	down   bool
	policy func(n *coreNode, ev Event) *Decision
	// headCheck, when set, is the engine's CoreConfig.HeadCheck (set before restart).
	headCheck func(a *protocol.Agreement, heads map[sign.AgentID]chain.Head) error
	outcomes  map[string]*Outcome
	events    []Event
	errs      []error
	writes    []chain.Write // every durable write, in order
}

type coreMsg struct {
	from, to *coreNode
	frame    []byte
	typ      string
}

type coreTimer struct {
	node *coreNode
	t    Timer
}

const t0 = int64(1_800_000_000_000)

func newCoreNet(t *testing.T, names ...string) *coreNet {
	t.Helper()
	n := &coreNet{t: t, now: t0, byID: map[sign.AgentID]*coreNode{}, sent: map[string]int{}}
	dir := t.TempDir()
	scheme, _ := sign.SchemeByName("ed25519")
	for _, name := range names {
		key, err := scheme.DeriveKey([]byte("core-test/" + name))
		if err != nil {
			t.Fatal(err)
		}
		ch, err := chain.Create(filepath.Join(dir, name+".db"), key, t0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ch.Close() })
		nd := &coreNode{name: name, key: key, ch: ch, outcomes: map[string]*Outcome{}}
		n.restart(nd)
		n.nodes = append(n.nodes, nd)
		n.byID[key.AgentID()] = nd
	}
	return n
}

// restart rebuilds the node's engine from its chain, as after a crash.
func (n *coreNet) restart(nd *coreNode) {
	cps, err := nd.ch.Checkpoints()
	if err != nil {
		n.t.Fatal(err)
	}
	lock, _ := nd.ch.Lock()
	eng, err := NewEngine(CoreConfig{Key: nd.key, Head: nd.ch.Head(), Lock: lock, Checkpoints: cps, HeadCheck: nd.headCheck})
	if err != nil {
		n.t.Fatalf("%s: restart: %v", nd.name, err)
	}
	nd.eng = eng
	nd.down = false
	n.step(nd, Input{Resume: true})
}

func (n *coreNet) party(nd *coreNode) protocol.Party { return nd.eng.Self() }

func (n *coreNet) step(nd *coreNode, in Input) Output {
	in.Now = n.now
	out := nd.eng.Step(in)
	if out.Err != nil {
		nd.errs = append(nd.errs, out.Err)
	}
	for _, w := range out.Persist {
		if err := nd.ch.Apply(w); err != nil {
			n.t.Fatalf("%s: persist: %v", nd.name, err)
		}
		nd.writes = append(nd.writes, w)
	}
	for _, o := range append(out.SendFirst, out.Send...) {
		frame := o.Frame
		typ := o.Type
		if frame == nil {
			body, err := protocol.EncodeBody(o.Body)
			if err != nil {
				n.t.Fatalf("encode %s: %v", o.Type, err)
			}
			frame, err = protocol.Seal(nd.key, protocol.Message{Type: o.Type, Session: o.Session, To: o.To,
				Nonce: protocol.NewNonce(), Expires: n.now + 60_000, Body: body})
			if err != nil {
				n.t.Fatalf("seal %s: %v", o.Type, err)
			}
		} else {
			typ = "cert"
		}
		n.sent[typ]++
		n.queue = append(n.queue, coreMsg{from: nd, to: n.byID[o.To], frame: frame, typ: typ})
	}
	for _, tm := range out.Timers {
		n.timers = append(n.timers, coreTimer{node: nd, t: tm})
	}
	for _, ev := range out.Events {
		nd.events = append(nd.events, ev)
		if ev.Outcome != nil {
			nd.outcomes[ev.Session] = ev.Outcome
		}
		if nd.policy != nil {
			if d := nd.policy(nd, ev); d != nil {
				n.step(nd, Input{Decision: d})
			}
		}
	}
	return out
}

// run delivers messages and fires timers until nothing happens before horizon.
func (n *coreNet) run(horizonMillis int64) {
	end := n.now + horizonMillis
	for steps := 0; steps < 100000; steps++ {
		if len(n.queue) > 0 {
			m := n.queue[0]
			n.queue = n.queue[1:]
			if m.to == nil || m.to.down || m.from.down && false || (n.drop != nil && n.drop(m.from, m.to, m.typ)) {
				continue
			}
			env, err := protocol.OpenFor(m.frame, m.to.key.AgentID(), n.now)
			if err != nil {
				n.t.Fatalf("open frame %s→%s: %v", m.from.name, m.to.name, err)
			}
			n.step(m.to, Input{Message: &Received{From: env.Msg.From, Type: env.Msg.Type, Session: env.Msg.Session, Body: env.Body, Raw: env.Raw}})
			continue
		}
		if len(n.timers) == 0 {
			return
		}
		sort.SliceStable(n.timers, func(i, j int) bool { return n.timers[i].t.At < n.timers[j].t.At })
		tm := n.timers[0]
		if tm.t.At > end {
			return
		}
		n.timers = n.timers[1:]
		if tm.t.At > n.now {
			n.now = tm.t.At
		}
		if tm.node.down {
			continue
		}
		n.step(tm.node, Input{Timer: &tm.t})
	}
	n.t.Fatal("coreNet: did not settle")
}

func terms(t *testing.T, kv map[string]any) cbor.RawMessage {
	t.Helper()
	b, err := protocol.EncodeTerms(kv)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (n *coreNet) propose(init *coreNode, others []*coreNode, tm cbor.RawMessage, maxRounds uint32) string {
	id := fmt.Sprintf("%032x", len(init.outcomes)+len(init.events)+int(n.now%1000)+len(n.queue)*7+len(n.sent)*13)
	id = protocol.NewSessionID()
	parties := []protocol.Party{n.party(init)}
	for _, o := range others {
		parties = append(parties, n.party(o))
	}
	out := n.step(init, Input{Start: &Start{Session: id, Parties: parties, Terms: tm, Deadline: n.now + 30_000, MaxRounds: maxRounds}})
	if out.Err != nil {
		n.t.Fatalf("start: %v", out.Err)
	}
	return id
}

func acceptAll(n *coreNode, ev Event) *Decision {
	if ev.Kind == EvProposal {
		return &Decision{Session: ev.Session, Action: ActAccept}
	}
	return nil
}

// checkInvariants: atomicity, agreement, no stuck lock, integrity.
func (n *coreNet) checkInvariants(session string, nodes []*coreNode, want State) {
	n.t.Helper()
	var hash chain.Hash
	for i, nd := range nodes {
		o := nd.outcomes[session]
		if o == nil {
			n.t.Fatalf("%s: no outcome for %s (errors: %v)", nd.name, session, nd.errs)
		}
		if o.State != want {
			n.t.Fatalf("%s: outcome %s (%s), want %s", nd.name, o.State, o.Reason, want)
		}
		if want == StateCommitted {
			if i == 0 {
				hash = o.RecordHash
			} else if o.RecordHash != hash {
				n.t.Fatalf("%s: record hash %s differs from %s", nd.name, o.RecordHash, hash)
			}
			last, err := nd.ch.Entry(nd.ch.Head().Seq)
			if err != nil || last.Kind != KindAgreement || chain.Hash(sign.Hash(last.Payload)) != hash {
				n.t.Fatalf("%s: chain head is not the record (%v)", nd.name, err)
			}
		}
		if l, ok := nd.ch.Lock(); ok {
			n.t.Fatalf("%s: lock left: %+v", nd.name, l)
		}
		if verr := nd.ch.Verify(chain.VerifyOptions{CheckPayload: CheckAgreementEntry}); verr != nil {
			n.t.Fatalf("%s: chain verify: %v", nd.name, verr)
		}
	}
}

func TestCoreCommit(t *testing.T) {
	for _, parties := range []int{2, 5} {
		t.Run(fmt.Sprintf("%d-party", parties), func(t *testing.T) {
			names := []string{"a", "b", "c", "d", "e"}[:parties]
			n := newCoreNet(t, names...)
			for _, nd := range n.nodes[1:] {
				nd.policy = acceptAll
			}
			id := n.propose(n.nodes[0], n.nodes[1:], terms(t, map[string]any{"item": "book", "price": 10}), 0)
			n.run(60_000)
			n.checkInvariants(id, n.nodes, StateCommitted)
			if got := n.nodes[0].outcomes[id].Round; got != 1 {
				t.Fatalf("rounds = %d, want 1", got)
			}
		})
	}
}

func TestCoreNegotiationOutcomes(t *testing.T) {
	counterUntil := func(limit int64) func(n *coreNode, ev Event) *Decision {
		return func(n *coreNode, ev Event) *Decision {
			if ev.Kind != EvProposal {
				return nil
			}
			var m map[string]int64
			if err := protocol.Unmarshal(ev.Terms, &m); err != nil {
				panic(err)
			}
			if m["price"] >= limit {
				return &Decision{Session: ev.Session, Action: ActAccept}
			}
			m["price"] += 10
			b, _ := protocol.EncodeTerms(m)
			return &Decision{Session: ev.Session, Action: ActCounter, Terms: b}
		}
	}
	acceptCounters := func(n *coreNode, ev Event) *Decision {
		if ev.Kind == EvCounter {
			return &Decision{Session: ev.Session, Action: ActAccept}
		}
		return nil
	}
	tests := []struct {
		name       string
		init, part func(n *coreNode, ev Event) *Decision
		maxRounds  uint32
		want       State
		wantRounds uint32
	}{
		{"three counters then accept", acceptCounters, counterUntil(40), 8, StateCommitted, 4},
		{"reject", nil, func(n *coreNode, ev Event) *Decision {
			return &Decision{Session: ev.Session, Action: ActReject, Reason: "too cheap"}
		}, 8, StateRejected, 1},
		{"round cap", acceptCounters, counterUntil(1000), 3, StateRejected, 3},
		{"expiry: participant silent", nil, nil, 8, StateAborted, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newCoreNet(t, "a", "b")
			n.nodes[0].policy, n.nodes[1].policy = tc.init, tc.part
			id := n.propose(n.nodes[0], n.nodes[1:], terms(t, map[string]any{"price": 10}), tc.maxRounds)
			n.run(120_000)
			n.checkInvariants(id, n.nodes, tc.want)
			if got := n.nodes[0].outcomes[id].Round; got != tc.wantRounds {
				t.Fatalf("rounds = %d, want %d", got, tc.wantRounds)
			}
		})
	}
}

func TestCoreBusyRace(t *testing.T) {
	n := newCoreNet(t, "a", "b", "c")
	for _, nd := range n.nodes {
		nd.policy = acceptAll
	}
	a, b, c := n.nodes[0], n.nodes[1], n.nodes[2]
	// a's first ready to c is lost, so c stays locked for s1 (until a query
	// recovers it) while b's preflight for s2 arrives.
	lost := false
	n.drop = func(from, to *coreNode, typ string) bool {
		if from == a && to == c && typ == protocol.TypeReady && !lost {
			lost = true
			return true
		}
		return false
	}
	s1 := n.propose(a, []*coreNode{c}, terms(t, map[string]any{"x": 1}), 0)
	s2 := n.propose(b, []*coreNode{c}, terms(t, map[string]any{"x": 2}), 0)
	n.run(120_000)
	o1, o2 := a.outcomes[s1], b.outcomes[s2]
	if o1 == nil || o2 == nil {
		t.Fatalf("missing outcomes: %v %v", o1, o2)
	}
	committed := 0
	for _, o := range []*Outcome{o1, o2} {
		switch {
		case o.State == StateCommitted:
			committed++
		case o.State == StateAborted && o.Busy:
		default:
			t.Fatalf("outcome %s (%s): want committed or aborted busy", o.State, o.Reason)
		}
	}
	if committed != 1 {
		t.Fatalf("%d sessions committed, want exactly 1 (%s / %s)", committed, o1.Reason, o2.Reason)
	}
	for _, nd := range n.nodes {
		if _, ok := nd.ch.Lock(); ok {
			t.Fatalf("%s: lock left", nd.name)
		}
	}
}

func TestCoreLostReadyResolvesByQuery(t *testing.T) {
	n := newCoreNet(t, "a", "b", "c")
	for _, nd := range n.nodes[1:] {
		nd.policy = acceptAll
	}
	// Every Ready from b is lost the first time; queries must recover it.
	lost := map[string]bool{}
	n.drop = func(from, to *coreNode, typ string) bool {
		if from.name == "b" && typ == protocol.TypeReady && !lost[to.name] {
			lost[to.name] = true
			return true
		}
		return false
	}
	id := n.propose(n.nodes[0], n.nodes[1:], terms(t, map[string]any{"x": 1}), 0)
	n.run(60_000)
	n.checkInvariants(id, n.nodes, StateCommitted)
	if n.sent[protocol.TypeQuery] == 0 {
		t.Fatal("no query was sent: the lost ready was not what resolved it")
	}
}

func TestCoreCrashAfterSigningResumes(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	b.policy = acceptAll
	// b crashes right after its signed vote is durable and its Ready sent;
	// a's commit is lost while b is down.
	n.drop = func(from, to *coreNode, typ string) bool {
		if to == b && typ == protocol.TypePreflight {
			defer func() { b.down = true }()
		}
		return false
	}
	id := n.propose(a, []*coreNode{b}, terms(t, map[string]any{"x": 1}), 0)
	n.run(5_000)
	if _, ok := b.ch.Lock(); !ok {
		t.Fatal("b should hold its lock after signing and crashing")
	}
	n.drop = nil
	n.restart(b)
	n.run(120_000)
	b.outcomes[id] = b.outcomes[id]
	n.checkInvariants(id, n.nodes, StateCommitted)
}

func TestCoreParticipantCrashBeforeSigningAborts(t *testing.T) {
	n := newCoreNet(t, "a", "b", "c")
	a, b, c := n.nodes[0], n.nodes[1], n.nodes[2]
	b.policy, c.policy = acceptAll, acceptAll
	// c crashes after accepting, before it sees the preflight: it forgets
	// the session; a and b have signed and must get an abort certificate.
	n.drop = func(from, to *coreNode, typ string) bool {
		if to == c && typ == protocol.TypePreflight {
			c.down = true
			return true
		}
		return false
	}
	id := n.propose(a, []*coreNode{b, c}, terms(t, map[string]any{"x": 1}), 0)
	n.run(3_000)
	n.drop = nil
	n.restart(c)
	n.run(120_000)
	n.checkInvariants(id, []*coreNode{a, b}, StateAborted)
	if _, ok := c.ch.Lock(); ok {
		t.Fatal("c holds a lock")
	}
}

func (n *coreNet) proposeWitnessed(init *coreNode, others []*coreNode, w *coreNode, tm cbor.RawMessage) string {
	id := protocol.NewSessionID()
	parties := []protocol.Party{n.party(init)}
	for _, o := range others {
		parties = append(parties, n.party(o))
	}
	wp := n.party(w)
	out := n.step(init, Input{Start: &Start{Session: id, Parties: parties, Terms: tm, Deadline: n.now + 30_000, Witness: &wp}})
	if out.Err != nil {
		n.t.Fatalf("start: %v", out.Err)
	}
	return id
}

func TestCoreWitness(t *testing.T) {
	t.Run("commit", func(t *testing.T) {
		n := newCoreNet(t, "a", "b", "c", "w")
		a, b, c, w := n.nodes[0], n.nodes[1], n.nodes[2], n.nodes[3]
		b.policy, c.policy = acceptAll, acceptAll
		id := n.proposeWitnessed(a, []*coreNode{b, c}, w, terms(t, map[string]any{"x": 1}))
		n.run(60_000)
		n.checkInvariants(id, []*coreNode{a, b, c}, StateCommitted)
		if o := w.outcomes[id]; o == nil || o.State != StateCommitted {
			t.Fatalf("witness outcome %+v", o)
		}
		rec, err := DecodeRecord(a.outcomes[id].Receipt)
		if err != nil || len(rec.WitnessDecision) == 0 {
			t.Fatalf("record lacks the witness decision: %v", err)
		}
	})
	t.Run("abort after the window when a party never signs", func(t *testing.T) {
		n := newCoreNet(t, "a", "b", "c", "w")
		a, b, c, w := n.nodes[0], n.nodes[1], n.nodes[2], n.nodes[3]
		b.policy, c.policy = acceptAll, acceptAll
		// c goes down for good after accepting: with a witness, a and b
		// still end (abort) once the window passes.
		n.drop = func(from, to *coreNode, typ string) bool {
			if to == c && typ == protocol.TypePreflight {
				c.down = true
			}
			return to == c && c.down
		}
		id := n.proposeWitnessed(a, []*coreNode{b, c}, w, terms(t, map[string]any{"x": 1}))
		n.run(120_000)
		n.checkInvariants(id, []*coreNode{a, b}, StateAborted)
		if o := w.outcomes[id]; o == nil || o.State != StateAborted {
			t.Fatalf("witness outcome %+v", o)
		}
	})
}

func TestCoreInitiatorCrashAfterVoteResumes(t *testing.T) {
	n := newCoreNet(t, "a", "b", "c")
	a, b, c := n.nodes[0], n.nodes[1], n.nodes[2]
	b.policy, c.policy = acceptAll, acceptAll
	// a's preflights and readys are lost: a "crashed" right after its vote
	// was durable. After restart it must complete the session by itself.
	n.drop = func(from, to *coreNode, typ string) bool {
		if from == a && (typ == protocol.TypePreflight || typ == protocol.TypeReady) && !a.down {
			a.down = true
		}
		return from == a && a.down
	}
	id := n.propose(a, []*coreNode{b, c}, terms(t, map[string]any{"x": 1}), 0)
	n.run(1_000)
	if _, ok := a.ch.Lock(); !ok {
		t.Fatal("a should hold its lock after its durable vote")
	}
	n.drop = nil
	n.restart(a)
	n.run(60_000)
	n.checkInvariants(id, n.nodes, StateCommitted)
}

func TestCoreLimitsOpenSessionsPerPeer(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	tm := terms(t, map[string]any{"x": 1})
	before := len(b.errs)
	for i := 0; i < MaxOpenSessionsPerPeer+5; i++ {
		n.propose(a, []*coreNode{b}, tm, 0)
	}
	n.run(0)
	if open := len(b.eng.Sessions(false)); open != MaxOpenSessionsPerPeer {
		t.Fatalf("b holds %d open sessions from one peer, the limit is %d", open, MaxOpenSessionsPerPeer)
	}
	if refused := len(b.errs) - before; refused != 5 {
		t.Fatalf("%d proposals refused, want 5", refused)
	}
}

func TestCoreAbortOnlyWhileSafe(t *testing.T) {
	n := newCoreNet(t, "a", "b")
	a, b := n.nodes[0], n.nodes[1]
	// Before anyone signed: abort works and ends the session for both.
	id := n.propose(a, []*coreNode{b}, terms(t, map[string]any{"x": 1}), 0)
	n.run(0)
	if out := n.step(a, Input{Decision: &Decision{Session: id, Action: ActAbort, Reason: "changed my mind"}}); out.Err != nil {
		t.Fatalf("abort before signing: %v", out.Err)
	}
	n.run(0)
	n.checkInvariants(id, n.nodes, StateAborted)

	// After a's signature left: abort is refused, naming whom it waits for.
	b.policy = acceptAll
	n.drop = func(from, to *coreNode, typ string) bool { return from == b && typ == protocol.TypeReady }
	id = n.propose(a, []*coreNode{b}, terms(t, map[string]any{"x": 2}), 0)
	n.run(0)
	out := n.step(a, Input{Decision: &Decision{Session: id, Action: ActAbort}})
	if !errors.Is(out.Err, ErrUnsafeAbort) || !strings.Contains(out.Err.Error(), b.key.AgentID().Short()) {
		t.Fatalf("abort after signing: %v, want ErrUnsafeAbort naming b", out.Err)
	}
	if _, ok := a.ch.Lock(); !ok {
		t.Fatal("a refused abort but released its lock")
	}
	n.drop = nil
	n.run(60_000)
	n.checkInvariants(id, n.nodes, StateCommitted)
}

// TestCoreStarReadyFanOut proves the Ready fan-out is a star: in a
// committed n-party session every participant sends its Ready to the
// initiator only, the session costs exactly 6(n-1) frames (O(n), not the
// n(n-1) Readys of all-to-all), every participant commits only after the
// initiator's Commit reached it, and when the initiator crashes right
// after its append (its Commit never leaves) the participants still
// commit, by asking each other.
func TestCoreStarReadyFanOut(t *testing.T) {
	for _, parties := range []int{3, 5, 8} {
		names := make([]string, parties)
		for i := range names {
			names[i] = fmt.Sprintf("p%d", i)
		}
		t.Run(fmt.Sprintf("%d-party/committed", parties), func(t *testing.T) {
			n := newCoreNet(t, names...)
			init := n.nodes[0]
			gotCommit := map[*coreNode]bool{}
			var violations []string
			n.drop = func(from, to *coreNode, typ string) bool {
				if typ == protocol.TypeReady && from != init && to != init {
					violations = append(violations, fmt.Sprintf("participant %s sent its Ready to participant %s", from.name, to.name))
				}
				if typ == protocol.TypeCommit && from == init {
					gotCommit[to] = true
				}
				return false
			}
			for _, nd := range n.nodes[1:] {
				nd.policy = func(nd *coreNode, ev Event) *Decision {
					if ev.Kind == EvCommitted && !gotCommit[nd] {
						violations = append(violations, nd.name+" committed before the initiator's Commit reached it")
					}
					return acceptAll(nd, ev)
				}
			}
			id := n.propose(init, n.nodes[1:], terms(t, map[string]any{"deal": "star", "n": parties}), 0)
			n.run(60_000)
			n.checkInvariants(id, n.nodes, StateCommitted)
			if len(violations) > 0 {
				t.Fatal(strings.Join(violations, "; "))
			}
			k := parties - 1
			want := map[string]int{
				protocol.TypePropose: k, protocol.TypeAccept: k, protocol.TypePreflight: k,
				protocol.TypeReady:  2 * k, // the initiator's to each participant, each participant's to the initiator
				protocol.TypeCommit: k,
			}
			total := 0
			for typ, c := range n.sent {
				total += c
				if c != want[typ] {
					t.Errorf("%d %s frames, want %d", c, typ, want[typ])
				}
			}
			if total != 6*k {
				t.Fatalf("%d frames in a committed %d-party session, want 6(n-1) = %d (all-to-all Readys alone were n(n-1) = %d)", total, parties, 6*k, parties*k)
			}
		})
		t.Run(fmt.Sprintf("%d-party/initiator crashes after its append", parties), func(t *testing.T) {
			n := newCoreNet(t, names...)
			init := n.nodes[0]
			for _, nd := range n.nodes[1:] {
				nd.policy = acceptAll
			}
			statuses := 0
			n.drop = func(from, to *coreNode, typ string) bool {
				if from == init && typ == protocol.TypeCommit {
					init.down = true // its record is durable; its Commit never leaves, and it never comes back
				}
				if typ == protocol.TypeStatus && from != init {
					statuses++
				}
				return from == init && init.down
			}
			id := n.propose(init, n.nodes[1:], terms(t, map[string]any{"deal": "star-crash", "n": parties}), 0)
			n.run(60_000)
			if !init.down {
				t.Fatal("the initiator never reached its commit: the crash was not exercised")
			}
			n.checkInvariants(id, n.nodes, StateCommitted)
			if n.sent[protocol.TypeQuery] == 0 || statuses == 0 {
				t.Fatalf("%d queries, %d status answers: the participants did not resolve by asking each other", n.sent[protocol.TypeQuery], statuses)
			}
		})
	}
}

// TestCoreCommitVerifiesWhatItDoesNotHold: a participant that commits on a
// Commit skips only the statements it already verified (its own and the
// initiator's Ready); a record whose other statements are bad, or whose
// copy of a held party's statement differs, is refused and changes nothing.
func TestCoreCommitVerifiesWhatItDoesNotHold(t *testing.T) {
	n := newCoreNet(t, "a", "b", "c")
	a, b, c := n.nodes[0], n.nodes[1], n.nodes[2]
	b.policy, c.policy = acceptAll, acceptAll
	n.drop = func(from, to *coreNode, typ string) bool { return to == b && typ == protocol.TypeCommit }
	id := n.propose(a, []*coreNode{b, c}, terms(t, map[string]any{"x": 1}), 0)
	n.run(1_000) // before b's resolve timer: b is signed and waits for the commit
	if b.outcomes[id] != nil {
		t.Fatalf("b ended before any commit reached it: %+v", b.outcomes[id])
	}
	good, err := DecodeRecord(a.outcomes[id].Receipt)
	if err != nil {
		t.Fatal(err)
	}
	tamper := func(f func(r *protocol.Record)) *protocol.Record {
		r, _ := DecodeRecord(a.outcomes[id].Receipt)
		f(r)
		return r
	}
	otherHead := func(h chain.Head) chain.Head { h.Seq++; return h }
	tests := []struct {
		name string
		rec  *protocol.Record
	}{
		{"c's signature (not held by b) is bad", tamper(func(r *protocol.Record) { r.Signatures[2][0] ^= 1 })},
		{"a's statement differs from the one b holds", tamper(func(r *protocol.Record) { r.Heads[0] = otherHead(r.Heads[0]) })},
		{"b's own signature is bad", tamper(func(r *protocol.Record) { r.Signatures[1][0] ^= 1 })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := n.step(b, Input{Message: &Received{From: a.key.AgentID(), Type: protocol.TypeCommit, Session: id, Body: &protocol.Commit{Record: *tc.rec}}})
			if !errors.Is(out.Err, ErrBadRecord) {
				t.Fatalf("tampered commit: err %v, want ErrBadRecord", out.Err)
			}
			if len(out.Persist) != 0 || b.outcomes[id] != nil {
				t.Fatal("a refused commit changed b's state")
			}
		})
	}
	out := n.step(b, Input{Message: &Received{From: a.key.AgentID(), Type: protocol.TypeCommit, Session: id, Body: &protocol.Commit{Record: *good}}})
	if out.Err != nil {
		t.Fatalf("genuine commit: %v", out.Err)
	}
	n.drop = nil
	n.run(60_000)
	n.checkInvariants(id, n.nodes, StateCommitted)
}

// TestCoreTwoPartyFrames: a committed 2-party session costs 5 frames and
// no Commit (the participant holds both statements once the initiator's
// Ready arrives); with the initiator's Ready lost, the participant still
// commits, by query (the initiator answers with its record).
func TestCoreTwoPartyFrames(t *testing.T) {
	for _, loseReady := range []bool{false, true} {
		t.Run(fmt.Sprintf("initiator's Ready lost=%v", loseReady), func(t *testing.T) {
			n := newCoreNet(t, "a", "b")
			a, b := n.nodes[0], n.nodes[1]
			b.policy = acceptAll
			lost := false
			n.drop = func(from, to *coreNode, typ string) bool {
				if loseReady && !lost && from == a && typ == protocol.TypeReady {
					lost = true
					return true
				}
				return false
			}
			id := n.propose(a, []*coreNode{b}, terms(t, map[string]any{"deal": "two"}), 0)
			n.run(60_000)
			n.checkInvariants(id, n.nodes, StateCommitted)
			if !loseReady {
				if n.sent[protocol.TypeCommit] != 0 {
					t.Fatalf("%d Commit frames in a 2-party session, want 0", n.sent[protocol.TypeCommit])
				}
				total := 0
				for _, c := range n.sent {
					total += c
				}
				if total != 5 {
					t.Fatalf("%d frames (%v), want 5: propose, accept, preflight, two Readys", total, n.sent)
				}
			} else if n.sent[protocol.TypeQuery] == 0 {
				t.Fatal("the participant committed without the initiator's Ready and without asking")
			}
		})
	}
}
