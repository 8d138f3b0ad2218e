package chain

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// maxCommitBatch bounds the writes of one group commit, so one journal
// write stays small and a caller never waits behind an unbounded queue.
const maxCommitBatch = 512

// Flush policy: the journal's records are applied to the bbolt file when
// this many have gathered, when the active journal file is this large, or
// this long after the first of them, whichever comes first; and on Close.
const (
	flushRecords = 4096
	flushBytes   = 16 << 20
	flushDelay   = 500 * time.Millisecond
)

// committer makes the Writes of one bbolt file (a chain file or a Store)
// durable, in a write-ahead journal with group commit: Apply calls that
// arrive while a journal write is being synced wait and are written
// together in the next one, with one fdatasync. There is no timer on the
// way to durability: at low load every write is synced at once, alone.
//
// The caller whose write finds no commit running leads: it commits the
// queue, then hands the lead to the oldest waiting caller, so no caller
// commits others' writes for longer than one journal write.
//
// Records reach the bbolt file in the background, many at a time (see the
// flush policy); until then the overlay (pending) answers reads.
type committer struct {
	db       *bolt.DB
	path     string
	readOnly bool
	// lsnBucket returns the bucket holding keyJournalLSN and keyJournalID.
	lsnBucket func(tx *bolt.Tx) *bolt.Bucket

	mu      sync.Mutex // guards leading and queue
	leading bool
	queue   []*commitReq

	jmu       sync.Mutex // guards the journal fields below
	id        []byte
	files     [2]*journalFile
	active    int
	lsn       uint64           // number of the last record written
	unflushed []*journalRecord // records in the active file, in order
	flushing  bool
	flushDone chan struct{} // closed when the running flush ends
	timer     *time.Timer
	broken    error // set when a journal write or a flush failed: nothing more is written
	// retry holds the records of journal file retryFile when their flush
	// failed for want of space: they stay in that file and the overlay,
	// and are flushed again (flushDelay later, or by flushNow) before the
	// active file may switch back to it. flushErr is that failure, nil
	// once a flush succeeds.
	retry     []*journalRecord
	retryFile int
	flushErr  error
	closed    bool
	buf       []byte

	pmu     sync.RWMutex // guards pending
	pending map[string]*pendingChain

	txs, writes, flushes atomic.Uint64
}

// commitReq is one Write waiting for a group commit.
type commitReq struct {
	c    *Chain
	p    *prepared
	err  error
	done chan struct{} // closed when the write is durable or failed
	lead chan struct{} // receives when this caller must lead the next commit
}

func newCommitter(db *bolt.DB, path string, readOnly bool, lsnBucket func(tx *bolt.Tx) *bolt.Bucket) *committer {
	return &committer{db: db, path: path, readOnly: readOnly, lsnBucket: lsnBucket, pending: map[string]*pendingChain{}}
}

// CommitStats counts the group commits of a file.
type CommitStats struct {
	// Transactions is the number of group commits (journal writes, each
	// with one fdatasync); Writes the number of Writes they carried.
	Transactions uint64 `json:"transactions"`
	Writes       uint64 `json:"writes"`
	// Flushes is the number of times the journal was applied to the bbolt
	// file (one synced bbolt transaction each).
	Flushes uint64 `json:"flushes"`
}

func (g *committer) stats() CommitStats {
	return CommitStats{Transactions: g.txs.Load(), Writes: g.writes.Load(), Flushes: g.flushes.Load()}
}

// start prepares the journal of a file just opened. A writable file's
// journal records not yet applied are applied to it in one synced
// transaction, and new records then overwrite them from the start of the
// journal files; a read-only file's are kept in the overlay. fresh is for a
// file just created: any journal found next to it belongs to another file
// and is emptied unread.
func (g *committer) start(fresh bool) error {
	var applied uint64
	var id []byte
	err := g.db.View(func(tx *bolt.Tx) error {
		b := g.lsnBucket(tx)
		applied = readAppliedLSN(b)
		if b != nil {
			if v := b.Get(keyJournalID); len(v) == journalIDSize {
				id = append([]byte(nil), v...)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("chain: open journal of %s: %w", g.path, err)
	}
	var recs []*journalRecord
	if id != nil && !fresh {
		if recs, err = readJournals(g.path, id, applied); err != nil {
			return err
		}
	}
	if g.readOnly {
		for _, r := range recs {
			g.pendingFor(r.Root).add(r)
			g.lsn = r.LSN
		}
		return nil
	}
	if id == nil || len(recs) > 0 {
		if id == nil {
			id = make([]byte, journalIDSize)
			if _, err := rand.Read(id); err != nil {
				return fmt.Errorf("chain: journal ID: %w", err)
			}
		}
		if len(recs) > 0 {
			applied = recs[len(recs)-1].LSN
		}
		err := g.db.Update(func(tx *bolt.Tx) error {
			if err := g.applyJournal(tx, recs); err != nil {
				return err
			}
			return g.lsnBucket(tx).Put(keyJournalID, id)
		})
		if err != nil {
			return fmt.Errorf("chain: replay journal of %s: %w%s", g.path, err, spaceHintThen(err, filepath.Dir(g.path), "the journal keeps every write, and opening the chain again replays it"))
		}
	}
	files, err := openJournalFiles(g.path, id)
	if err != nil {
		return err
	}
	g.id, g.files, g.lsn = id, files, applied
	return nil
}

// pendingFor returns the overlay of the chain at root, creating it. The
// caller holds pmu for writing, or owns g alone (start).
func (g *committer) pendingFor(root []byte) *pendingChain {
	p := g.pending[string(root)]
	if p == nil {
		p = newPendingChain()
		g.pending[string(root)] = p
	}
	return p
}

// pendingEntry returns the newest entry at seq that the bbolt file may not
// hold yet.
func (g *committer) pendingEntry(root []byte, seq uint64) (pendingValue, bool) {
	return g.lookup(root, func(p *pendingChain) (pendingValue, bool) {
		v, ok := p.entries[seq]
		return v, ok
	})
}

// pendingCheckpoint returns the newest checkpoint of session (or its
// deletion) that the bbolt file may not hold yet.
func (g *committer) pendingCheckpoint(root []byte, session string) (pendingValue, bool) {
	return g.lookup(root, func(p *pendingChain) (pendingValue, bool) {
		v, ok := p.checkpoints[session]
		return v, ok
	})
}

// lookup runs get on the overlay of the chain at root, if it has one,
// under the overlay's read lock.
func (g *committer) lookup(root []byte, get func(p *pendingChain) (pendingValue, bool)) (pendingValue, bool) {
	g.pmu.RLock()
	defer g.pmu.RUnlock()
	p := g.pending[string(root)]
	if p == nil {
		return pendingValue{}, false
	}
	return get(p)
}

// snapshot returns a copy of the overlay of the chain at root (nil if
// empty). Everything not in it was in the bbolt file when it was taken,
// since a flush commits before it forgets.
func (g *committer) snapshot(root []byte) *pendingChain {
	g.pmu.RLock()
	defer g.pmu.RUnlock()
	return g.pending[string(root)].clone()
}

// apply makes p durable on chain c, sharing a journal write with concurrent
// callers.
func (g *committer) apply(c *Chain, p *prepared) error {
	r := &commitReq{c: c, p: p, done: make(chan struct{}), lead: make(chan struct{}, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, r)
	if g.leading {
		g.mu.Unlock()
		select {
		case <-r.done:
			return r.err
		case <-r.lead:
		}
	} else {
		g.leading = true
		g.mu.Unlock()
	}
	// Lead: r is still queued (only a leader takes from the queue, and the
	// lead passes to the oldest waiting request), so it is in this batch.
	g.mu.Lock()
	n := min(len(g.queue), maxCommitBatch)
	batch := g.queue[:n:n]
	g.queue = append([]*commitReq(nil), g.queue[n:]...)
	g.mu.Unlock()

	g.commit(batch)

	g.mu.Lock()
	if len(g.queue) > 0 {
		g.queue[0].lead <- struct{}{}
	} else {
		g.leading = false
	}
	g.mu.Unlock()
	<-r.done
	return r.err
}

// commit checks a batch against the chains' current state, writes the
// records of the Writes that pass to the journal in one write and one
// fdatasync, and only then publishes them (overlay, then each chain's head
// and lock). A Write whose checks fail gets its error and writes nothing;
// the others commit. If the journal write fails, every Write of the batch
// fails and the file takes no more writes: whether the records reached the
// disk is unknown until a restart replays the journal.
func (g *committer) commit(batch []*commitReq) {
	g.jmu.Lock()
	defer g.jmu.Unlock()
	defer func() {
		for _, r := range batch {
			close(r.done)
		}
	}()
	switch {
	case g.closed:
		for _, r := range batch {
			r.err = fmt.Errorf("chain: %s is closed", g.path)
		}
		return
	case g.broken != nil:
		for _, r := range batch {
			r.err = fmt.Errorf("chain: %s takes no more writes: %w", g.path, g.broken)
		}
		return
	}
	states := map[*Chain]*chainState{}
	var recs []*journalRecord
	var owners []*Chain
	var nexts []chainState
	buf := g.buf[:0]
	for _, r := range batch {
		st := states[r.c]
		if st == nil {
			st = r.c.state()
			states[r.c] = st
		}
		ck, err := r.c.check(st, r.p)
		if err != nil {
			r.err = err
			continue
		}
		rec, next := r.c.record(r.p, ck)
		if rec == nil {
			continue // nothing to change (an ExpectHead alone)
		}
		rec.LSN = g.lsn + uint64(len(recs)) + 1
		if buf, err = appendJournalFrame(buf, rec); err != nil {
			r.err = err
			continue
		}
		*st = next
		recs = append(recs, rec)
		owners = append(owners, r.c)
		nexts = append(nexts, next)
	}
	if len(recs) == 0 {
		return
	}
	if err := g.files[g.active].append(buf); err != nil {
		// Refused before a byte of it was written (ErrNotWritten): the
		// journal is as it was and takes the next write. Otherwise the
		// records may or may not be on disk: only a replay can tell.
		if !errors.Is(err, ErrNotWritten) {
			g.broken = err
		}
		for _, r := range batch {
			if r.err == nil {
				r.err = err
			}
		}
		return
	}
	if cap(buf) <= 1<<20 {
		g.buf = buf
	}
	g.lsn += uint64(len(recs))
	g.publish(recs, owners, nexts)
	g.unflushed = append(g.unflushed, recs...)
	g.txs.Add(1)
	g.writes.Add(uint64(len(recs)))
	g.maybeFlushLocked(false)
}

// publish makes durable records visible: first in the overlay, then as
// each chain's head and lock (the state after each record, in order), so a
// reader that sees a new head finds its entry.
func (g *committer) publish(recs []*journalRecord, owners []*Chain, nexts []chainState) {
	g.pmu.Lock()
	for _, r := range recs {
		g.pendingFor(r.Root).add(r)
	}
	g.pmu.Unlock()
	for i, c := range owners {
		c.mu.Lock()
		c.head, c.lock = nexts[i].head, nexts[i].lock
		c.mu.Unlock()
	}
}

// maybeFlushLocked starts a flush if one is due, or arms the timer that
// will start one. The caller holds jmu.
func (g *committer) maybeFlushLocked(force bool) {
	if g.flushing || g.broken != nil {
		return
	}
	if g.retry != nil {
		// The active file cannot switch back to the failed one: only the
		// failed flush may run, a while after it failed.
		if force {
			g.startRetryLocked()
		} else if g.timer == nil && !g.closed {
			g.timer = time.AfterFunc(flushDelay, g.flushTimer)
		}
		return
	}
	if len(g.unflushed) == 0 {
		return
	}
	if !force && len(g.unflushed) < flushRecords && g.files[g.active].size < flushBytes {
		if g.timer == nil && !g.closed {
			g.timer = time.AfterFunc(flushDelay, g.flushTimer)
		}
		return
	}
	g.startFlushLocked()
}

func (g *committer) flushTimer() {
	g.jmu.Lock()
	defer g.jmu.Unlock()
	g.timer = nil
	if !g.closed {
		g.maybeFlushLocked(true)
	}
}

// startFlushLocked switches new records to the other journal file (whose
// records the previous flush applied, so they may be written over) and
// applies the active one's records to the bbolt file in the background. The
// caller holds jmu.
func (g *committer) startFlushLocked() {
	g.stopTimerLocked()
	recs, old := g.unflushed, g.active
	g.unflushed, g.active = nil, 1-old
	g.flushing = true
	g.flushDone = make(chan struct{})
	go g.flush(old, recs, false, g.flushDone)
}

// startRetryLocked flushes again the records whose flush failed for want
// of space, without switching files. The caller holds jmu.
func (g *committer) startRetryLocked() {
	g.stopTimerLocked()
	g.flushing = true
	g.flushDone = make(chan struct{})
	go g.flush(g.retryFile, g.retry, true, g.flushDone)
}

// flush applies recs (the records of journal file old) to the bbolt file
// in one synced transaction with the number of the last of them, drops
// them from the overlay, and lets the next records be written over them.
// A flush that fails for want of space changed nothing (bbolt rolls the
// transaction back): its records stay in the journal and the overlay, the
// file keeps taking writes into the other journal file, and the flush is
// tried again (retry). Any other failure stops the file taking writes.
func (g *committer) flush(old int, recs []*journalRecord, retry bool, done chan struct{}) {
	err := g.db.Update(func(tx *bolt.Tx) error { return g.applyJournal(tx, recs) })
	if err == nil {
		g.forget(recs[len(recs)-1].LSN)
		g.files[old].reset()
		g.flushes.Add(1)
	}
	g.jmu.Lock()
	defer g.jmu.Unlock()
	switch {
	case err == nil:
		g.flushErr = nil
		if retry {
			g.retry = nil
		}
	case isNoSpace(err) || strings.Contains(err.Error(), syscall.ENOSPC.Error()):
		g.flushErr = fmt.Errorf("chain: flush the journal of %s into it: %w: free space in %s; the journal keeps the writes (the flush is tried again, and opening the chain again replays them)", g.path, err, filepath.Dir(g.path))
		g.retry, g.retryFile = recs, old
	case g.broken == nil:
		g.broken = fmt.Errorf("chain: flush the journal of %s into it: %w (the journal keeps the writes; reopening replays them)", g.path, err)
	}
	g.flushing = false
	close(done)
	if !g.closed {
		g.maybeFlushLocked(false)
	}
}

// applyJournal applies recs, in order, in tx and records the number of the
// last of them as applied, in the same transaction.
func (g *committer) applyJournal(tx *bolt.Tx, recs []*journalRecord) error {
	for _, r := range recs {
		if err := applyRecord(tx, r); err != nil {
			return err
		}
	}
	b := g.lsnBucket(tx)
	if b == nil {
		return fmt.Errorf("chain: %w: %s has no metadata bucket", ErrNotChain, g.path)
	}
	if len(recs) == 0 {
		return nil
	}
	return writeAppliedLSN(b, recs[len(recs)-1].LSN)
}

// forget drops from the overlay every value of a record numbered up to
// lsn: the bbolt file holds them now.
func (g *committer) forget(lsn uint64) {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	for root, p := range g.pending {
		if !p.forget(lsn) {
			delete(g.pending, root)
		}
	}
}

// flushNow applies every journal record to the bbolt file and waits until
// it has (for Close, and for tests).
func (g *committer) flushNow() error {
	g.jmu.Lock()
	defer g.jmu.Unlock()
	return g.flushNowLocked()
}

func (g *committer) flushNowLocked() error {
	g.waitFlushLocked()
	if g.broken == nil && g.retry != nil {
		g.startRetryLocked()
		g.waitFlushLocked()
		if g.retry != nil {
			return g.flushErr
		}
	}
	if g.broken == nil && len(g.unflushed) > 0 {
		g.startFlushLocked()
		g.waitFlushLocked()
		if g.retry != nil {
			return g.flushErr
		}
	}
	return g.broken
}

// flushError is the last failure to flush the journal for want of space,
// nil once a flush succeeded.
func (g *committer) flushError() error {
	g.jmu.Lock()
	defer g.jmu.Unlock()
	return g.flushErr
}

// waitFlushLocked waits, releasing jmu meanwhile, until no flush runs.
func (g *committer) waitFlushLocked() {
	for g.flushing {
		d := g.flushDone
		g.jmu.Unlock()
		<-d
		g.jmu.Lock()
	}
}

// stopTimerLocked stops the flush timer, if armed. The caller holds jmu.
func (g *committer) stopTimerLocked() {
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
}

// close flushes the journal into the bbolt file and removes the journal
// files; later writes fail. The bbolt file itself is closed by the caller.
func (g *committer) close() error {
	if g.readOnly {
		return nil
	}
	g.jmu.Lock()
	defer g.jmu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	err := g.flushNowLocked()
	g.stopTimerLocked()
	closeJournalFiles(g.files)
	if err != nil {
		return fmt.Errorf("chain: close %s: %w", g.path, err)
	}
	for _, p := range journalPaths(g.path) {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("chain: close %s: remove journal: %w", g.path, err)
		}
	}
	return nil
}

// abandon closes the journal files without flushing, as a crash would
// leave them (for tests).
func (g *committer) abandon() {
	g.jmu.Lock()
	defer g.jmu.Unlock()
	g.waitFlushLocked()
	g.closed = true
	g.stopTimerLocked()
	closeJournalFiles(g.files)
}
