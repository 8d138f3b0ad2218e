package engine

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Signed offers. An initiator that has nothing to negotiate (a fixed price,
// an order to fill) may sign its proposal up front: it takes its lock and
// records its signed vote in one durable write, then sends one Offer frame
// carrying the agreement and its statement. A participant's decision is
// final: accept signs (with every statement here in a 2-party session, sign
// and commit are one durable write and the chain is never visibly locked)
// and its Ready lets the initiator commit; reject, abort or its deadline
// give a durable signed refusal, the abort certificate that frees the
// initiator. There is no counter and no witness. A 2-party offer costs two
// frames and one round trip instead of five frames and two round trips.
//
// The price: the initiator's chain is locked from the offer until every
// participant answered (or refused at its deadline), so an agent that makes
// offers takes part in one session at a time while they are open.

// startOffer builds the agreement of a signed offer at once and signs it;
// signAndSend sends the Offer after the durable vote.
func (e *Engine) startOffer(now int64, s *session, terms cbor.RawMessage, out *Output) {
	s.offer = true
	s.round, s.terms, s.termsHash = 1, terms, chain.Hash(sign.Hash(terms))
	a := offerAgreement(s.id, terms, s.parties, s.deadline, now)
	s.agreement, s.ah = a, AgreementHash(a)
	e.signAndSend(now, s, out, nil)
}

// offerAgreement is the agreement an initiator signs when it offers terms
// at now: round 1, the terms as given.
func offerAgreement(session string, terms cbor.RawMessage, parties []protocol.Party, deadline, now int64) *protocol.Agreement {
	return &protocol.Agreement{
		Session: session, Round: 1, Terms: terms, TermsHash: chain.Hash(sign.Hash(terms)),
		Parties: parties, Deadline: deadline, Timestamp: now,
	}
}

// offerBody is the Offer of session s with the initiator's Ready.
func (s *session) offerBody(ready *protocol.Ready) *protocol.Offer {
	return &protocol.Offer{
		Preflight: protocol.Preflight{Agreement: *s.agreement, AgreementHash: s.ah},
		Ready:     *ready,
	}
}

// onOffer: a participant receives a signed offer (or its retransmission).
func (e *Engine) onOffer(now int64, m *Received, o *protocol.Offer, out *Output) error {
	a := &o.Preflight.Agreement
	if !validSessionID(m.Session) || a.Session != m.Session {
		return fmt.Errorf("negotiate: offer from %s: session %q does not match its agreement", m.From.Short(), m.Session)
	}
	if err := checkParties(a.Parties); err != nil {
		return fmt.Errorf("negotiate: offer from %s: %v", m.From.Short(), err)
	}
	if a.Parties[0].ID != m.From {
		return fmt.Errorf("negotiate: offer from %s: the sender is not the first party (the initiator)", m.From.Short())
	}
	if a.Witness != nil {
		return fmt.Errorf("negotiate: offer from %s: a signed offer cannot name a witness", m.From.Short())
	}
	ah := AgreementHash(a)
	if ah != o.Preflight.AgreementHash || o.Ready.AgreementHash != ah {
		return fmt.Errorf("negotiate: offer from %s: agreement hash does not match the agreement", m.From.Short())
	}
	terms, err := canonicalTerms(a.Terms)
	if err != nil {
		return fmt.Errorf("negotiate: offer from %s: %w", m.From.Short(), err)
	}
	if !bytes.Equal(terms, a.Terms) || a.TermsHash != chain.Hash(sign.Hash(terms)) {
		return fmt.Errorf("negotiate: offer from %s: the terms are not canonical or do not match their hash", m.From.Short())
	}
	if s := e.sessions[m.Session]; s != nil {
		return e.offerAgain(now, s, m, ah, out)
	}
	if a.Round != 1 {
		return fmt.Errorf("negotiate: offer from %s: round %d, an offer is round 1", m.From.Short(), a.Round)
	}
	if a.Deadline <= now {
		return fmt.Errorf("negotiate: offer from %s: the deadline has passed", m.From.Short())
	}
	if err := e.admitSession(protocol.TypeOffer, m.From, a.Parties); err != nil {
		return err
	}
	if err := verifyStatement(a.Parties[0], a, ah, o.Ready.Head, o.Ready.Signature); err != nil {
		return fmt.Errorf("negotiate: offer from %s: %w", m.From.Short(), err)
	}
	s := e.newSession(m.Session, RoleParticipant, a.Parties, now)
	s.deadline, s.maxRounds, s.round = a.Deadline, 1, 1
	s.terms, s.termsHash = terms, a.TermsHash
	s.agreement, s.ah, s.offer, s.agreementFrame = a, ah, true, m.Raw
	ready := o.Ready
	if !e.noteHead(out, s, 0, &ready) {
		return fmt.Errorf("negotiate: offer from %s: it signed another chain head at seq %d before (a forked chain)", m.From.Short(), ready.Head.Seq)
	}
	s.readys[0] = &ready
	s.pending = true
	e.sessions[s.id] = s
	e.arm(s, TimerDeadline, s.deadline, out)
	e.event(out, s, EvProposal, Event{From: m.From, Terms: terms})
	return nil
}

// offerAgain answers an offer for a session this agent already knows: a
// retransmission gets what the initiator may have missed; an offer for a
// session this agent refused or never signed gets its durable refusal.
func (e *Engine) offerAgain(now int64, s *session, m *Received, ah chain.Hash, out *Output) error {
	if !s.tombstone && (s.role != RoleParticipant || s.indexOf(m.From) != 0) {
		return fmt.Errorf("negotiate: offer from %s: does not match session %s", m.From.Short(), s.id)
	}
	if s.agreement != nil && ah != s.ah {
		// The initiator's statement over the other agreement, if it
		// verifies, and the one held from the first offer convict it.
		var pair []protocol.WarrantItem
		if o, ok := m.Body.(*protocol.Offer); ok && s.readys[0] != nil {
			a := &o.Preflight.Agreement
			if st, err := protocol.StatementFor(a, m.From, o.Ready.Head); err == nil && verifyStatement(s.parties[0], a, ah, o.Ready.Head, o.Ready.Signature) == nil {
				pair = heldAnd(s, 0, protocol.StatementItem(st, o.Ready.Signature), true)
			}
		}
		if pair == nil {
			pair = framePair(s.agreementFrame, m.Raw)
		}
		e.equivocation(out, s, 0, "initiator sent two different agreements for one session", pair...)
		return fmt.Errorf("negotiate: offer from %s: a different agreement for session %s (equivocation)", m.From.Short(), s.id)
	}
	switch {
	case s.vote == voteSigned:
		e.answerFinalOrReady(s, m.From, out)
	case s.final != "":
		// Ended before this agent signed (a tombstone, a refusal, expiry).
		e.refuseEnded(now, s, ah, m.From, out)
	}
	return nil // still deciding: nothing to add
}

// offerCounterError refuses a counter on a signed offer. It matches
// ErrNotYourTurn (errors.Is) without that error's "no decision pending"
// wording, since a decision is pending: just not a counter.
type offerCounterError struct{ session string }

func (e offerCounterError) Error() string {
	return fmt.Sprintf("negotiate: counter session %s: a signed offer takes accept or reject only; reject it and propose your terms in a new session", e.session)
}

func (e offerCounterError) Is(target error) bool { return target == ErrNotYourTurn }

// truncateUTF8 makes s valid UTF-8 (CBOR text must be) and cuts it to at
// most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// decideOffer carries out a participant's decision on a signed offer.
func (e *Engine) decideOffer(now int64, s *session, d *Decision, out *Output) error {
	if !s.pending {
		return fmt.Errorf("negotiate: %s session %s: %w (the offer was already answered)", d.Action, s.id, ErrNotYourTurn)
	}
	switch d.Action {
	case ActAccept:
		s.pending, s.accepted = false, true
		if !e.refuseUnsignable(now, s, out) {
			e.signAndSend(now, s, out, nil)
		}
		return nil
	case ActReject:
		s.pending = false
		body := &protocol.Refuse{AgreementHash: s.ah, Reason: d.Reason, Rejected: true}
		e.refuseWith(now, s, body, StateRejected, "rejected here: "+d.Reason, out)
		return nil
	case ActCounter:
		return offerCounterError{session: s.id}
	default:
		return fmt.Errorf("negotiate: unknown action %q: use accept or reject (or abort)", d.Action)
	}
}
