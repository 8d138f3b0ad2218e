package chain

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"

	bolt "go.etcd.io/bbolt"
)

// The write-ahead journal of a bbolt file (a chain file or a Store).
//
// A Write is durable once its record is in the journal and the journal is
// fdatasynced: one sequential write and one sync per group commit, instead
// of a bbolt transaction that writes every dirty page of its B+trees and
// syncs twice. The records are applied to the bbolt file later, many
// hundreds at a time, in one synced transaction (a flush) that also stores
// the last applied record number; then the journal file they were in is
// emptied. Until then, reads see them through the committer's overlay.
//
// Two journal files alternate: new records go to the active one while the
// other's records are being flushed. On open, every record above the
// applied number is replayed into bbolt (or, read-only, into the overlay).
// A torn or damaged tail record is one whose sync never returned, so its
// Write never succeeded: replay stops there.

// journalSuffixes name the two journal files: path + suffix.
var journalSuffixes = [2]string{"-journal-0", "-journal-1"}

// journalPaths returns the paths of the two journal files of a bbolt file.
func journalPaths(path string) [2]string {
	return [2]string{path + journalSuffixes[0], path + journalSuffixes[1]}
}

// journalMagic starts every journal file, followed by the 16-byte ID of the
// bbolt file it belongs to (keyJournalID), so a journal left next to another
// file (a chain restored from a backup) is never replayed into it.
const journalMagic = "NGJRNL01"

// journalHeader is the header of the journal files of the bbolt file with
// journal ID id.
func journalHeader(id []byte) []byte { return append([]byte(journalMagic), id...) }

// journalHeaderSize is the size of a journal file's header.
const journalHeaderSize = len(journalMagic) + journalIDSize

// journalIDSize is the size of a bbolt file's journal ID.
const journalIDSize = 16

// keyJournalID stores the file's random journal ID, next to keyJournalLSN.
var keyJournalID = []byte("journal_id")

// keyJournalLSN stores the number of the last journal record applied to the
// bbolt file (8-byte big-endian), in the chain file's meta bucket or the
// Store's store bucket.
var keyJournalLSN = []byte("journal_lsn")

// journalFrameHeader is the size of a record's frame header: payload length
// and CRC-32C of the payload, both 4-byte big-endian.
const journalFrameHeader = 8

// maxJournalRecord bounds one record's payload: a checkpoint at its limit,
// an entry at its limit and a lock, with room to spare.
const maxJournalRecord = MaxCheckpointBytes + MaxEntryBytes + 1<<20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// journalRecord is one Write as it changes the file, after its checks: the
// same effects writeTx makes, in the same order.
type journalRecord struct {
	LSN  uint64 `cbor:"1,keyasint"`
	Root []byte `cbor:"2,keyasint,omitempty"` // the chain's bucket in a Store; empty in a chain file
	// Lock is the encoded lock to store (the lock was acquired).
	Lock []byte `cbor:"3,keyasint,omitempty"`
	// Seq, Entry and Head: the appended entry and the new encoded head.
	Seq   uint64 `cbor:"4,keyasint,omitempty"`
	Entry []byte `cbor:"5,keyasint,omitempty"`
	Head  []byte `cbor:"6,keyasint,omitempty"`
	// Release deletes the lock.
	Release bool   `cbor:"7,keyasint,omitempty"`
	Session string `cbor:"8,keyasint,omitempty"`
	// PutCheckpoint stores Checkpoint (which may be empty) under Session.
	PutCheckpoint    bool   `cbor:"9,keyasint,omitempty"`
	Checkpoint       []byte `cbor:"10,keyasint,omitempty"`
	DeleteCheckpoint bool   `cbor:"11,keyasint,omitempty"`
}

// appendJournalFrame appends r's frame to buf.
func appendJournalFrame(buf []byte, r *journalRecord) ([]byte, error) {
	payload, err := encMode.Marshal(r)
	if err != nil {
		return buf, fmt.Errorf("chain: encode journal record %d: %w", r.LSN, err)
	}
	var h [journalFrameHeader]byte
	binary.BigEndian.PutUint32(h[:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(h[4:], crc32.Checksum(payload, castagnoli))
	buf = append(buf, h[:]...)
	return append(buf, payload...), nil
}

// readJournal reads the records of one journal file in order, stopping at
// the end, at a torn or damaged frame, or at a record whose number does not
// grow (left over from before the file was emptied). A missing file has no
// records.
func readJournal(path string, id []byte) ([]*journalRecord, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("chain: read journal %s: %w", path, err)
	}
	if !bytes.HasPrefix(data, journalHeader(id)) {
		return nil, nil
	}
	data = data[journalHeaderSize:]
	var out []*journalRecord
	var last uint64
	for len(data) >= journalFrameHeader {
		n := binary.BigEndian.Uint32(data[:4])
		sum := binary.BigEndian.Uint32(data[4:8])
		if n == 0 || n > maxJournalRecord || int(n) > len(data)-journalFrameHeader {
			break
		}
		payload := data[journalFrameHeader : journalFrameHeader+int(n)]
		if crc32.Checksum(payload, castagnoli) != sum {
			break
		}
		r := new(journalRecord)
		if err := decMode.Unmarshal(payload, r); err != nil || r.LSN <= last {
			break
		}
		last = r.LSN
		out = append(out, r)
		data = data[journalFrameHeader+int(n):]
	}
	return out, nil
}

// readJournals reads both journal files of path and returns the records
// numbered above applied, in order.
func readJournals(path string, id []byte, applied uint64) ([]*journalRecord, error) {
	var all []*journalRecord
	for _, p := range journalPaths(path) {
		recs, err := readJournal(p, id)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			if r.LSN > applied {
				all = append(all, r)
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].LSN < all[j].LSN })
	for i := 1; i < len(all); i++ {
		if all[i].LSN == all[i-1].LSN {
			return nil, fmt.Errorf("chain: %w: journal of %s holds record %d twice (run `negotiate chain verify`)", ErrNotChain, path, all[i].LSN)
		}
	}
	return all, nil
}

// readAppliedLSN reads the number of the last journal record applied, from
// bucket b (0 when none was).
func readAppliedLSN(b *bolt.Bucket) uint64 {
	if b == nil {
		return 0
	}
	v := b.Get(keyJournalLSN)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// writeAppliedLSN stores lsn as the last journal record applied.
func writeAppliedLSN(b *bolt.Bucket, lsn uint64) error {
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], lsn)
	return b.Put(keyJournalLSN, v[:])
}

// chainBuckets returns the meta, entries and checkpoints buckets of the
// chain at root (nil root: the file's own chain).
func chainBuckets(tx *bolt.Tx, root []byte) (meta, entries, checkpoints *bolt.Bucket) {
	var parent interface{ Bucket([]byte) *bolt.Bucket } = tx
	if len(root) > 0 {
		chains := tx.Bucket(bucketChains)
		if chains == nil {
			return nil, nil, nil
		}
		agent := chains.Bucket(root)
		if agent == nil {
			return nil, nil, nil
		}
		parent = agent
	}
	return parent.Bucket(bucketMeta), parent.Bucket(bucketEntries), parent.Bucket(bucketCheckpoints)
}

// applyRecord makes r's changes in tx.
func applyRecord(tx *bolt.Tx, r *journalRecord) error {
	meta, entries, checkpoints := chainBuckets(tx, r.Root)
	if meta == nil || entries == nil || checkpoints == nil {
		return fmt.Errorf("chain: %w: journal record %d names chain %q, which the file does not hold", ErrNotChain, r.LSN, abbreviate(string(r.Root)))
	}
	if r.Lock != nil {
		if err := meta.Put(keyLock, r.Lock); err != nil {
			return err
		}
	}
	if r.Entry != nil {
		if err := entries.Put(seqKey(r.Seq), r.Entry); err != nil {
			return err
		}
		if err := meta.Put(keyHead, r.Head); err != nil {
			return err
		}
	}
	if r.Release {
		if err := meta.Delete(keyLock); err != nil {
			return err
		}
	}
	if r.PutCheckpoint {
		cp := r.Checkpoint
		if cp == nil {
			cp = []byte{}
		}
		if err := checkpoints.Put([]byte(r.Session), cp); err != nil {
			return err
		}
	}
	if r.DeleteCheckpoint {
		if err := checkpoints.Delete([]byte(r.Session)); err != nil {
			return err
		}
	}
	return nil
}

// pendingValue is the newest value of a key the journal holds and the
// bbolt file may not: deleted, or val, written by record lsn.
type pendingValue struct {
	lsn     uint64
	val     []byte
	deleted bool
}

// pendingChain is what the journal holds for one chain beyond its bbolt
// file. head and lock are the chain's current ones when set.
type pendingChain struct {
	head        *pendingValue // val: encoded head
	lock        *pendingValue // val: encoded lock; deleted: released
	entries     map[uint64]pendingValue
	checkpoints map[string]pendingValue
}

func newPendingChain() *pendingChain {
	return &pendingChain{entries: map[uint64]pendingValue{}, checkpoints: map[string]pendingValue{}}
}

// add records r's changes.
func (p *pendingChain) add(r *journalRecord) {
	if r.Lock != nil {
		p.lock = &pendingValue{lsn: r.LSN, val: r.Lock}
	}
	if r.Entry != nil {
		p.entries[r.Seq] = pendingValue{lsn: r.LSN, val: r.Entry}
		p.head = &pendingValue{lsn: r.LSN, val: r.Head}
	}
	if r.Release {
		p.lock = &pendingValue{lsn: r.LSN, deleted: true}
	}
	if r.PutCheckpoint {
		cp := r.Checkpoint
		if cp == nil {
			cp = []byte{}
		}
		p.checkpoints[r.Session] = pendingValue{lsn: r.LSN, val: cp}
	}
	if r.DeleteCheckpoint {
		p.checkpoints[r.Session] = pendingValue{lsn: r.LSN, deleted: true}
	}
}

// forget drops every value written by a record numbered up to lsn (now in
// the bbolt file), and reports whether anything is left.
func (p *pendingChain) forget(lsn uint64) bool {
	if p.head != nil && p.head.lsn <= lsn {
		p.head = nil
	}
	if p.lock != nil && p.lock.lsn <= lsn {
		p.lock = nil
	}
	for k, v := range p.entries {
		if v.lsn <= lsn {
			delete(p.entries, k)
		}
	}
	for k, v := range p.checkpoints {
		if v.lsn <= lsn {
			delete(p.checkpoints, k)
		}
	}
	return p.head != nil || p.lock != nil || len(p.entries) > 0 || len(p.checkpoints) > 0
}

// entrySeqs returns the seqs of the pending entries, ascending.
func (p *pendingChain) entrySeqs() []uint64 {
	seqs := make([]uint64, 0, len(p.entries))
	for s := range p.entries {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	return seqs
}

// clonePending copies p's maps (values are never changed in place).
func (p *pendingChain) clone() *pendingChain {
	if p == nil {
		return nil
	}
	c := &pendingChain{head: p.head, lock: p.lock, entries: make(map[uint64]pendingValue, len(p.entries)), checkpoints: make(map[string]pendingValue, len(p.checkpoints))}
	for k, v := range p.entries {
		c.entries[k] = v
	}
	for k, v := range p.checkpoints {
		c.checkpoints[k] = v
	}
	return c
}

// journalFile is an open journal file for appending.
//
// A journal file is reused, never shrunk while open: records are written
// over the bytes of older ones, so a sync changes the file's data and not
// its length or block map, which is the cheaper sync (about 175 against
// 255 µs per fdatasync on the test machine). Older records left after the
// newest are harmless: they carry lower record numbers, which end a read,
// and they are all applied already. The file grows with written zeros
// (growth below), never with holes.
type journalFile struct {
	f      *os.File
	header []byte
	// size is the end of the records written since the last reset; length
	// the file's length (written bytes up to there).
	size, length int64
}

// Journal file growth: at least journalGrowMin, doubling up to
// journalGrowMax at a time.
const (
	journalGrowMin = 256 << 10
	journalGrowMax = 4 << 20
)

// openJournalFiles opens (creating) both journal files of path for
// appending, and makes their directory entries durable. A file that holds
// this bbolt file's journal keeps its bytes (the caller has applied every
// record in it); any other is emptied first, so none of its records can
// ever be read as this file's.
func openJournalFiles(path string, id []byte) ([2]*journalFile, error) {
	var out [2]*journalFile
	for i, p := range journalPaths(path) {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, fileMode)
		if err != nil {
			closeJournalFiles(out)
			return out, fmt.Errorf("chain: open journal: %w", err)
		}
		j := &journalFile{f: f, header: journalHeader(id)}
		out[i] = j
		if err := j.init(); err != nil {
			closeJournalFiles(out)
			return out, err
		}
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		closeJournalFiles(out)
		return out, fmt.Errorf("chain: open journal: %w", err)
	}
	return out, nil
}

func closeJournalFiles(files [2]*journalFile) {
	for _, j := range files {
		if j != nil {
			j.f.Close()
		}
	}
}

// init checks the file's header: if it is not this file's journal, the
// file is emptied and given the header, durably.
func (j *journalFile) init() error {
	got := make([]byte, len(j.header))
	n, _ := j.f.ReadAt(got, 0)
	st, err := j.f.Stat()
	if err != nil {
		return fmt.Errorf("chain: open journal %s: %w", j.f.Name(), err)
	}
	if n == len(got) && bytes.Equal(got, j.header) {
		j.size, j.length = int64(len(j.header)), st.Size()
		return nil
	}
	if err := j.f.Truncate(0); err != nil {
		return fmt.Errorf("chain: empty journal %s: %w", j.f.Name(), err)
	}
	if _, err := j.f.WriteAt(j.header, 0); err != nil {
		return fmt.Errorf("chain: empty journal %s: %w", j.f.Name(), err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("chain: empty journal %s: %w", j.f.Name(), err)
	}
	j.size, j.length = int64(len(j.header)), int64(len(j.header))
	return nil
}

// reset starts writing at the first record again, once every record of
// the file is applied. Nothing is written: the next records overwrite the
// old ones, and a replay skips old ones by their numbers.
func (j *journalFile) reset() {
	j.size = int64(len(j.header))
}

// append writes buf after the last record and syncs the data. When buf
// would pass the file's end, the file first grows with written zeros (the
// same sync makes them durable).
func (j *journalFile) append(buf []byte) error {
	end := j.size + int64(len(buf))
	if end > j.length {
		if err := j.grow(end); err != nil {
			return err
		}
	}
	if _, err := j.f.WriteAt(buf, j.size); err != nil {
		return fmt.Errorf("chain: write journal %s: %w", j.f.Name(), err)
	}
	if err := fdatasync(j.f); err != nil {
		return fmt.Errorf("chain: sync journal %s: %w", j.f.Name(), err)
	}
	j.size = end
	return nil
}

// journalGrowStep is the unit the journal grows by when the file system is
// too full for a regular growth step.
const journalGrowStep = 4 << 10

// grow makes the file at least end bytes long, with written zeros: a
// regular step (journalGrowMin up to journalGrowMax), or, when the file
// system has no room for that, just enough for end. It writes nothing
// else, so when it fails no record was written: the error wraps
// ErrNotWritten (and the system's error, e.g. syscall.ENOSPC) and the
// journal stays as it was, free to take the next write. Zeros written
// before a failure lie past j.length and are written over by the next
// growth.
func (j *journalFile) grow(end int64) error {
	step := min(max(j.length, journalGrowMin), journalGrowMax)
	newLength := max(end, j.length+step)
	_, err := j.f.WriteAt(make([]byte, newLength-j.length), j.length)
	if err != nil && isNoSpace(err) && newLength > end {
		newLength = (end + journalGrowStep - 1) / journalGrowStep * journalGrowStep
		_, err = j.f.WriteAt(make([]byte, newLength-j.length), j.length)
	}
	if err != nil {
		return fmt.Errorf("chain: %w: grow journal %s: %w%s", ErrNotWritten, j.f.Name(), err, spaceHint(err, filepath.Dir(j.f.Name())))
	}
	j.length = newLength
	return nil
}
