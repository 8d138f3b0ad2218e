package negotiate

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// Evict drops from memory the sessions that ended at least retainMillis
// before now and whose deadline has passed, and returns how many it
// dropped. An ended session costs about 3 KB of memory, so a node that
// never dropped them would grow without bound.
//
// Nothing is forgotten that matters: every session in which this agent
// signed anything (a vote, a record, a refusal) has a durable checkpoint,
// and the driver must Restore a session from it before it steps any input
// that names the session (Node does, for messages, decisions and
// queries). Sessions that ended unsigned leave no checkpoint; after their
// deadline no proposal or offer can reopen them, and a query about one is
// answered as for a session this agent never signed, which is the truth.
func (e *Engine) Evict(now, retainMillis int64) int {
	n := 0
	for id, s := range e.sessions {
		if !droppable(s.final, s.since, s.deadline, now, retainMillis) {
			continue
		}
		if e.lock != nil && e.lock.Session == id {
			continue
		}
		delete(e.sessions, id)
		n++
	}
	return n
}

// Has reports whether the engine holds session id in memory.
func (e *Engine) Has(id string) bool { return e.sessions[id] != nil }

// Held is the number of sessions the engine holds in memory, open or
// ended.
func (e *Engine) Held() int { return len(e.sessions) }

// Restore puts a session back from its durable checkpoint (the bytes the
// engine wrote with chain.Write.Checkpoint), as NewEngine does at start:
// the driver calls it for a session Evict dropped when an input names the
// session again. A session already held is left as it is.
func (e *Engine) Restore(id string, checkpoint []byte) error {
	if e.sessions[id] != nil {
		return nil
	}
	s, err := restoreSession(e, id, checkpoint)
	if err != nil {
		return fmt.Errorf("negotiate: restore session %s: %w", id, err)
	}
	e.sessions[id] = s
	return nil
}

// CheckpointInfo reports a session from its durable checkpoint without
// holding it, for listing sessions Evict dropped.
func (e *Engine) CheckpointInfo(id string, checkpoint []byte) (SessionInfo, bool, error) {
	s, err := restoreSession(e, id, checkpoint)
	if err != nil {
		return SessionInfo{}, false, fmt.Errorf("negotiate: session %s: %w", id, err)
	}
	return e.info(s), s.tombstone, nil
}

// droppable is the rule of Evict: ended at least retainMillis ago, and
// past its deadline.
func droppable(final State, since, deadline, now, retainMillis int64) bool {
	return final != "" && now-since >= retainMillis && now >= deadline
}

// checkpointDroppable reports whether the session of a checkpoint is one
// Evict would drop at now, reading only its state and times; a driver
// starting up leaves such sessions on disk instead of handing them to
// NewEngine. A checkpoint it cannot read is not droppable (NewEngine then
// reports it).
func checkpointDroppable(checkpoint []byte, now, retainMillis int64) bool {
	var head struct {
		Final    State `cbor:"final"`
		Since    int64 `cbor:"since"`
		Deadline int64 `cbor:"deadline"`
	}
	if err := cbor.Unmarshal(checkpoint, &head); err != nil {
		return false
	}
	return droppable(head.Final, head.Since, head.Deadline, now, retainMillis)
}
