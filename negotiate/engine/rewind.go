package engine

import (
	"fmt"

	"github.com/negotiate-dev/negotiate/chain"
)

// Rewind puts sessions back on the chain's durable state after the caller
// could not make a Step's Persist durable and nothing of the writes that
// failed reached the chain (chain.ErrNotWritten: the disk was full). For
// those sessions alone it does what a crash and restart would do, which
// the protocol is built to survive at any point: each session named is
// dropped from memory and read back from its durable checkpoint (read; a
// session without one is forgotten, as a restarted engine would not know
// it: it never signed, and a peer's later query is answered with a durable
// refusal), and the engine's head and lock become the chain's (head,
// lock). Nothing of the failed step may be sent.
//
// The returned Output holds only timers: a restored session that is
// signed and open asks its peers again on its resolve timer, so it ends
// with the certificate they hold once the chain takes writes again.
func (e *Engine) Rewind(now int64, head chain.Head, lock *chain.Lock, sessions []string, read func(session string) ([]byte, bool, error)) (Output, error) {
	var out Output
	e.head, e.lock = head, lock
	for _, id := range sessions {
		old := e.sessions[id]
		delete(e.sessions, id)
		cp, ok, err := read(id)
		if err != nil {
			return out, fmt.Errorf("negotiate: rewind session %s: read checkpoint: %w", id, err)
		}
		if !ok {
			continue
		}
		s, err := restoreSession(e, id, cp)
		if err != nil {
			return out, fmt.Errorf("negotiate: rewind session %s: %w", id, err)
		}
		if old != nil {
			for k, g := range old.gen {
				s.gen[k] = g // a timer armed before the rewind never matches a new one
			}
		}
		e.sessions[id] = s
		if s.final == "" && s.vote == voteSigned && s.role != RoleWitness {
			s.resolveDelay = e.cfg.ResolveInitialMillis
			e.arm(s, TimerResolve, now+s.resolveDelay, &out)
		}
	}
	if e.lock != nil {
		if s := e.sessions[e.lock.Session]; s == nil {
			if err := e.load(e.lock.Session); err != nil || e.sessions[e.lock.Session] == nil {
				return out, fmt.Errorf("negotiate: rewind: chain is locked by session %s, which the engine cannot restore", e.lock.Session)
			}
		}
	}
	return out, nil
}
