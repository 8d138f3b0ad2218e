package scenarios

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/negotiate-dev/negotiate/internal/hooks"
	"github.com/negotiate-dev/negotiate/negotiate/engine"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Real-mode fault limits.
const (
	// realCrashDrain is how long a crashed node's already-queued frames get
	// to leave (loopback delivers in milliseconds) before its host closes.
	realCrashDrain = 100 * time.Millisecond
	// realHealSlack is how long after the last session deadline the faults
	// heal in real mode (the simulator waits scriptSlack in virtual time;
	// a real run keeps it short so the tests stay fast).
	realHealSlack = 2 * time.Second
	// realMessageLifetime is the expiry of frames the harness seals itself
	// (duplicates, replays), as the node gives its own (45 s).
	realMessageLifetime = 45 * time.Second
)

// realPoints maps the node's crash points to the scenario's step names.
var realPoints = map[string]string{
	hooks.CrashNegotiating:    PointAfterPropose,
	hooks.CrashAfterAccept:    PointAfterAccept,
	hooks.CrashAfterVote:      PointAfterVote,
	hooks.CrashAfterReadySent: PointAfterReadySent,
	hooks.CrashAfterCert:      PointAfterCertificate,
	hooks.CrashAfterAppend:    PointAfterAppend,
}

// realTrigger is a fault that fires when a party reaches a protocol step.
type realTrigger struct {
	party, point, session string
	fired                 bool
	crash                 *CrashFault
	partition             *PartitionFault
}

// realFaults injects a scenario's faults into real nodes through the
// node's fault hooks (internal/hooks: Crash, Outbound, Inbound): a crash
// stops the node at the named step and restarts it on the same chain
// file; partitions, drops, loss, delays, duplicates and byzantine
// rewrites act on the real messages before they are sealed or after they
// were opened. It reuses the simulator's fault state and rules.
type realFaults struct {
	s        *sim
	dir      string
	progress func(string, ...any)
	ctx      context.Context

	// mu guards the sim's fault state (groups, rules, rng, loss, healed,
	// byzActive, lastAt, counters), triggers and parties. Lock order:
	// a node's lock, then mu, then a realNode's mu.
	mu       sync.Mutex
	triggers []*realTrigger
	parties  map[string][]sign.AgentID // session ID → parties in order
	timers   []*time.Timer
	healCh   chan struct{}
	nodes    []*realNode
	wg       sync.WaitGroup // restarts in progress
}

func newRealFaults(ctx context.Context, s *sim, dir string, progress func(string, ...any)) *realFaults {
	seed := s.sc.Seed
	if seed == 0 {
		seed = 1
	}
	s.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s.loss, s.byzActive, s.lastAt = s.sc.Network.Loss, true, map[[2]int]int64{}
	return &realFaults{s: s, dir: dir, progress: progress, ctx: ctx, parties: map[string][]sign.AgentID{}, healCh: make(chan struct{})}
}

// arm installs the scenario's faults; call it once every node runs.
func (rf *realFaults) arm(byName map[string]*realNode) {
	for _, f := range rf.s.sc.Faults {
		switch {
		case f.Crash != nil:
			c := f.Crash
			if c.AtTime == nil {
				rf.triggers = append(rf.triggers, &realTrigger{party: c.Party, point: c.At, session: c.Session, crash: c})
				continue
			}
			rn := byName[c.Party]
			rf.after(c.AtTime.D(), func() {
				rf.mu.Lock()
				ok := !rf.s.healed
				rf.mu.Unlock()
				if ok {
					rf.crash(rn, -1, "at "+c.AtTime.D().String(), c, 0)
				}
			})
		case f.Partition != nil:
			p := f.Partition
			if p.AtTime == nil {
				rf.triggers = append(rf.triggers, &realTrigger{party: p.Party, point: p.At, partition: p})
				continue
			}
			rf.after(p.AtTime.D(), func() {
				rf.mu.Lock()
				defer rf.mu.Unlock()
				rf.startPartitionLocked(p)
			})
		case f.Byzantine != nil:
			byName[f.Byzantine.Party].sn.byz = f.Byzantine.Behavior
		default:
			lf, kind := f.link()
			r := &linkRule{kind: kind, f: *lf, prob: 1}
			if lf.Probability != nil {
				r.prob = *lf.Probability
			}
			rf.s.rules = append(rf.s.rules, r)
		}
	}
}

// after runs fn after d unless the run ended.
func (rf *realFaults) after(d time.Duration, fn func()) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	rf.timers = append(rf.timers, time.AfterFunc(d, func() {
		if rf.ctx.Err() == nil {
			fn()
		}
	}))
}

// register notes a proposed session's parties (for byzantine statements).
func (rf *realFaults) register(ss *simSession) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	var ids []sign.AgentID
	for _, p := range ss.parties {
		ids = append(ids, p.key.AgentID())
	}
	rf.parties[ss.id] = ids
	rf.s.byName2[ss.name], rf.s.bySID[ss.id] = ss, ss
}

func (rf *realFaults) startPartitionLocked(p *PartitionFault) {
	s := rf.s
	if s.healed {
		return
	}
	groups := map[string]int{}
	for i, g := range p.Groups {
		for _, name := range g {
			groups[name] = i + 1
		}
	}
	s.groups = groups
	rf.progress("partition %v", p.Groups)
	if p.HealAfter != nil {
		rf.timers = append(rf.timers, time.AfterFunc(p.HealAfter.D(), func() {
			rf.mu.Lock()
			defer rf.mu.Unlock()
			if !s.healed && sameGroups(s.groups, groups) {
				s.groups = nil
				rf.progress("partition heals")
			}
		}))
	}
}

// heal ends every fault, as the simulator's heal does: partitions, link
// faults, loss and byzantine behaviour stop; parties that stay down
// until the heal restart.
func (rf *realFaults) heal() {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	s := rf.s
	if s.healed {
		return
	}
	s.healed, s.groups, s.rules, s.loss, s.byzActive = true, nil, nil, 0, false
	for _, t := range rf.triggers {
		t.fired = true
	}
	close(rf.healCh)
	rf.progress("faults heal")
}

// stop heals, cancels pending deliveries and waits for restarts to end.
func (rf *realFaults) stop() {
	rf.heal()
	rf.mu.Lock()
	for _, t := range rf.timers {
		t.Stop()
	}
	rf.mu.Unlock()
	rf.wg.Wait()
}

// crashHook is the Crash hook of one incarnation (epoch) of rn.
func (rf *realFaults) crashHook(rn *realNode, epoch int) func(point, session string) bool {
	return func(point, session string) bool {
		step := realPoints[point]
		rf.mu.Lock()
		var crash *CrashFault
		for _, t := range rf.triggers {
			if t.fired || t.party != rn.sn.name || t.point != step {
				continue
			}
			if t.session != "" && (rf.s.bySID[session] == nil || rf.s.bySID[session].name != t.session) {
				continue
			}
			t.fired = true
			rf.progress("%s reaches %s", rn.sn.name, step)
			if t.partition != nil {
				rf.startPartitionLocked(t.partition)
			} else {
				crash = t.crash
			}
		}
		rf.mu.Unlock()
		if crash == nil || !rf.crash(rn, epoch, step, crash, realCrashDrain) {
			return false
		}
		rn.mu.Lock()
		rn.crashedIn = session
		rn.mu.Unlock()
		return true
	}
}

// crash marks rn down (if epoch, when not -1, is still its incarnation)
// and, in the background, closes its node and chain after drain and
// restarts it on the same chain file when the fault says.
func (rf *realFaults) crash(rn *realNode, epoch int, why string, c *CrashFault, drain time.Duration) bool {
	rn.mu.Lock()
	if !rn.up || (epoch >= 0 && rn.epoch != epoch) {
		rn.mu.Unlock()
		return false
	}
	rn.up = false
	rn.epoch++
	rn.pending = map[string]bool{}
	n, ch := rn.node, rn.ch
	rn.mu.Unlock()
	rf.mu.Lock()
	rf.s.crashes++
	rf.mu.Unlock()
	restart := defaultRestartAfter
	if c.RestartAfter != nil {
		restart = c.RestartAfter.D()
	}
	rf.progress("%s crashes (%s)", rn.sn.name, why)
	rf.wg.Add(1)
	go func() {
		defer rf.wg.Done()
		time.Sleep(drain)
		listen := listenAddrs(n.Host().Addrs())
		n.Close()
		ch.Close()
		rn.mu.Lock()
		rn.ch = nil
		rn.mu.Unlock()
		if restart >= 0 {
			select {
			case <-time.After(restart - drain):
			case <-rf.healCh:
			case <-rf.ctx.Done():
			}
		} else {
			select {
			case <-rf.healCh:
			case <-rf.ctx.Done():
			}
		}
		if err := rf.restart(rn, listen); err != nil {
			rf.progress("%s: restart failed: %v", rn.sn.name, err)
			return
		}
		rf.progress("%s restarts", rn.sn.name)
	}()
	return true
}

// restart reopens rn's chain file and starts a node on it with the same
// libp2p identity and listen addresses, bootstrapping from a live party.
func (rf *realFaults) restart(rn *realNode, listen []string) error {
	ch, err := chain.Open(filepath.Join(rf.dir, rn.sn.name+".db"), chain.Options{})
	if err != nil {
		return fmt.Errorf("scenarios: reopen chain of %s: %w", rn.sn.name, err)
	}
	rn.mu.Lock()
	rn.ch = ch
	rn.mu.Unlock()
	var boot []string
	for _, o := range rf.nodes {
		if o != rn {
			if n := o.current(); n != nil {
				boot = n.Host().Addrs()[:1]
				break
			}
		}
	}
	ctx := context.WithoutCancel(rf.ctx)
	if err := rn.start(ctx, rf, boot, listen); err != nil {
		// The port may be taken: listen anywhere (peers find it again).
		if err = rn.start(ctx, rf, boot, nil); err != nil {
			return err
		}
	}
	return nil
}

// listenAddrs strips the /p2p/<id> suffix of a host's addresses.
func listenAddrs(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		if i := strings.Index(a, "/p2p/"); i > 0 {
			a = a[:i]
		}
		out = append(out, a)
	}
	return out
}

// outbound is the Outbound hook of rn's nodes: byzantine rewrites, then
// partitions, link faults and loss, as the simulator's send and transmit.
func (rf *realFaults) outbound(rn *realNode) func(o engine.Outgoing) []engine.Outgoing {
	return func(o engine.Outgoing) []engine.Outgoing {
		rf.mu.Lock()
		defer rf.mu.Unlock()
		s, from := rf.s, rn.sn
		to := s.byID[o.To]
		if to == nil {
			return []engine.Outgoing{o}
		}
		msgs := []engine.Outgoing{o}
		if o.Frame == nil && from.byz != "" && s.byzActive {
			msgs = msgs[:0]
			for _, b := range byzantineBodies(from.byz, from.key, o, func() []sign.AgentID { return rf.parties[o.Session] }) {
				c := o
				c.Body = b
				msgs = append(msgs, c)
			}
		}
		var now []engine.Outgoing
		for _, m := range msgs {
			now = append(now, rf.transmitLocked(rn, to, m, from.byz == ByzReplay && s.byzActive)...)
		}
		return now
	}
}

// transmitLocked applies partitions, link rules and loss to one message;
// it returns what leaves now and schedules what leaves later.
func (rf *realFaults) transmitLocked(rn *realNode, to *simNode, o engine.Outgoing, replay bool) []engine.Outgoing {
	s, from := rf.s, rn.sn
	s.messages++
	m := wireMsg{from: from, to: to, typ: o.Type, session: o.Session, toID: o.To}
	if o.Frame != nil {
		m.typ = "cert"
	}
	copies, extra, fifo := 1, int64(0), true
	dropped := ""
	if s.partitioned(from, to) {
		dropped = "partitioned"
	}
	for _, r := range s.rules {
		if dropped != "" || !r.match(s, &m) {
			continue
		}
		switch r.kind {
		case "drop":
			dropped = "fault"
		case "delay":
			extra += r.f.By.millis()
		case "duplicate":
			copies++
		case "reorder":
			extra += s.rng.Int64N(r.f.By.millis() + 1)
			fifo = false
		}
	}
	if _, _, loss := s.linkParams(from, to); dropped == "" && loss > 0 && s.rng.Float64() < loss {
		dropped = "loss"
	}
	if dropped == "" && (copies > 1 || replay) && o.Frame == nil {
		// Copies and replays are the same sealed frame (same nonce), as on a wire.
		frame, err := sealFor(from.key, o)
		if err != nil {
			rf.progress("%s: seal %s: %v", from.name, o.Type, err)
			return nil
		}
		o.Frame = frame
	}
	if replay && o.Frame != nil {
		again := o
		rf.timers = append(rf.timers, time.AfterFunc(replayDelay, func() {
			rf.mu.Lock()
			active := rf.s.byzActive
			rf.mu.Unlock()
			if active {
				rf.progress("%s replays %s to %s", from.name, m.typ, to.name)
				rf.inject(rn, again)
			}
		}))
	}
	if dropped != "" {
		s.dropped++
		rf.progress("drop %s→%s %s (%s)", from.name, to.name, m.typ, dropped)
		return nil
	}
	nowMs := time.Now().UnixMilli()
	at := nowMs + extra
	link := [2]int{from.idx, to.idx}
	if fifo && at < s.lastAt[link] {
		at = s.lastAt[link]
	}
	if fifo {
		s.lastAt[link] = at
	}
	var out []engine.Outgoing
	for c := 0; c < copies; c++ {
		if at <= nowMs {
			out = append(out, o)
			continue
		}
		later := o
		rf.timers = append(rf.timers, time.AfterFunc(time.Duration(at-nowMs)*time.Millisecond, func() { rf.inject(rn, later) }))
	}
	return out
}

// inject sends a delayed or replayed message from rn's current node.
func (rf *realFaults) inject(rn *realNode, o engine.Outgoing) {
	if rf.ctx.Err() != nil {
		return
	}
	if hk := rn.currentHooks(); hk != nil {
		_ = hk.Inject(o) // a stopped node loses it, as a crash would
	}
}

// inbound is the Inbound hook of rn's nodes: a partition cuts delivery.
func (rf *realFaults) inbound(rn *realNode) func(from sign.AgentID, typ string) bool {
	return func(from sign.AgentID, typ string) bool {
		rf.mu.Lock()
		defer rf.mu.Unlock()
		if f := rf.s.byID[from]; f != nil && rf.s.partitioned(f, rn.sn) {
			rf.s.dropped++
			rf.progress("undeliverable %s→%s %s (partitioned)", f.name, rn.sn.name, typ)
			return false
		}
		return true
	}
}

// sealFor seals o as the node would.
func sealFor(key *sign.PrivateKey, o engine.Outgoing) ([]byte, error) {
	body, err := protocol.EncodeBody(o.Body)
	if err != nil {
		return nil, err
	}
	return protocol.Seal(key, protocol.Message{
		Type: o.Type, Session: o.Session, To: o.To, Nonce: protocol.NewNonce(),
		Expires: time.Now().Add(realMessageLifetime).UnixMilli(), Body: body,
	})
}
