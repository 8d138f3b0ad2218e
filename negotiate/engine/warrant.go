package engine

import (
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
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

// Limits of the memory of other agents' signed heads.
const (
	// headsPerAgent is how many recent heads of one agent are kept: a fork
	// shows as two statements at one seq, and an agent signs at its newest
	// heads, so a short window catches it.
	headsPerAgent = 8
	// maxHeadAgents bounds the agents whose heads are kept.
	maxHeadAgents = 1024
)

// signedHeads are the statements one agent was seen signing, by head seq,
// oldest first in order.
type signedHeads struct {
	at    map[uint64]protocol.WarrantItem
	order []uint64
}

// noteHead remembers party i's verified statement r in session s. If the
// agent signed another hash at the same seq before, it reports the fork
// with a warrant (two statements, each verified when it arrived) and
// returns false: the caller does not take a statement from a forked chain.
func (e *Engine) noteHead(out *Output, s *session, i int, r *protocol.Ready) bool {
	id := s.parties[i].ID
	if i == s.selfIdx || id == e.self.ID {
		return true
	}
	if e.heads == nil {
		e.heads = make(map[sign.AgentID]*signedHeads)
	}
	h := e.heads[id]
	if h == nil {
		if len(e.heads) >= maxHeadAgents {
			clear(e.heads) // forget all rather than grow: detection is best effort
		}
		h = &signedHeads{at: make(map[uint64]protocol.WarrantItem, headsPerAgent)}
		e.heads[id] = h
	}
	item := statementItem(s, i, r)
	if old, ok := h.at[r.Head.Seq]; ok {
		if old.Statement.Head.Hash != r.Head.Hash {
			e.equivocation(out, s, i, "party signed two different chain heads at one seq (a forked chain)", old, item)
			return false
		}
		return true
	}
	if len(h.order) >= headsPerAgent {
		delete(h.at, h.order[0])
		h.order = h.order[1:]
	}
	h.at[r.Head.Seq] = item
	h.order = append(h.order, r.Head.Seq)
	return true
}
