package chain

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/negotiate-dev/negotiate/sign"
)

// Write limits.
const (
	// MaxSessionBytes bounds a session name (the engine uses 32 hex chars).
	MaxSessionBytes = 128
	// MaxLockParties bounds the parties recorded in a lock; a countersigning
	// session has far fewer.
	MaxLockParties = 256
	// MaxCheckpointBytes bounds one session checkpoint: session state plus
	// an agreement record and its certificate.
	MaxCheckpointBytes = 4 << 20
)

// Lock is the chain lock: while a session holds it, only that session may
// append. It is released only by a Write with ReleaseLock from the same
// session (its commit or abort), never by time.
type Lock struct {
	Session string         `cbor:"session" json:"session"`
	Since   int64          `cbor:"since" json:"since"` // unix ms
	Parties []sign.AgentID `cbor:"parties" json:"parties"`
}

func (l *Lock) clone() *Lock {
	c := *l
	c.Parties = append([]sign.AgentID(nil), l.Parties...)
	return &c
}

func (l *Lock) describe() string {
	ids := make([]string, len(l.Parties))
	for i, p := range l.Parties {
		ids[i] = p.Short()
	}
	return fmt.Sprintf("session %s (since %d ms, parties [%s])", l.Session, l.Since, strings.Join(ids, " "))
}

// Write is everything one durable transaction does. The parts are applied in
// this order: AcquireLock, ExpectHead, Append, ReleaseLock, Checkpoint or
// DeleteCheckpoint. If any part fails, nothing is written.
type Write struct {
	// Session the write belongs to ("" for none). Required for a lock,
	// release or checkpoint.
	Session string
	// AcquireLock takes the chain lock for Session (AcquireLock.Session must
	// equal Session). It fails with ErrLocked if another session holds it;
	// if Session already holds it, the lock is kept unchanged.
	AcquireLock *Lock
	// ExpectHead, if set, fails the write with ErrHeadMoved unless it is the
	// current head (checked after AcquireLock).
	ExpectHead *Head
	// Append adds an entry: its seq must be head+1 (ErrSeqMismatch), its
	// prev the head hash (ErrPrevMismatch) and its signature the chain key's
	// (ErrBadSignature). Refused with ErrLocked while another session holds
	// the lock.
	Append *Entry
	// ReleaseLock releases the lock if Session holds it (no-op otherwise).
	ReleaseLock bool
	// Checkpoint replaces the checkpoint of Session (nil = leave unchanged).
	Checkpoint []byte
	// DeleteCheckpoint removes the checkpoint of Session.
	DeleteCheckpoint bool
}

// Empty reports whether w does nothing.
func (w *Write) Empty() bool {
	return w.AcquireLock == nil && w.ExpectHead == nil && w.Append == nil && !w.ReleaseLock && w.Checkpoint == nil && !w.DeleteCheckpoint
}

// prepared is a Write checked and encoded outside the transaction.
type prepared struct {
	w        Write
	lockRaw  []byte
	entryRaw []byte
	headRaw  []byte
	newHead  Head
}

func (c *Chain) prepare(w Write) (*prepared, error) {
	p := &prepared{w: w}
	if c.readOnly {
		return nil, fmt.Errorf("chain: %w: %s", ErrReadOnly, c.path)
	}
	if len(w.Session) > MaxSessionBytes {
		return nil, fmt.Errorf("chain: %w: session name is %d bytes, the limit is %d", ErrBadWrite, len(w.Session), MaxSessionBytes)
	}
	if w.Session == "" && (w.AcquireLock != nil || w.ReleaseLock || w.Checkpoint != nil || w.DeleteCheckpoint) {
		return nil, fmt.Errorf("chain: %w: lock, release and checkpoint need a Session", ErrBadWrite)
	}
	if w.Checkpoint != nil && w.DeleteCheckpoint {
		return nil, fmt.Errorf("chain: %w: both Checkpoint and DeleteCheckpoint are set", ErrBadWrite)
	}
	if len(w.Checkpoint) > MaxCheckpointBytes {
		return nil, fmt.Errorf("chain: %w: checkpoint is %d bytes, the limit is %d", ErrBadWrite, len(w.Checkpoint), MaxCheckpointBytes)
	}
	if l := w.AcquireLock; l != nil {
		if l.Session != w.Session {
			return nil, fmt.Errorf("chain: %w: AcquireLock.Session %q differs from Write.Session %q", ErrBadWrite, abbreviate(l.Session), abbreviate(w.Session))
		}
		if len(l.Parties) > MaxLockParties {
			return nil, fmt.Errorf("chain: %w: lock lists %d parties, the limit is %d", ErrBadWrite, len(l.Parties), MaxLockParties)
		}
		raw, err := encMode.Marshal(l)
		if err != nil {
			return nil, fmt.Errorf("chain: encode lock: %w", err)
		}
		p.lockRaw = raw
	}
	if e := w.Append; e != nil {
		if e.Seq == 0 {
			return nil, fmt.Errorf("chain: append seq 0: %w: the genesis entry is written by Create", ErrSeqMismatch)
		}
		h, err := e.ComputeHash()
		if err != nil {
			return nil, fmt.Errorf("chain: append seq %d: %w", e.Seq, err)
		}
		// An entry NewEntryAt signed here with this chain's key was checked
		// and signed moments ago; anything else is checked in full.
		if !takeSigned(h, e.Signature, c.pub) {
			if err := e.checkShape(); err != nil {
				return nil, fmt.Errorf("chain: append seq %d: %w", e.Seq, err)
			}
			if h, err = e.verifySignature(c.pub); err != nil {
				return nil, fmt.Errorf("chain: append seq %d: %w", e.Seq, err)
			}
		}
		raw, err := e.Marshal()
		if err != nil {
			return nil, fmt.Errorf("chain: append seq %d: %w", e.Seq, err)
		}
		if len(raw) > MaxEntryBytes {
			return nil, fmt.Errorf("chain: append seq %d: %w: %d bytes, the limit is %d", e.Seq, ErrBadEntry, len(raw), MaxEntryBytes)
		}
		p.entryRaw = raw
		p.newHead = Head{Seq: e.Seq, Hash: h}
		if p.headRaw, err = encMode.Marshal(p.newHead); err != nil {
			return nil, fmt.Errorf("chain: encode head: %w", err)
		}
	}
	return p, nil
}

// Apply performs w as one atomic write and returns after it is durable:
// its record is in the chain file's write-ahead journal and synced (the
// journal reaches the bbolt file later, see committer). On error nothing
// was written.
//
// Concurrent Apply calls on chains of one file share journal writes (group
// commit): the first caller writes at once; callers that arrive during that
// write are written together in the next one, with one fdatasync. Each
// Write still succeeds or fails on its own.
func (c *Chain) Apply(w Write) error {
	if w.Empty() {
		return nil
	}
	p, err := c.prepare(w)
	if err != nil {
		return err
	}
	return c.commits.apply(c, p)
}

// ApplyBatch is Apply. It is kept for callers written when Apply did not
// yet share writes between concurrent callers.
func (c *Chain) ApplyBatch(w Write) error { return c.Apply(w) }

// chainState is a chain's head and lock as a group commit sees them: with
// every durable write and the batch's earlier writes applied.
type chainState struct {
	head Head
	lock *Lock
}

// state returns the chain's current head and lock.
func (c *Chain) state() *chainState {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return &chainState{head: c.head, lock: c.lock}
}

// checked is what check found: the state the write starts from.
type checked struct {
	head             Head
	lock             *Lock
	acquire, release bool
}

// check checks p against the chain's state st and changes nothing.
func (c *Chain) check(st *chainState, p *prepared) (checked, error) {
	w := &p.w
	head, lock := st.head, st.lock
	acquire := false
	if w.AcquireLock != nil {
		if lock != nil && lock.Session != w.Session {
			return checked{}, fmt.Errorf("chain: lock for session %s: %w by %s", w.Session, ErrLocked, lock.describe())
		}
		acquire = lock == nil
	}
	if w.ExpectHead != nil && *w.ExpectHead != head {
		return checked{}, fmt.Errorf("chain: session %s: %w: expected head %s, head is %s", w.Session, ErrHeadMoved, w.ExpectHead, head)
	}
	if e := w.Append; e != nil {
		if lock != nil && lock.Session != w.Session {
			return checked{}, fmt.Errorf("chain: append seq %d: %w by %s", e.Seq, ErrLocked, lock.describe())
		}
		if e.Seq != head.Seq+1 {
			return checked{}, fmt.Errorf("chain: append seq %d: %w: the head is %d, the next entry must be %d", e.Seq, ErrSeqMismatch, head.Seq, head.Seq+1)
		}
		if e.Prev != head.Hash {
			return checked{}, fmt.Errorf("chain: append seq %d: %w: prev %s, head hash %s", e.Seq, ErrPrevMismatch, e.Prev, head.Hash)
		}
		if c.storedBeyond != 0 && e.Seq == c.storedBeyond {
			return checked{}, fmt.Errorf("chain: append seq %d: %w: an entry is stored beyond the head (run `negotiate chain verify`)", e.Seq, ErrSeqMismatch)
		}
	}
	release := w.ReleaseLock && (lock != nil && lock.Session == w.Session || acquire)
	return checked{head: head, lock: lock, acquire: acquire, release: release}, nil
}

// record returns the journal record of a Write that check accepted and the
// chain's state after it; nil if the Write changes nothing.
func (c *Chain) record(p *prepared, ck checked) (*journalRecord, chainState) {
	w := &p.w
	r := &journalRecord{Root: c.root, Session: w.Session}
	next := chainState{head: ck.head, lock: ck.lock}
	changed := false
	if ck.acquire {
		r.Lock = p.lockRaw
		next.lock = w.AcquireLock.clone()
		changed = true
	}
	if w.Append != nil {
		r.Seq, r.Entry, r.Head = w.Append.Seq, p.entryRaw, p.headRaw
		next.head = p.newHead
		changed = true
	}
	if ck.release {
		r.Release = true
		next.lock = nil
		changed = true
	}
	if w.Checkpoint != nil {
		r.PutCheckpoint, r.Checkpoint = true, bytes.Clone(w.Checkpoint)
		changed = true
	}
	if w.DeleteCheckpoint {
		r.DeleteCheckpoint = true
		changed = true
	}
	if !changed {
		return nil, next
	}
	return r, next
}
