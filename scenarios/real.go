package scenarios

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/negotiate-dev/negotiate/internal/hooks"

	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/negotiate/transport"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/sign"
)

// Real-mode limits.
const (
	// realStartTimeout bounds starting one node and finding every peer.
	realStartTimeout = 20 * time.Second
	// realGrace is how long after a session's deadline a real run waits for
	// every party's outcome (signed parties resolve by query).
	realGrace = 20 * time.Second
	// realResolveInitial / realResolveMax speed up resolution in real runs.
	realResolveInitial = 300 * time.Millisecond
	realResolveMax     = 2 * time.Second
	// realWarrantLookup bounds one DHT lookup of a warrant after a run.
	realWarrantLookup = 10 * time.Second
)

// RealOptions configures RunReal.
type RealOptions struct {
	// KeepDir keeps the temporary directory with the chains (its path is
	// in the report's notes); otherwise it is removed.
	KeepDir bool
	// Progress, if set, receives one line per step as the run goes.
	Progress func(line string)
}

type realNode struct {
	sn *simNode
	mu sync.Mutex
	// the current incarnation, guarded by mu: a crash closes the node and
	// chain (up false); a restart opens new ones (epoch counts crashes)
	ch    *chain.Chain
	node  *negotiate.Node
	hooks *hooks.Hooks // the running node's test doors (Inject)
	up    bool
	epoch int
	// events seen, guarded by mu
	pending  map[string]bool
	finals   map[string]*negotiate.Outcome
	finalAt  map[string]int64
	violated []string
	// crashedIn is the session of the last fault-injection crash: a signed
	// offer's initiator that crashes after its vote does so inside Propose,
	// which then returns no session ID.
	crashedIn string
}

// RunReal runs a scenario with real nodes on 127.0.0.1 and real bbolt
// chains in a temporary directory. Faults are real: a crash stops the
// node at the named protocol step (or time), closes it and its chain, and
// later starts a new node on the same chain file; partitions, drops,
// loss, delays, duplicates and byzantine behaviour act on the real
// messages through the node's fault hooks (see realFaults). The loopback
// network is the latency: network.latency and jitter are not simulated.
func RunReal(ctx context.Context, sc *Scenario, opts RealOptions) (rep *Report, err error) {
	if sc == nil {
		return nil, errors.New("scenarios: RunReal: no scenario")
	}
	progress := func(format string, args ...any) {
		if opts.Progress != nil {
			opts.Progress(fmt.Sprintf(format, args...))
		}
	}
	rep = &Report{Scenario: sc.Name, File: sc.File, Mode: "real", Outcomes: map[string]map[string]PartyOutcome{}}
	dir, err := os.MkdirTemp("", "negotiate-scenario-")
	if err != nil {
		return nil, fmt.Errorf("scenarios: real run: %w", err)
	}
	if opts.KeepDir {
		rep.Notes = append(rep.Notes, "chains kept in "+dir)
	} else {
		defer os.RemoveAll(dir)
	}
	// The sim structures hold the parties, sessions and checks; engines
	// live inside the real nodes.
	s := &sim{sc: sc, real: true, byID: map[sign.AgentID]*simNode{}, byName: map[string]*simNode{},
		byName2: map[string]*simSession{}, bySID: map[string]*simSession{}, checker: &recordChecker{verified: map[chain.Hash]error{}}}
	start := time.Now()
	var nodes []*realNode
	fctx, fcancel := context.WithCancel(ctx)
	rf := newRealFaults(fctx, s, dir, progress)
	defer func() {
		fcancel()
		rf.stop()
		for _, rn := range nodes {
			rn.mu.Lock()
			n, ch := rn.node, rn.ch
			rn.mu.Unlock()
			if n != nil {
				n.Close()
			}
			if ch != nil {
				ch.Close()
			}
		}
	}()
	for i, p := range sc.Parties {
		key, err := partyKey(sc.Name, p.Name, p.Scheme)
		if err != nil {
			return nil, err
		}
		ch, err := chain.Create(filepath.Join(dir, p.Name+".db"), key, time.Now().UnixMilli())
		if err != nil {
			return nil, fmt.Errorf("scenarios: chain of %s: %w", p.Name, err)
		}
		pol := p.Policy
		sn := &simNode{name: p.Name, idx: i, key: key, policy: &pol, firstFinal: map[string]int64{},
			consent: map[string]map[consentKey]bool{}, up: true}
		rn := &realNode{sn: sn, ch: ch, pending: map[string]bool{}, finals: map[string]*negotiate.Outcome{}, finalAt: map[string]int64{}}
		nodes = append(nodes, rn)
		rf.nodes = nodes
		s.nodes = append(s.nodes, sn)
		s.byID[key.AgentID()] = sn
		s.byName[p.Name] = sn
		var boot []string
		if i > 0 {
			boot = nodes[0].node.Host().Addrs()[:1]
		}
		if err := rn.start(ctx, rf, boot, nil); err != nil {
			return nil, err
		}
		progress("%s started as %s", p.Name, key.AgentID().Short())
	}
	for _, a := range nodes {
		for _, b := range nodes {
			if a == b {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, realStartTimeout)
			_, err := a.node.Host().Resolve(rctx, b.sn.key.AgentID())
			cancel()
			if err != nil {
				return nil, fmt.Errorf("scenarios: %s cannot find %s: %w", a.sn.name, b.sn.name, err)
			}
		}
	}
	byName := map[string]*realNode{}
	for _, rn := range nodes {
		byName[rn.sn.name] = rn
	}
	rf.arm(byName)
	var lastDeadline time.Time
	for i, st := range sc.Steps {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		switch {
		case st.Propose != nil:
			p := st.Propose
			init := byName[p.From]
			var with []sign.AgentID
			ss := &simSession{name: p.ID, init: init.sn, parties: []*simNode{init.sn}, start: time.Now().UnixMilli()}
			ss.deadline = ss.start + p.Timeout.D().Milliseconds()
			for _, w := range p.With {
				with = append(with, byName[w].sn.key.AgentID())
				ss.parties = append(ss.parties, byName[w].sn)
			}
			terms, _ := encodeTerms(p.Terms)
			po := negotiate.ProposeOptions{Timeout: p.Timeout.D(), MaxRounds: p.MaxRounds, Offer: p.Offer}
			if p.Witness != "" {
				po.Witness = byName[p.Witness].sn.key.AgentID()
			}
			if d := time.Now().Add(p.Timeout.D()); d.After(lastDeadline) {
				lastDeadline = d
			}
			n := init.current()
			if n == nil {
				s.expect = append(s.expect, Line{Name: "propose " + p.ID, Detail: p.From + " was down when the step came"})
				continue
			}
			init.mu.Lock()
			init.crashedIn = ""
			init.mu.Unlock()
			pend, err := n.Propose(ctx, with, terms, po)
			if err == nil {
				ss.id = pend.ID()
			} else if errors.Is(err, negotiate.ErrNodeStopped) {
				// A crash fault inside the proposal (a signed offer's
				// after-vote): the session is durable and resumes on restart.
				init.mu.Lock()
				ss.id = init.crashedIn
				init.mu.Unlock()
			}
			if ss.id == "" {
				if p.Witness != "" && strings.Contains(err.Error(), "witness") {
					rep.Status, rep.Skipped = "skipped", "skipped: witness mode not implemented ("+err.Error()+")"
					return rep, nil
				}
				s.expect = append(s.expect, Line{Name: "propose " + p.ID, Detail: err.Error()})
				continue
			}
			init.mu.Lock()
			init.sn.consents(ss.id)[consentKey{1, termsHashOf(terms)}] = true
			init.mu.Unlock()
			s.sessions = append(s.sessions, ss)
			rf.register(ss)
			progress("%s proposed %s (%s)", p.From, p.ID, ss.id)
		case st.Wait != nil:
			select {
			case <-time.After(st.Wait.D()):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case st.Message != nil:
			m := st.Message
			to := byName[m.To].sn.key.AgentID()
			timeout := m.Timeout.D()
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			rctx, cancel := context.WithTimeout(ctx, timeout)
			err := errors.New(m.From + " is down")
			if n := byName[m.From].current(); n != nil {
				_, err = n.Host().Request(rctx, to, "text/plain", []byte(m.Payload))
			}
			cancel()
			l := Line{Name: fmt.Sprintf("steps[%d] message %s→%s delivered", i, m.From, m.To), Passed: err == nil || errors.Is(err, transport.ErrRefused)}
			if err != nil {
				l.Detail = err.Error()
			}
			s.expect = append(s.expect, l)
		default:
			d, action := st.decision()
			rn, ss := byName[d.Party], s.byName2[d.Session]
			name := fmt.Sprintf("steps[%d] %s %s %s", i, d.Party, action, d.Session)
			if ss == nil || ss.id == "" {
				s.expect = append(s.expect, Line{Name: name, Detail: "the session was never proposed"})
				continue
			}
			within := d.Within.D()
			if within == 0 {
				within = sc.stepTimeout(d.Session)
			}
			if action != "abort" && !rn.waitPending(ctx, ss.id, within) {
				s.expect = append(s.expect, Line{Name: name, Detail: "no decision was pending in time"})
				continue
			}
			dec := negotiate.Decision{Session: ss.id, Action: negotiate.Action(action), Reason: d.Reason}
			if action == "counter" {
				dec.Terms, _ = encodeTerms(d.Terms)
			}
			n := rn.current()
			if n == nil {
				s.expect = append(s.expect, Line{Name: name, Detail: d.Party + " was down when the step came"})
				continue
			}
			rn.noteDecision(n, ss.id, dec)
			if err := n.Decide(dec); err != nil {
				s.expect = append(s.expect, Line{Name: name, Detail: err.Error()})
				continue
			}
			s.expect = append(s.expect, Line{Name: name, Passed: true})
			progress("%s decided %s on %s", d.Party, action, d.Session)
		}
	}
	// The faults heal shortly after the last deadline, as in the simulator.
	healAt := lastDeadline.Add(realHealSlack)
	if now := time.Now(); healAt.Before(now) {
		healAt = now
	}
	rf.after(time.Until(healAt), rf.heal)
	// Wait for every honest party's outcome of every session (a byzantine
	// party may stay open: it signed what nobody else would).
	wctx, cancel := context.WithDeadline(ctx, lastDeadline.Add(realGrace))
	defer cancel()
	waitAll := func() {
		for _, ss := range s.sessions {
			for _, sn := range ss.parties {
				rn := byName[sn.name]
				if sn.byz != "" && !sc.expectsOutcome(ss.name, sn.name) {
					continue
				}
				if o, err := rn.waitOutcome(wctx, ss.id, time.UnixMilli(ss.deadline)); err != nil && !errors.Is(err, negotiate.ErrUnknownSession) {
					rep.Notes = append(rep.Notes, fmt.Sprintf("%s: %s: %v", ss.name, sn.name, err))
				} else if o != nil {
					// Wait can return just before the node's event callback
					// records the time; take now as the (later) bound then.
					rn.mu.Lock()
					if _, ok := rn.finalAt[ss.id]; !ok {
						rn.finalAt[ss.id] = time.Now().UnixMilli()
					}
					rn.mu.Unlock()
				}
			}
		}
	}
	waitAll()
	// Heal, let every crashed party come back, then read every chain into
	// a store view and check.
	rf.heal()
	rf.wg.Wait()
	waitAll()
	rf.mu.Lock()
	rep.Messages, rep.Dropped, rep.Crashes = s.messages, s.dropped, s.crashes
	rf.mu.Unlock()
	for _, rn := range nodes {
		if err := rn.snapshot(); err != nil {
			return nil, err
		}
	}
	for _, ss := range s.sessions {
		m := map[string]PartyOutcome{}
		for _, sn := range ss.parties {
			m[sn.name] = byName[sn.name].outcome(ss)
		}
		rep.Outcomes[ss.name] = m
	}
	s.realOutcomes = func(n *simNode, ss *simSession) PartyOutcome { return byName[n.name].outcome(ss) }
	s.findWarrant = func(offender *simNode) error {
		var errs []error
		for _, rn := range nodes {
			n := rn.current()
			if n == nil || rn.sn == offender {
				continue
			}
			fctx, cancel := context.WithTimeout(ctx, realWarrantLookup)
			_, err := n.Host().FindWarrant(fctx, offender.key.AgentID())
			cancel()
			if err == nil {
				return nil
			}
			errs = append(errs, fmt.Errorf("from %s: %w", rn.sn.name, err))
		}
		return errors.Join(errs...)
	}
	rep.Invariants = s.checkInvariants()
	rep.Expectations = append(s.expect, s.checkExpectations(rep)...)
	rep.VirtualMillis = time.Since(start).Milliseconds()
	rep.settle()
	rep.Replay = "go run ./cmd/negotiate scenario run " + fileOrName(sc)
	return rep, nil
}

// expectsOutcome reports whether the scenario names party's outcome of session.
func (sc *Scenario) expectsOutcome(session, party string) bool {
	if _, ok := sc.Expect.Sessions[session][party]; ok {
		return true
	}
	_, ok := sc.Expect.Outcome[party]
	return ok && len(sc.Steps) > 0 && sc.Steps[0].Propose != nil && sc.Steps[0].Propose.ID == session
}

func (sc *Scenario) stepTimeout(session string) time.Duration {
	for _, st := range sc.Steps {
		if st.Propose != nil && st.Propose.ID == session {
			return st.Propose.Timeout.D()
		}
	}
	return DefaultTimeout
}

func termsHashOf(terms []byte) chain.Hash { return chain.Hash(sign.Hash(terms)) }

// start starts a node on rn's open chain with the fault hooks of rf,
// the party's libp2p identity file and, if given, listen addresses.
func (rn *realNode) start(ctx context.Context, rf *realFaults, boot, listen []string) error {
	sctx, cancel := context.WithTimeout(ctx, realStartTimeout)
	defer cancel()
	rn.mu.Lock()
	ch, epoch := rn.ch, rn.epoch
	rn.mu.Unlock()
	hk := &hooks.Hooks{Crash: rf.crashHook(rn, epoch), Outbound: rf.outbound(rn), Inbound: rf.inbound(rn)}
	n, err := negotiate.StartNode(hooks.With(sctx, hk), negotiate.NodeConfig{
		Key: rn.sn.key, Chain: ch, Policy: negotiate.PolicyFunc(rn.decide),
		Host:           transport.Config{Bootstrap: boot, Listen: listen, PeerKeyFile: filepath.Join(rf.dir, rn.sn.name+".peer")},
		ResolveInitial: realResolveInitial, ResolveMax: realResolveMax, OnEvent: rn.onEvent,
		WarrantDir: filepath.Join(rf.dir, rn.sn.name+".warrants"),
	})
	if err != nil {
		return fmt.Errorf("scenarios: start %s: %w", rn.sn.name, err)
	}
	rn.mu.Lock()
	rn.node, rn.hooks, rn.up = n, hk, true
	rn.mu.Unlock()
	return nil
}

// current is rn's running node, or nil while it is down.
func (rn *realNode) current() *negotiate.Node {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if !rn.up {
		return nil
	}
	return rn.node
}

// currentHooks is the hooks of rn's running node, or nil while it is down.
func (rn *realNode) currentHooks() *hooks.Hooks {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if !rn.up {
		return nil
	}
	return rn.hooks
}

// realWaitPoll is how often waitOutcome looks again across restarts.
const realWaitPoll = 200 * time.Millisecond

// waitOutcome waits for session id's outcome at rn, across crashes and
// restarts, until ctx is done. A session rn does not know is final only
// after the deadline: until then its proposal may still be on the way.
func (rn *realNode) waitOutcome(ctx context.Context, id string, deadline time.Time) (*negotiate.Outcome, error) {
	for {
		if n := rn.current(); n != nil {
			pctx, cancel := context.WithTimeout(ctx, realWaitPoll)
			o, err := n.Wait(pctx, id)
			cancel()
			// A node that crashed meanwhile answers from memory ahead of
			// its disk: only the running incarnation counts.
			if rn.current() == n && (o != nil || errors.Is(err, negotiate.ErrUnknownSession) && time.Now().After(deadline)) {
				return o, err
			}
			if errors.Is(err, negotiate.ErrUnknownSession) {
				select {
				case <-time.After(realWaitPoll):
				case <-ctx.Done():
				}
			}
		} else {
			select {
			case <-time.After(realWaitPoll):
			case <-ctx.Done():
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("scenarios: wait for session %s: %w", id, err)
		}
	}
}

// decide is the node's policy: the party's scenario policy.
func (rn *realNode) decide(p negotiate.Proposal) (negotiate.Decision, bool) {
	d := rn.sn.policy.decide(negotiate.Event{Kind: p.Kind, Session: p.Session, Round: p.Round, Terms: p.RawTerms})
	rn.mu.Lock()
	rn.pending[p.Session] = true
	rn.mu.Unlock()
	if d == nil {
		return negotiate.Decision{}, false
	}
	if th := rn.sn.policy.Think.D(); th > 0 {
		time.Sleep(th)
	}
	rn.noteProposalDecision(p, *d)
	return *d, true
}

func (rn *realNode) noteProposalDecision(p negotiate.Proposal, d negotiate.Decision) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	delete(rn.pending, p.Session)
	if d.Action != negotiate.ActAccept {
		if d.Action == negotiate.ActCounter && p.Kind == negotiate.EvCounter {
			rn.sn.consents(p.Session)[consentKey{p.Round + 1, termsHashOf(d.Terms)}] = true
		}
		return
	}
	round := p.Round
	if p.Kind == negotiate.EvCounter {
		round++ // the initiator proposes the countered terms as the next round
	}
	rn.sn.consents(p.Session)[consentKey{round, termsHashOf(p.RawTerms)}] = true
}

// noteDecision records the consent of a scripted decision.
func (rn *realNode) noteDecision(n *negotiate.Node, session string, d negotiate.Decision) {
	info, err := n.Session(session)
	if err != nil {
		return
	}
	kind := negotiate.EvProposal
	terms := []byte(info.Terms)
	if info.Role == engine.RoleInitiator {
		kind, terms = negotiate.EvCounter, info.Counter
	}
	rn.noteProposalDecision(negotiate.Proposal{Session: session, Kind: kind, Round: info.Round, RawTerms: terms}, d)
}

func (rn *realNode) onEvent(ev negotiate.Event) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	switch ev.Kind {
	case negotiate.EvProposal, negotiate.EvCounter:
		rn.pending[ev.Session] = true
	case negotiate.EvViolation:
		rn.violated = append(rn.violated, ev.Reason)
	}
	if ev.Outcome != nil {
		delete(rn.pending, ev.Session)
		if _, ok := rn.finals[ev.Session]; !ok {
			rn.finals[ev.Session] = ev.Outcome
			rn.finalAt[ev.Session] = time.Now().UnixMilli()
		}
	}
}

func (rn *realNode) waitPending(ctx context.Context, session string, within time.Duration) bool {
	end := time.Now().Add(within)
	for time.Now().Before(end) && ctx.Err() == nil {
		rn.mu.Lock()
		ok := rn.pending[session]
		rn.mu.Unlock()
		if ok {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// snapshot copies the chain into the party's store view for the checks.
func (rn *realNode) snapshot() error {
	rn.mu.Lock()
	ch := rn.ch
	rn.mu.Unlock()
	if ch == nil {
		rn.sn.up = false
		return nil
	}
	entries, err := ch.Entries(0, 0)
	if err != nil {
		return fmt.Errorf("scenarios: read chain of %s: %w", rn.sn.name, err)
	}
	cps, err := ch.Checkpoints()
	if err != nil {
		return fmt.Errorf("scenarios: read checkpoints of %s: %w", rn.sn.name, err)
	}
	lock, _ := ch.Lock()
	rn.sn.store = &MemStore{pub: rn.sn.key.Public(), entries: entries, head: ch.Head(), lock: lock, checkpoints: cps}
	rn.mu.Lock()
	defer rn.mu.Unlock()
	rn.sn.violations = append([]string(nil), rn.violated...)
	if rn.up && rn.node != nil {
		// What the node stored (and loaded again after a restart).
		ws, err := rn.node.Warrants(context.Background(), "", false)
		if err != nil {
			return fmt.Errorf("scenarios: warrants of %s: %w", rn.sn.name, err)
		}
		for _, w := range ws {
			rn.sn.takeWarrant(w.Raw)
		}
	}
	for id, at := range rn.finalAt {
		rn.sn.firstFinal[id] = at
	}
	return nil
}

func (rn *realNode) outcome(ss *simSession) PartyOutcome {
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	n := rn.current()
	if n == nil {
		return PartyOutcome{State: "down"}
	}
	o, err := n.Wait(ctx, ss.id)
	if errors.Is(err, negotiate.ErrUnknownSession) {
		return PartyOutcome{State: "none"}
	}
	if err != nil || o == nil {
		return PartyOutcome{State: "open"}
	}
	po := PartyOutcome{State: string(o.State), Reason: o.Reason, Round: o.Round}
	if o.State == negotiate.StateAborted && o.Busy {
		po.State = "busy"
	}
	if o.State == negotiate.StateCommitted {
		po.RecordHash = o.RecordHash.String()
	}
	if at, ok := rn.sn.firstFinal[ss.id]; ok {
		po.AtMillis = at - ss.start
	}
	return po
}
