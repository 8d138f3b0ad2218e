package scenarios

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate/engine"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Simulation limits and constants.
const (
	// simStartMillis is the virtual clock at the start of every run (2027).
	simStartMillis = int64(1_800_000_000_000)
	// simMessageLifetime is the expiry given to simulated messages, as the
	// node does (negotiate's messageLifetime).
	simMessageLifetime = 2 * time.Minute
	// settleTime is how long, in virtual time, a run goes on after the
	// network healed and every party is up: enough for the resolve backoff
	// (at most 30 s between queries) to go round many times.
	settleTime = 30 * time.Minute
	// scriptSlack is how long after the last step and the longest session
	// timeout the script phase lasts before the faults heal.
	scriptSlack = 10 * time.Second
	// maxSimEvents bounds one run so a livelock ends as a failure, not a hang.
	maxSimEvents = 2_000_000
	// defaultRestartAfter is when a crashed party restarts unless told.
	defaultRestartAfter = time.Second
	// replayDelay is when a replaying byzantine party sends a copy again.
	replayDelay = 1500 * time.Millisecond
)

// Bug names a deliberate fault in the durability the engine relies on. It
// exists to prove the invariant checks can fail; never use it otherwise.
type Bug string

// Bugs the simulator can inject.
const (
	// BugNone injects nothing.
	BugNone Bug = ""
	// BugReleaseLockAtDeadline drops the lock and checkpoint of a signed
	// party when its session deadline passes, and restarts its engine from
	// that store: an engine that unlocks on a timer after signing.
	BugReleaseLockAtDeadline Bug = "release-lock-at-deadline"
	// BugSkipVotePersist never makes the lock and signed vote durable,
	// though the Ready is sent: a crash then forgets the signature.
	BugSkipVotePersist Bug = "skip-vote-persist"
)

// SimOptions configures RunSim. The zero value runs the scenario's own
// seed (or 1) with fast message passing.
type SimOptions struct {
	// Seed decides every random choice of the run (0 = the scenario's seed, or 1).
	Seed uint64
	// RandomFaults adds seeded random faults (loss, crashes, partitions,
	// drops, delays, duplicates, reorders), as Explore does. Expectations
	// are then not checked, only the invariants.
	RandomFaults bool
	// Seal signs and verifies every message with the real wire format
	// (protocol.Seal / protocol.OpenFor). Without it bodies travel as their
	// CBOR with the same expiry, recipient and replay checks but no
	// envelope signature; certificates are always real signed frames.
	Seal bool
	// Trace keeps the trace lines in the report (the hash is always there).
	Trace bool
	// Bug injects a deliberate durability bug (tests of the checker only).
	Bug Bug
	// DropEnded makes every node drop each ended session from memory as
	// soon as its deadline passed (a Node with a zero-length
	// EndedRetention) and read it back from its checkpoint when an input
	// names it, so the faults and invariants also cover that path.
	DropEnded bool
	// HeadCheck gives every node an engine HeadCheck (negotiate's
	// NodeConfig.HeadCheck) that requires the initiator's signed head, so
	// every participant signs only after the initiator's statement and the
	// faults and invariants cover that path too.
	HeadCheck bool
}

// Line is one checked expectation or invariant.
type Line struct {
	Name   string `json:"name"`
	Passed bool   `json:"passed"`
	Detail string `json:"detail,omitempty"`
}

// PartyOutcome is how one party saw one session end.
type PartyOutcome struct {
	State      string `json:"state"` // committed, rejected, aborted, busy, none, open
	Reason     string `json:"reason,omitempty"`
	Round      uint32 `json:"round,omitempty"`
	RecordHash string `json:"record_hash,omitempty"`
	// AtMillis is when the party first reached it, from the proposal (virtual ms in sim).
	AtMillis int64 `json:"at_ms"`
}

// Report is the result of one run. It marshals to JSON.
type Report struct {
	Scenario string `json:"scenario"`
	File     string `json:"file,omitempty"`
	Mode     string `json:"mode"`   // "sim" or "real"
	Status   string `json:"status"` // "passed", "failed" or "skipped"
	Passed   bool   `json:"passed"`
	// Skipped says why a run was skipped ("skipped: witness mode not implemented").
	Skipped      string                             `json:"skipped,omitempty"`
	Seed         uint64                             `json:"seed"`
	RandomFaults bool                               `json:"random_faults,omitempty"`
	Bug          Bug                                `json:"bug,omitempty"`
	Expectations []Line                             `json:"expectations"`
	Invariants   []Line                             `json:"invariants"`
	Outcomes     map[string]map[string]PartyOutcome `json:"outcomes"` // session → party → outcome
	Messages     int                                `json:"messages"`
	Dropped      int                                `json:"dropped"`
	Crashes      int                                `json:"crashes"`
	// VirtualMillis is the simulated time the run covered (sim), or the wall time (real).
	VirtualMillis int64    `json:"virtual_ms"`
	TraceHash     string   `json:"trace_hash,omitempty"`
	Trace         []string `json:"trace,omitempty"`
	Notes         []string `json:"notes,omitempty"`
	// Replay is the command that replays this run.
	Replay string `json:"replay,omitempty"`
}

// Lines lists every checked line, expectations first.
func (r *Report) Lines() []Line {
	return append(append([]Line(nil), r.Expectations...), r.Invariants...)
}

// Failures lists the failed lines, expectations first.
func (r *Report) Failures() []Line {
	var out []Line
	for _, l := range r.Lines() {
		if !l.Passed {
			out = append(out, l)
		}
	}
	return out
}

// settle sets Passed and Status from the checked lines.
func (r *Report) settle() {
	r.Passed = len(r.Failures()) == 0
	r.Status = "failed"
	if r.Passed {
		r.Status = "passed"
	}
}

// ReplayCommand is the command line that replays a simulated run.
func ReplayCommand(file string, seed uint64, randomFaults bool, bug Bug) string {
	var b strings.Builder
	b.WriteString("go run ./cmd/negotiate scenario run --sim")
	if randomFaults {
		b.WriteString(" --random-faults")
	}
	if bug != BugNone {
		fmt.Fprintf(&b, " --bug %s", bug)
	}
	fmt.Fprintf(&b, " --seed %d %s", seed, file)
	return b.String()
}

// RunSim runs a scenario in the deterministic simulator. The error is for
// a run that could not be carried out; a failed expectation or invariant
// is a Report with Passed false.
func RunSim(ctx context.Context, sc *Scenario, opts SimOptions) (*Report, error) {
	if sc == nil {
		return nil, errors.New("scenarios: RunSim: no scenario")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	seed := opts.Seed
	if seed == 0 {
		seed = sc.Seed
	}
	if seed == 0 {
		seed = 1
	}
	s, err := newSim(sc, opts, seed)
	if err != nil {
		return nil, err
	}
	s.run(ctx)
	return s.report(), nil
}

// ---- simulator state ----

type simEvent struct {
	at  int64
	seq uint64
	fn  func()
}

type eventHeap []*simEvent

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(*simEvent)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

type consentKey struct {
	round uint32
	terms chain.Hash
}

type simNode struct {
	name   string
	idx    int
	key    *sign.PrivateKey
	party  protocol.Party
	store  *MemStore
	eng    *engine.Engine
	up     bool
	epoch  int
	guard  *protocol.ReplayGuard
	policy *Policy
	byz    string

	pending map[string]bool // engine session → a decision waits
	// ended is each session's outcome as this engine reported it since its
	// last (re)start: what an application saw, read when the engine has
	// dropped an unsigned session (SimOptions.DropEnded).
	ended      map[string]*negotiate.Outcome
	firstFinal map[string]int64               // engine session → when first final
	consent    map[string]map[consentKey]bool // engine session → rounds/terms it accepted or proposed
	offered    map[string]consentKey          // engine session → round/terms of a signed offer as shown to it
	violations []string                       // violations this party reported
	warrants   map[sign.AgentID][]byte        // offender → a verified warrant this party holds
	errs       int                            // inputs the engine refused
	received   []wireMsg                      // replay: what it received
}

type simSession struct {
	name     string
	id       string
	init     *simNode
	parties  []*simNode
	start    int64
	deadline int64
	started  bool
	offer    bool // a signed offer (propose offer: true)
}

type wireMsg struct {
	from, to *simNode
	typ      string // message type; "cert" for a certificate frame
	session  string
	frame    []byte // sealed frame (Seal mode, certificates)
	body     []byte // CBOR body (fast mode)
	nonce    []byte
	expires  int64
	toID     sign.AgentID
}

type linkRule struct {
	kind  string // drop, delay, duplicate, reorder
	f     LinkFault
	prob  float64
	count int
}

type trigger struct {
	party   string
	point   string
	session string
	fired   bool
	fire    func(n *simNode)
}

type sim struct {
	sc    *Scenario
	opts  SimOptions
	seed  uint64
	rng   *rand.Rand
	now   int64
	seq   uint64
	queue eventHeap
	steps int
	// lastEvent is when the last event ran.
	lastEvent int64

	nodes    []*simNode
	byID     map[sign.AgentID]*simNode
	byName   map[string]*simNode
	sessions []*simSession
	byName2  map[string]*simSession
	bySID    map[string]*simSession

	loss      float64
	rules     []*linkRule
	triggers  []*trigger
	groups    map[string]int // party → partition group; nil = no partition
	healed    bool
	lastAt    map[[2]int]int64
	byzActive bool

	messages, dropped, crashes int
	trace                      []string
	hash                       [32]byte
	hasher                     hash.Hash
	checker                    *recordChecker
	// real is set for a real run: the engines live in real nodes and
	// realOutcomes reports their outcomes.
	real         bool
	realOutcomes func(*simNode, *simSession) PartyOutcome
	// findWarrant, in a real run, looks a warrant against the party up in
	// the DHT from another party's node.
	findWarrant     func(*simNode) error
	notes           []string
	expect          []Line
	persistFailures []string
	skipped         string
	aborted         string
}

var (
	keyMu    sync.Mutex
	keyCache = map[string]*sign.PrivateKey{}
)

// partyKey derives a party's key deterministically from the scenario and
// party names, so every run of a scenario has the same agents.
func partyKey(scenario, party, scheme string) (*sign.PrivateKey, error) {
	id := scheme + "/" + scenario + "/" + party
	keyMu.Lock()
	defer keyMu.Unlock()
	if k := keyCache[id]; k != nil {
		return k, nil
	}
	sch, err := sign.SchemeByName(scheme)
	if err != nil {
		return nil, err
	}
	k, err := sch.DeriveKey([]byte("negotiate-scenario/" + id))
	if err != nil {
		return nil, fmt.Errorf("scenarios: derive key of %s: %w", party, err)
	}
	keyCache[id] = k
	return k, nil
}

func newSim(sc *Scenario, opts SimOptions, seed uint64) (*sim, error) {
	s := &sim{
		sc: sc, opts: opts, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		now: simStartMillis, byID: map[sign.AgentID]*simNode{}, byName: map[string]*simNode{},
		byName2: map[string]*simSession{}, bySID: map[string]*simSession{}, lastAt: map[[2]int]int64{},
		loss: sc.Network.Loss, byzActive: true, hasher: sha256.New(), checker: &recordChecker{verified: map[chain.Hash]error{}},
	}
	for i, p := range sc.Parties {
		key, err := partyKey(sc.Name, p.Name, p.Scheme)
		if err != nil {
			return nil, err
		}
		store, err := NewMemStore(key, simStartMillis)
		if err != nil {
			return nil, err
		}
		pol := p.Policy
		n := &simNode{
			name: p.Name, idx: i, key: key, store: store, policy: &pol,
			firstFinal: map[string]int64{}, consent: map[string]map[consentKey]bool{}, offered: map[string]consentKey{},
		}
		s.nodes = append(s.nodes, n)
		s.byID[key.AgentID()] = n
		s.byName[p.Name] = n
		if err := s.boot(n); err != nil {
			return nil, err
		}
		n.party = n.eng.Self()
	}
	faults := sc.Faults
	if opts.RandomFaults {
		faults = append(append([]Fault(nil), faults...), randomFaults(s.rng, sc)...)
	}
	for _, f := range faults {
		s.addFault(f)
	}
	return s, nil
}

// requireInitiatorHead is SimOptions.HeadCheck's check: the engine asks
// it only where the initiator signed first, so its head must be there.
func requireInitiatorHead(a *protocol.Agreement, heads map[sign.AgentID]chain.Head) error {
	if _, ok := heads[a.Parties[0].ID]; !ok {
		return fmt.Errorf("head check: no statement of the initiator %s", a.Parties[0].ID.Short())
	}
	return nil
}

// boot builds the node's engine from its store, as a (re)start does.
func (s *sim) boot(n *simNode) error {
	lock, _ := n.store.Lock()
	cfg := engine.CoreConfig{Key: n.key, Head: n.store.Head(), Lock: lock, Checkpoints: n.store.Checkpoints()}
	if s.opts.HeadCheck {
		cfg.HeadCheck = requireInitiatorHead
	}
	if s.opts.DropEnded {
		cfg.Checkpoint = func(session string) ([]byte, bool, error) {
			cp, ok := n.store.Checkpoint(session)
			return cp, ok, nil
		}
	}
	eng, err := engine.NewEngine(cfg)
	if err != nil {
		return fmt.Errorf("scenarios: start %s: %w", n.name, err)
	}
	n.eng, n.up = eng, true
	n.epoch++
	n.guard = protocol.NewReplayGuard(0, 0)
	n.pending = map[string]bool{}
	n.ended = map[string]*negotiate.Outcome{}
	return nil
}

func (s *sim) logf(format string, args ...any) {
	line := fmt.Sprintf("%7d ", s.now-simStartMillis) + fmt.Sprintf(format, args...)
	s.hasher.Write([]byte(line))
	s.hasher.Write([]byte{'\n'})
	if s.opts.Trace {
		s.trace = append(s.trace, line)
	}
}

func (s *sim) at(at int64, fn func()) {
	if at < s.now {
		at = s.now
	}
	s.seq++
	heap.Push(&s.queue, &simEvent{at: at, seq: s.seq, fn: fn})
}

// runUntil processes events up to limit (virtual ms), or until stop says so.
func (s *sim) runUntil(limit int64, stop func() bool) {
	for len(s.queue) > 0 && s.aborted == "" {
		if stop != nil && stop() {
			return
		}
		if s.queue[0].at > limit {
			break
		}
		ev := heap.Pop(&s.queue).(*simEvent)
		if ev.at > s.now {
			s.now = ev.at
		}
		s.lastEvent = s.now
		s.steps++
		if s.steps > maxSimEvents {
			s.aborted = fmt.Sprintf("the run did not settle within %d simulated events", maxSimEvents)
			return
		}
		ev.fn()
	}
	if limit > s.now && stop == nil {
		s.now = limit
	}
}

// ---- the script ----

func (s *sim) run(ctx context.Context) {
	s.logf("start seed %d", s.seed)
	scriptEnd := s.now
	for i, st := range s.sc.Steps {
		if ctx.Err() != nil || s.aborted != "" || s.skipped != "" {
			break
		}
		switch {
		case st.Propose != nil:
			s.propose(st.Propose)
			if end := s.now + st.Propose.Timeout.millis(); end > scriptEnd {
				scriptEnd = end
			}
		case st.Wait != nil:
			s.runUntil(s.now+st.Wait.millis(), nil)
		case st.Message != nil:
			s.notes = append(s.notes, fmt.Sprintf("steps[%d]: direct message %s→%s skipped: direct messages run in real mode only", i, st.Message.From, st.Message.To))
		default:
			d, action := st.decision()
			s.decideStep(i, d, action)
		}
	}
	if s.skipped != "" {
		return
	}
	if s.now > scriptEnd {
		scriptEnd = s.now
	}
	s.runUntil(scriptEnd+scriptSlack.Milliseconds(), nil)
	s.heal()
	s.runUntil(s.now+settleTime.Milliseconds(), func() bool { return false })
	s.now = s.lastEvent
	s.logf("end")
}

func (s *sim) propose(p *ProposeStep) {
	init := s.byName[p.From]
	ss := &simSession{name: p.ID, init: init, start: s.now, deadline: s.now + p.Timeout.millis(), offer: p.Offer}
	ss.id = fmt.Sprintf("%016x%016x", s.rng.Uint64(), s.rng.Uint64())
	ss.parties = append(ss.parties, init)
	parties := []protocol.Party{init.party}
	for _, w := range p.With {
		n := s.byName[w]
		ss.parties = append(ss.parties, n)
		parties = append(parties, n.party)
	}
	s.sessions = append(s.sessions, ss)
	s.byName2[ss.name] = ss
	s.bySID[ss.id] = ss
	terms, err := encodeTerms(p.Terms)
	if err != nil {
		s.expect = append(s.expect, Line{Name: "propose " + p.ID, Detail: err.Error()})
		return
	}
	var witness *protocol.Party
	if p.Witness != "" {
		w := s.byName[p.Witness].party
		witness = &w
	}
	if !init.up {
		s.logf("%s cannot propose %s: it is down", init.name, ss.name)
		s.expect = append(s.expect, Line{Name: "propose " + p.ID, Detail: init.name + " was down when the step came"})
		return
	}
	s.logf("%s proposes %s to %s", init.name, ss.name, strings.Join(p.With, " "))
	out := s.step(init, engine.Input{Start: &engine.Start{
		Session: ss.id, Parties: parties, Terms: terms, Deadline: ss.deadline, MaxRounds: p.MaxRounds, Witness: witness,
		Offer: p.Offer,
	}})
	if out.Err != nil {
		if witness != nil && strings.Contains(out.Err.Error(), "witness") {
			s.skipped = "skipped: witness mode not implemented (" + out.Err.Error() + ")"
			return
		}
		s.expect = append(s.expect, Line{Name: "propose " + p.ID, Detail: out.Err.Error()})
		return
	}
	ss.started = true
}

func (s *sim) decideStep(i int, d *DecideStep, action string) {
	n := s.byName[d.Party]
	ss := s.byName2[d.Session]
	within := d.Within.millis()
	if within == 0 {
		within = ss.deadline - s.now
	}
	name := fmt.Sprintf("steps[%d] %s %s %s", i, d.Party, action, d.Session)
	if action != "abort" {
		s.runUntil(s.now+within, func() bool { return n.up && n.pending[ss.id] })
	}
	if !n.up || (action != "abort" && !n.pending[ss.id]) {
		s.expect = append(s.expect, Line{Name: name, Detail: "no decision was pending for " + d.Party + " in time"})
		return
	}
	dec := &negotiate.Decision{Session: ss.id, Action: negotiate.Action(action), Reason: d.Reason}
	if action == "counter" {
		t, err := encodeTerms(d.Terms)
		if err != nil {
			s.expect = append(s.expect, Line{Name: name, Detail: err.Error()})
			return
		}
		dec.Terms = t
	}
	s.logf("%s decides %s on %s", n.name, action, ss.name)
	delete(n.pending, ss.id)
	if out := s.step(n, engine.Input{Decision: dec}); out.Err != nil {
		s.expect = append(s.expect, Line{Name: name, Detail: out.Err.Error()})
		return
	}
	s.expect = append(s.expect, Line{Name: name, Passed: true})
}

// heal ends every fault: partitions, link faults, loss and byzantine
// behaviour stop, and every crashed party restarts.
func (s *sim) heal() {
	s.healed = true
	s.lastEvent = s.now
	s.groups = nil
	s.rules = nil
	s.loss = 0
	s.byzActive = false
	for _, t := range s.triggers {
		t.fired = true
	}
	s.logf("heal")
	for _, n := range s.nodes {
		if !n.up {
			s.restart(n)
		}
	}
}

// ---- stepping an engine ----

func (s *sim) sname(id string) string {
	if ss := s.bySID[id]; ss != nil {
		return ss.name
	}
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// step feeds one input to a node's engine and carries out the output in
// the order the engine demands: persist, then send; crash points cut in.
func (s *sim) step(n *simNode, in engine.Input) engine.Output {
	in.Now = s.now
	out := n.eng.Step(in)
	if out.Err != nil {
		n.errs++
	} else {
		s.offerConsent(n, in)
	}
	var hasVote, hasAppend bool
	session := ""
	for _, w := range out.Persist {
		if w.AcquireLock != nil {
			hasVote = true
		}
		if w.Append != nil {
			hasAppend = true
		}
		session = w.Session
	}
	if hasAppend && s.fire(n, PointAfterCertificate, session) {
		return out
	}
	for _, o := range out.SendFirst {
		s.send(n, o) // depends on nothing in Persist
	}
	for _, w := range out.Persist {
		if s.opts.Bug == BugSkipVotePersist && w.AcquireLock != nil {
			s.logf("%s BUG: vote of %s not persisted", n.name, s.sname(w.Session))
			continue
		}
		if err := n.store.Apply(w); err != nil {
			msg := fmt.Sprintf("%s: durable write for %s failed: %v", n.name, s.sname(w.Session), err)
			if s.opts.Bug == BugNone {
				s.persistFailures = append(s.persistFailures, msg)
			}
			s.logf("%s persist failed; node stops", n.name)
			s.crash(n, "persist failed", defaultRestartAfter)
			return out
		}
	}
	if hasVote && s.fire(n, PointAfterVote, session) {
		return out
	}
	if hasAppend && s.fire(n, PointAfterAppend, session) {
		return out
	}
	sentAccept, sentPropose := false, false
	for _, o := range out.Send {
		switch b := o.Body.(type) {
		case *protocol.Offer:
			sentPropose = true // an offer is the first proposal (its consent is the Start's, offerConsent)
		case *protocol.Accept:
			sentAccept = true
			n.consents(o.Session)[consentKey{b.Round, b.TermsHash}] = true
		case *protocol.Propose:
			sentPropose = true
			n.consents(o.Session)[consentKey{b.Round, chain.Hash(sign.Hash(b.Terms))}] = true
		}
		s.send(n, o)
	}
	epoch := n.epoch
	for _, t := range out.Timers {
		t := t
		s.at(t.At, func() { s.onTimer(n, epoch, t) })
	}
	for _, ev := range out.Events {
		s.onEvent(n, ev)
	}
	if s.readySent(session, hasVote, out.Send) && s.fire(n, PointAfterReadySent, session) {
		return out
	}
	recv := ""
	if in.Message != nil {
		recv = in.Message.Type
	}
	if (in.Start != nil && sentPropose || (recv == protocol.TypePropose || recv == protocol.TypeOffer) && out.Err == nil) && s.fire(n, PointAfterPropose, in.Session()) {
		return out
	}
	if (sentAccept || recv == protocol.TypeAccept && out.Err == nil) && s.fire(n, PointAfterAccept, in.Session()) {
		return out
	}
	return out
}

// offerConsent records the consent of an input the engine took in a
// signed offer, where no Propose or Accept message carries it: the
// initiator consents to the terms it starts the offer with (round 1), a
// participant to the round and terms of the offer as its proposal event
// showed them, by its accept decision. A signature over anything else
// still breaks the consent invariant.
func (s *sim) offerConsent(n *simNode, in engine.Input) {
	switch {
	case in.Start != nil && in.Start.Offer:
		n.consents(in.Start.Session)[consentKey{1, termsHashOf(in.Start.Terms)}] = true
	case in.Decision != nil && in.Decision.Action == negotiate.ActAccept:
		if ss := s.bySID[in.Decision.Session]; ss != nil && ss.offer && ss.init != n {
			if k, ok := n.offered[in.Decision.Session]; ok {
				n.consents(in.Decision.Session)[k] = true
			}
		}
	}
}

// readySent reports whether the after-ready-sent point is reached: a
// step that made the vote durable sent what followed it. In a signed
// offer it is where a frame carrying this party's statement left, as a
// real node sees it: a participant's Ready (a 2-party participant signs
// and commits in one write with no lock) or the initiator's Offer, which
// carries its Ready.
func (s *sim) readySent(session string, hasVote bool, sent []engine.Outgoing) bool {
	ss := s.bySID[session]
	if ss == nil || !ss.offer {
		return hasVote
	}
	for _, o := range sent {
		if (o.Type == protocol.TypeReady || o.Type == protocol.TypeOffer) && o.Frame == nil {
			return true
		}
	}
	return false
}

// fire runs the triggers of n at point; it reports whether n crashed.
func (s *sim) fire(n *simNode, point, session string) bool {
	for _, t := range s.triggers {
		if t.fired || t.party != n.name || t.point != point {
			continue
		}
		if t.session != "" && (s.bySID[session] == nil || s.bySID[session].name != t.session) {
			continue
		}
		t.fired = true
		s.logf("%s reaches %s", n.name, point)
		t.fire(n)
	}
	return !n.up
}

func (s *sim) onTimer(n *simNode, epoch int, t engine.Timer) {
	if !n.up || n.epoch != epoch {
		return
	}
	if s.opts.Bug == BugReleaseLockAtDeadline && t.Kind == engine.TimerDeadline && n.store.forget(t.Session) {
		s.logf("%s BUG: lock of %s released at the deadline", n.name, s.sname(t.Session))
		if err := s.boot(n); err != nil {
			s.aborted = err.Error()
		}
		return
	}
	s.step(n, engine.Input{Timer: &t})
}

func (s *sim) onEvent(n *simNode, ev negotiate.Event) {
	ss := s.bySID[ev.Session]
	switch ev.Kind {
	case negotiate.EvProposal, negotiate.EvCounter:
		n.pending[ev.Session] = true
		offer := ss != nil && ss.offer && ev.Kind == negotiate.EvProposal
		if offer {
			n.offered[ev.Session] = consentKey{ev.Round, termsHashOf(ev.Terms)}
			s.logf("%s gets the offer %s", n.name, s.sname(ev.Session))
		} else if ev.Kind == negotiate.EvProposal {
			s.logf("%s gets round %d of %s", n.name, ev.Round, s.sname(ev.Session))
		} else {
			s.logf("%s gets a counter in %s round %d", n.name, s.sname(ev.Session), ev.Round)
		}
		d := n.policy.decide(ev)
		if d != nil && offer {
			// As the node does: a signed offer takes no counter.
			fit := engine.ForOffer(*d)
			d = &fit
		}
		if d != nil {
			epoch := n.epoch
			s.at(s.now+n.policy.Think.millis(), func() {
				if !n.up || n.epoch != epoch || !n.pending[d.Session] {
					return
				}
				delete(n.pending, d.Session)
				s.logf("%s %ss %s", n.name, d.Action, s.sname(d.Session))
				s.step(n, engine.Input{Decision: d})
			})
		}
	case negotiate.EvViolation:
		n.violations = append(n.violations, ev.Reason)
		s.logf("%s reports a violation in %s: %s", n.name, s.sname(ev.Session), ev.Reason)
		if len(ev.Warrant) > 0 {
			n.takeWarrant(ev.Warrant)
		}
	case negotiate.EvCommitted, negotiate.EvRejected, negotiate.EvAborted:
		delete(n.pending, ev.Session)
		if ev.Outcome != nil {
			n.ended[ev.Session] = ev.Outcome
		}
		if _, ok := n.firstFinal[ev.Session]; !ok {
			n.firstFinal[ev.Session] = s.now
		}
		what := string(ev.Kind)
		if ev.Outcome != nil && ev.Outcome.Busy {
			what += " (busy)"
		}
		s.logf("%s %s %s", n.name, what, s.sname(ev.Session))
	}
	_ = ss
}

// crash loses the node's engine (its memory); the store stays.
func (s *sim) crash(n *simNode, why string, restartAfter time.Duration) {
	if !n.up {
		return
	}
	n.up = false
	n.eng = nil
	n.epoch++
	n.pending = map[string]bool{}
	s.crashes++
	s.logf("%s crashes (%s)", n.name, why)
	epoch := n.epoch
	if restartAfter >= 0 {
		s.at(s.now+restartAfter.Milliseconds(), func() {
			if !n.up && n.epoch == epoch {
				s.restart(n)
			}
		})
	}
}

func (s *sim) restart(n *simNode) {
	if err := s.boot(n); err != nil {
		s.aborted = err.Error()
		s.persistFailures = append(s.persistFailures, fmt.Sprintf("%s: restart failed: %v", n.name, err))
		return
	}
	s.logf("%s restarts", n.name)
	s.step(n, engine.Input{Resume: true})
}

func (n *simNode) consents(session string) map[consentKey]bool {
	m := n.consent[session]
	if m == nil {
		m = map[consentKey]bool{}
		n.consent[session] = m
	}
	return m
}

// ---- faults ----

func (s *sim) addFault(f Fault) {
	switch {
	case f.Crash != nil:
		c := *f.Crash
		restart := defaultRestartAfter
		if c.RestartAfter != nil {
			restart = c.RestartAfter.D()
		}
		crash := func(n *simNode) {
			why := c.At
			if why == "" {
				why = "at " + c.AtTime.D().String()
			}
			s.crash(n, why, restart)
		}
		if c.AtTime != nil {
			n := s.byName[c.Party]
			s.at(simStartMillis+c.AtTime.millis(), func() {
				if !s.healed {
					crash(n)
				}
			})
			return
		}
		s.triggers = append(s.triggers, &trigger{party: c.Party, point: c.At, session: c.Session, fire: crash})
	case f.Partition != nil:
		p := *f.Partition
		start := func(*simNode) {
			if s.healed {
				return
			}
			s.groups = map[string]int{}
			for i, g := range p.Groups {
				for _, name := range g {
					s.groups[name] = i + 1
				}
			}
			s.logf("partition %v", p.Groups)
			if p.HealAfter != nil {
				groups := s.groups
				s.at(s.now+p.HealAfter.millis(), func() {
					if !s.healed && sameGroups(s.groups, groups) {
						s.groups = nil
						s.logf("partition heals")
					}
				})
			}
		}
		if p.AtTime != nil {
			s.at(simStartMillis+p.AtTime.millis(), func() { start(nil) })
			return
		}
		s.triggers = append(s.triggers, &trigger{party: p.Party, point: p.At, fire: start})
	case f.Byzantine != nil:
		s.byName[f.Byzantine.Party].byz = f.Byzantine.Behavior
	default:
		lf, kind := f.link()
		r := &linkRule{kind: kind, f: *lf, prob: 1}
		if lf.Probability != nil {
			r.prob = *lf.Probability
		}
		s.rules = append(s.rules, r)
	}
}

func sameGroups(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func (s *sim) partitioned(a, b *simNode) bool {
	if s.groups == nil {
		return false
	}
	return s.groups[a.name] != s.groups[b.name]
}

func (s *sim) linkParams(from, to *simNode) (latency, jitter int64, loss float64) {
	nw := &s.sc.Network
	latency, jitter, loss = nw.Latency.millis(), nw.Jitter.millis(), s.loss
	for _, l := range nw.Links {
		if (l.From == "" || l.From == "*" || l.From == from.name) && (l.To == "" || l.To == "*" || l.To == to.name) {
			if l.Latency != nil {
				latency = l.Latency.millis()
			}
			if l.Jitter != nil {
				jitter = l.Jitter.millis()
			}
			if l.Loss != nil && !s.healed {
				loss = *l.Loss
			}
		}
	}
	return latency, jitter, loss
}

func (r *linkRule) match(s *sim, m *wireMsg) bool {
	if r.f.From != "" && r.f.From != "*" && r.f.From != m.from.name {
		return false
	}
	if r.f.To != "" && r.f.To != "*" && r.f.To != m.to.name {
		return false
	}
	if r.f.Type != "" && r.f.Type != m.typ {
		return false
	}
	if r.f.Count > 0 && r.count >= r.f.Count {
		return false
	}
	if r.prob < 1 && s.rng.Float64() >= r.prob {
		return false
	}
	r.count++
	return true
}

// ---- the network ----

// send turns an engine's outgoing message into wire copies.
func (s *sim) send(from *simNode, o engine.Outgoing) {
	to := s.byID[o.To]
	if to == nil {
		s.logf("%s sends %s to an unknown agent", from.name, o.Type)
		return
	}
	bodies := []any{o.Body}
	if o.Frame == nil && from.byz != "" && s.byzActive {
		bodies = s.byzantine(from, o)
	}
	for _, body := range bodies {
		m := wireMsg{from: from, to: to, typ: o.Type, session: o.Session, toID: o.To}
		if o.Frame != nil {
			m.typ, m.frame = "cert", o.Frame
		} else {
			raw, err := protocol.EncodeBody(body)
			if err != nil {
				s.aborted = fmt.Sprintf("%s: encode %s: %v", from.name, o.Type, err)
				return
			}
			m.body, m.expires = raw, s.now+simMessageLifetime.Milliseconds()
			m.nonce = make([]byte, protocol.NonceSize)
			for i := 0; i < protocol.NonceSize; i += 8 {
				v := s.rng.Uint64()
				for j := 0; j < 8; j++ {
					m.nonce[i+j] = byte(v >> (8 * j))
				}
			}
			if s.opts.Seal {
				frame, err := protocol.Seal(from.key, protocol.Message{
					Type: o.Type, Session: o.Session, To: o.To, Nonce: m.nonce, Expires: m.expires, Body: raw,
				})
				if err != nil {
					s.aborted = fmt.Sprintf("%s: seal %s: %v", from.name, o.Type, err)
					return
				}
				m.frame = frame
			}
		}
		s.transmit(m)
		if from.byz == ByzReplay && s.byzActive {
			again := m
			s.at(s.now+replayDelay.Milliseconds(), func() {
				if s.byzActive {
					s.logf("%s replays %s to %s", from.name, again.typ, again.to.name)
					s.transmit(again)
				}
			})
		}
	}
}

// transmit puts one message on the network: faults, loss, latency.
func (s *sim) transmit(m wireMsg) {
	s.messages++
	latency, jitter, loss := s.linkParams(m.from, m.to)
	copies := 1
	extra := int64(0)
	fifo := true
	for _, r := range s.rules {
		if !r.match(s, &m) {
			continue
		}
		switch r.kind {
		case "drop":
			s.dropped++
			s.logf("drop %s→%s %s %s (fault)", m.from.name, m.to.name, m.typ, s.sname(m.session))
			return
		case "delay":
			extra += r.f.By.millis()
		case "duplicate":
			copies++
		case "reorder":
			extra += s.rng.Int64N(r.f.By.millis() + 1)
			fifo = false
		}
	}
	if loss > 0 && s.rng.Float64() < loss {
		s.dropped++
		s.logf("drop %s→%s %s %s (loss)", m.from.name, m.to.name, m.typ, s.sname(m.session))
		return
	}
	for c := 0; c < copies; c++ {
		d := latency + extra
		if jitter > 0 {
			d += s.rng.Int64N(jitter + 1)
		}
		at := s.now + d
		link := [2]int{m.from.idx, m.to.idx}
		if fifo && at < s.lastAt[link] {
			at = s.lastAt[link]
		}
		if fifo {
			s.lastAt[link] = at
		}
		mm := m
		s.at(at, func() { s.deliver(mm) })
	}
}

// deliver hands a message to its receiver, as the host would: open
// (signature, recipient, expiry), replay guard, then the engine.
func (s *sim) deliver(m wireMsg) {
	if !m.to.up || s.partitioned(m.from, m.to) {
		s.dropped++
		why := "down"
		if m.to.up {
			why = "partitioned"
		}
		s.logf("undeliverable %s→%s %s %s (%s)", m.from.name, m.to.name, m.typ, s.sname(m.session), why)
		// The sender's transport notices the failed send.
		from, epoch := m.from, m.from.epoch
		s.at(s.now+s.sc.Network.Latency.millis(), func() {
			if from.up && from.epoch == epoch && m.session != "" {
				s.step(from, engine.Input{Unreachable: &engine.Unreachable{Session: m.session, Agent: m.to.party.ID, Reason: "peer " + why}})
			}
		})
		return
	}
	if m.to.byz == ByzReplay {
		m.to.received = append(m.to.received, m)
	}
	var rcv *engine.Received
	if m.frame != nil {
		env, err := protocol.OpenFor(m.frame, m.to.party.ID, s.now)
		if err == nil {
			err = m.to.guard.Check(env, s.now)
		}
		if err != nil {
			s.logf("%s refuses %s from %s: %v", m.to.name, m.typ, m.from.name, err)
			return
		}
		rcv = &engine.Received{From: env.Msg.From, Type: env.Msg.Type, Session: env.Msg.Session, Body: env.Body, Raw: env.Raw}
	} else {
		body, err := decodeBody(m.typ, m.body)
		if err == nil && m.toID != m.to.party.ID {
			err = fmt.Errorf("%w: addressed to another agent", protocol.ErrWrongRecipient)
		}
		if err == nil {
			err = m.to.guard.Check(&protocol.Envelope{Msg: protocol.Message{
				Type: m.typ, Session: m.session, From: m.from.party.ID, Nonce: m.nonce, Expires: m.expires,
			}}, s.now)
		}
		if err != nil {
			s.logf("%s refuses %s from %s: %v", m.to.name, m.typ, m.from.name, err)
			return
		}
		rcv = &engine.Received{From: m.from.party.ID, Type: m.typ, Session: m.session, Body: body}
	}
	s.logf("%s→%s %s %s", m.from.name, m.to.name, rcv.Type, s.sname(m.session))
	out := s.step(m.to, engine.Input{Message: rcv})
	if out.Err != nil && m.to.up {
		s.logf("%s rejects %s from %s: %s", m.to.name, rcv.Type, m.from.name, shortErr(out.Err))
	}
}

func shortErr(err error) string {
	t := err.Error()
	if len(t) > 160 {
		t = t[:157] + "..."
	}
	return t
}

var bodyTypes = map[string]func() any{
	protocol.TypePropose:   func() any { return new(protocol.Propose) },
	protocol.TypeAccept:    func() any { return new(protocol.Accept) },
	protocol.TypeReject:    func() any { return new(protocol.Reject) },
	protocol.TypeCounter:   func() any { return new(protocol.Counter) },
	protocol.TypePreflight: func() any { return new(protocol.Preflight) },
	protocol.TypeOffer:     func() any { return new(protocol.Offer) },
	protocol.TypeReady:     func() any { return new(protocol.Ready) },
	protocol.TypeRefuse:    func() any { return new(protocol.Refuse) },
	protocol.TypeCommit:    func() any { return new(protocol.Commit) },
	protocol.TypeAbort:     func() any { return new(protocol.Abort) },
	protocol.TypeQuery:     func() any { return new(protocol.Query) },
	protocol.TypeStatus:    func() any { return new(protocol.Status) },
	protocol.TypeDecision:  func() any { return new(protocol.Decision) },
	protocol.TypeAbortAsk:  func() any { return new(protocol.AbortAsk) },
}

// decodeBody decodes and validates a body as Open does, without a signature.
func decodeBody(typ string, raw []byte) (any, error) {
	mk := bodyTypes[typ]
	if mk == nil {
		return nil, fmt.Errorf("%w: %q", protocol.ErrUnknownType, typ)
	}
	b := mk()
	if err := protocol.Unmarshal(raw, b); err != nil {
		return nil, err
	}
	if v, ok := b.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// ---- byzantine behaviour ----

// byzantine returns the bodies a misbehaving party sends instead of o.Body
// (see byzantineBodies).
func (s *sim) byzantine(from *simNode, o engine.Outgoing) []any {
	return byzantineBodies(from.byz, from.key, o, func() []sign.AgentID {
		var ids []sign.AgentID
		if ss := s.bySID[o.Session]; ss != nil {
			for _, p := range ss.parties {
				ids = append(ids, p.party.ID)
			}
		}
		return ids
	})
}

// ---- reporting ----

func (s *sim) traceHash() string {
	return hex.EncodeToString(s.hasher.Sum(nil))
}

func (s *sim) report() *Report {
	r := &Report{
		Scenario: s.sc.Name, File: s.sc.File, Mode: "sim", Seed: s.seed, RandomFaults: s.opts.RandomFaults, Bug: s.opts.Bug,
		Messages: s.messages, Dropped: s.dropped, Crashes: s.crashes, VirtualMillis: s.now - simStartMillis,
		Notes: s.notes, Outcomes: map[string]map[string]PartyOutcome{},
	}
	r.Replay = ReplayCommand(fileOrName(s.sc), s.seed, s.opts.RandomFaults, s.opts.Bug)
	if s.skipped != "" {
		r.Status, r.Skipped, r.TraceHash = "skipped", s.skipped, s.traceHash()
		r.Trace = s.trace
		return r
	}
	for _, ss := range s.sessions {
		m := map[string]PartyOutcome{}
		for _, n := range ss.parties {
			m[n.name] = s.outcomeOf(n, ss)
		}
		r.Outcomes[ss.name] = m
	}
	r.Invariants = s.checkInvariants()
	if !s.opts.RandomFaults {
		r.Expectations = append(s.expect, s.checkExpectations(r)...)
	} else {
		r.Notes = append(r.Notes, "random faults: expectations are not checked, only the invariants")
	}
	r.settle()
	r.TraceHash = s.traceHash()
	r.Trace = s.trace
	return r
}

func fileOrName(sc *Scenario) string {
	if sc.File != "" {
		return sc.File
	}
	return sc.Name + ".yaml"
}

func (s *sim) outcomeOf(n *simNode, ss *simSession) PartyOutcome {
	if s.realOutcomes != nil {
		return s.realOutcomes(n, ss)
	}
	if !n.up || n.eng == nil {
		return PartyOutcome{State: "down"}
	}
	o, err := n.eng.Outcome(ss.id)
	if err != nil && s.opts.DropEnded && n.ended[ss.id] != nil {
		o, err = n.ended[ss.id], nil // dropped, ended unsigned this epoch
	}
	if err != nil {
		return PartyOutcome{State: "none"}
	}
	if o == nil {
		return PartyOutcome{State: "open"}
	}
	po := PartyOutcome{State: string(o.State), Reason: o.Reason, Round: o.Round}
	if o.State == negotiate.StateAborted && o.Busy {
		po.State = "busy"
	}
	if o.State == negotiate.StateCommitted {
		po.RecordHash = o.RecordHash.String()
	}
	if at, ok := n.firstFinal[ss.id]; ok {
		po.AtMillis = at - ss.start
	}
	return po
}

// sortedNames returns map keys sorted.
func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// takeWarrant keeps a warrant the engine built, if it verifies.
func (n *simNode) takeWarrant(raw []byte) {
	w, _, err := protocol.VerifyWarrant(raw)
	if err != nil {
		return
	}
	if n.warrants == nil {
		n.warrants = map[sign.AgentID][]byte{}
	}
	if _, ok := n.warrants[w.Agent]; !ok {
		n.warrants[w.Agent] = raw
	}
}
