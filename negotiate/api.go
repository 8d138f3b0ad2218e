package negotiate

import (
	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/negotiate/transport"
)

// The engine's vocabulary, as the embedder sees it. These are aliases:
// values pass between this package and package engine unchanged.

// Proposal is what a Policy decides on: a round proposed to this agent
// (Kind EvProposal, Role RoleParticipant) or a participant's counter to
// this agent's proposal (Kind EvCounter, Role RoleInitiator). Its
// DecodeTerms method decodes the terms into a Go value.
type Proposal = engine.Proposal

// Decision is the application's answer to a pending proposal or counter
// (Node.Decide, or a Policy's result). Terms, for ActCounter, come from
// EncodeTerms.
type Decision = engine.Decision

// Action is what a Decision does.
type Action = engine.Action

// Actions an application may take.
const (
	ActAccept  Action = engine.ActAccept  // participant: accept the current round's terms
	ActReject  Action = engine.ActReject  // either role: end the negotiation
	ActCounter Action = engine.ActCounter // participant: counter with Terms; initiator: propose Terms as the next round
	ActAbort   Action = engine.ActAbort   // either role: abort while it is still safe
)

// Event is something that happened in a session (NodeConfig.OnEvent).
type Event = engine.Event

// EventKind names an event.
type EventKind = engine.EventKind

// Events reported to the application.
const (
	EvProposal  EventKind = engine.EvProposal  // participant: a round waits for a decision
	EvCounter   EventKind = engine.EvCounter   // initiator: a participant countered; decide
	EvPhase     EventKind = engine.EvPhase     // the session moved to another phase
	EvCommitted EventKind = engine.EvCommitted // final: the record is on this chain
	EvRejected  EventKind = engine.EvRejected  // final: negotiation rejected
	EvAborted   EventKind = engine.EvAborted   // final: aborted (refusal, busy chain, expiry)
	EvViolation EventKind = engine.EvViolation // a peer broke the protocol (equivocation, forged certificate)
)

// Outcome is how a session ended: its State, and for a committed session
// the record hash and the receipt (the countersigned record, see
// VerifyReceipt). Its Err method maps it to nil, ErrRejected or ErrAborted.
type Outcome = engine.Outcome

// State is a session's final state.
type State = engine.State

// Final states.
const (
	StateCommitted State = engine.StateCommitted
	StateRejected  State = engine.StateRejected
	StateAborted   State = engine.StateAborted
)

// SessionInfo is a session as Node.Session and Node.Sessions report it:
// role, phase, round, parties, whom it waits on and since when, the
// chain's lock holder.
type SessionInfo = engine.SessionInfo

// Role is this agent's role in a session: engine.RoleInitiator,
// engine.RoleParticipant or engine.RoleWitness.
type Role = engine.Role

// Errors an application branches on (errors.Is).
var (
	// ErrRejected: a party rejected the terms, or the round cap was reached.
	ErrRejected = engine.ErrRejected
	// ErrAborted: the session aborted (a refusal, busy chain, expiry, abort).
	ErrAborted = engine.ErrAborted
	// ErrBusy: a party's chain is locked by another session.
	ErrBusy = engine.ErrBusy
	// ErrUnsafeAbort: this agent has sent its signature, so only a
	// certificate can end the session; Abort names whom it waits for.
	ErrUnsafeAbort = engine.ErrUnsafeAbort
	// ErrUnknownSession: no session with that ID.
	ErrUnknownSession = engine.ErrUnknownSession
	// ErrNotYourTurn: a decision that does not fit the session's state.
	ErrNotYourTurn = engine.ErrNotYourTurn
	// ErrWarranted: an agent of the session has a valid warrant against it
	// for equivocation (NodeConfig.AllowWarranted lifts the refusal).
	ErrWarranted = engine.ErrWarranted
	// ErrAgentNotFound: no valid record of the agent is in the DHT.
	ErrAgentNotFound = transport.ErrAgentNotFound
	// ErrUnreachable: the agent was found but did not answer.
	ErrUnreachable = transport.ErrUnreachable
	// ErrBadRecord: a receipt or chain entry is not a valid countersigned record.
	ErrBadRecord = engine.ErrBadRecord
)

// Phase is where an open session is.
type Phase = engine.Phase

// Phases.
const (
	PhaseNegotiating Phase = engine.PhaseNegotiating // rounds of propose / counter / accept
	PhaseSigning     Phase = engine.PhaseSigning     // locked and signed; collecting signatures
	PhaseDone        Phase = engine.PhaseDone        // final
)
