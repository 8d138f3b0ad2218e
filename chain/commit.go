package chain

import (
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// maxCommitBatch bounds the writes of one group commit, so one transaction
// stays small (a few MiB of pages) and a caller never waits behind an
// unbounded queue.
const maxCommitBatch = 512

// committer is the group commit of one bbolt file (a chain file or a
// Store): Apply calls that arrive while a transaction is being committed
// wait and are committed together in the next one, with one fsync. There
// is no timer: at low load every write commits at once, alone.
//
// The caller whose write finds no commit running leads: it commits the
// queue, then hands the lead to the oldest waiting caller, so no caller
// commits others' writes for longer than one transaction.
type committer struct {
	db *bolt.DB

	mu      sync.Mutex
	leading bool
	queue   []*commitReq

	txs, writes atomic.Uint64
}

// commitReq is one Write waiting for a group commit.
type commitReq struct {
	c    *Chain
	p    *prepared
	err  error
	done chan struct{} // closed when the write is durable or failed
	lead chan struct{} // receives when this caller must lead the next commit
}

func newCommitter(db *bolt.DB) *committer { return &committer{db: db} }

// CommitStats counts the group commits of a file.
type CommitStats struct {
	// Transactions is the number of committed bbolt write transactions
	// (each with its fsyncs); Writes the number of Writes they carried.
	Transactions uint64 `json:"transactions"`
	Writes       uint64 `json:"writes"`
}

func (g *committer) stats() CommitStats {
	return CommitStats{Transactions: g.txs.Load(), Writes: g.writes.Load()}
}

// apply makes p durable on chain c, sharing a transaction with concurrent
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

// commit writes a batch in one transaction. A Write whose checks fail gets
// its error and writes nothing; the others commit. If the transaction
// itself fails (a write or the commit), each Write is retried alone, so one
// bad Write cannot fail its neighbours.
func (g *committer) commit(batch []*commitReq) {
	if len(batch) > 1 {
		err := g.db.Update(func(tx *bolt.Tx) error {
			for _, r := range batch {
				ck, err := r.c.checkTx(tx, r.p)
				if err != nil {
					r.err = err
					continue
				}
				if err := r.c.writeTx(tx, r.p, ck); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			g.txs.Add(1)
			for _, r := range batch {
				if r.err == nil {
					g.writes.Add(1)
				}
				close(r.done)
			}
			return
		}
	}
	for _, r := range batch {
		r.err = g.db.Update(func(tx *bolt.Tx) error { return r.c.applyTx(tx, r.p) })
		if r.err == nil {
			g.txs.Add(1)
			g.writes.Add(1)
		}
		close(r.done)
	}
}
