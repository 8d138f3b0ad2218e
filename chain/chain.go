package chain

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/negotiate-dev/negotiate/sign"
)

// DefaultOpenTimeout is how long Open waits for another process to release
// the file before failing with ErrHeldByOther: long enough to ride out a
// process that is just exiting, short enough for a CLI to answer at once.
const DefaultOpenTimeout = time.Second

// MaxEntriesPerRead bounds one Entries call so `chain show` on a long chain
// pages instead of loading everything.
const MaxEntriesPerRead = 10000

// formatV1 marks a chain file; it is checked on every Open.
const formatV1 = "negotiate-chain/1"

// fileMode is the mode of a new chain file: only the agent reads its chain.
const fileMode = 0o600

// Bucket and key names of the file layout:
//
//	meta:        format, agent_id, scheme, public_key, head (CBOR Head), lock (CBOR Lock, absent when free)
//	entries:     8-byte big-endian seq -> stored entry (CBOR)
//	checkpoints: session -> checkpoint bytes
var (
	bucketMeta        = []byte("meta")
	bucketEntries     = []byte("entries")
	bucketCheckpoints = []byte("checkpoints")

	keyFormat    = []byte("format")
	keyAgentID   = []byte("agent_id")
	keyScheme    = []byte("scheme")
	keyPublicKey = []byte("public_key")
	keyHead      = []byte("head")
	keyLock      = []byte("lock")
)

// Options configures Open. The zero value is a writable chain with the
// default timeout.
type Options struct {
	// Timeout is how long to wait for another process to release the file.
	// Zero means DefaultOpenTimeout.
	Timeout time.Duration
	// ReadOnly opens the file with a shared lock; Apply then fails with
	// ErrReadOnly. Another process can hold it read-only at the same time,
	// but not writable.
	ReadOnly bool
}

// Chain is one agent's source chain, stored in a bbolt file. It is safe for
// concurrent use.
type Chain struct {
	db       *bolt.DB
	path     string
	readOnly bool
	pub      sign.PublicKey
	agent    sign.AgentID
	// root is nil when the file holds this chain alone; in a Store it is
	// the agent's bucket name under bucketChains.
	root []byte
	// store is the Store the chain lives in, nil for a chain file.
	store *Store
	// commits is the group committer and journal of the chain's file.
	commits *committer
	// storedBeyond is the seq of an entry stored above the head when the
	// chain was opened (a damaged file; 0 when none): appending there fails.
	storedBeyond uint64

	mu   sync.RWMutex // guards head and lock: every durable write, published
	head Head
	lock *Lock
}

// chainLSNBucket is where a chain file keeps its journal number and ID.
func chainLSNBucket(tx *bolt.Tx) *bolt.Bucket { return tx.Bucket(bucketMeta) }

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// Create makes a new chain file at path (mode 0600) holding the genesis
// entry for key, and returns it opened for writing. It refuses to touch an
// existing file.
func Create(path string, key *sign.PrivateKey, nowMillis int64) (*Chain, error) {
	g, err := newGenesisRecords(key, nowMillis)
	if err != nil {
		return nil, err
	}
	db, err := createFile(path, "open it instead, or move it away to start a new chain")
	if err != nil {
		return nil, err
	}
	commits := newCommitter(db, path, false, chainLSNBucket)
	err = db.Update(func(tx *bolt.Tx) error { return initChain(tx, key, g) })
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err == nil {
		err = commits.start(true)
	}
	if err != nil {
		db.Close()
		os.Remove(path)
		return nil, fmt.Errorf("chain: create %s: %w", path, err)
	}
	return &Chain{db: db, path: path, pub: key.Public(), agent: key.AgentID(), head: g.head, commits: commits}, nil
}

// createFile makes a new bbolt file at path (mode 0600), refusing to touch
// an existing one; ifExists tells the user what to do then.
func createFile(path, ifExists string) (*bolt.DB, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("chain: %w: %s already exists: %s", ErrExists, path, ifExists)
		}
		return nil, fmt.Errorf("chain: create %s: %w", path, err)
	}
	f.Close()
	db, err := bolt.Open(path, fileMode, &bolt.Options{Timeout: DefaultOpenTimeout})
	if err != nil {
		os.Remove(path)
		return nil, openError(path, err)
	}
	return db, nil
}

// genesisRecords is what a new chain starts with: its genesis entry,
// encoded, and the head it makes.
type genesisRecords struct {
	raw, headRaw []byte
	head         Head
}

func newGenesisRecords(key *sign.PrivateKey, nowMillis int64) (*genesisRecords, error) {
	genesis, err := NewGenesis(key, nowMillis)
	if err != nil {
		return nil, err
	}
	raw, err := genesis.Marshal()
	if err != nil {
		return nil, err
	}
	head := Head{Seq: 0, Hash: genesis.Hash()}
	headRaw, err := encMode.Marshal(head)
	if err != nil {
		return nil, fmt.Errorf("chain: encode head: %w", err)
	}
	return &genesisRecords{raw: raw, headRaw: headRaw, head: head}, nil
}

// bucketParent is a bbolt transaction or bucket: where a chain's buckets go.
type bucketParent interface {
	CreateBucket(name []byte) (*bolt.Bucket, error)
}

// initChain creates a chain's buckets under parent and writes its metadata
// and its genesis entry and head.
func initChain(parent bucketParent, key *sign.PrivateKey, g *genesisRecords) error {
	pub := key.Public()
	meta, err := parent.CreateBucket(bucketMeta)
	if err != nil {
		return err
	}
	entries, err := parent.CreateBucket(bucketEntries)
	if err != nil {
		return err
	}
	if _, err := parent.CreateBucket(bucketCheckpoints); err != nil {
		return err
	}
	for _, kv := range [][2][]byte{
		{keyFormat, []byte(formatV1)},
		{keyAgentID, []byte(key.AgentID())},
		{keyScheme, []byte(pub.SchemeName())},
		{keyPublicKey, pub.Bytes()},
		{keyHead, g.headRaw},
	} {
		if err := meta.Put(kv[0], kv[1]); err != nil {
			return err
		}
	}
	return entries.Put(seqKey(0), g.raw)
}

// syncDir makes a new file's directory entry durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Open opens an existing chain file. If another process has it open, it
// fails with ErrHeldByOther after opts.Timeout. A file that is not a chain
// fails with ErrNotChain and is left unchanged.
func Open(path string, opts Options) (*Chain, error) {
	db, err := openFile(path, opts, "run `negotiate init` first, or check --home")
	if err != nil {
		return nil, err
	}
	c := &Chain{db: db, path: path, readOnly: opts.ReadOnly, commits: newCommitter(db, path, opts.ReadOnly, chainLSNBucket)}
	err = db.View(c.load) // check it is a chain before touching a journal
	if err == nil {
		err = c.commits.start(false)
	}
	if err == nil {
		err = db.View(c.load)
	}
	if err != nil {
		c.commits.abandon()
		db.Close()
		if errors.Is(err, ErrNotChain) {
			return nil, err
		}
		return nil, fmt.Errorf("chain: open %s: %w", path, err)
	}
	return c, nil
}

// openFile opens an existing bbolt file (a chain file or a store) after
// checking it is a non-empty regular file; ifMissing tells the user what to
// do when there is none.
func openFile(path string, opts Options, ifMissing string) (*bolt.DB, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("chain: %w at %s: %s", ErrNoChain, path, ifMissing)
		}
		return nil, fmt.Errorf("chain: open %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("chain: %w: %s is not a regular file", ErrNotChain, path)
	}
	if st.Size() == 0 {
		// bbolt would initialise an empty file as a new database.
		return nil, fmt.Errorf("chain: %w: %s is empty", ErrNotChain, path)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultOpenTimeout
	}
	db, err := openBolt(path, &bolt.Options{Timeout: timeout, ReadOnly: opts.ReadOnly})
	if err != nil {
		return nil, openError(path, err)
	}
	return db, nil
}

// OpenReadOnly opens a chain for reading with the default timeout.
func OpenReadOnly(path string) (*Chain, error) {
	return Open(path, Options{ReadOnly: true})
}

// openBolt opens the file, turning a panic of bbolt on a damaged file into
// an error.
func openBolt(path string, o *bolt.Options) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: %v", bolterrors.ErrInvalid, r)
		}
	}()
	return bolt.Open(path, fileMode, o)
}

func openError(path string, err error) error {
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return fmt.Errorf("chain: %s %w (is `negotiate node` running?)", path, ErrHeldByOther)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum), errors.Is(err, bolterrors.ErrVersionMismatch):
		return fmt.Errorf("chain: %w: %s (%v): check the path or --home", ErrNotChain, path, err)
	}
	return fmt.Errorf("chain: open %s: %w", path, err)
}

// load reads the metadata, head and lock into c.
func (c *Chain) load(tx *bolt.Tx) error {
	meta := c.bucket(tx, bucketMeta)
	if c.root == nil && tx.Bucket(bucketStore) != nil {
		return fmt.Errorf("chain: %w: %s is a store of several agents' chains, not one chain file (open it with chain.OpenStore)", ErrNotChain, c.path)
	}
	if meta == nil || c.bucket(tx, bucketEntries) == nil || c.bucket(tx, bucketCheckpoints) == nil {
		return fmt.Errorf("chain: %w: %s has no chain buckets: check the path or --home", ErrNotChain, c.path)
	}
	if f := meta.Get(keyFormat); string(f) != formatV1 {
		return fmt.Errorf("chain: %w: %s has format %q, this build reads %q", ErrNotChain, c.path, abbreviate(string(f)), formatV1)
	}
	pub, err := sign.ParsePublicKey(string(meta.Get(keyScheme)), meta.Get(keyPublicKey))
	if err != nil {
		return fmt.Errorf("chain: %w: %s has damaged key metadata: %v", ErrNotChain, c.path, err)
	}
	id := sign.AgentID(meta.Get(keyAgentID))
	if err := id.Check(pub); err != nil {
		return fmt.Errorf("chain: %w: %s has damaged metadata: %v", ErrNotChain, c.path, err)
	}
	head, lock, err := c.recorded(meta)
	if err != nil {
		return err
	}
	c.storedBeyond = 0
	if k, _ := c.bucket(tx, bucketEntries).Cursor().Seek(seqKey(head.Seq + 1)); k != nil {
		c.storedBeyond = keySeq(k)
	}
	c.pub, c.agent, c.head, c.lock = pub, id, head, lock
	return nil
}

// recorded returns the head and lock the chain records in its meta bucket,
// or the newer ones its journal holds (a read-only file may have journal
// records not yet applied to it).
func (c *Chain) recorded(meta *bolt.Bucket) (Head, *Lock, error) {
	headRaw, lockRaw := meta.Get(keyHead), meta.Get(keyLock)
	if p := c.commits.snapshot(c.root); p != nil {
		if p.head != nil {
			headRaw = p.head.val
		}
		if p.lock != nil {
			lockRaw = p.lock.val // nil when the journal released it
		}
	}
	var head Head
	if err := decMode.Unmarshal(headRaw, &head); err != nil {
		return Head{}, nil, fmt.Errorf("chain: %w: damaged head record: %v", ErrNotChain, err)
	}
	if lockRaw == nil {
		return head, nil, nil
	}
	var lock Lock
	if err := decMode.Unmarshal(lockRaw, &lock); err != nil {
		return Head{}, nil, fmt.Errorf("chain: %w: damaged lock record: %v", ErrNotChain, err)
	}
	return head, &lock, nil
}

// bucket returns one of the chain's buckets (bucketMeta, bucketEntries,
// bucketCheckpoints), or nil if it is missing.
func (c *Chain) bucket(tx *bolt.Tx, name []byte) *bolt.Bucket {
	if c.root == nil {
		return tx.Bucket(name)
	}
	chains := tx.Bucket(bucketChains)
	if chains == nil {
		return nil
	}
	agent := chains.Bucket(c.root)
	if agent == nil {
		return nil
	}
	return agent.Bucket(name)
}

// Close closes the file. The chain must not be used afterwards. A chain of
// a Store is closed with its Store; Close on it does nothing.
func (c *Chain) Close() error {
	if c.store != nil {
		return nil
	}
	jerr := c.commits.close()
	if err := c.db.Close(); err != nil {
		return fmt.Errorf("chain: close %s: %w", c.path, err)
	}
	return jerr
}

// Path is the chain file's path.
func (c *Chain) Path() string { return c.path }

// AgentID is the ID of the agent the chain belongs to.
func (c *Chain) AgentID() sign.AgentID { return c.agent }

// PublicKey is the key every entry must be signed with.
func (c *Chain) PublicKey() sign.PublicKey { return c.pub }

// Head is the newest entry's seq and hash.
func (c *Chain) Head() Head {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.head
}

// Length is the number of entries, genesis included (Head().Seq+1).
func (c *Chain) Length() uint64 { return c.Head().Seq + 1 }

// Lock returns a copy of the chain lock and true if a session holds it.
func (c *Chain) Lock() (*Lock, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.lock == nil {
		return nil, false
	}
	return c.lock.clone(), true
}

// Entry returns the entry with the given seq, or an error wrapping
// ErrNotFound. An entry that does not decode is an error wrapping
// ErrBadEntry.
func (c *Chain) Entry(seq uint64) (*Entry, error) {
	if v, ok := c.commits.pendingEntry(c.root, seq); ok {
		e, err := UnmarshalEntry(v.val)
		if err != nil {
			return nil, fmt.Errorf("%w (journal record for %d)", err, seq)
		}
		return e, nil
	}
	var e *Entry
	err := c.db.View(func(tx *bolt.Tx) error {
		raw := c.bucket(tx, bucketEntries).Get(seqKey(seq))
		if raw == nil {
			return fmt.Errorf("chain: %w: seq %d (the head is %d)", ErrNotFound, seq, c.Head().Seq)
		}
		var err error
		e, err = UnmarshalEntry(raw)
		if err != nil {
			return fmt.Errorf("%w (stored at %d; run `negotiate chain verify`)", err, seq)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

// Entries returns up to limit entries starting at seq from, in order.
// limit <= 0 or above MaxEntriesPerRead means MaxEntriesPerRead.
func (c *Chain) Entries(from uint64, limit int) ([]Entry, error) {
	if limit <= 0 || limit > MaxEntriesPerRead {
		limit = MaxEntriesPerRead
	}
	var out []Entry
	err := c.forEachEntry(from, func(seq uint64, raw []byte) (bool, error) {
		e, err := UnmarshalEntry(raw)
		if err != nil {
			return false, fmt.Errorf("entry stored at %d: %w (run `negotiate chain verify`)", seq, err)
		}
		out = append(out, *e)
		return len(out) < limit, nil
	})
	if err != nil {
		return nil, fmt.Errorf("chain: entries from %d: %w", from, err)
	}
	return out, nil
}

// forEachEntry calls fn with every stored entry from seq from on, in seq
// order, the journal's entries included; raw is valid only during the
// call. fn returns false to stop.
func (c *Chain) forEachEntry(from uint64, fn func(seq uint64, raw []byte) (bool, error)) error {
	pend := c.commits.snapshot(c.root)
	var seqs []uint64
	if pend != nil {
		seqs = pend.entrySeqs()
	}
	for len(seqs) > 0 && seqs[0] < from {
		seqs = seqs[1:]
	}
	more := true
	err := c.db.View(func(tx *bolt.Tx) error {
		cur := c.bucket(tx, bucketEntries).Cursor()
		for k, v := cur.Seek(seqKey(from)); k != nil && more; k, v = cur.Next() {
			seq := keySeq(k)
			for ; more && len(seqs) > 0 && seqs[0] < seq; seqs = seqs[1:] {
				var err error
				if more, err = fn(seqs[0], pend.entries[seqs[0]].val); err != nil {
					return err
				}
			}
			if !more {
				break
			}
			if len(seqs) > 0 && seqs[0] == seq {
				v = pend.entries[seq].val // the journal's is the newer
				seqs = seqs[1:]
			}
			var err error
			if more, err = fn(seq, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for ; more && len(seqs) > 0; seqs = seqs[1:] {
		if more, err = fn(seqs[0], pend.entries[seqs[0]].val); err != nil {
			return err
		}
	}
	return nil
}

func keySeq(k []byte) uint64 {
	if len(k) != 8 {
		return ^uint64(0)
	}
	return binary.BigEndian.Uint64(k)
}

// Checkpoint returns the checkpoint of a session and whether there is one.
func (c *Chain) Checkpoint(session string) ([]byte, bool, error) {
	if v, ok := c.commits.pendingCheckpoint(c.root, session); ok {
		if v.deleted {
			return nil, false, nil
		}
		return append([]byte{}, v.val...), true, nil
	}
	var out []byte
	var ok bool
	err := c.db.View(func(tx *bolt.Tx) error {
		k, v := c.bucket(tx, bucketCheckpoints).Cursor().Seek([]byte(session))
		if k != nil && string(k) == session {
			out, ok = append([]byte{}, v...), true
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("chain: checkpoint of session %s: %w", session, err)
	}
	return out, ok, nil
}

// Checkpoints returns every session checkpoint, keyed by session. The
// engine resumes its sessions from them after a restart.
func (c *Chain) Checkpoints() (map[string][]byte, error) {
	out := map[string][]byte{}
	err := c.ForEachCheckpoint(func(session string, checkpoint []byte) error {
		out[session] = append([]byte{}, checkpoint...)
		return nil
	})
	return out, err
}

// ForEachCheckpoint calls fn with every session checkpoint in session
// order, without loading them all at once; checkpoint is valid only during
// the call (copy what you keep). An error from fn stops the walk and is
// returned.
func (c *Chain) ForEachCheckpoint(fn func(session string, checkpoint []byte) error) error {
	pend := c.commits.snapshot(c.root)
	var names []string
	if pend != nil {
		for s := range pend.checkpoints {
			names = append(names, s)
		}
		sort.Strings(names)
	}
	// emit visits a journal checkpoint unless it was deleted.
	emit := func(s string) error {
		if v := pend.checkpoints[s]; !v.deleted {
			return fn(s, v.val)
		}
		return nil
	}
	err := c.db.View(func(tx *bolt.Tx) error {
		err := c.bucket(tx, bucketCheckpoints).ForEach(func(k, v []byte) error {
			for len(names) > 0 && names[0] < string(k) {
				if err := emit(names[0]); err != nil {
					return err
				}
				names = names[1:]
			}
			if len(names) > 0 && names[0] == string(k) {
				names = names[1:]
				return emit(string(k)) // the journal's is the newer
			}
			return fn(string(k), v)
		})
		if err != nil {
			return err
		}
		for _, s := range names {
			if err := emit(s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("chain: checkpoints: %w", err)
	}
	return nil
}

// NewEntry builds and signs the entry that would follow the current head
// (see NewEntryAt). key must be the chain's key. The entry is not written:
// pass it to Apply in Write.Append.
func (c *Chain) NewEntry(key *sign.PrivateKey, kind string, payload any, nowMillis int64) (*Entry, error) {
	if !key.Public().Equal(c.pub) {
		return nil, fmt.Errorf("chain: %w: key of agent %s, chain of agent %s", ErrWrongKey, key.AgentID().Short(), c.agent.Short())
	}
	return NewEntryAt(key, c.Head(), kind, payload, nowMillis)
}
