package chain

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/negotiate-dev/negotiate/sign"
)

// storeFormatV1 marks a store file; it is checked on every OpenStore.
const storeFormatV1 = "negotiate-store/1"

// Store layout: the chains of many agents in one bbolt file.
//
//	store:  format
//	chains: agent ID -> bucket holding that chain's meta, entries and checkpoints
//	        (the same layout as a chain file's top level)
var (
	bucketStore  = []byte("store")
	bucketChains = []byte("chains")
)

// Store keeps the source chains of many agents in one durable bbolt file.
// A process that hosts many agents (a marketplace service, `negotiate
// bench`) uses one Store instead of one file per agent, so that the durable
// writes of all its agents share transactions and fsyncs (group commit, see
// Chain.Apply). Each chain is still its agent's own hash-linked, signed
// chain with its own lock and checkpoints; only the file is shared.
//
// A Store is safe for concurrent use. Close closes every chain of it.
type Store struct {
	db       *bolt.DB
	path     string
	readOnly bool
	commits  *committer

	mu     sync.Mutex
	chains map[sign.AgentID]*Chain
}

// CreateStore makes a new, empty store file at path (mode 0600) and opens
// it for writing. It refuses to touch an existing file.
func CreateStore(path string) (*Store, error) {
	db, err := createFile(path, "open it with OpenStore, or move it away")
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		st, err := tx.CreateBucket(bucketStore)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketChains); err != nil {
			return err
		}
		return st.Put(keyFormat, []byte(storeFormatV1))
	})
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	commits := newCommitter(db, path, false, storeLSNBucket)
	if err == nil {
		err = commits.start(true)
	}
	if err != nil {
		db.Close()
		os.Remove(path)
		return nil, fmt.Errorf("chain: create store %s: %w", path, err)
	}
	return &Store{db: db, path: path, commits: commits, chains: map[sign.AgentID]*Chain{}}, nil
}

// OpenStore opens an existing store file. Like Open, it fails with
// ErrHeldByOther after opts.Timeout if another process has it, and with
// ErrNotChain (changing nothing) if the file is not a store.
func OpenStore(path string, opts Options) (*Store, error) {
	db, err := openFile(path, opts, "create the store first")
	if err != nil {
		return nil, err
	}
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketStore)
		if b == nil || tx.Bucket(bucketChains) == nil {
			return fmt.Errorf("chain: %w: %s is not a store (a single chain file opens with Open)", ErrNotChain, path)
		}
		if f := b.Get(keyFormat); string(f) != storeFormatV1 {
			return fmt.Errorf("chain: %w: %s has store format %q, this build reads %q", ErrNotChain, path, abbreviate(string(f)), storeFormatV1)
		}
		return nil
	})
	commits := newCommitter(db, path, opts.ReadOnly, storeLSNBucket)
	if err == nil {
		err = commits.start(false)
	}
	if err != nil {
		commits.abandon()
		db.Close()
		return nil, err
	}
	return &Store{db: db, path: path, readOnly: opts.ReadOnly, commits: commits, chains: map[sign.AgentID]*Chain{}}, nil
}

// Path is the store file's path.
func (s *Store) Path() string { return s.path }

// Create adds a new chain for key, holding its genesis entry, and returns
// it. It fails with ErrExists if the store already has a chain of that
// agent.
func (s *Store) Create(key *sign.PrivateKey, nowMillis int64) (*Chain, error) {
	if s.readOnly {
		return nil, fmt.Errorf("chain: %w: store %s", ErrReadOnly, s.path)
	}
	g, err := newGenesisRecords(key, nowMillis)
	if err != nil {
		return nil, err
	}
	id := key.AgentID()
	s.mu.Lock()
	defer s.mu.Unlock()
	err = s.db.Update(func(tx *bolt.Tx) error {
		chains := tx.Bucket(bucketChains)
		if chains.Bucket([]byte(id)) != nil {
			return fmt.Errorf("chain: %w: store %s already has a chain of agent %s: use Store.Chain", ErrExists, s.path, id.Short())
		}
		agent, err := chains.CreateBucket([]byte(id))
		if err != nil {
			return err
		}
		return initChain(agent, key, g)
	})
	if err != nil {
		if errors.Is(err, ErrExists) {
			return nil, err
		}
		return nil, fmt.Errorf("chain: store %s: create chain of %s: %w", s.path, id.Short(), err)
	}
	c := s.newChain(id)
	c.pub, c.agent, c.head = key.Public(), id, g.head
	s.chains[id] = c
	return c, nil
}

func (s *Store) newChain(id sign.AgentID) *Chain {
	return &Chain{db: s.db, path: s.path, readOnly: s.readOnly, root: []byte(id), store: s, commits: s.commits}
}

// Chain returns the chain of agent id. Every call for one agent returns the
// same *Chain. It fails with ErrNoChain if the store has no such chain.
func (s *Store) Chain(id sign.AgentID) (*Chain, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.chains[id]; c != nil {
		return c, nil
	}
	c := s.newChain(id)
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketChains).Bucket([]byte(id)) == nil {
			return fmt.Errorf("chain: %w: store %s has no chain of agent %s", ErrNoChain, s.path, id.Short())
		}
		return c.load(tx)
	})
	if err != nil {
		return nil, err
	}
	if c.agent != id {
		return nil, fmt.Errorf("chain: %w: store %s keeps the chain of %s under %s", ErrNotChain, s.path, c.agent.Short(), id.Short())
	}
	s.chains[id] = c
	return c, nil
}

// Agents lists the agents with a chain in the store, sorted.
func (s *Store) Agents() ([]sign.AgentID, error) {
	var out []sign.AgentID
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketChains).ForEachBucket(func(k []byte) error {
			out = append(out, sign.AgentID(k))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("chain: store %s: list agents: %w", s.path, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// CommitStats reports how many journal writes the store's writes took:
// with many agents writing at once, Writes/Transactions is the group-commit
// factor.
func (s *Store) CommitStats() CommitStats { return s.commits.stats() }

// CommitStats reports the durable writes, journal syncs and flushes of the
// chain's file since it was opened (for a chain of a Store: of the whole
// store).
func (c *Chain) CommitStats() CommitStats { return c.commits.stats() }

// FlushError is the last failure to apply the chain file's journal to the
// file for want of space (the writes stay durable in the journal and the
// flush is tried again), or nil once a flush succeeded.
func (c *Chain) FlushError() error { return c.commits.flushError() }

// Close applies the journal to the file, removes the journal and closes
// the file and with it every chain of the store.
func (s *Store) Close() error {
	jerr := s.commits.close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("chain: close store %s: %w", s.path, err)
	}
	return jerr
}

// storeLSNBucket is where a Store keeps its journal number and ID.
func storeLSNBucket(tx *bolt.Tx) *bolt.Bucket { return tx.Bucket(bucketStore) }
