package engine

import (
	"fmt"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Witness mode. A proposal may name a witness: an agent outside the
// parties whose node decides, durably and first-come, how a signed session
// ends. It commits when it holds every party's signed statement and aborts
// on a party's refusal or, after the deadline, on a party's request. The
// parties commit only with the witness's signed commit decision in the
// record, so every session ends while the witness is reachable.

func sameWitness(a, b *protocol.Party) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return sameParties([]protocol.Party{*a}, []protocol.Party{*b})
}

func (e *Engine) witnessReceive(now int64, m *Received, out *Output) error {
	s := e.sessions[m.Session]
	if s == nil {
		pf := m.Body.(*protocol.Preflight)
		a := &pf.Agreement
		isParty := false
		for _, p := range a.Parties {
			isParty = isParty || p.ID == m.From
		}
		if a.Witness == nil || a.Witness.ID != e.self.ID || a.Session != m.Session || !isParty {
			return fmt.Errorf("negotiate: preflight from %s: not a witness request for this agent", m.From.Short())
		}
		if AgreementHash(a) != pf.AgreementHash {
			return fmt.Errorf("negotiate: preflight from %s: agreement hash does not match", m.From.Short())
		}
		if err := checkParties(a.Parties); err != nil {
			return fmt.Errorf("negotiate: witness preflight from %s: %v", m.From.Short(), err)
		}
		if e.openSessions() >= MaxOpenSessions {
			return fmt.Errorf("negotiate: witness preflight from %s: %d sessions are open, the limit", m.From.Short(), MaxOpenSessions)
		}
		s = e.newSession(m.Session, RoleWitness, a.Parties, now)
		s.agreement, s.ah, s.deadline, s.round, s.witness = a, pf.AgreementHash, a.Deadline, a.Round, a.Witness
		s.terms, s.termsHash = a.Terms, a.TermsHash
		s.phase = PhaseSigning
		e.sessions[s.id] = s
		// Durable before anything depends on it: the witness knows the session.
		out.Persist = append(out.Persist, chain.Write{Session: s.id, Checkpoint: e.checkpoint(s)})
		e.event(out, s, EvPhase, Event{From: m.From})
		for _, r := range s.early {
			_ = e.witnessReceive(now, r, out)
		}
		s.early = nil
		return nil
	}
	i := s.indexOf(m.From)
	if i < 0 {
		return fmt.Errorf("negotiate: %s from %s: not a party of witnessed session %s", m.Type, m.From.Short(), s.id)
	}
	s.last[m.From] = PartyActivity{Type: m.Type, At: now}
	switch b := m.Body.(type) {
	case *protocol.Preflight:
		if s.final != "" {
			e.witnessAnswer(s, m.From, out) // a retransmission from a party still waiting
		}
	case *protocol.Ready:
		if b.AgreementHash != s.ah {
			return fmt.Errorf("negotiate: ready from %s: for another agreement", m.From.Short())
		}
		if err := verifyStatement(s.parties[i], s.agreement, s.ah, b.Head, b.Signature); err != nil {
			return fmt.Errorf("negotiate: ready from %s: %w", m.From.Short(), err)
		}
		if s.readys[i] == nil {
			s.readys[i] = b
		}
		if s.final == "" && len(s.readys) == len(s.parties) {
			e.witnessCommit(now, s, out)
		}
	case *protocol.Refuse:
		if b.AgreementHash != s.ah || len(m.Raw) == 0 {
			return fmt.Errorf("negotiate: refuse from %s: for another agreement", m.From.Short())
		}
		if s.final == "" {
			e.witnessAbort(now, s, m.Raw, fmt.Sprintf("refused by %s: %s", m.From.Short(), b.Reason), out)
		}
	case *protocol.AbortAsk:
		if b.AgreementHash != s.ah {
			return fmt.Errorf("negotiate: abort request from %s: for another agreement", m.From.Short())
		}
		if s.final == "" {
			if now < s.deadline {
				return fmt.Errorf("negotiate: abort request from %s: the window is open until %d", m.From.Short(), s.deadline)
			}
			dec, err := sealCertificate(e.key, protocol.TypeDecision, s.id, &protocol.Decision{AgreementHash: s.ah}, now)
			if err != nil {
				panic(fmt.Sprintf("negotiate: seal decision: %v", err))
			}
			e.witnessAbort(now, s, dec, "the witness decided abort: window passed without every signature", out)
		}
		e.witnessAnswer(s, m.From, out)
	case *protocol.Query:
		e.witnessAnswer(s, m.From, out)
	default:
		return fmt.Errorf("negotiate: %s from %s: not for a witness", m.Type, m.From.Short())
	}
	return nil
}

func (e *Engine) witnessCommit(now int64, s *session, out *Output) {
	rec := &protocol.Record{Agreement: *s.agreement}
	for i := range s.parties {
		rec.Heads = append(rec.Heads, s.readys[i].Head)
		rec.Signatures = append(rec.Signatures, s.readys[i].Signature)
	}
	rh := RecordHash(rec)
	dec, err := sealCertificate(e.key, protocol.TypeDecision, s.id, &protocol.Decision{AgreementHash: s.ah, Commit: true, RecordHash: rh}, now)
	if err != nil {
		panic(fmt.Sprintf("negotiate: seal decision: %v", err))
	}
	rec.WitnessDecision = dec
	s.receipt, s.recordHash = encode(rec), RecordHash(rec)
	e.finishState(now, s, StateCommitted, "")
	out.Persist = append(out.Persist, chain.Write{Session: s.id, Checkpoint: e.checkpoint(s)})
	for _, p := range s.parties {
		e.send(out, s, p.ID, protocol.TypeCommit, &protocol.Commit{Record: *rec})
	}
	e.reportFinal(s, out)
}

func (e *Engine) witnessAbort(now int64, s *session, cert []byte, reason string, out *Output) {
	s.abortCert = cert
	e.finishState(now, s, StateAborted, reason)
	out.Persist = append(out.Persist, chain.Write{Session: s.id, Checkpoint: e.checkpoint(s)})
	for _, p := range s.parties {
		e.send(out, s, p.ID, protocol.TypeAbort, &protocol.Abort{Certificate: cert})
	}
	e.reportFinal(s, out)
}

// witnessAnswer tells a party the witness's decision, if any.
func (e *Engine) witnessAnswer(s *session, to sign.AgentID, out *Output) {
	switch s.final {
	case StateCommitted:
		if rec, err := DecodeRecord(s.receipt); err == nil {
			e.send(out, s, to, protocol.TypeCommit, &protocol.Commit{Record: *rec})
		}
	case StateAborted:
		e.send(out, s, to, protocol.TypeAbort, &protocol.Abort{Certificate: s.abortCert})
	default:
		e.send(out, s, to, protocol.TypeStatus, &protocol.Status{State: string(s.phase)})
	}
}

// openAbortCert verifies an abort certificate for session s: a signed
// Refuse by one of its parties, or the witness's signed abort decision.
// rejected is set for a party's rejection of a signed offer.
func openAbortCert(cert []byte, s *session) (from sign.AgentID, ah chain.Hash, reason string, busy, rejected bool, err error) {
	env, err := protocol.OpenCertificate(cert)
	if err != nil {
		return "", ah, "", false, false, fmt.Errorf("abort certificate: %w", err)
	}
	if env.Msg.Session != s.id {
		return "", ah, "", false, false, fmt.Errorf("abort certificate is for session %s, not %s", env.Msg.Session, s.id)
	}
	from = env.Msg.From
	switch b := env.Body.(type) {
	case *protocol.Refuse:
		i := s.indexOf(from)
		if i < 0 || !s.parties[i].ID.Matches(env.Key) {
			return "", ah, "", false, false, fmt.Errorf("abort certificate is signed by %s, not a party", from.Short())
		}
		if b.Rejected {
			return from, b.AgreementHash, fmt.Sprintf("rejected by %s: %s", from.Short(), b.Reason), false, true, nil
		}
		return from, b.AgreementHash, fmt.Sprintf("refused by %s: %s", from.Short(), b.Reason), b.Busy, false, nil
	case *protocol.Decision:
		if s.witness == nil || from != s.witness.ID || b.Commit {
			return "", ah, "", false, false, fmt.Errorf("abort certificate is a decision not by this session's witness, or not an abort")
		}
		return from, b.AgreementHash, "the witness decided abort", false, false, nil
	default:
		return "", ah, "", false, false, fmt.Errorf("abort certificate is a %q message, not a refusal or a witness decision", env.Msg.Type)
	}
}
