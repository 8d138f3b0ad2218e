package negotiate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/internal/hooks"
	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/negotiate/transport"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Driver limits.
const (
	// sendQueueLen bounds the frames waiting for one peer; beyond it frames
	// are dropped (the protocol's queries recover what matters).
	sendQueueLen = 1024
	// messageLifetime is the wire expiry of session messages: long enough for
	// clock skew and retries, short so the replay guard (which keeps nonces
	// until expiry, at most 4096 per sender) allows ~90 messages/s per peer.
	messageLifetime = 45 * time.Second
	// sendTimeout bounds one delivery attempt, dial and resolve included.
	sendTimeout = 10 * time.Second
	// DefaultProposeTimeout is the session deadline when none is given.
	DefaultProposeTimeout = 60 * time.Second
	// DefaultEndedRetention is how long a node keeps an ended session in
	// memory (NodeConfig.EndedRetention).
	DefaultEndedRetention = 10 * time.Minute
)

// ErrNodeStopped is returned after a node stopped, by Close or by a failed durable write.
var ErrNodeStopped = errors.New("negotiate: node stopped")

// NodeConfig configures a Node. Zero values get the documented defaults.
type NodeConfig struct {
	// Key is the agent key (required); Chain its open source chain (required).
	Key   *sign.PrivateKey
	Chain *chain.Chain
	// Host configures the libp2p host (its Key is set from Key).
	Host transport.Config
	// Policy decides incoming proposals and counters; nil leaves every
	// decision to the application (Decide) and the inbox.
	Policy Policy
	// SignCheck, when set, is asked before this agent signs an agreement.
	SignCheck func(a *protocol.Agreement) error
	// HeadCheck, when set, is asked right before this agent signs (after
	// SignCheck) with the agreement and the chain heads at which the other
	// parties already signed it (their verified statements), by agent ID;
	// an error refuses, as SignCheck's does. With HeadCheck set, a
	// participant signs only once it holds the initiator's statement (the
	// initiator always signs first), so it always sees the initiator's
	// head: compare it with the chain the initiator presented (VerifyChain)
	// to know nothing was left out of it. The initiator is not asked. Like
	// SignCheck it runs inside the engine: it must be quick and must not
	// block on the network.
	HeadCheck func(a *protocol.Agreement, heads map[sign.AgentID]chain.Head) error
	// ResolveInitial / ResolveMax: how soon and how often (with doubling
	// backoff) a signed party asks the others how a session ended. Zero:
	// 2 s and 30 s.
	ResolveInitial, ResolveMax time.Duration
	// EndedRetention is how long an ended session stays in memory after it
	// ended (and after its deadline); zero means DefaultEndedRetention,
	// negative keeps every session in memory for the node's life. After
	// that only its durable checkpoint is kept, read back when a message,
	// a decision or a call (Session, Receipt, Wait) names the session, so
	// a peer's late query is answered the same; a session that ended
	// unsigned (rejected, expired in negotiation) had nothing durable and
	// is then forgotten. Memory stays bounded under sustained load.
	EndedRetention time.Duration
	// Logger receives the node's logs; nil discards them.
	Logger *slog.Logger
	// OnEvent, when set, is called (without locks held) for every engine event.
	OnEvent func(Event)
	// WarrantDir is where the node keeps warrants (evidence that an agent
	// equivocated), one file each; the CLI uses <home>/warrants. Empty
	// keeps them in memory only. A warrant is also published to the DHT.
	WarrantDir string
	// AllowWarranted lets the node take and make sessions with agents that
	// have a valid warrant against them; by default it refuses them.
	AllowWarranted bool
}

// crash calls the crash hook at point. If the hook says so, the node
// stops there and crash reports true; the caller must do nothing more.
// n.mu must be held iff locked.
func (n *Node) crash(point, session string, locked bool) bool {
	if n.hooks.Crash == nil || !n.hooks.Crash(point, session) {
		return false
	}
	if !locked {
		n.mu.Lock()
		defer n.mu.Unlock()
	}
	if n.stopped == nil {
		n.stopped = fmt.Errorf("%w: crashed at %s (fault injection)", ErrNodeStopped, point)
	}
	for _, t := range n.timers {
		t.Stop()
	}
	n.log.Warn("node crashed at a fault-injection point", "point", point)
	return true
}

// Node runs the engine over a libp2p host and a durable chain, with the
// wall clock: the driver of the pure core. It is safe for concurrent use.
type Node struct {
	cfg   NodeConfig
	hooks *hooks.Hooks // test-only doors (internal/hooks); never nil
	host  *transport.Host
	chain *chain.Chain
	log   *slog.Logger

	mu      sync.Mutex // guards eng and everything below; held across durable writes
	eng     *engine.Engine
	stopped error
	// writeFail is the last durable write that failed, nil once one
	// succeeded after it.
	writeFail *WriteFailure
	waiters   map[string][]chan *Outcome
	timers    map[string]*time.Timer
	queues    map[sign.AgentID]chan queuedFrame
	// rb is what the node knows of its own and its counterparties' chain
	// positions (rollback.go); it has its own lock.
	rb *rollbackState

	warrants *warrantStore // has its own lock; taken after mu, never before
	refused  engineRefusals

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartNode starts the host, resumes every open session from the chain's
// checkpoints and begins serving.
func StartNode(ctx context.Context, cfg NodeConfig) (*Node, error) {
	if cfg.Key == nil || cfg.Chain == nil {
		return nil, errors.New("negotiate: node needs an agent key and a chain")
	}
	if cfg.Chain.AgentID() != cfg.Key.AgentID() {
		return nil, fmt.Errorf("negotiate: chain belongs to %s, the key to %s", cfg.Chain.AgentID().Short(), cfg.Key.AgentID().Short())
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	keep := cfg.endedRetention()
	cps, err := startupCheckpoints(cfg.Chain, time.Now().UnixMilli(), keep)
	if err != nil {
		return nil, err
	}
	var checkpoint func(string) ([]byte, bool, error)
	if keep >= 0 {
		checkpoint = cfg.Chain.Checkpoint
	}
	lock, _ := cfg.Chain.Lock()
	rb, err := newRollbackState(cfg.Chain)
	if err != nil {
		return nil, err
	}
	ws, bad := openWarrantStore(cfg.WarrantDir)
	for _, err := range bad {
		log.Warn("warrant not loaded", "err", err)
	}
	var n *Node
	eng, err := engine.NewEngine(engine.CoreConfig{
		Admit: func(p []protocol.Party) error { return n.admit(p) },
		Key:   cfg.Key, Head: cfg.Chain.Head(), Lock: lock, Checkpoints: cps,
		SignCheck:  func(a *protocol.Agreement) error { return n.signCheck(a) },
		HeadCheck:  cfg.HeadCheck,
		Checkpoint: checkpoint, EndedRetentionMillis: keep.Milliseconds(),
		ResolveInitialMillis: cfg.ResolveInitial.Milliseconds(), ResolveMaxMillis: cfg.ResolveMax.Milliseconds(),
	})
	if err != nil {
		return nil, err
	}
	hc := cfg.Host
	hc.Key = cfg.Key
	if hc.Logger == nil {
		hc.Logger = log
	}
	h, err := transport.New(ctx, hc)
	if err != nil {
		return nil, err
	}
	nctx, cancel := context.WithCancel(context.Background())
	hk := hooks.From(ctx)
	if hk == nil {
		hk = &hooks.Hooks{}
	}
	n = &Node{
		cfg: cfg, hooks: hk, host: h, chain: cfg.Chain, log: log, eng: eng, rb: rb, warrants: ws,
		waiters: map[string][]chan *Outcome{}, timers: map[string]*time.Timer{},
		queues: map[sign.AgentID]chan queuedFrame{}, ctx: nctx, cancel: cancel,
	}
	hk.Inject = n.inject
	h.SetSessionHandler(n.onEnvelope)
	h.SetRecordsHandler(n.answerRecords)
	var stored [][]byte
	for _, w := range ws.list("") {
		stored = append(stored, w.Raw)
	}
	n.publishWarrants(stored...)
	n.step(engine.Input{Resume: true})
	return n, nil
}

// Host is the node's libp2p host (direct messages, discovery, peers).
func (n *Node) Host() *transport.Host { return n.host }

// Chain is the node's source chain.
func (n *Node) Chain() *chain.Chain { return n.chain }

// AgentID is this node's agent.
func (n *Node) AgentID() sign.AgentID { return n.cfg.Key.AgentID() }

// Close stops the node: timers, senders and the host. Open sessions resume
// from their checkpoints when a node starts again on the same chain.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.stopped == nil {
		n.stopped = ErrNodeStopped
	}
	for _, t := range n.timers {
		t.Stop()
	}
	n.mu.Unlock()
	n.cancel()
	err := n.host.Close()
	n.wg.Wait()
	return err
}

func (n *Node) now() int64 { return time.Now().UnixMilli() }

// step feeds the engine one input and carries out its output: durable
// writes first, then sends, timers and events.
func (n *Node) step(in engine.Input) error {
	n.mu.Lock()
	if n.stopped != nil {
		n.mu.Unlock()
		return n.stopped
	}
	in.Now = n.now()
	session := in.Session()
	n.trace(hooks.TraceStep, session, "")
	out := n.eng.Step(in)
	n.trace(hooks.TraceStepped, session, "")
	// Seal a step's messages, trace "queued", then hand them to the
	// senders: a sender may write a frame the moment it has it, so the
	// trace point must come first for "queued" to precede "sent".
	var first []sealedFrame
	for _, o := range out.SendFirst {
		first = n.seal(first, o, in.Now)
	}
	if len(out.SendFirst) > 0 {
		n.trace(hooks.TraceQueued, session, "")
	}
	n.handOff(first)
	for i, w := range out.Persist {
		if w.Append != nil && n.crash(hooks.CrashAfterCert, w.Session, true) {
			n.mu.Unlock()
			return n.stopped
		}
		n.trace(hooks.TraceWrite, w.Session, "")
		if err := n.chain.Apply(w); err != nil {
			if errors.Is(err, chain.ErrNotWritten) {
				// Nothing of it reached the disk (full): the sessions of
				// this write and the ones after it go back to their
				// durable state, nothing of the step leaves, and the node
				// carries on.
				return n.refusedWrite(in.Now, out.Persist[i:], err)
			}
			// The engine's memory is ahead of the disk: stop, never send.
			n.stopped = fmt.Errorf("%w: durable write failed: %v (restart the node to resume from the last checkpoint)", ErrNodeStopped, err)
			n.writeFail = &WriteFailure{At: time.Now(), Session: w.Session, Err: err.Error(), Stopped: true}
			n.log.Error("durable write failed; node stops: restart it to resume from the last checkpoint", "session", w.Session, "err", err)
			n.mu.Unlock()
			return n.stopped
		}
		n.writeFail = nil
		if w.Append != nil && w.Append.Kind == engine.KindAgreement {
			n.rb.note(n.AgentID(), w.Append.Payload)
		}
		n.trace(hooks.TraceWritten, w.Session, "")
		if (w.AcquireLock != nil && n.crash(hooks.CrashAfterVote, w.Session, true)) || (w.Append != nil && n.crash(hooks.CrashAfterAppend, w.Session, true)) {
			n.mu.Unlock()
			return n.stopped
		}
	}
	accepted := in.Message != nil && in.Message.Type == protocol.TypeAccept && out.Err == nil
	var sends []sealedFrame
	for _, o := range out.Send {
		sends = n.seal(sends, o, in.Now)
		if _, ok := o.Body.(*protocol.Accept); ok {
			accepted = true
		}
	}
	if len(out.Send) > 0 {
		n.trace(hooks.TraceQueued, session, "")
	}
	n.handOff(sends)
	for _, t := range out.Timers {
		n.armTimer(t, in.Now)
	}
	if accepted && n.hooks.Crash != nil && n.crash(hooks.CrashAfterAccept, in.Session(), true) {
		n.mu.Unlock()
		return n.stopped
	}
	var finals []*Outcome
	for _, ev := range out.Events {
		if ev.Outcome != nil {
			finals = append(finals, ev.Outcome)
		}
	}
	for _, o := range finals {
		for _, ch := range n.waiters[o.Session] {
			ch <- o
		}
		delete(n.waiters, o.Session)
		if t := n.timers[o.Session+"/"+string(engine.TimerDeadline)]; t != nil {
			t.Stop()
			delete(n.timers, o.Session+"/"+string(engine.TimerDeadline))
		}
	}
	n.mu.Unlock()
	for _, ev := range out.Events {
		if ev.Kind == EvProposal && n.crash(hooks.CrashNegotiating, ev.Session, false) {
			return ErrNodeStopped
		}
		n.log.Debug("session event", "session", ev.Session, "kind", ev.Kind, "phase", ev.Phase, "round", ev.Round, "reason", ev.Reason)
		if ev.Kind == EvViolation {
			n.log.Warn("protocol violation by a peer", "session", ev.Session, "from", ev.From, "what", ev.Reason)
			if len(ev.Warrant) > 0 {
				n.takeWarrant(ev.Warrant)
			}
		}
		if n.cfg.OnEvent != nil {
			n.cfg.OnEvent(ev)
		}
		if (ev.Kind == EvProposal || ev.Kind == EvCounter) && n.cfg.Policy != nil {
			n.applyPolicy(ev)
		}
	}
	return out.Err
}

// WriteFailure is a durable write the node could not make.
type WriteFailure struct {
	At      time.Time `json:"at"`
	Session string    `json:"session,omitempty"`
	// Err is the chain's error; for a full disk it says which directory to
	// free space in.
	Err string `json:"error"`
	// Stopped: the node stopped (whether the write reached the disk is
	// unknown; a restart replays the journal). Otherwise the write was
	// refused before any of it reached the disk, its sessions went back to
	// their durable state, and the node carries on once there is room.
	Stopped bool `json:"stopped"`
}

// WriteFailure reports the last durable write that failed, or nil when
// the last one succeeded (or none failed).
func (n *Node) WriteFailure() *WriteFailure {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.writeFail == nil {
		return nil
	}
	f := *n.writeFail
	return &f
}

// ErrWriteRefused: a session could not go on because this agent's chain
// refused a durable write (the disk is full); the error says where to free
// space. The node carries on once there is room.
var ErrWriteRefused = errors.New("negotiate: durable write refused")

// refusedWrite handles writes the chain refused before any of them reached
// the disk (chain.ErrNotWritten): their sessions go back to their durable
// state (Engine.Rewind), as a crash and restart would put them, and
// nothing of the step is sent, armed or reported. A session left with no
// durable state ends for its waiters as aborted, with the reason; it never
// signed, and a peer that asks about it gets a durable refusal once there
// is room. The caller holds n.mu; refusedWrite releases it.
func (n *Node) refusedWrite(now int64, failed []chain.Write, err error) error {
	var ids []string
	seen := map[string]bool{}
	for _, w := range failed {
		if w.Session != "" && !seen[w.Session] {
			seen[w.Session] = true
			ids = append(ids, w.Session)
		}
	}
	session := ""
	if len(ids) > 0 {
		session = ids[0]
	}
	n.writeFail = &WriteFailure{At: time.Now(), Session: session, Err: err.Error()}
	lock, _ := n.chain.Lock()
	out, rerr := n.eng.Rewind(now, n.chain.Head(), lock, ids, n.chain.Checkpoint)
	if rerr != nil {
		n.stopped = fmt.Errorf("%w: durable write refused (%v) and the sessions could not go back to their durable state: %v (restart the node)", ErrNodeStopped, err, rerr)
		n.writeFail.Stopped = true
		n.log.Error("durable write refused and rewind failed; node stops", "session", session, "err", err, "rewind", rerr)
		n.mu.Unlock()
		return n.stopped
	}
	n.log.Error("durable write refused, nothing of it written; its sessions went back to their last durable state and the node carries on once there is room", "sessions", ids, "err", err)
	for _, t := range out.Timers {
		n.armTimer(t, now)
	}
	reason := fmt.Sprintf("this agent's chain refused a durable write: %v", err)
	var ended []*Outcome
	for _, id := range ids {
		if _, err := n.eng.Session(id); err == nil {
			continue // back on its checkpoint: it goes on
		}
		o := &Outcome{State: StateAborted, Session: id, Reason: reason}
		for _, ch := range n.waiters[id] {
			ch <- o
		}
		delete(n.waiters, id)
		if t := n.timers[id+"/"+string(engine.TimerDeadline)]; t != nil {
			t.Stop()
			delete(n.timers, id+"/"+string(engine.TimerDeadline))
		}
		ended = append(ended, o)
	}
	n.mu.Unlock()
	if n.cfg.OnEvent != nil {
		for _, o := range ended {
			n.cfg.OnEvent(Event{Kind: EvAborted, Session: o.Session, Reason: o.Reason, Outcome: o})
		}
	}
	return fmt.Errorf("%w: %w", ErrWriteRefused, err)
}

func (n *Node) applyPolicy(ev Event) {
	n.mu.Lock()
	info, err := n.eng.Session(ev.Session)
	n.mu.Unlock()
	if err != nil {
		return
	}
	p, err := proposalFromEvent(ev, info)
	if err != nil {
		n.log.Warn("policy: cannot decode terms", "session", ev.Session, "err", err)
		return
	}
	d, ok := n.cfg.Policy.Decide(p)
	if !ok {
		return
	}
	d.Session = ev.Session
	if p.Offer {
		d = engine.ForOffer(d)
	}
	if err := n.step(engine.Input{Decision: &d}); err != nil {
		n.log.Warn("policy decision refused", "session", ev.Session, "action", d.Action, "err", err)
	}
}

func proposalFromEvent(ev Event, info SessionInfo) (Proposal, error) {
	var m map[string]any
	if err := protocol.Unmarshal(ev.Terms, &m); err != nil {
		return Proposal{}, err
	}
	return Proposal{
		Session: ev.Session, Kind: ev.Kind, Role: info.Role, From: ev.From, Initiator: info.Initiator,
		Parties: info.Parties, Round: ev.Round, MaxRounds: info.MaxRounds, Terms: m, RawTerms: ev.Terms,
		Offer: info.Offer,
	}, nil
}

// armTimer schedules a timer; a newer timer of the same kind replaces it.
func (n *Node) armTimer(t engine.Timer, now int64) {
	key := t.Session + "/" + string(t.Kind)
	if old := n.timers[key]; old != nil {
		old.Stop()
	}
	d := time.Duration(t.At-now) * time.Millisecond
	if d < 0 {
		d = 0
	}
	tt := t
	n.timers[key] = time.AfterFunc(d, func() {
		n.mu.Lock()
		if n.timers[key] != nil && n.stopped == nil {
			delete(n.timers, key)
		}
		n.mu.Unlock()
		_ = n.step(engine.Input{Timer: &tt})
	})
}

// seal seals o (through the Outbound hook, if any) and appends the
// frames to fs; the caller holds n.mu and hands them off with handOff.
func (n *Node) seal(fs []sealedFrame, o engine.Outgoing, now int64) []sealedFrame {
	if n.hooks.Outbound == nil {
		return n.sealOne(fs, o, now)
	}
	for _, oo := range n.hooks.Outbound(o) {
		fs = n.sealOne(fs, oo, now)
	}
	return fs
}

// inject is hooks.Hooks.Inject: it seals o (unless it carries a Frame)
// and queues it for its recipient, bypassing the Outbound hook. It fails
// with ErrNodeStopped after the node stopped.
func (n *Node) inject(o engine.Outgoing) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped != nil {
		return n.stopped
	}
	n.handOff(n.sealOne(nil, o, n.now()))
	return nil
}

// sealedFrame is a frame sealed for one recipient, not yet queued.
type sealedFrame struct {
	to sign.AgentID
	qf queuedFrame
}

// sealOne seals one message (unless it carries a Frame) and appends it to
// fs; a message that cannot be sealed is logged and dropped.
func (n *Node) sealOne(fs []sealedFrame, o engine.Outgoing, now int64) []sealedFrame {
	frame := o.Frame
	if frame == nil {
		body, err := protocol.EncodeBody(o.Body)
		if err == nil {
			frame, err = protocol.Seal(n.cfg.Key, protocol.Message{
				Type: o.Type, Session: o.Session, To: o.To, Nonce: protocol.NewNonce(),
				Expires: now + messageLifetime.Milliseconds(), Body: body, Chain: n.chainNote(o.To),
				Intro: n.introFor(o),
			})
		}
		if err != nil {
			n.log.Error("seal message", "type", o.Type, "err", err)
			return fs
		}
	}
	return append(fs, sealedFrame{to: o.To, qf: queuedFrame{frame: frame, session: o.Session, typ: o.Type}})
}

// introFor returns the agent records a message carries (Message.Intro):
// a proposal or a signed offer, the first message of a session a
// participant gets, carries the records of every party and the witness,
// so that no participant looks up the initiator or the others in the DHT
// before it answers or sends them its Ready. Other messages carry none.
func (n *Node) introFor(o engine.Outgoing) [][]byte {
	var parties []protocol.Party
	var witness *protocol.Party
	switch b := o.Body.(type) {
	case *protocol.Propose:
		parties, witness = b.Parties, b.Witness
	case *protocol.Offer:
		parties, witness = b.Preflight.Agreement.Parties, b.Preflight.Agreement.Witness
	default:
		return nil
	}
	ids := make([]sign.AgentID, 0, len(parties)+1)
	for _, p := range parties {
		if p.ID != o.To {
			ids = append(ids, p.ID)
		}
	}
	if witness != nil {
		ids = append(ids, witness.ID)
	}
	return n.host.IntroRecords(ids)
}

// handOff hands sealed frames to their peers' sender goroutines, in
// order; the caller holds n.mu.
func (n *Node) handOff(fs []sealedFrame) {
	for _, f := range fs {
		q := n.queues[f.to]
		if q == nil {
			q = make(chan queuedFrame, sendQueueLen)
			n.queues[f.to] = q
			n.wg.Add(1)
			go n.sender(f.to, q)
		}
		select {
		case q <- f.qf:
		default:
			n.log.Warn("send queue full; frame dropped", "to", f.to.Short(), "type", f.qf.typ)
		}
	}
}

// queuedFrame is a sealed frame waiting for its peer's sender, with the
// session and type it carries (for tracing).
type queuedFrame struct {
	frame        []byte
	session, typ string
}

// sender delivers frames to one peer in order.
func (n *Node) sender(to sign.AgentID, q chan queuedFrame) {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case qf := <-q:
			frame := qf.frame
			ctx, cancel := context.WithTimeout(n.ctx, sendTimeout)
			err := n.host.Send(ctx, to, frame)
			cancel()
			if err == nil {
				n.trace(hooks.TraceSent, qf.session, qf.typ)
			}
			if err == nil && n.hooks.Crash != nil {
				// A signed offer carries the initiator's Ready: its
				// signature left with the offer frame.
				if env, oerr := protocol.OpenCertificate(frame); oerr == nil && (env.Msg.Type == protocol.TypeReady || env.Msg.Type == protocol.TypeOffer) {
					n.crash(hooks.CrashAfterReadySent, env.Msg.Session, false)
				}
			}
			if err != nil && n.ctx.Err() == nil {
				n.log.Debug("send failed", "to", to.Short(), "err", err)
				n.reportUnreachable(to, frame, err)
			}
		}
	}
}

func (n *Node) reportUnreachable(to sign.AgentID, frame []byte, err error) {
	env, oerr := protocol.OpenCertificate(frame)
	if oerr != nil || env.Msg.Session == "" {
		return
	}
	_ = n.step(engine.Input{Unreachable: &engine.Unreachable{Session: env.Msg.Session, Agent: to, Reason: err.Error()}})
}

func (n *Node) onEnvelope(env *protocol.Envelope) {
	if env.Msg.Session == "" {
		return
	}
	if n.hooks.Inbound != nil && !n.hooks.Inbound(env.Msg.From, env.Msg.Type) {
		return
	}
	n.trace(hooks.TraceReceived, env.Msg.Session, env.Msg.Type)
	n.checkNote(env.Msg.From, env.Msg.Chain)
	if env.Msg.Type == protocol.TypeQuery && !n.knows(env.Msg.Session) && n.behind() != nil {
		// The session may be one of the records this chain lost: a
		// refusal of it now would contradict the record its peers hold.
		// The asker asks again; after recover it is answered.
		n.log.Warn("chain behind: a query about a session this chain does not know waits until the chain recovered", "from", env.Msg.From.Short(), "session", env.Msg.Session)
		return
	}
	err := n.step(engine.Input{Message: &engine.Received{
		From: env.Msg.From, Type: env.Msg.Type, Session: env.Msg.Session, Body: env.Body, Raw: env.Raw,
	}})
	if err != nil && !errors.Is(err, ErrNodeStopped) {
		n.refused.add(err)
		n.log.Debug("session message refused", "from", env.Msg.From.Short(), "type", env.Msg.Type, "err", err)
	}
}

// ProposeOptions tunes a proposal. Zero values get the defaults.
type ProposeOptions struct {
	// Timeout is the session deadline from now (default 60 s): negotiation
	// and signing must complete by then, or the session aborts (a signed
	// party then waits for a certificate, never for a timer).
	Timeout time.Duration
	// MaxRounds caps negotiation rounds (default DefaultMaxRounds).
	MaxRounds uint32
	// Witness, if set, names a witness agent that decides commit or abort
	// first-come, so the session ends while the witness is reachable.
	Witness sign.AgentID
	// Offer makes the proposal a signed offer: this agent signs the terms
	// at once (its chain stays locked until every participant answered),
	// a participant accepts by signing or rejects, and a 2-party session
	// commits in one round trip (two frames). No counter, no witness.
	Offer bool
}

// Pending is a session this node proposed or takes part in.
type Pending struct {
	n  *Node
	id string
}

// ID is the session ID.
func (p *Pending) ID() string { return p.id }

// Wait blocks until the session ends or ctx is done, and returns its
// outcome. The outcome's Err() maps it to ErrRejected / ErrAborted.
func (p *Pending) Wait(ctx context.Context) (*Outcome, error) { return p.n.Wait(ctx, p.id) }

// Propose resolves the parties by agent ID (in parallel), then starts a
// session as initiator and returns at once; Pending.Wait waits for the
// outcome. terms is a Go map or struct, encoded as EncodeTerms says (a
// cbor.RawMessage is sent as it is).
func (n *Node) Propose(ctx context.Context, with []sign.AgentID, terms any, opts ProposeOptions) (*Pending, error) {
	if len(with) == 0 {
		return nil, errors.New("negotiate: propose: name at least one other agent")
	}
	if err := n.behind(); err != nil {
		return nil, err
	}
	raw, err := EncodeTerms(terms)
	if err != nil {
		return nil, fmt.Errorf("negotiate: propose: %w", err)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultProposeTimeout
	}
	start := time.Now()
	parties := make([]protocol.Party, len(with)+1)
	parties[0] = protocol.Party{ID: n.AgentID(), Scheme: n.cfg.Key.Scheme().Name(), Key: n.cfg.Key.Public().Bytes()}
	rctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	errs := make([]error, len(with))
	var wg sync.WaitGroup
	for i, id := range with {
		if id == n.AgentID() {
			return nil, errors.New("negotiate: propose: this agent is the initiator; list only the others")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := n.host.Resolve(rctx, id)
			if err != nil {
				errs[i] = fmt.Errorf("%w: agent %s: %v", transport.ErrUnreachable, id, err)
				return
			}
			parties[i+1] = protocol.Party{ID: info.AgentID, Scheme: info.Scheme, Key: info.PublicKey}
		}()
	}
	var witness *protocol.Party
	var werr error
	if opts.Witness != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			info, err := n.host.Resolve(rctx, opts.Witness)
			if err != nil {
				werr = fmt.Errorf("%w: witness %s: %v", transport.ErrUnreachable, opts.Witness, err)
				return
			}
			witness = &protocol.Party{ID: info.AgentID, Scheme: info.Scheme, Key: info.PublicKey}
		}()
	}
	// Warrants against the parties are looked up alongside, briefly: the
	// DHT is advisory (a lookup that fails finds nothing), local warrants
	// are always checked.
	var warranted error
	wctx, wcancel := context.WithTimeout(rctx, min(warrantLookupTimeout, opts.Timeout/4))
	defer wcancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		warranted = n.checkWarranted(wctx, with)
	}()
	wg.Wait()
	if err := errors.Join(append(errs, werr)...); err != nil {
		return nil, err
	}
	if warranted != nil {
		return nil, warranted
	}
	if opts.Offer {
		// An offer is signed at once: learn first whether a counterparty
		// holds records this chain lost (once per counterparty).
		n.probeBehind(rctx, with)
		if err := n.behind(); err != nil {
			return nil, err
		}
	}
	id := protocol.NewSessionID()
	deadline := start.Add(opts.Timeout).UnixMilli()
	defer n.crash(hooks.CrashNegotiating, id, false)
	if err := n.step(engine.Input{Start: &engine.Start{Session: id, Parties: parties, Terms: raw, Deadline: deadline, MaxRounds: opts.MaxRounds, Witness: witness, Offer: opts.Offer}}); err != nil {
		return nil, err
	}
	return &Pending{n: n, id: id}, nil
}

// Wait blocks until session id ends or ctx is done.
func (n *Node) Wait(ctx context.Context, id string) (*Outcome, error) {
	n.mu.Lock()
	o, err := n.eng.Outcome(id)
	if err != nil || o != nil {
		n.mu.Unlock()
		return o, err
	}
	ch := make(chan *Outcome, 1)
	n.waiters[id] = append(n.waiters[id], ch)
	n.mu.Unlock()
	select {
	case o := <-ch:
		return o, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("negotiate: wait for session %s: %w", id, ctx.Err())
	}
}

// Decide gives the application's decision on a pending proposal or counter.
func (n *Node) Decide(d Decision) error { return n.step(engine.Input{Decision: &d}) }

// Accept accepts the pending round of a session.
func (n *Node) Accept(id string) error { return n.Decide(Decision{Session: id, Action: ActAccept}) }

// Reject rejects a session with a reason.
func (n *Node) Reject(id, reason string) error {
	return n.Decide(Decision{Session: id, Action: ActReject, Reason: reason})
}

// Counter answers with other terms.
// terms is a Go map or struct, encoded as EncodeTerms says.
func (n *Node) Counter(id string, terms any) error {
	raw, err := EncodeTerms(terms)
	if err != nil {
		return fmt.Errorf("negotiate: counter %s: %w", id, err)
	}
	return n.Decide(Decision{Session: id, Action: ActCounter, Terms: raw})
}

// Abort aborts a session where that is still safe (before this agent
// signed); afterwards it fails with ErrUnsafeAbort naming whom it waits for.
func (n *Node) Abort(id, reason string) error {
	return n.Decide(Decision{Session: id, Action: ActAbort, Reason: reason})
}

// Sessions lists open sessions, or all with all=true: those in memory
// and, read from their checkpoints, those that ended signed earlier than
// NodeConfig.EndedRetention.
func (n *Node) Sessions(all bool) []SessionInfo {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.eng.Sessions(all)
	if !all {
		return out
	}
	listed := make(map[string]bool, len(out))
	for _, in := range out {
		listed[in.ID] = true
	}
	err := n.chain.ForEachCheckpoint(func(id string, cp []byte) error {
		if listed[id] {
			return nil
		}
		info, tombstone, err := n.eng.CheckpointInfo(id, bytes.Clone(cp))
		if err != nil {
			n.log.Warn("list sessions: bad checkpoint", "session", id, "err", err)
		} else if !tombstone {
			out = append(out, info)
		}
		return nil
	})
	if err != nil {
		n.log.Warn("list sessions: read checkpoints", "err", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Session reports one session.
func (n *Node) Session(id string) (SessionInfo, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.eng.Session(id)
}

// Receipt returns the commit certificate of a committed session.
func (n *Node) Receipt(id string) ([]byte, chain.Hash, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.eng.Receipt(id)
}

// startupCheckpoints reads the checkpoints a starting node hands to its
// engine: open sessions and those that ended less than keep ago (all of
// them if keep < 0). The others stay on disk until something names them
// (engine.Engine.load), so a restart after a long run does not load every
// session ever made.
func startupCheckpoints(ch *chain.Chain, now int64, keep time.Duration) (map[string][]byte, error) {
	cps := map[string][]byte{}
	err := ch.ForEachCheckpoint(func(session string, cp []byte) error {
		if keep < 0 || !engine.CheckpointDroppable(cp, now, keep.Milliseconds()) {
			cps[session] = append([]byte(nil), cp...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("negotiate: read checkpoints: %w", err)
	}
	return cps, nil
}

// endedRetention is EndedRetention with its default.
func (cfg *NodeConfig) endedRetention() time.Duration {
	if cfg.EndedRetention == 0 {
		return DefaultEndedRetention
	}
	return cfg.EndedRetention
}

// trace reports a moment to the Trace hook, if set.
func (n *Node) trace(p hooks.TracePoint, session, typ string) {
	if n.hooks.Trace != nil && session != "" {
		n.hooks.Trace(hooks.TraceEvent{At: time.Now(), Session: session, Point: p, Type: typ})
	}
}
