package engine

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// SessionInfo is what `negotiate sessions` and `negotiate show` report.
type SessionInfo struct {
	ID         string                         `json:"session"`
	Role       Role                           `json:"role"`
	Phase      Phase                          `json:"phase"`
	State      State                          `json:"state,omitempty"` // final state, empty while open
	Round      uint32                         `json:"round"`
	MaxRounds  uint32                         `json:"max_rounds"`
	Parties    []sign.AgentID                 `json:"parties"`
	Initiator  sign.AgentID                   `json:"initiator"`
	Terms      cbor.RawMessage                `json:"-"`
	Deadline   int64                          `json:"deadline"`
	Started    int64                          `json:"started"`
	Since      int64                          `json:"since"` // when the current phase began
	Pending    bool                           `json:"decision_pending"`
	Offer      bool                           `json:"offer,omitempty"` // a signed offer: accept or reject, no counter
	Counter    cbor.RawMessage                `json:"-"`               // initiator: terms of a counter waiting for a decision
	CounterBy  sign.AgentID                   `json:"counter_by,omitempty"`
	Vote       string                         `json:"vote,omitempty"`
	WaitingOn  []sign.AgentID                 `json:"waiting_on"`
	Last       map[sign.AgentID]PartyActivity `json:"last_messages"`
	LockHolder string                         `json:"lock_holder,omitempty"` // session holding this agent's chain lock
	RecordHash string                         `json:"record_hash,omitempty"`
	Reason     string                         `json:"reason,omitempty"`
}

// Session reports one session.
func (e *Engine) Session(id string) (SessionInfo, error) {
	if err := e.load(id); err != nil {
		return SessionInfo{}, err
	}
	s := e.sessions[id]
	if s == nil {
		return SessionInfo{}, fmt.Errorf("%w %s", ErrUnknownSession, id)
	}
	return e.info(s), nil
}

// Sessions reports the open sessions, or all known ones with all=true
// (tombstones of never-known sessions are left out).
func (e *Engine) Sessions(all bool) []SessionInfo {
	var out []SessionInfo
	for _, id := range e.sortedIDs() {
		s := e.sessions[id]
		if s.tombstone || (!all && s.final != "") {
			continue
		}
		out = append(out, e.info(s))
	}
	return out
}

func (e *Engine) info(s *session) SessionInfo {
	in := SessionInfo{
		ID: s.id, Role: s.role, Phase: s.phase, State: s.final, Round: s.round, MaxRounds: s.maxRounds,
		Parties: partyIDs(s.parties), Terms: s.terms, Deadline: s.deadline, Started: s.startedAt,
		Since: s.since, Pending: s.pending || s.counter != nil, Vote: string(s.vote),
		WaitingOn: e.waitingOn(s), Last: make(map[sign.AgentID]PartyActivity, len(s.last)), Reason: s.reason,
		Offer: s.offer,
	}
	if len(s.parties) > 0 {
		in.Initiator = s.parties[0].ID
	}
	if s.counter != nil {
		in.Counter, in.CounterBy = s.counter.terms, s.counter.from
	}
	for k, v := range s.last {
		in.Last[k] = v
	}
	if e.lock != nil {
		in.LockHolder = e.lock.Session
	}
	if s.final == StateCommitted {
		in.RecordHash = s.recordHash.String()
	}
	return in
}

// Outcome returns the outcome of a finished session (nil while open).
func (e *Engine) Outcome(id string) (*Outcome, error) {
	if err := e.load(id); err != nil {
		return nil, err
	}
	s := e.sessions[id]
	if s == nil {
		return nil, fmt.Errorf("%w %s", ErrUnknownSession, id)
	}
	return s.outcome(), nil
}

// Receipt returns the commit certificate (record CBOR) of a committed session.
func (e *Engine) Receipt(id string) ([]byte, chain.Hash, error) {
	if err := e.load(id); err != nil {
		return nil, chain.Hash{}, err
	}
	s := e.sessions[id]
	if s == nil {
		return nil, chain.Hash{}, fmt.Errorf("%w %s", ErrUnknownSession, id)
	}
	if s.final != StateCommitted {
		return nil, chain.Hash{}, fmt.Errorf("negotiate: session %s has no receipt: it is %s", id, phaseOrFinal(s))
	}
	return s.receipt, s.recordHash, nil
}

// Unreachable tells the engine a message to agent could not be delivered.
// An initiator still negotiating aborts at once, naming the agent; nothing
// else changes (after signing only certificates end a session).
type Unreachable struct {
	Session string
	Agent   sign.AgentID
	Reason  string
}

func (e *Engine) unreachable(now int64, u *Unreachable, out *Output) {
	s := e.sessions[u.Session]
	if s == nil || s.final != "" || s.role != RoleInitiator || s.phase != PhaseNegotiating {
		return
	}
	e.abortAll(now, s, fmt.Sprintf("agent %s is unreachable: %s", u.Agent, u.Reason), out)
}
