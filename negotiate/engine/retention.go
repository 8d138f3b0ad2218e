package engine

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// evictEveryMillis is how often an engine with CoreConfig.Checkpoint looks
// for ended sessions to drop (more often if the retention is shorter).
const evictEveryMillis = 5000

// Ended sessions leave memory (CoreConfig.Checkpoint): an ended session
// costs about 3 KB, so an engine that kept them all would grow without
// bound. Nothing is forgotten that matters: every session in which this
// agent signed anything (a vote, a record, a refusal) has a durable
// checkpoint, and load reads it back before Step or a view touches the
// session, so it answers exactly as before. Sessions that ended unsigned
// leave no checkpoint; after their deadline no proposal or offer can
// reopen them, and a query about one is answered as for a session this
// agent never signed, which is the truth.

// evictDue drops the ended sessions that are due, at most every
// evictEveryMillis (or the retention, if shorter).
func (e *Engine) evictDue(now int64) {
	keep := e.cfg.EndedRetentionMillis
	if e.cfg.Checkpoint == nil || now-e.lastEvict < min(evictEveryMillis, keep) {
		return
	}
	e.lastEvict = now
	e.Evict(now, keep)
}

// Evict drops from memory the sessions that ended at least retainMillis
// before now and whose deadline has passed, and returns how many.
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

// load reads session id back from its checkpoint if it was dropped. An ID
// with no checkpoint stays unknown.
func (e *Engine) load(id string) error {
	if id == "" || e.cfg.Checkpoint == nil || e.sessions[id] != nil {
		return nil
	}
	cp, ok, err := e.cfg.Checkpoint(id)
	if err != nil {
		return fmt.Errorf("negotiate: session %s: read checkpoint: %w", id, err)
	}
	if !ok {
		return nil
	}
	s, err := restoreSession(e, id, cp)
	if err != nil {
		return fmt.Errorf("negotiate: restore session %s: %w", id, err)
	}
	e.sessions[id] = s
	return nil
}

// Held is the number of sessions the engine holds in memory, open or
// ended.
func (e *Engine) Held() int { return len(e.sessions) }

// CheckpointInfo reports a session from its durable checkpoint without
// holding it, and whether it is a tombstone (a refusal of a session this
// agent never knew).
func (e *Engine) CheckpointInfo(id string, checkpoint []byte) (SessionInfo, bool, error) {
	s, err := restoreSession(e, id, checkpoint)
	if err != nil {
		return SessionInfo{}, false, fmt.Errorf("negotiate: session %s: %w", id, err)
	}
	return e.info(s), s.tombstone, nil
}

// droppable is the rule of evict: ended at least retainMillis ago, and
// past its deadline.
func droppable(final State, since, deadline, now, retainMillis int64) bool {
	return final != "" && now-since >= retainMillis && now >= deadline
}

// CheckpointDroppable reports whether the session of a checkpoint is one
// evict would drop at now, reading only its state and times; a driver
// starting up leaves such sessions on disk instead of handing them to
// NewEngine. A checkpoint it cannot read is not droppable (NewEngine then
// reports it).
func CheckpointDroppable(checkpoint []byte, now, retainMillis int64) bool {
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

// Session is the session an input names: a Start's, a Message's or a
// Decision's ("" for timers, unreachable reports and Resume, which carry
// or need none).
func (in Input) Session() string {
	switch {
	case in.Message != nil:
		return in.Message.Session
	case in.Decision != nil:
		return in.Decision.Session
	case in.Start != nil:
		return in.Start.Session
	}
	return ""
}

// Holds reports whether the session id is in memory (not dropped).
func (e *Engine) Holds(id string) bool { return e.sessions[id] != nil }
