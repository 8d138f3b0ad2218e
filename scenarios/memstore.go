package scenarios

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// MemStore is an in-memory source chain with the semantics of
// chain.Chain.Apply: lock, expected head, append with seq/prev/signature
// checks, release and checkpoints, all applied atomically per Write. It is
// the simulator's durable store: a crash loses the engine, never the store,
// and a Write is either wholly applied or not at all. Not safe for
// concurrent use.
type MemStore struct {
	pub         sign.PublicKey
	entries     []chain.Entry
	head        chain.Head
	lock        *chain.Lock
	checkpoints map[string][]byte
	writes      int
}

// NewMemStore creates a store holding the genesis entry of key.
func NewMemStore(key *sign.PrivateKey, nowMillis int64) (*MemStore, error) {
	g, err := chain.NewGenesis(key, nowMillis)
	if err != nil {
		return nil, fmt.Errorf("memstore: genesis: %w", err)
	}
	return &MemStore{
		pub: key.Public(), entries: []chain.Entry{*g}, head: g.Head(),
		checkpoints: make(map[string][]byte),
	}, nil
}

// Head returns the newest entry's seq and hash.
func (m *MemStore) Head() chain.Head { return m.head }

// Lock returns a copy of the lock, if one is held.
func (m *MemStore) Lock() (*chain.Lock, bool) {
	if m.lock == nil {
		return nil, false
	}
	return cloneLock(m.lock), true
}

// Checkpoints returns a copy of every session checkpoint.
func (m *MemStore) Checkpoints() map[string][]byte {
	out := make(map[string][]byte, len(m.checkpoints))
	for k, v := range m.checkpoints {
		out[k] = bytes.Clone(v)
	}
	return out
}

// Checkpoint returns a copy of one session's checkpoint and whether there
// is one.
func (m *MemStore) Checkpoint(session string) ([]byte, bool) {
	cp, ok := m.checkpoints[session]
	return bytes.Clone(cp), ok
}

// Entries returns a copy of the chain from its genesis.
func (m *MemStore) Entries() []chain.Entry {
	out := make([]chain.Entry, len(m.entries))
	for i := range m.entries {
		out[i] = *m.entries[i].Clone()
	}
	return out
}

// Writes counts the Writes applied (empty ones excluded).
func (m *MemStore) Writes() int { return m.writes }

// Verify checks the whole chain with the agreement-record check of the engine
// when checkPayload is set.
func (m *MemStore) Verify(checkPayload func(*chain.Entry, sign.PublicKey) error) error {
	if verr := chain.VerifyEntries(m.entries, chain.VerifyOptions{CheckPayload: checkPayload, Agent: m.pub.AgentID()}); verr != nil {
		return verr
	}
	last := m.entries[len(m.entries)-1].Head()
	if last != m.head {
		return fmt.Errorf("memstore: recorded head %s is not the last entry %s", m.head, last)
	}
	return nil
}

// Apply performs w atomically: every check first, then every change. The
// errors wrap the same chain sentinels as chain.Chain.Apply.
func (m *MemStore) Apply(w chain.Write) error {
	if w.Empty() {
		return nil
	}
	if len(w.Session) > chain.MaxSessionBytes {
		return fmt.Errorf("%w: session name is %d bytes", chain.ErrBadWrite, len(w.Session))
	}
	if w.Session == "" && (w.AcquireLock != nil || w.ReleaseLock || w.Checkpoint != nil || w.DeleteCheckpoint) {
		return fmt.Errorf("%w: lock, release and checkpoint need a Session", chain.ErrBadWrite)
	}
	if w.Checkpoint != nil && w.DeleteCheckpoint {
		return fmt.Errorf("%w: both Checkpoint and DeleteCheckpoint are set", chain.ErrBadWrite)
	}
	if len(w.Checkpoint) > chain.MaxCheckpointBytes {
		return fmt.Errorf("%w: checkpoint is %d bytes", chain.ErrBadWrite, len(w.Checkpoint))
	}
	if l := w.AcquireLock; l != nil {
		if l.Session != w.Session {
			return fmt.Errorf("%w: AcquireLock.Session differs from Write.Session", chain.ErrBadWrite)
		}
		if len(l.Parties) > chain.MaxLockParties {
			return fmt.Errorf("%w: lock lists %d parties", chain.ErrBadWrite, len(l.Parties))
		}
	}
	acquire := false
	if w.AcquireLock != nil {
		if m.lock != nil && m.lock.Session != w.Session {
			return fmt.Errorf("memstore: lock for session %s: %w by session %s", w.Session, chain.ErrLocked, m.lock.Session)
		}
		acquire = m.lock == nil
	}
	if w.ExpectHead != nil && *w.ExpectHead != m.head {
		return fmt.Errorf("memstore: session %s: %w: expected %s, head is %s", w.Session, chain.ErrHeadMoved, w.ExpectHead, m.head)
	}
	var newHead chain.Head
	if e := w.Append; e != nil {
		if m.lock != nil && m.lock.Session != w.Session {
			return fmt.Errorf("memstore: append seq %d: %w by session %s", e.Seq, chain.ErrLocked, m.lock.Session)
		}
		if e.Seq != m.head.Seq+1 {
			return fmt.Errorf("memstore: append seq %d: %w: head is %d", e.Seq, chain.ErrSeqMismatch, m.head.Seq)
		}
		if e.Prev != m.head.Hash {
			return fmt.Errorf("memstore: append seq %d: %w", e.Seq, chain.ErrPrevMismatch)
		}
		if e.Kind == "" || e.Kind == chain.KindGenesis || len(e.Kind) > chain.MaxKindBytes {
			return fmt.Errorf("memstore: append seq %d: %w: kind %q", e.Seq, chain.ErrBadEntry, e.Kind)
		}
		if err := chain.CheckDeterministic(e.Payload); err != nil {
			return fmt.Errorf("memstore: append seq %d: %w: %v", e.Seq, chain.ErrBadEntry, err)
		}
		h, err := e.ComputeHash()
		if err != nil {
			return fmt.Errorf("memstore: append seq %d: %w", e.Seq, err)
		}
		if err := m.pub.Verify(chain.SignDomain, h[:], e.Signature); err != nil {
			return fmt.Errorf("memstore: append seq %d: %w: %w", e.Seq, chain.ErrBadSignature, err)
		}
		newHead = chain.Head{Seq: e.Seq, Hash: h}
	}
	release := w.ReleaseLock && (m.lock != nil && m.lock.Session == w.Session || acquire)

	// Everything checked: apply.
	m.writes++
	if acquire {
		m.lock = cloneLock(w.AcquireLock)
	}
	if w.Append != nil {
		m.entries = append(m.entries, *w.Append.Clone())
		m.head = newHead
	}
	if release {
		m.lock = nil
	}
	if w.Checkpoint != nil {
		m.checkpoints[w.Session] = bytes.Clone(w.Checkpoint)
	}
	if w.DeleteCheckpoint {
		delete(m.checkpoints, w.Session)
	}
	return nil
}

// forget drops the lock and checkpoint of session, as a buggy engine that
// unlocks on a timer would (used only by the Bug fault hook).
func (m *MemStore) forget(session string) bool {
	if m.lock == nil || m.lock.Session != session {
		return false
	}
	m.lock = nil
	delete(m.checkpoints, session)
	return true
}

// sessions lists the checkpointed sessions, sorted.
func (m *MemStore) sessions() []string {
	ids := make([]string, 0, len(m.checkpoints))
	for id := range m.checkpoints {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func cloneLock(l *chain.Lock) *chain.Lock {
	c := *l
	c.Parties = append([]sign.AgentID(nil), l.Parties...)
	return &c
}
