package engine

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/negotiate-dev/negotiate/protocol"
)

// ErrNotNext: a recovered record does not go at the chain's next seq (an
// earlier one is missing, or the chain holds it already).
var ErrNotNext = errors.New("negotiate: record does not go next on this chain")

// Recover is a countersigned record this agent signed and committed, but
// its chain lost (it was restored from an older copy), sent back by a
// counterparty that holds it: the exact CBOR record, a chain entry's
// payload.
type Recover struct {
	Record []byte
}

// recoverRecord appends a lost record where it was: the record must verify
// (every statement), name this agent, and carry this agent's current head
// as its own, so the entry it makes is the lost one (same seq, prev, time
// and payload, so the same hash) and the records after it link again. The
// session gets its committed checkpoint, so it answers queries as before.
// Nothing is sent. It refuses while the chain is locked, a record that
// goes elsewhere (ErrNotNext), and a session this agent has answered since
// (a refusal it gave after the restore, not knowing the session).
func (e *Engine) recoverRecord(now int64, r *Recover, out *Output) error {
	rec, err := DecodeRecord(r.Record)
	if err != nil {
		return fmt.Errorf("negotiate: recover: %w", err)
	}
	if !bytes.Equal(encode(rec), r.Record) {
		return fmt.Errorf("negotiate: recover: %w: the record is not in its canonical encoding", protocol.ErrMalformed)
	}
	id := rec.Agreement.Session
	idx := -1
	for i, p := range rec.Agreement.Parties {
		if p.ID == e.self.ID {
			idx = i
		}
	}
	if idx < 0 || idx >= len(rec.Heads) || idx >= len(rec.Signatures) {
		return fmt.Errorf("negotiate: recover: the record of session %s does not name this agent", id)
	}
	if err := VerifyRecord(rec); err != nil {
		return fmt.Errorf("negotiate: recover: record of session %s: %w", id, err)
	}
	head := rec.Heads[idx]
	if head != e.head {
		return fmt.Errorf("%w: the record of session %s goes at seq %d, the chain's next seq is %d", ErrNotNext, id, head.Seq+1, e.head.Seq+1)
	}
	if e.lock != nil {
		return fmt.Errorf("negotiate: recover: the chain is locked by session %s: recover once it ended", e.lock.Session)
	}
	if err := e.load(id); err != nil {
		return err
	}
	if s := e.sessions[id]; s != nil {
		return fmt.Errorf("negotiate: recover: this agent has answered session %s since its chain lost the record (%s): it cannot append it", id, orNone(string(s.final)))
	}
	role := RoleParticipant
	if idx == 0 {
		role = RoleInitiator
	}
	s := e.newSession(id, role, rec.Agreement.Parties, now)
	a := rec.Agreement
	s.agreement, s.ah = &a, AgreementHash(&a)
	s.round, s.terms, s.termsHash, s.deadline, s.witness = a.Round, a.Terms, a.TermsHash, a.Deadline, a.Witness
	s.accepted, s.vote, s.head = true, voteSigned, head
	s.readys[idx] = &protocol.Ready{AgreementHash: s.ah, Head: head, Signature: rec.Signatures[idx]}
	e.sessions[id] = s
	e.commitRecord(now, s, rec, out)
	out.Send = nil // the others hold it already
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "open"
	}
	return s
}
