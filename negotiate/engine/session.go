package engine

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Engine limits. Each bounds what a peer can make this agent hold.
const (
	// MaxOpenSessions bounds sessions in negotiation, so proposals from
	// hostile peers cannot exhaust memory.
	MaxOpenSessions = 50000
	// maxTombstones bounds refusals recorded for sessions this agent never knew.
	maxTombstones = 100000
	// MaxOpenSessionsPerPeer bounds the open sessions one initiator can hold
	// with this agent, so one hostile peer cannot use up MaxOpenSessions.
	MaxOpenSessionsPerPeer = 1024
	// DefaultMaxRounds is the round cap when a proposal names none.
	DefaultMaxRounds = 8
)

// Role is this agent's role in a session.
type Role string

// Roles.
const (
	RoleInitiator   Role = "initiator"
	RoleParticipant Role = "participant"
	RoleWitness     Role = "witness"
)

type vote string

const (
	voteNone    vote = ""
	voteSigned  vote = "signed"
	voteRefused vote = "refused"
)

// PartyActivity is what was last heard from one party.
type PartyActivity struct {
	Type string // last message type
	At   int64  // unix ms
}

type session struct {
	id        string
	role      Role
	parties   []protocol.Party
	selfIdx   int
	deadline  int64
	maxRounds uint32
	witness   *protocol.Party
	startedAt int64
	since     int64 // when the current phase began
	phase     Phase

	// negotiation
	round     uint32
	terms     cbor.RawMessage
	termsHash chain.Hash
	pending   bool         // participant: a decision is pending for round
	offer     bool         // a signed offer: one round, the initiator signed first
	accepted  bool         // participant: accepted round's terms
	answers   map[int]any  // initiator: *protocol.Accept or *protocol.Counter per party index, this round
	counter   *counterWait // initiator: a counter waits for the app

	// signing
	agreement *protocol.Agreement
	ah        chain.Hash
	vote      vote
	head      chain.Head
	readys    map[int]*protocol.Ready
	early     []*Received // participant: readys/refusals that came before the preflight
	awaitInit bool        // participant with HeadCheck: preflight checked, waiting for the initiator's Ready to sign

	// final
	final      State
	reason     string
	busy       bool
	tombstone  bool                  // created by a query for a session this agent never knew
	refusals   map[chain.Hash][]byte // own signed refusals by agreement hash
	receipt    []byte
	recordHash chain.Hash
	abortCert  []byte

	// Signed frames kept in memory only, as evidence should the sender
	// equivocate (warrants): the current round's proposal, the preflight.
	proposeFrame, agreementFrame []byte

	gen          map[TimerKind]uint64
	resolveDelay int64
	resendDelay  int64
	lastAnswer   *Outgoing // participant: its answer to the current round, re-sent if asked again
	last         map[sign.AgentID]PartyActivity
}

type counterWait struct {
	from  sign.AgentID
	terms cbor.RawMessage
}

func (s *session) indexOf(id sign.AgentID) int {
	for i, p := range s.parties {
		if p.ID == id {
			return i
		}
	}
	return -1
}

func (s *session) initiator() sign.AgentID { return s.parties[0].ID }

func (e *Engine) newSession(id string, role Role, parties []protocol.Party, now int64) *session {
	s := &session{
		id: id, role: role, parties: parties, startedAt: now, since: now, phase: PhaseNegotiating,
		readys: make(map[int]*protocol.Ready), gen: make(map[TimerKind]uint64),
		last: make(map[sign.AgentID]PartyActivity),
	}
	s.selfIdx = s.indexOf(e.self.ID)
	return s
}

func (e *Engine) openSessionsFrom(id sign.AgentID) int {
	n := 0
	for _, s := range e.sessions {
		if s.final == "" && len(s.parties) > 0 && s.parties[0].ID == id {
			n++
		}
	}
	return n
}

func (e *Engine) openSessions() int {
	n := 0
	for _, s := range e.sessions {
		if s.final == "" {
			n++
		}
	}
	return n
}

// ---- timers ----

func (e *Engine) arm(s *session, kind TimerKind, at int64, out *Output) {
	s.gen[kind]++
	out.Timers = append(out.Timers, Timer{Session: s.id, Kind: kind, At: at, Gen: s.gen[kind]})
}

// ---- sending ----

func (e *Engine) send(out *Output, s *session, to sign.AgentID, typ string, body any) {
	out.Send = append(out.Send, Outgoing{To: to, Type: typ, Session: s.id, Body: body, Expires: s.deadline})
}

func (e *Engine) sendOthers(out *Output, s *session, typ string, body any) {
	for i, p := range s.parties {
		if i != s.selfIdx {
			e.send(out, s, p.ID, typ, body)
		}
	}
}

func (e *Engine) event(out *Output, s *session, kind EventKind, ev Event) {
	ev.Kind, ev.Session, ev.Phase, ev.Round = kind, s.id, s.phase, s.round
	out.Events = append(out.Events, ev)
}

// ---- start (initiator) ----

func (e *Engine) start(now int64, st *Start, out *Output) error {
	if !validSessionID(st.Session) {
		return fmt.Errorf("negotiate: session ID %q must be 32 lower-case hex characters", st.Session)
	}
	if _, ok := e.sessions[st.Session]; ok {
		return fmt.Errorf("negotiate: session %s already exists", st.Session)
	}
	if len(st.Parties) == 0 || st.Parties[0].ID != e.self.ID {
		return fmt.Errorf("negotiate: the initiator must be the first party")
	}
	if err := checkParties(st.Parties); err != nil {
		return fmt.Errorf("negotiate: propose: %v", err)
	}
	if st.Witness != nil {
		if _, err := st.Witness.PublicKey(); err != nil {
			return fmt.Errorf("negotiate: propose: witness: %v", err)
		}
		for _, p := range st.Parties {
			if p.ID == st.Witness.ID {
				return fmt.Errorf("negotiate: propose: the witness %s cannot also be a party", p.ID.Short())
			}
		}
	}
	terms, err := canonicalTerms(st.Terms)
	if err != nil {
		return err
	}
	if st.Deadline <= now {
		return fmt.Errorf("negotiate: propose: the deadline has already passed")
	}
	maxRounds := st.MaxRounds
	if maxRounds == 0 {
		maxRounds = DefaultMaxRounds
	}
	if maxRounds > protocol.MaxRounds {
		return fmt.Errorf("negotiate: propose: at most %d rounds, not %d", protocol.MaxRounds, maxRounds)
	}
	if e.openSessions() >= MaxOpenSessions {
		return fmt.Errorf("negotiate: propose: %d sessions are open, the limit: wait for some to end", MaxOpenSessions)
	}
	if st.Offer {
		if st.Witness != nil {
			return fmt.Errorf("negotiate: offer: a signed offer cannot name a witness; propose without the offer option to use one")
		}
		if e.lock != nil {
			return fmt.Errorf("negotiate: offer: %w: this agent's chain is locked by session %s; offer again when it ends", ErrBusy, e.lock.Session)
		}
		maxRounds = 1
	}
	if st.Offer && e.cfg.SignCheck != nil {
		// A signed offer is signed at once: check before anything changes.
		if err := e.cfg.SignCheck(offerAgreement(st.Session, terms, st.Parties, st.Deadline, now)); err != nil {
			return fmt.Errorf("negotiate: offer: check before signing failed: %w", err)
		}
	}
	s := e.newSession(st.Session, RoleInitiator, append([]protocol.Party(nil), st.Parties...), now)
	s.deadline, s.maxRounds, s.witness = st.Deadline, maxRounds, st.Witness
	e.sessions[s.id] = s
	if st.Offer {
		e.startOffer(now, s, terms, out)
		return nil
	}
	e.arm(s, TimerDeadline, s.deadline, out)
	e.proposeRound(now, s, terms, out)
	return nil
}

func (e *Engine) proposeRound(now int64, s *session, terms cbor.RawMessage, out *Output) {
	s.round++
	s.terms = terms
	s.termsHash = chain.Hash(sign.Hash(terms))
	s.answers = make(map[int]any, len(s.parties))
	s.counter = nil
	body := &protocol.Propose{
		Round: s.round, Parties: s.parties, Terms: terms, Deadline: s.deadline, MaxRounds: s.maxRounds, Witness: s.witness,
	}
	e.sendOthers(out, s, protocol.TypePropose, body)
	e.event(out, s, EvPhase, Event{Terms: terms})
	s.resendDelay = resendInitialMillis
	e.arm(s, TimerResend, now+s.resendDelay, out)
}

// resendInitialMillis is how long the initiator waits for a participant's
// answer before sending the round again (then doubling): a proposal lost
// on the way (a dropped frame, a restarted peer) does not stall a session
// until its deadline.
const resendInitialMillis = 1500

// ---- receive ----

func (e *Engine) receive(now int64, m *Received, out *Output) error {
	if m.Type == protocol.TypeQuery || m.Type == protocol.TypePropose || m.Type == protocol.TypeOffer {
		// may create a session
	} else if pf, ok := m.Body.(*protocol.Preflight); ok && pf.Agreement.Witness != nil && pf.Agreement.Witness.ID == e.self.ID {
		// may create a witness session
	} else if _, ok := e.sessions[m.Session]; !ok {
		return fmt.Errorf("negotiate: %s from %s: %w %s", m.Type, m.From.Short(), ErrUnknownSession, m.Session)
	}
	if s := e.sessions[m.Session]; (s != nil && s.role == RoleWitness) || (s == nil && m.Type == protocol.TypePreflight) {
		return e.witnessReceive(now, m, out)
	}
	var err error
	switch b := m.Body.(type) {
	case *protocol.Propose:
		err = e.onPropose(now, m, b, out)
	case *protocol.Accept:
		err = e.onAnswer(now, m, b.Round, b, out)
	case *protocol.Counter:
		err = e.onAnswer(now, m, b.Round, b, out)
	case *protocol.Reject:
		err = e.onReject(now, m, b, out)
	case *protocol.Preflight:
		err = e.onPreflight(now, m, b, out)
	case *protocol.Offer:
		err = e.onOffer(now, m, b, out)
	case *protocol.Ready:
		err = e.onReady(now, m, b, out)
	case *protocol.Refuse:
		err = e.onRefuse(now, m, b, out)
	case *protocol.Commit:
		err = e.onCommit(now, m, b, out)
	case *protocol.Abort:
		err = e.onAbort(now, m, b, out)
	case *protocol.Query:
		err = e.onQuery(now, m, b, out)
	case *protocol.Status:
		err = e.onStatus(now, m, b, out)
	default:
		err = fmt.Errorf("negotiate: message type %q is not handled by sessions", m.Type)
	}
	if err == nil {
		if s := e.sessions[m.Session]; s != nil {
			s.last[m.From] = PartyActivity{Type: m.Type, At: now}
		}
	}
	return err
}

func (e *Engine) sessionFrom(m *Received) (*session, int, error) {
	s := e.sessions[m.Session]
	if s == nil {
		return nil, -1, fmt.Errorf("negotiate: %s: %w %s", m.Type, ErrUnknownSession, m.Session)
	}
	i := s.indexOf(m.From)
	if i < 0 {
		return nil, -1, fmt.Errorf("negotiate: %s from %s: not a party of session %s", m.Type, m.From.Short(), s.id)
	}
	return s, i, nil
}

func sameParties(a, b []protocol.Party) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || a[i].Scheme != b[i].Scheme || !bytes.Equal(a[i].Key, b[i].Key) {
			return false
		}
	}
	return true
}

// onPropose: participant receives a round.
func (e *Engine) onPropose(now int64, m *Received, p *protocol.Propose, out *Output) error {
	if !validSessionID(m.Session) {
		return fmt.Errorf("negotiate: propose: bad session ID %q", m.Session)
	}
	if err := checkParties(p.Parties); err != nil {
		return fmt.Errorf("negotiate: propose from %s: %v", m.From.Short(), err)
	}
	if p.Parties[0].ID != m.From {
		return fmt.Errorf("negotiate: propose from %s: the sender is not the first party (the initiator)", m.From.Short())
	}
	terms, err := canonicalTerms(p.Terms)
	if err != nil {
		return fmt.Errorf("negotiate: propose from %s: %w", m.From.Short(), err)
	}
	if p.Deadline <= now {
		return fmt.Errorf("negotiate: propose from %s: the deadline has passed", m.From.Short())
	}
	if p.Round == 0 || p.MaxRounds == 0 || p.MaxRounds > protocol.MaxRounds || p.Round > p.MaxRounds {
		return fmt.Errorf("negotiate: propose from %s: round %d of %d is out of range", m.From.Short(), p.Round, p.MaxRounds)
	}
	s := e.sessions[m.Session]
	if s == nil {
		if err := e.admitSession(protocol.TypePropose, m.From, p.Parties); err != nil {
			if errors.Is(err, ErrWarranted) {
				// Say so, with no session kept: the initiator ends it for all.
				out.Send = append(out.Send, Outgoing{To: m.From, Type: protocol.TypeReject, Session: m.Session,
					Body: &protocol.Reject{Round: p.Round, Reason: truncateUTF8(err.Error(), protocol.MaxReasonBytes)}, Expires: p.Deadline})
			}
			return err
		}
		s = e.newSession(m.Session, RoleParticipant, p.Parties, now)
		s.deadline, s.maxRounds, s.witness = p.Deadline, p.MaxRounds, p.Witness
		e.sessions[s.id] = s
		e.arm(s, TimerDeadline, s.deadline, out)
	} else {
		if s.role != RoleParticipant || !sameParties(s.parties, p.Parties) || s.deadline != p.Deadline || s.maxRounds != p.MaxRounds || !sameWitness(s.witness, p.Witness) {
			return fmt.Errorf("negotiate: propose from %s: does not match session %s as first proposed", m.From.Short(), s.id)
		}
		if p.Round == s.round && s.agreement == nil && (s.phase == PhaseNegotiating || s.lastAnswer != nil) {
			// The initiator sends a round again when an answer is missing.
			if !bytes.Equal(terms, s.terms) {
				e.equivocation(out, s, 0, "initiator sent two different terms for one round", framePair(s.proposeFrame, m.Raw)...)
				return fmt.Errorf("negotiate: propose from %s: other terms for round %d (equivocation)", m.From.Short(), p.Round)
			}
			if s.lastAnswer != nil {
				out.Send = append(out.Send, *s.lastAnswer)
			}
			return nil
		}
		if s.final != "" {
			return fmt.Errorf("negotiate: propose from %s: session %s already ended (%s)", m.From.Short(), s.id, s.final)
		}
		if s.phase != PhaseNegotiating || p.Round <= s.round {
			return fmt.Errorf("negotiate: propose from %s: stale round %d (session is at round %d, %s)", m.From.Short(), p.Round, s.round, s.phase)
		}
	}
	s.round, s.terms, s.termsHash = p.Round, terms, chain.Hash(sign.Hash(terms))
	s.pending, s.accepted, s.lastAnswer = true, false, nil
	s.proposeFrame = m.Raw
	e.event(out, s, EvProposal, Event{From: m.From, Terms: terms})
	return nil
}

// admitSession checks that a new session (a proposal or an offer of type
// typ from the initiator from) names this agent as a participant and fits
// the open-session limits.
func (e *Engine) admitSession(typ string, from sign.AgentID, parties []protocol.Party) error {
	self := -1
	for i, q := range parties {
		if q.ID == e.self.ID {
			self = i
		}
	}
	if self < 1 {
		return fmt.Errorf("negotiate: %s from %s: this agent is not a participant", typ, from.Short())
	}
	if e.openSessions() >= MaxOpenSessions {
		return fmt.Errorf("negotiate: %s from %s: %d sessions are open, the limit", typ, from.Short(), MaxOpenSessions)
	}
	if n := e.openSessionsFrom(from); n >= MaxOpenSessionsPerPeer {
		return fmt.Errorf("negotiate: %s from %s: it already has %d open sessions with this agent, the limit", typ, from.Short(), n)
	}
	if e.cfg.Admit != nil {
		if err := e.cfg.Admit(parties); err != nil {
			return fmt.Errorf("negotiate: %s from %s: %w", typ, from.Short(), err)
		}
	}
	return nil
}

// onAnswer: initiator receives an accept or counter for a round.
func (e *Engine) onAnswer(now int64, m *Received, round uint32, body any, out *Output) error {
	s, i, err := e.sessionFrom(m)
	if err != nil {
		return err
	}
	if s.role != RoleInitiator || i == 0 {
		return fmt.Errorf("negotiate: %s from %s: only the initiator takes answers", m.Type, m.From.Short())
	}
	if s.final != "" || s.phase != PhaseNegotiating || s.counter != nil || round != s.round {
		return fmt.Errorf("negotiate: %s from %s for round %d: out of turn (session at round %d, %s)", m.Type, m.From.Short(), round, s.round, s.phase)
	}
	if _, dup := s.answers[i]; dup {
		return fmt.Errorf("negotiate: %s from %s: already answered round %d", m.Type, m.From.Short(), round)
	}
	switch b := body.(type) {
	case *protocol.Accept:
		if b.TermsHash != s.termsHash {
			return fmt.Errorf("negotiate: accept from %s: terms hash does not match round %d", m.From.Short(), round)
		}
	case *protocol.Counter:
		t, err := canonicalTerms(b.Terms)
		if err != nil {
			return fmt.Errorf("negotiate: counter from %s: %w", m.From.Short(), err)
		}
		b.Terms = t
	}
	s.answers[i] = body
	if len(s.answers) < len(s.parties)-1 {
		return nil
	}
	// Everyone answered this round.
	for j := 1; j < len(s.parties); j++ {
		if c, ok := s.answers[j].(*protocol.Counter); ok {
			if s.round >= s.maxRounds {
				e.rejectAll(now, s, fmt.Sprintf("round cap %d reached without agreement", s.maxRounds), out)
				return nil
			}
			s.counter = &counterWait{from: s.parties[j].ID, terms: c.Terms}
			e.event(out, s, EvCounter, Event{From: s.parties[j].ID, Terms: c.Terms})
			return nil
		}
	}
	e.beginSigning(now, s, out)
	return nil
}

// rejectAll ends a negotiation (initiator): tells every participant.
func (e *Engine) rejectAll(now int64, s *session, reason string, out *Output) {
	e.sendOthers(out, s, protocol.TypeReject, &protocol.Reject{Round: s.round, Reason: reason})
	e.finish(now, s, StateRejected, reason, out)
}

// abortAll ends a negotiation as aborted (initiator): deadline, abort, busy.
func (e *Engine) abortAll(now int64, s *session, reason string, out *Output) {
	e.sendOthers(out, s, protocol.TypeReject, &protocol.Reject{Round: s.round, Reason: reason, Aborted: true, Busy: s.busy})
	e.finish(now, s, StateAborted, reason, out)
}

func (e *Engine) onReject(now int64, m *Received, r *protocol.Reject, out *Output) error {
	s, i, err := e.sessionFrom(m)
	if err != nil {
		return err
	}
	if s.final != "" || s.phase != PhaseNegotiating {
		return fmt.Errorf("negotiate: reject from %s: session %s is %s", m.From.Short(), s.id, phaseOrFinal(s))
	}
	reason := fmt.Sprintf("rejected by %s: %s", m.From.Short(), r.Reason)
	if s.role == RoleInitiator {
		if r.Round != s.round && !r.Aborted {
			return fmt.Errorf("negotiate: reject from %s for round %d: session is at round %d", m.From.Short(), r.Round, s.round)
		}
		st := StateRejected
		if r.Aborted {
			st, reason = StateAborted, fmt.Sprintf("aborted by %s: %s", m.From.Short(), r.Reason)
		}
		for j := 1; j < len(s.parties); j++ {
			if j != i {
				e.send(out, s, s.parties[j].ID, protocol.TypeReject, &protocol.Reject{Round: s.round, Reason: reason, Aborted: r.Aborted})
			}
		}
		e.finish(now, s, st, reason, out)
		return nil
	}
	if i != 0 {
		return fmt.Errorf("negotiate: reject from %s: only the initiator may end a session for all", m.From.Short())
	}
	if r.Aborted {
		s.busy = r.Busy
		e.finish(now, s, StateAborted, r.Reason, out)
		return nil
	}
	e.finish(now, s, StateRejected, r.Reason, out)
	return nil
}

func phaseOrFinal(s *session) string {
	if s.final != "" {
		return string(s.final)
	}
	return string(s.phase)
}

// ---- decisions ----

func (e *Engine) decide(now int64, d *Decision, out *Output) error {
	s := e.sessions[d.Session]
	if s == nil {
		return fmt.Errorf("negotiate: %s: %w %s", d.Action, ErrUnknownSession, d.Session)
	}
	if s.final != "" {
		return fmt.Errorf("negotiate: %s: session %s already ended (%s): %w", d.Action, s.id, s.final, ErrNotYourTurn)
	}
	if len(d.Reason) > protocol.MaxReasonBytes {
		return fmt.Errorf("negotiate: reason is %d bytes, the limit is %d: shorten it", len(d.Reason), protocol.MaxReasonBytes)
	}
	if d.Action == ActAbort {
		return e.abortLocal(now, s, d.Reason, out)
	}
	if s.role == RoleParticipant && s.offer {
		return e.decideOffer(now, s, d, out)
	}
	if s.role == RoleParticipant {
		if !s.pending {
			return fmt.Errorf("negotiate: %s session %s: %w (round %d already answered)", d.Action, s.id, ErrNotYourTurn, s.round)
		}
		init := s.initiator()
		switch d.Action {
		case ActAccept:
			e.send(out, s, init, protocol.TypeAccept, &protocol.Accept{Round: s.round, TermsHash: s.termsHash})
			s.pending, s.accepted = false, true
			s.lastAnswer = lastSent(out)
		case ActReject:
			e.send(out, s, init, protocol.TypeReject, &protocol.Reject{Round: s.round, Reason: d.Reason})
			s.lastAnswer = lastSent(out)
			e.finish(now, s, StateRejected, "rejected here: "+d.Reason, out)
		case ActCounter:
			t, err := canonicalTerms(d.Terms)
			if err != nil {
				return err
			}
			e.send(out, s, init, protocol.TypeCounter, &protocol.Counter{Round: s.round, Terms: t})
			s.pending = false
			s.lastAnswer = lastSent(out)
		default:
			return fmt.Errorf("negotiate: unknown action %q: use accept, reject, counter or abort", d.Action)
		}
		return nil
	}
	// initiator
	if s.counter == nil {
		return fmt.Errorf("negotiate: %s session %s: %w (no counter is waiting)", d.Action, s.id, ErrNotYourTurn)
	}
	switch d.Action {
	case ActAccept:
		e.proposeRound(now, s, s.counter.terms, out)
	case ActCounter:
		t, err := canonicalTerms(d.Terms)
		if err != nil {
			return err
		}
		e.proposeRound(now, s, t, out)
	case ActReject:
		e.rejectAll(now, s, d.Reason, out)
	default:
		return fmt.Errorf("negotiate: unknown action %q: use accept, reject, counter or abort", d.Action)
	}
	return nil
}

// abortLocal aborts where it is still safe: before this agent signed.
func (e *Engine) abortLocal(now int64, s *session, reason string, out *Output) error {
	if s.vote == voteSigned {
		return fmt.Errorf("negotiate: abort session %s: %w: this agent has sent its signature; it waits for a commit or abort certificate from %s", s.id, ErrUnsafeAbort, joinIDs(e.waitingOn(s)))
	}
	if reason == "" {
		reason = "aborted by " + e.self.ID.Short()
	}
	if s.role == RoleInitiator {
		e.abortAll(now, s, reason, out)
		return nil
	}
	if s.offer {
		// The initiator signed first: only a durable refusal frees it.
		e.refuse(now, s, reason, false, "", out)
		return nil
	}
	e.send(out, s, s.initiator(), protocol.TypeReject, &protocol.Reject{Round: s.round, Reason: reason, Aborted: true})
	e.finish(now, s, StateAborted, reason, out)
	return nil
}

// ---- phase 2: lock and sign ----

func (e *Engine) beginSigning(now int64, s *session, out *Output) {
	a := &protocol.Agreement{
		Session: s.id, Round: s.round, Terms: s.terms, TermsHash: s.termsHash,
		Parties: s.parties, Witness: s.witness, Deadline: s.deadline, Timestamp: now,
	}
	s.agreement, s.ah = a, AgreementHash(a)
	if e.lock != nil && e.lock.Session != s.id {
		s.busy = true
		e.abortAll(now, s, fmt.Sprintf("initiator %s is busy: its chain is locked by session %s", e.self.ID.Short(), e.lock.Session), out)
		return
	}
	if e.cfg.SignCheck != nil {
		// Nothing is locked or signed yet: the initiator may still abort.
		if err := e.cfg.SignCheck(a); err != nil {
			e.abortAll(now, s, truncateUTF8("initiator's check before signing failed: "+err.Error(), protocol.MaxReasonBytes), out)
			return
		}
	}
	// The preflight carries no signature: it may leave before the
	// initiator's own lock write, so the parties lock in parallel.
	pf := &protocol.Preflight{Agreement: *a, AgreementHash: s.ah}
	for i, p := range s.parties {
		if i != s.selfIdx {
			out.SendFirst = append(out.SendFirst, Outgoing{To: p.ID, Type: protocol.TypePreflight, Session: s.id, Body: pf, Expires: s.deadline})
		}
	}
	if s.witness != nil {
		out.SendFirst = append(out.SendFirst, Outgoing{To: s.witness.ID, Type: protocol.TypePreflight, Session: s.id, Body: pf, Expires: s.deadline})
	}
	e.signAndSend(now, s, out, nil)
}

// sendReady sends this agent's Ready in a star: the initiator sends its
// Ready to every participant, a participant only to the initiator, so a
// session costs O(n) Ready frames instead of O(n²). Only the initiator
// ever holds every statement in the normal run; it commits and its
// Commit{record} tells the others. A participant that misses the Commit
// (or whose initiator is gone) asks every party (the resolve timer): each
// answers with its own Ready (Status), its record (Commit) or an abort
// certificate, so a participant can still complete the set by itself.
// In a 2-party session both sides hold both statements at once.
func (e *Engine) sendReady(out *Output, s *session, ready *protocol.Ready) {
	if s.selfIdx == 0 {
		if s.offer {
			e.sendOthers(out, s, protocol.TypeOffer, s.offerBody(ready))
			return
		}
		e.sendOthers(out, s, protocol.TypeReady, ready)
		return
	}
	e.send(out, s, s.initiator(), protocol.TypeReady, ready)
}

// signAndSend takes the lock and records the signed vote in one durable
// write, then sends the Ready: the initiator's to every party, a
// participant's to the initiator (sendReady), and to the witness if any.
func (e *Engine) signAndSend(now int64, s *session, out *Output, before func()) {
	s.head = e.head
	sig := signStatement(e.key, s.agreement, s.ah, s.head)
	ready := &protocol.Ready{AgreementHash: s.ah, Head: s.head, Signature: sig}
	s.vote = voteSigned
	s.readys[s.selfIdx] = ready
	s.phase, s.since = PhaseSigning, now
	if s.witness == nil && len(s.readys) == len(s.parties) {
		// Every other statement is already here (a signed offer, or Readys
		// that came before the preflight): sign and commit in one durable
		// write, so the chain is never visibly locked; the Ready leaves
		// after it, so the others can commit too.
		e.event(out, s, EvPhase, Event{})
		e.maybeCommit(now, s, out)
		if before != nil {
			before()
		}
		e.sendReady(out, s, ready)
		return
	}
	lock := &chain.Lock{Session: s.id, Since: now, Parties: partyIDs(s.parties)}
	e.lock = lock
	head := s.head
	out.Persist = append(out.Persist, chain.Write{
		Session: s.id, AcquireLock: lock, ExpectHead: &head, Checkpoint: e.checkpoint(s),
	})
	if before != nil {
		before()
	}
	e.sendReady(out, s, ready)
	if s.witness != nil {
		e.send(out, s, s.witness.ID, protocol.TypeReady, ready)
	}
	e.event(out, s, EvPhase, Event{})
	s.resolveDelay = e.cfg.ResolveInitialMillis
	e.arm(s, TimerResolve, now+s.resolveDelay, out)
	e.maybeCommit(now, s, out)
}

func (e *Engine) onPreflight(now int64, m *Received, p *protocol.Preflight, out *Output) error {
	s, i, err := e.sessionFrom(m)
	if err != nil {
		return err
	}
	if s.role != RoleParticipant || i != 0 {
		return fmt.Errorf("negotiate: preflight from %s: only the initiator sends a preflight", m.From.Short())
	}
	ah := AgreementHash(&p.Agreement)
	if ah != p.AgreementHash {
		return fmt.Errorf("negotiate: preflight from %s: agreement hash does not match the agreement", m.From.Short())
	}
	if s.agreement != nil {
		if ah != s.ah {
			e.equivocation(out, s, 0, "initiator sent two different agreements for one session", framePair(s.agreementFrame, m.Raw)...)
			return fmt.Errorf("negotiate: preflight from %s: a different agreement for session %s (equivocation)", m.From.Short(), s.id)
		}
		e.answerFinalOrReady(s, m.From, out) // a retransmission
		return nil
	}
	if s.final != "" {
		// Ended before this agent signed (expired, aborted): refuse it.
		e.refuseEnded(now, s, ah, m.From, out)
		return nil
	}
	a := &p.Agreement
	s.agreement, s.ah, s.agreementFrame = a, ah, m.Raw
	switch {
	case a.Session != s.id || a.Round != s.round || a.TermsHash != s.termsHash || !bytes.Equal(a.Terms, s.terms) ||
		!sameParties(a.Parties, s.parties) || a.Deadline != s.deadline || !sameWitness(a.Witness, s.witness):
		e.refuse(now, s, "the preflight's agreement is not the terms this agent saw in that round", false, "", out)
	case !s.accepted:
		e.refuse(now, s, fmt.Sprintf("this agent did not accept round %d", s.round), false, "", out)
	case e.cfg.HeadCheck != nil:
		// Sign only with the initiator's statement here, so that HeadCheck
		// sees the head the initiator signed at.
		early := s.early
		s.early = nil
		for _, r := range early {
			if rd, ok := r.Body.(*protocol.Ready); ok {
				_ = e.onReady(now, r, rd, out)
			}
		}
		s.early = early
		if r := e.earlyRefusal(s, out); r != nil {
			e.abortWithCert(now, s, r.Raw, "refused by "+r.From.Short(), false, out)
			break
		}
		if s.readys[0] == nil {
			s.awaitInit = true
			break
		}
		if !e.refuseUnsignable(now, s, out) {
			e.signAndSend(now, s, out, nil)
		}
	case e.refuseUnsignable(now, s, out):
	default:
		// Readys that came first are taken in before anything else: a
		// refusal by a party whose statement is then held is void, as it
		// is after the preflight (voidRefusal); and with every statement
		// here, signing and committing is one durable write.
		for _, r := range s.early {
			if rd, ok := r.Body.(*protocol.Ready); ok {
				_ = e.onReady(now, r, rd, out)
			}
		}
		if r := e.earlyRefusal(s, out); r != nil {
			// Another party already refused: the session can never commit.
			e.abortWithCert(now, s, r.Raw, "refused by "+r.From.Short(), false, out)
			break
		}
		e.signAndSend(now, s, out, nil)
	}
	s.early = nil
	return nil
}

// refuseUnsignable refuses s's agreement durably, to every party, when
// this agent may not sign it now: the deadline passed, its chain is locked
// by another session, or SignCheck says no. It reports whether it refused.
func (e *Engine) refuseUnsignable(now int64, s *session, out *Output) bool {
	switch {
	case now >= s.deadline:
		e.refuse(now, s, "the deadline has passed", false, "", out)
	case e.lock != nil && e.lock.Session != s.id:
		e.refuse(now, s, fmt.Sprintf("chain is locked by session %s", e.lock.Session), true, e.lock.Session, out)
	default:
		if e.cfg.SignCheck != nil {
			if err := e.cfg.SignCheck(s.agreement); err != nil {
				e.refuse(now, s, "check before signing failed: "+err.Error(), false, "", out)
				return true
			}
		}
		if e.cfg.HeadCheck != nil {
			heads := make(map[sign.AgentID]chain.Head, len(s.readys))
			for i, r := range s.readys {
				if i != s.selfIdx && r != nil {
					heads[s.parties[i].ID] = r.Head
				}
			}
			if err := e.cfg.HeadCheck(s.agreement, heads); err != nil {
				e.refuse(now, s, "check before signing failed: "+err.Error(), false, "", out)
				return true
			}
		}
		return false
	}
	return true
}

// refuseEnded answers a request to sign agreement ah of a session that
// ended here before this agent signed: its refusal, durable if new.
func (e *Engine) refuseEnded(now int64, s *session, ah chain.Hash, to sign.AgentID, out *Output) {
	_, had := s.refusals[ah]
	cert := e.refusalFor(now, s, ah, "session "+string(s.final)+" here: "+s.reason, false, "")
	if !had {
		out.Persist = append(out.Persist, chain.Write{Session: s.id, Checkpoint: e.checkpoint(s)})
	}
	out.Send = append(out.Send, Outgoing{To: to, Session: s.id, Frame: cert})
}

// earlyRefusal returns a refusal of s's agreement that came before the
// preflight and is an abort certificate: not void (voidRefusal reports a
// refusal by a party whose statement this agent holds, and skips it).
func (e *Engine) earlyRefusal(s *session, out *Output) *Received {
	for _, r := range s.early {
		if rf, ok := r.Body.(*protocol.Refuse); ok && rf.AgreementHash == s.ah {
			if e.voidRefusal(s, r.From, r.Raw, out) != nil {
				continue
			}
			return r
		}
	}
	return nil
}

// refusalFor returns this agent's signed refusal of agreement ah in
// session s, creating it (and recording the refused vote) if needed. The
// caller persists the checkpoint. The signed frame is an abort certificate.
func (e *Engine) refusalFor(now int64, s *session, ah chain.Hash, reason string, busy bool, lockedBy string) []byte {
	if s.vote == voteSigned && ah == s.ah {
		panic("negotiate: refuse after signing") // invariant: a party signs or refuses an agreement, never both
	}
	return e.refusalWith(now, s, &protocol.Refuse{AgreementHash: ah, Reason: reason, Busy: busy, LockedBy: lockedBy})
}

// refusalWith is refusalFor with the whole refusal body given.
func (e *Engine) refusalWith(now int64, s *session, body *protocol.Refuse) []byte {
	if s.vote == voteSigned && body.AgreementHash == s.ah {
		panic("negotiate: refuse after signing") // invariant: a party signs or refuses an agreement, never both
	}
	if cert, ok := s.refusals[body.AgreementHash]; ok {
		return cert
	}
	// Reasons may carry text from elsewhere (a SignCheck error): keep the
	// refusal within the wire limit rather than fail to seal it.
	body.Reason = truncateUTF8(body.Reason, protocol.MaxReasonBytes)
	cert, err := sealCertificate(e.key, protocol.TypeRefuse, s.id, body, now)
	if err != nil {
		panic(fmt.Sprintf("negotiate: seal refusal: %v", err)) // our own well-formed message
	}
	if s.refusals == nil {
		s.refusals = make(map[chain.Hash][]byte)
	}
	s.refusals[body.AgreementHash] = cert
	if s.vote == voteNone {
		s.vote = voteRefused
	}
	return cert
}

// refuse records a durable refusal of the session's agreement, ends the
// session and sends the refusal to every party.
func (e *Engine) refuse(now int64, s *session, reason string, busy bool, lockedBy string, out *Output) {
	e.refuseWith(now, s, &protocol.Refuse{AgreementHash: s.ah, Reason: reason, Busy: busy, LockedBy: lockedBy}, StateAborted, reason, out)
}

// refuseWith records the durable refusal body, ends the session in state
// st and sends the refusal to every party (and the witness).
func (e *Engine) refuseWith(now int64, s *session, body *protocol.Refuse, st State, reason string, out *Output) {
	cert := e.refusalWith(now, s, body)
	s.busy, s.abortCert = body.Busy, cert
	e.finishState(now, s, st, reason)
	out.Persist = append(out.Persist, chain.Write{Session: s.id, Checkpoint: e.checkpoint(s)})
	for i, p := range s.parties {
		if i != s.selfIdx {
			out.Send = append(out.Send, Outgoing{To: p.ID, Session: s.id, Frame: cert})
		}
	}
	if s.witness != nil {
		out.Send = append(out.Send, Outgoing{To: s.witness.ID, Session: s.id, Frame: cert})
	}
	e.reportFinal(s, out)
}

func (e *Engine) onReady(now int64, m *Received, r *protocol.Ready, out *Output) error {
	s, i, err := e.sessionFrom(m)
	if err != nil {
		return err
	}
	if s.agreement == nil {
		if s.final == "" && len(s.early) < 2*len(s.parties) {
			s.early = append(s.early, m)
		}
		return nil
	}
	if r.AgreementHash != s.ah {
		// Its statement over the other agreement convicts it only if it
		// verifies (with this session's parties) and its statement over
		// this one is held too.
		it := statementItem(s, i, r)
		pub, perr := s.parties[i].PublicKey()
		ok := perr == nil && protocol.VerifyStatement(pub, it.Statement, r.Signature) == nil
		e.equivocation(out, s, i, "ready for another agreement of this session", heldAnd(s, i, it, ok)...)
		return fmt.Errorf("negotiate: ready from %s: for another agreement of session %s", m.From.Short(), s.id)
	}
	have := s.readys[i]
	if sameStatement(have, r.Head, r.Signature) {
		return nil // this exact statement was verified when it was first held
	}
	if err := verifyStatement(s.parties[i], s.agreement, s.ah, r.Head, r.Signature); err != nil {
		return fmt.Errorf("negotiate: ready from %s: %w", m.From.Short(), err)
	}
	if have != nil {
		// Two signatures over one statement (a randomized scheme) prove
		// nothing; two heads do.
		e.equivocation(out, s, i, "party signed twice with different heads or signatures", heldAnd(s, i, statementItem(s, i, r), have.Head != r.Head)...)
		return nil
	}
	if !e.noteHead(out, s, i, r) {
		return fmt.Errorf("negotiate: ready from %s: it signed another chain head at seq %d before (a forked chain)", m.From.Short(), r.Head.Seq)
	}
	s.readys[i] = r
	if s.awaitInit && i == 0 && s.final == "" && s.vote == voteNone {
		// HeadCheck: the initiator's statement was all this agent waited for.
		s.awaitInit = false
		if !e.refuseUnsignable(now, s, out) {
			e.signAndSend(now, s, out, nil)
		}
		return nil
	}
	if s.final == "" {
		e.maybeCommit(now, s, out)
	}
	return nil
}

// maybeCommit commits once this agent signed and holds every signature.
func (e *Engine) maybeCommit(now int64, s *session, out *Output) {
	if s.vote != voteSigned || s.final != "" || len(s.readys) < len(s.parties) || s.witness != nil {
		return // with a witness, only its commit decision commits
	}
	rec := &protocol.Record{Agreement: *s.agreement}
	for i := range s.parties {
		rec.Heads = append(rec.Heads, s.readys[i].Head)
		rec.Signatures = append(rec.Signatures, s.readys[i].Signature)
	}
	e.commitRecord(now, s, rec, out)
}

func (e *Engine) commitRecord(now int64, s *session, rec *protocol.Record, out *Output) {
	receipt := encode(rec)
	entry, err := chain.NewEntryAt(e.key, s.head, KindAgreement, cbor.RawMessage(receipt), rec.Agreement.Timestamp)
	if err != nil {
		panic(fmt.Sprintf("negotiate: build agreement entry: %v", err)) // our own verified record
	}
	h := entry.Hash()
	s.receipt, s.recordHash = receipt, chain.Hash(sign.Hash(receipt)) // RecordHash(rec), without encoding it twice
	e.finishState(now, s, StateCommitted, "")
	out.Persist = append(out.Persist, chain.Write{
		Session: s.id, Append: entry, ReleaseLock: true, Checkpoint: e.checkpoint(s),
	})
	e.head = chain.Head{Seq: entry.Seq, Hash: h}
	e.lock = nil
	// In a 2-party session without a witness the participant holds both
	// statements as soon as the initiator's Ready arrives, so it commits
	// by itself: a Commit would only cost a frame (a participant that
	// missed the Ready gets the record by query). With more parties (star
	// fan-out) the Commit is how participants learn the other statements.
	if s.role == RoleInitiator && (len(s.parties) > 2 || s.witness != nil) {
		e.sendOthers(out, s, protocol.TypeCommit, &protocol.Commit{Record: *rec})
	}
	e.reportFinal(s, out)
}

func (e *Engine) onRefuse(now int64, m *Received, r *protocol.Refuse, out *Output) error {
	s, _, err := e.sessionFrom(m)
	if err != nil {
		return err
	}
	if len(m.Raw) == 0 {
		return fmt.Errorf("negotiate: refuse from %s: no signed frame to keep as certificate", m.From.Short())
	}
	if s.agreement == nil {
		if s.final == "" && len(s.early) < 2*len(s.parties) {
			s.early = append(s.early, m)
		}
		return nil
	}
	if r.AgreementHash != s.ah {
		return fmt.Errorf("negotiate: refuse from %s: for another agreement of session %s", m.From.Short(), s.id)
	}
	if s.final == StateCommitted {
		it, ok := frameItem(m.Raw)
		e.equivocation(out, s, s.indexOf(m.From), "party refused a session it had signed", heldAnd(s, s.indexOf(m.From), it, ok)...)
		return nil
	}
	if s.final != "" {
		return nil
	}
	if err := e.voidRefusal(s, m.From, m.Raw, out); err != nil {
		return fmt.Errorf("negotiate: refuse from %s: %w", m.From.Short(), err)
	}
	if r.Rejected {
		e.endWithCert(now, s, m.Raw, StateRejected, fmt.Sprintf("rejected by %s: %s", m.From.Short(), r.Reason), false, out, m.From)
		return nil
	}
	e.abortWithCert(now, s, m.Raw, fmt.Sprintf("refused by %s: %s", m.From.Short(), r.Reason), r.Busy, out, m.From)
	return nil
}

// voidRefusal refuses a refusal of s's agreement by party from when this
// agent holds from's verified statement over that same agreement: from
// signed and refused one agreement, which an honest party never does (the
// engine panics before it would). Taking such a refusal would let honest
// parties split, one committing with from's signature and one aborting on
// its word; the two signatures are reported as proof instead. An honest
// refusal (from a party whose statement is not here) is never void.
func (e *Engine) voidRefusal(s *session, from sign.AgentID, refusal []byte, out *Output) error {
	i := s.indexOf(from)
	if i < 0 || i == s.selfIdx || s.readys[i] == nil || s.readys[i].AgreementHash != s.ah {
		return nil
	}
	it, ok := frameItem(refusal)
	e.equivocation(out, s, i, "party refused an agreement it had signed", heldAnd(s, i, it, ok)...)
	return fmt.Errorf("%s signed this agreement and refused it: the refusal is void", from.Short())
}

// abortWithCert ends a session by an abort certificate and releases the lock.
func (e *Engine) abortWithCert(now int64, s *session, cert []byte, reason string, busy bool, out *Output, holders ...sign.AgentID) {
	e.endWithCert(now, s, cert, StateAborted, reason, busy, out, holders...)
}

// endWithCert ends a session in state st (aborted, or rejected for a
// rejected offer) by an abort certificate and releases the lock. An
// initiator forwards the certificate to every participant but holders:
// the party that signed the refusal, and the one that sent it here, hold
// it already.
func (e *Engine) endWithCert(now int64, s *session, cert []byte, st State, reason string, busy bool, out *Output, holders ...sign.AgentID) {
	s.abortCert, s.busy = cert, busy
	wasSigned := s.vote == voteSigned
	e.finishState(now, s, st, reason)
	w := chain.Write{Session: s.id, Checkpoint: e.checkpoint(s)}
	if wasSigned && e.lock != nil && e.lock.Session == s.id {
		w.ReleaseLock = true
		e.lock = nil
	}
	out.Persist = append(out.Persist, w)
	if s.role == RoleInitiator {
		for i, p := range s.parties {
			if i != s.selfIdx && !slices.Contains(holders, p.ID) {
				e.send(out, s, p.ID, protocol.TypeAbort, &protocol.Abort{Certificate: cert})
			}
		}
	}
	e.reportFinal(s, out)
}

func (e *Engine) onCommit(now int64, m *Received, c *protocol.Commit, out *Output) error {
	s, _, err := e.sessionFrom(m)
	if err != nil {
		if s = e.sessions[m.Session]; s == nil || s.witness == nil || s.witness.ID != m.From {
			return err
		}
	}
	if s.final == StateCommitted {
		return nil
	}
	rec := &c.Record
	// Statements this agent already holds for this agreement (its own, and
	// those it verified on receipt) are not verified again; every other
	// part of the record is.
	ah, err := verifyRecord(rec, s.ah, s.readys)
	if err != nil {
		return fmt.Errorf("negotiate: commit from %s: %w", m.From.Short(), err)
	}
	if !sameParties(rec.Agreement.Parties, s.parties) || rec.Agreement.Session != s.id {
		return fmt.Errorf("negotiate: commit from %s: record is for other parties or another session", m.From.Short())
	}
	if s.vote != voteSigned || ah != s.ah || rec.Heads[s.selfIdx] != s.head {
		// A valid record needs this agent's signature, which it only gives
		// after a durable signed vote for exactly this agreement and head.
		e.event(out, s, EvViolation, Event{From: m.From, Reason: "commit certificate this agent never signed for"})
		return fmt.Errorf("negotiate: commit from %s: this agent did not sign that agreement at that head", m.From.Short())
	}
	if s.final == StateAborted {
		e.event(out, s, EvViolation, Event{From: m.From, Reason: "commit certificate for an aborted session"})
		return nil
	}
	e.commitRecord(now, s, rec, out)
	return nil
}

func (e *Engine) onAbort(now int64, m *Received, a *protocol.Abort, out *Output) error {
	s, _, err := e.sessionFrom(m)
	if err != nil && !(s == nil && e.sessions[m.Session] != nil && e.sessions[m.Session].witness != nil && e.sessions[m.Session].witness.ID == m.From) {
		return err
	}
	s = e.sessions[m.Session]
	if s.final != "" && s.final != StateCommitted {
		return nil
	}
	from, ah, reason, busy, rejected, err := openAbortCert(a.Certificate, s)
	if err != nil {
		return fmt.Errorf("negotiate: abort from %s: %w", m.From.Short(), err)
	}
	if s.agreement == nil {
		if s.final == "" && len(s.early) < 2*len(s.parties) {
			s.early = append(s.early, &Received{From: from, Type: protocol.TypeRefuse, Session: s.id, Body: &protocol.Refuse{AgreementHash: ah, Reason: reason, Busy: busy}, Raw: a.Certificate})
		}
		return nil
	}
	if ah != s.ah {
		return fmt.Errorf("negotiate: abort from %s: certificate for another agreement", m.From.Short())
	}
	if s.final == StateCommitted {
		if i := s.indexOf(from); i >= 0 {
			it, ok := frameItem(a.Certificate)
			e.equivocation(out, s, i, "abort certificate for a committed session", heldAnd(s, i, it, ok)...)
		}
		return nil
	}
	if err := e.voidRefusal(s, from, a.Certificate, out); err != nil {
		return fmt.Errorf("negotiate: abort from %s: %w", m.From.Short(), err)
	}
	st := StateAborted
	if rejected {
		st = StateRejected
	}
	e.endWithCert(now, s, a.Certificate, st, reason, busy, out, from, m.From)
	return nil
}

// ---- resolution ----

func (e *Engine) onQuery(now int64, m *Received, q *protocol.Query, out *Output) error {
	if q.AgreementHash == (chain.Hash{}) {
		// Names no agreement: there is nothing to refuse (and a refusal
		// must name one).
		return fmt.Errorf("negotiate: query from %s: no agreement hash", m.From.Short())
	}
	s := e.sessions[m.Session]
	if s == nil {
		if !validSessionID(m.Session) {
			return fmt.Errorf("negotiate: query: bad session ID %q", m.Session)
		}
		if e.tombstones() >= maxTombstones {
			return fmt.Errorf("negotiate: query from %s: too many unknown sessions refused", m.From.Short())
		}
		// This agent never signed this session (it would hold a durable
		// checkpoint): refuse it durably, so it never signs it later.
		s = e.newSession(m.Session, RoleParticipant, nil, now)
		s.tombstone = true
		e.sessions[s.id] = s
		e.finishState(now, s, StateAborted, "unknown session: this agent never signed it")
	}
	if !s.tombstone && s.indexOf(m.From) < 0 {
		return fmt.Errorf("negotiate: query from %s: not a party of session %s", m.From.Short(), s.id)
	}
	switch {
	case s.agreement != nil && q.AgreementHash != s.ah:
		// Another agreement of this session (an equivocating initiator):
		// this agent signs at most one agreement per session, and not that
		// one, so a durable refusal of it is safe and ends it for the asker.
		_, had := s.refusals[q.AgreementHash]
		cert := e.refusalFor(now, s, q.AgreementHash, "this agent never signed that agreement of the session", false, "")
		if !had {
			out.Persist = append(out.Persist, chain.Write{Session: s.id, Checkpoint: e.checkpoint(s)})
		}
		e.send(out, s, m.From, protocol.TypeAbort, &protocol.Abort{Certificate: cert})
	case s.final == StateCommitted:
		rec, err := DecodeRecord(s.receipt)
		if err != nil {
			return err
		}
		e.send(out, s, m.From, protocol.TypeCommit, &protocol.Commit{Record: *rec})
	case s.vote == voteSigned && len(s.abortCert) > 0:
		e.send(out, s, m.From, protocol.TypeAbort, &protocol.Abort{Certificate: s.abortCert})
	case s.vote == voteSigned:
		e.send(out, s, m.From, protocol.TypeStatus, &protocol.Status{State: string(PhaseSigning), Ready: s.readys[s.selfIdx]})
	case s.final == "" && now < s.deadline && (s.agreement == nil && s.accepted || s.offer && s.pending || s.awaitInit):
		// The preflight may still be on its way, an offer waits for this
		// agent's decision, or (HeadCheck) the initiator's Ready: not yet.
		e.send(out, s, m.From, protocol.TypeStatus, &protocol.Status{State: string(PhaseNegotiating)})
		if s.awaitInit && s.indexOf(m.From) == 0 {
			// Its Ready was lost: its answer to a query carries it again.
			e.send(out, s, m.From, protocol.TypeQuery, &protocol.Query{AgreementHash: s.ah})
		}
	default:
		// Not signed and never going to: a durable refusal ends it for all.
		_, had := s.refusals[q.AgreementHash]
		cert := e.refusalFor(now, s, q.AgreementHash, "this agent did not sign this session and will not", false, "")
		wasOpen := s.final == ""
		if wasOpen {
			s.abortCert = cert
			e.finishState(now, s, StateAborted, "refused after the deadline")
		}
		if !had {
			out.Persist = append(out.Persist, chain.Write{Session: s.id, Checkpoint: e.checkpoint(s)})
		}
		e.send(out, s, m.From, protocol.TypeAbort, &protocol.Abort{Certificate: cert})
		if wasOpen {
			e.reportFinal(s, out)
		}
	}
	return nil
}

func (e *Engine) tombstones() int {
	n := 0
	for _, s := range e.sessions {
		if s.tombstone {
			n++
		}
	}
	return n
}

func (e *Engine) onStatus(now int64, m *Received, st *protocol.Status, out *Output) error {
	if st.Ready == nil {
		return nil
	}
	return e.onReady(now, m, st.Ready, out)
}

// answerFinalOrReady re-sends what a peer may have missed.
func (e *Engine) answerFinalOrReady(s *session, to sign.AgentID, out *Output) {
	switch {
	case s.final == StateCommitted:
		if rec, err := DecodeRecord(s.receipt); err == nil {
			e.send(out, s, to, protocol.TypeCommit, &protocol.Commit{Record: *rec})
		}
	case len(s.abortCert) > 0:
		e.send(out, s, to, protocol.TypeAbort, &protocol.Abort{Certificate: s.abortCert})
	case s.vote == voteSigned:
		e.send(out, s, to, protocol.TypeReady, s.readys[s.selfIdx])
	}
}

func (e *Engine) timer(now int64, t *Timer, out *Output) {
	s := e.sessions[t.Session]
	if s == nil || s.gen[t.Kind] != t.Gen || s.final != "" {
		return
	}
	switch t.Kind {
	case TimerDeadline:
		if s.phase != PhaseNegotiating {
			// After signing only a certificate ends the session; with a
			// witness, the window's end is when to ask it to decide.
			if s.witness != nil && s.vote == voteSigned && s.role != RoleWitness {
				e.send(out, s, s.witness.ID, protocol.TypeAbortAsk, &protocol.AbortAsk{AgreementHash: s.ah})
			}
			return
		}
		reason := "deadline passed"
		if w := e.waitingOn(s); len(w) > 0 {
			reason += " waiting for " + joinIDs(w)
		}
		if s.role == RoleInitiator {
			e.abortAll(now, s, reason, out)
			return
		}
		if s.offer {
			// The initiator signed first: refuse durably now, so its chain
			// is freed without waiting for its next query.
			e.refuse(now, s, "the offer's deadline passed before this agent decided", false, "", out)
			return
		}
		// A participant that never saw a preflight holds no lock. If the
		// initiator signed, its queries get a durable refusal (onQuery).
		e.finish(now, s, StateAborted, reason, out)
	case TimerResend:
		if s.role != RoleInitiator || s.phase != PhaseNegotiating || s.counter != nil {
			return
		}
		body := &protocol.Propose{
			Round: s.round, Parties: s.parties, Terms: s.terms, Deadline: s.deadline, MaxRounds: s.maxRounds, Witness: s.witness,
		}
		for i := 1; i < len(s.parties); i++ {
			if _, ok := s.answers[i]; !ok {
				e.send(out, s, s.parties[i].ID, protocol.TypePropose, body)
			}
		}
		s.resendDelay *= 2
		if at := now + s.resendDelay; at < s.deadline {
			e.arm(s, TimerResend, at, out)
		}
	case TimerResolve:
		if s.vote != voteSigned {
			return
		}
		for i, p := range s.parties {
			if i == s.selfIdx {
				continue
			}
			if s.role == RoleInitiator && s.readys[i] == nil {
				// The preflight (or offer) may have been lost: it is idempotent.
				if s.offer {
					e.send(out, s, p.ID, protocol.TypeOffer, s.offerBody(s.readys[s.selfIdx]))
				} else {
					e.send(out, s, p.ID, protocol.TypePreflight, &protocol.Preflight{Agreement: *s.agreement, AgreementHash: s.ah})
				}
			}
			e.send(out, s, p.ID, protocol.TypeQuery, &protocol.Query{AgreementHash: s.ah})
		}
		if s.witness != nil {
			// The witness may have missed the preflight or a ready (or
			// restarted): both are idempotent for it.
			e.send(out, s, s.witness.ID, protocol.TypePreflight, &protocol.Preflight{Agreement: *s.agreement, AgreementHash: s.ah})
			e.send(out, s, s.witness.ID, protocol.TypeReady, s.readys[s.selfIdx])
			if now >= s.deadline {
				e.send(out, s, s.witness.ID, protocol.TypeAbortAsk, &protocol.AbortAsk{AgreementHash: s.ah})
			}
		}
		s.resolveDelay *= 2
		if s.resolveDelay > e.cfg.ResolveMaxMillis {
			s.resolveDelay = e.cfg.ResolveMaxMillis
		}
		e.arm(s, TimerResolve, now+s.resolveDelay, out)
	}
}

// resume re-sends and re-arms what resumed signed sessions need.
func (e *Engine) resume(now int64, out *Output) {
	for _, id := range e.sortedIDs() {
		s := e.sessions[id]
		if s.final != "" || s.vote != voteSigned {
			continue
		}
		if s.role == RoleInitiator && !s.offer {
			// The crash may have come before the preflight left (an offer
			// carries its agreement: sendReady re-sends it).
			e.sendOthers(out, s, protocol.TypePreflight, &protocol.Preflight{Agreement: *s.agreement, AgreementHash: s.ah})
		}
		e.sendReady(out, s, s.readys[s.selfIdx])
		s.resolveDelay = e.cfg.ResolveInitialMillis
		e.arm(s, TimerResolve, now+s.resolveDelay, out)
	}
}

func (e *Engine) sortedIDs() []string {
	ids := make([]string, 0, len(e.sessions))
	for id := range e.sessions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// ---- endings ----

func (e *Engine) finishState(now int64, s *session, st State, reason string) {
	s.final, s.reason, s.phase, s.since = st, reason, PhaseDone, now
	s.pending, s.counter, s.early = false, nil, nil
}

// finish ends a session that holds no lock and needs no durable write.
func (e *Engine) finish(now int64, s *session, st State, reason string, out *Output) {
	e.finishState(now, s, st, reason)
	e.reportFinal(s, out)
}

func (e *Engine) reportFinal(s *session, out *Output) {
	kind := EvAborted
	switch s.final {
	case StateCommitted:
		kind = EvCommitted
	case StateRejected:
		kind = EvRejected
	}
	e.event(out, s, kind, Event{Reason: s.reason, Outcome: s.outcome()})
}

func (s *session) outcome() *Outcome {
	if s.final == "" {
		return nil
	}
	return &Outcome{
		State: s.final, Session: s.id, Round: s.round, RecordHash: s.recordHash, Reason: s.reason,
		Busy: s.busy, Receipt: s.receipt, AbortCertificate: s.abortCert,
	}
}

// waitingOn lists the parties this agent still waits for.
func (e *Engine) waitingOn(s *session) []sign.AgentID {
	var w []sign.AgentID
	switch {
	case s.final != "":
	case s.phase == PhaseSigning:
		for i, p := range s.parties {
			if s.readys[i] == nil {
				w = append(w, p.ID)
			}
		}
	case s.role == RoleInitiator && s.counter != nil:
		w = append(w, e.self.ID)
	case s.role == RoleInitiator:
		for i := 1; i < len(s.parties); i++ {
			if _, ok := s.answers[i]; !ok {
				w = append(w, s.parties[i].ID)
			}
		}
	case s.pending:
		w = append(w, e.self.ID)
	default:
		w = append(w, s.initiator())
	}
	return w
}

func joinIDs(ids []sign.AgentID) string {
	if len(ids) == 0 {
		return "nobody"
	}
	b := make([]byte, 0, 16*len(ids))
	for i, id := range ids {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, id.Short()...)
	}
	return string(b)
}

func validSessionID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// lastSent copies the message just queued, to send it again if asked.
func lastSent(out *Output) *Outgoing {
	o := out.Send[len(out.Send)-1]
	return &o
}
