package engine

import (
	"github.com/negotiate-dev/negotiate/protocol"
)

// statementItem is party i's held statement of session s as a warrant item.
func statementItem(s *session, i int, r *protocol.Ready) protocol.WarrantItem {
	return protocol.StatementItem(protocol.Statement{
		Session: s.id, AgreementHash: r.AgreementHash, Parties: partyIDs(s.parties),
		Signer: s.parties[i].ID, Head: r.Head,
	}, r.Signature)
}

// frameItem is a signed frame as a warrant item; ok is false when there is
// no frame (a simulator run without sealing).
func frameItem(raw []byte) (protocol.WarrantItem, bool) {
	if len(raw) == 0 {
		return protocol.WarrantItem{}, false
	}
	return protocol.FrameItem(raw), true
}

// equivocation reports an EvViolation by party i of s and, when pair is
// two items that make a warrant that verifies (protocol.NewWarrant),
// carries it in the event (Event.Warrant) for the driver to store and
// publish. Building it is pure: signature checks, no I/O.
func (e *Engine) equivocation(out *Output, s *session, i int, reason string, pair ...protocol.WarrantItem) {
	ev := Event{From: s.parties[i].ID, Reason: reason}
	if len(pair) == 2 {
		if pub, err := s.parties[i].PublicKey(); err == nil {
			if raw, _, err := protocol.NewWarrant(pub, pair[0], pair[1]); err == nil {
				ev.Warrant = raw
			}
		}
	}
	e.event(out, s, EvViolation, ev)
}

// framePair is the warrant items of two signed frames, or none when
// either is missing.
func framePair(a, b []byte) []protocol.WarrantItem {
	ia, oka := frameItem(a)
	ib, okb := frameItem(b)
	if !oka || !okb {
		return nil
	}
	return []protocol.WarrantItem{ia, ib}
}

// heldAnd is party i's held statement and item, or none when this agent
// holds no statement of i.
func heldAnd(s *session, i int, item protocol.WarrantItem, ok bool) []protocol.WarrantItem {
	if i < 0 || s.readys[i] == nil || !ok {
		return nil
	}
	return []protocol.WarrantItem{statementItem(s, i, s.readys[i]), item}
}
