package engine

import (
	"errors"
	"fmt"
	"sort"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Sentinel errors callers branch on.
var (
	// ErrRejected: a party rejected the terms, or the round cap was reached.
	ErrRejected = errors.New("negotiate: rejected")
	// ErrAborted: the session aborted (a refusal, busy chain, expiry, abort).
	ErrAborted = errors.New("negotiate: aborted")
	// ErrBusy: a party's chain is locked by another session.
	ErrBusy = errors.New("negotiate: busy")
	// ErrUnsafeAbort: the session cannot be aborted locally any more because
	// this party has sent its signature; only a certificate can end it.
	ErrUnsafeAbort = errors.New("negotiate: abort is no longer safe")
	// ErrUnknownSession: no session with that ID.
	ErrUnknownSession = errors.New("negotiate: unknown session")
	// ErrNotYourTurn: a decision that does not fit the session's state.
	ErrNotYourTurn = errors.New("negotiate: no decision pending")
	// ErrWarranted: a party of the session has a valid warrant against it
	// (it equivocated), and this agent takes no new session with it.
	ErrWarranted = errors.New("negotiate: agent has a warrant for equivocation")
)

// Engine is the pure countersigning state machine of one agent. It has no
// clock, network or disk: the caller feeds it inputs through Step and
// carries out the returned Output; the one thing it reads is a dropped
// session's checkpoint, through CoreConfig.Checkpoint when given one. It is
// not safe for concurrent use.
type Engine struct {
	key      *sign.PrivateKey
	self     protocol.Party
	head     chain.Head
	lock     *chain.Lock
	sessions map[string]*session
	cfg      CoreConfig
	// lastEvict is when ended sessions were last dropped (CoreConfig.Checkpoint).
	lastEvict int64
	// heads are the chain heads other agents were seen signing at (in
	// memory, bounded): a second statement at one seq with another hash
	// is a forked chain, across sessions too (warrant.go).
	heads map[sign.AgentID]*signedHeads
}

// CoreConfig configures an Engine. Zero values get the documented defaults.
type CoreConfig struct {
	// Key is the agent key (required).
	Key *sign.PrivateKey
	// Head is the chain's current head; Lock the chain's current lock (nil if none).
	Head chain.Head
	Lock *chain.Lock
	// Checkpoints are the durable session checkpoints to resume (from chain.Checkpoints).
	Checkpoints map[string][]byte
	// Checkpoint, when set, reads one session's durable checkpoint (as
	// chain.Chain.Checkpoint does). The engine then drops ended sessions
	// from memory once EndedRetentionMillis passed since they ended and
	// their deadline passed, and reads one back before any input or view
	// that names it, so memory stays bounded and nothing that was signed
	// is forgotten (retention.go). Nil keeps every session in memory.
	Checkpoint func(session string) ([]byte, bool, error)
	// EndedRetentionMillis is how long an ended session stays in memory
	// when Checkpoint is set (0: drop it as soon as its deadline passed).
	EndedRetentionMillis int64
	// SignCheck, when set, is asked before this agent signs an agreement;
	// an error makes it refuse. It must be deterministic.
	SignCheck func(a *protocol.Agreement) error
	// HeadCheck, when set, is asked right before this agent signs (after
	// SignCheck) with the agreement and the chain heads at which the other
	// parties already signed it, from their verified statements, keyed by
	// agent ID; an error makes it refuse. With HeadCheck set a participant
	// signs only once it holds the initiator's statement (the initiator
	// always signs first, so this cannot deadlock), so a participant always
	// sees the initiator's head: an application compares it with the chain
	// the initiator presented, so that nothing was left out. The initiator
	// signs first and is not asked. It must be deterministic.
	HeadCheck func(a *protocol.Agreement, heads map[sign.AgentID]chain.Head) error
	// Admit, when set, is asked before this agent takes a new session
	// another agent proposed or offered (with every party of it): an error
	// refuses it (a proposal is answered with a reject naming the error; an
	// offer is dropped, and the initiator's query later gets a durable
	// refusal). The node uses it to refuse agents with a warrant. It must
	// not block: it runs inside Step.
	Admit func(parties []protocol.Party) error
	// ResolveInitialMillis is the first delay before a signed party asks the
	// others how the session ended (default 2000). It doubles up to
	// ResolveMaxMillis (default 30000).
	ResolveInitialMillis int64
	ResolveMaxMillis     int64
}

// NewEngine builds an engine and resumes the sessions of its checkpoints.
func NewEngine(cfg CoreConfig) (*Engine, error) {
	if cfg.Key == nil {
		return nil, errors.New("negotiate: engine needs an agent key")
	}
	if cfg.ResolveInitialMillis <= 0 {
		cfg.ResolveInitialMillis = 2000
	}
	if cfg.ResolveMaxMillis <= 0 {
		cfg.ResolveMaxMillis = 30000
	}
	pub := cfg.Key.Public()
	e := &Engine{
		key:      cfg.Key,
		self:     protocol.Party{ID: pub.AgentID(), Scheme: pub.SchemeName(), Key: pub.Bytes()},
		head:     cfg.Head,
		lock:     cfg.Lock,
		sessions: make(map[string]*session),
		cfg:      cfg,
	}
	ids := make([]string, 0, len(cfg.Checkpoints))
	for id := range cfg.Checkpoints {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		s, err := restoreSession(e, id, cfg.Checkpoints[id])
		if err != nil {
			return nil, fmt.Errorf("negotiate: resume session %s: %w", id, err)
		}
		e.sessions[id] = s
	}
	if e.lock != nil {
		if s := e.sessions[e.lock.Session]; s == nil || s.vote != voteSigned || s.final != "" {
			return nil, fmt.Errorf("negotiate: chain is locked by session %s but its checkpoint does not hold a signed, open vote", e.lock.Session)
		}
	}
	return e, nil
}

// Self returns this agent as a party.
func (e *Engine) Self() protocol.Party { return e.self }

// Head is the chain head as the engine knows it.
func (e *Engine) Head() chain.Head { return e.head }

// Lock is the chain lock as the engine knows it (nil when free).
func (e *Engine) Lock() *chain.Lock { return e.lock }

// Input is one thing that happened. Exactly one of the pointer fields is set.
// Now is the current time in unix milliseconds (virtual in the simulator).
type Input struct {
	Now      int64
	Start    *Start
	Message  *Received
	Timer    *Timer
	Decision *Decision
	// Unreachable reports a failed delivery.
	Unreachable *Unreachable
	// Resume asks the engine for the outputs that restart resumed sessions
	// (timers, queries); feed it once after NewEngine.
	Resume bool
	// Recover is a record this agent signed and its chain lost (see
	// recover.go).
	Recover *Recover
}

// Start begins a session as initiator.
type Start struct {
	Session   string // 32 lower-hex chars, random, chosen by the caller
	Parties   []protocol.Party
	Terms     cbor.RawMessage
	Deadline  int64 // unix ms
	MaxRounds uint32
	Witness   *protocol.Party
	// Offer makes it a signed offer: the initiator signs the terms at once
	// (one round, no counter, no witness) and a participant's accept is its
	// signature; see offer.go.
	Offer bool
}

// Received is a verified message from a peer.
type Received struct {
	From    sign.AgentID
	Type    string
	Session string
	Body    any    // the decoded body (*protocol.Propose, ...)
	Raw     []byte // the exact signed frame, kept as a certificate where it is one
}

// Timer identifies a timer the engine asked for.
type Timer struct {
	Session string
	Kind    TimerKind
	At      int64 // unix ms
	Gen     uint64
}

// TimerKind names what a timer is for.
type TimerKind string

// Timer kinds.
const (
	TimerDeadline TimerKind = "deadline" // the session's negotiation/signing window ends
	TimerResolve  TimerKind = "resolve"  // a signed party asks the others again
	TimerResend   TimerKind = "resend"   // the initiator re-sends a round to silent participants
)

// Action is an application decision.
type Action string

// Actions an application may take.
const (
	ActAccept  Action = "accept"  // participant: accept the current round's terms
	ActReject  Action = "reject"  // either role: end the negotiation
	ActCounter Action = "counter" // participant: counter with Terms; initiator: propose Terms as the next round
	ActAbort   Action = "abort"   // either role: abort while it is still safe
)

// Decision is the application's answer to a pending proposal or counter.
type Decision struct {
	Session string
	Action  Action
	Terms   cbor.RawMessage // for ActCounter
	Reason  string          // for ActReject / ActAbort
}

// Output is what the caller must do after a Step, in this order:
//  0. SendFirst may leave at once: these messages depend on nothing in
//     Persist (the initiator's preflight, which carries no signature), so
//     the parties' lock writes overlap instead of following each other.
//  1. Persist, if set, must be durable (one chain transaction) before any
//     message of Send leaves. If it fails, the caller must not send and must
//     stop the engine (a restart resumes from the last durable checkpoint).
//  2. Send the messages (each is independent; order per peer preserved).
//  3. Arm the timers; report the events.
type Output struct {
	SendFirst []Outgoing
	Persist   []chain.Write
	Send      []Outgoing
	Timers    []Timer
	Events    []Event
	// Err is a refusal of the input (bad message, decision out of turn). The
	// engine's state did not change.
	Err error
}

// Outgoing is a message to one peer. Either Frame (already sealed, e.g. a
// certificate) or Type+Body (the caller seals it with the agent key).
type Outgoing struct {
	To      sign.AgentID
	Type    string
	Session string
	Body    any
	Frame   []byte
	Expires int64 // unix ms; the session deadline where it applies
}

// EventKind names an event.
type EventKind string

// Events reported to the application and the CLI.
const (
	EvProposal  EventKind = "proposal"  // participant: a round waits for a decision
	EvCounter   EventKind = "counter"   // initiator: a participant countered; decide
	EvPhase     EventKind = "phase"     // the session moved to another phase
	EvCommitted EventKind = "committed" // final: the record is on this chain
	EvRejected  EventKind = "rejected"  // final: negotiation rejected
	EvAborted   EventKind = "aborted"   // final: aborted (refusal, busy, expiry)
	EvViolation EventKind = "violation" // a peer broke the protocol (equivocation, forged certificate)
)

// Event is something the application may want to know.
type Event struct {
	Kind    EventKind
	Session string
	Phase   Phase
	Round   uint32
	From    sign.AgentID
	Terms   cbor.RawMessage
	Reason  string
	Outcome *Outcome
	// Warrant, on an EvViolation that is an equivocation this agent holds
	// proof of, is the encoded protocol.Warrant: two things the peer From
	// signed that an honest agent never signs together. The driver stores
	// it and publishes it; the engine keeps nothing of it.
	Warrant []byte
}

// Outcome is how a session ended.
type Outcome struct {
	State      State // committed, rejected, aborted
	Session    string
	Round      uint32
	RecordHash chain.Hash
	Reason     string
	Busy       bool
	// Receipt is the CBOR of the countersigned record (the commit certificate).
	Receipt []byte
	// AbortCertificate is the signed frame that proves the abort, if any.
	AbortCertificate []byte
}

// Err maps an outcome to nil (committed) or a sentinel error.
func (o *Outcome) Err() error {
	switch o.State {
	case StateCommitted:
		return nil
	case StateRejected:
		return fmt.Errorf("%w: %s", ErrRejected, o.Reason)
	default:
		if o.Busy {
			return fmt.Errorf("%w: %w: %s", ErrAborted, ErrBusy, o.Reason)
		}
		return fmt.Errorf("%w: %s", ErrAborted, o.Reason)
	}
}

// State is a session's final state.
type State string

// Final states.
const (
	StateCommitted State = "committed"
	StateRejected  State = "rejected"
	StateAborted   State = "aborted"
)

// Phase is where a session is.
type Phase string

// Phases.
const (
	PhaseNegotiating Phase = "negotiating" // rounds of propose / counter / accept
	PhaseSigning     Phase = "signing"     // locked and signed; collecting signatures
	PhaseDone        Phase = "done"        // final
)

// Step feeds one input to the engine and returns what to do.
func (e *Engine) Step(in Input) Output {
	var out Output
	e.evictDue(in.Now) // first: it must not drop what load brings back next
	if err := e.load(in.Session()); err != nil {
		out.Err = err
		return out
	}
	switch {
	case in.Start != nil:
		out.Err = e.start(in.Now, in.Start, &out)
	case in.Message != nil:
		out.Err = e.receive(in.Now, in.Message, &out)
	case in.Timer != nil:
		e.timer(in.Now, in.Timer, &out)
	case in.Decision != nil:
		out.Err = e.decide(in.Now, in.Decision, &out)
	case in.Unreachable != nil:
		e.unreachable(in.Now, in.Unreachable, &out)
	case in.Resume:
		e.resume(in.Now, &out)
	case in.Recover != nil:
		out.Err = e.recoverRecord(in.Now, in.Recover, &out)
	}
	if out.Err != nil && len(out.Persist) == 0 && len(out.Send) == 0 {
		// A refused input changes nothing; only its violation reports
		// (proof of a misbehaving peer) stand.
		out.Timers, out.Events = nil, violationsOnly(out.Events)
	}
	return out
}

// violationsOnly keeps the EvViolation events of evs.
func violationsOnly(evs []Event) []Event {
	var keep []Event
	for _, ev := range evs {
		if ev.Kind == EvViolation {
			keep = append(keep, ev)
		}
	}
	return keep
}
