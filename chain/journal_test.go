package chain

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/negotiate-dev/negotiate/sign"
)

// journalRecords counts the records in the journal files of the bbolt file
// at path, whichever file they belong to.
func journalRecords(t *testing.T, path string) int {
	t.Helper()
	n := 0
	for _, p := range journalPaths(path) {
		data, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(data) < journalHeaderSize {
			continue
		}
		recs, err := readJournal(p, data[len(journalMagic):journalHeaderSize])
		if err != nil {
			t.Fatal(err)
		}
		n += len(recs)
	}
	return n
}

// unappliedRecords counts the records in the journal of c's file above
// the number its bbolt file records as applied.
func unappliedRecords(t *testing.T, c *Chain) int {
	t.Helper()
	var applied uint64
	if err := c.db.View(func(tx *bolt.Tx) error {
		applied = readAppliedLSN(c.commits.lsnBucket(tx))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	recs, err := readJournals(c.path, c.commits.id, applied)
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}

// lastFrame returns the offset and length of the last record frame in a
// journal file's bytes.
func lastFrame(t *testing.T, data []byte) (int, int) {
	t.Helper()
	off, last, size := journalHeaderSize, -1, 0
	var prev uint64
	for off+journalFrameHeader <= len(data) {
		n := int(binary.BigEndian.Uint32(data[off:]))
		if n == 0 || off+journalFrameHeader+n > len(data) {
			break
		}
		r := new(journalRecord)
		if err := decMode.Unmarshal(data[off+journalFrameHeader:off+journalFrameHeader+n], r); err != nil || r.LSN <= prev {
			break
		}
		prev = r.LSN
		last, size = off, journalFrameHeader+n
		off += journalFrameHeader + n
	}
	if last < 0 {
		t.Fatal("no record in the journal file")
	}
	return last, size
}

// crash leaves a chain file or store as a killed process would: the
// journal written and synced, nothing flushed, the files closed.
func crash(t *testing.T, g *committer) {
	t.Helper()
	g.abandon()
	if err := g.db.Close(); err != nil {
		t.Fatal(err)
	}
}

// chainView is everything a reader can see of a chain.
type chainView struct {
	head        Head
	lock        *Lock
	entries     []Entry
	checkpoints map[string][]byte
}

func viewOf(t *testing.T, c *Chain) chainView {
	t.Helper()
	entries, err := c.Entries(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	cps, err := c.Checkpoints()
	if err != nil {
		t.Fatal(err)
	}
	l, _ := c.Lock()
	return chainView{head: c.Head(), lock: l, entries: entries, checkpoints: cps}
}

func sameView(t *testing.T, what string, got, want chainView) {
	t.Helper()
	if got.head != want.head {
		t.Fatalf("%s: head %s, want %s", what, got.head, want.head)
	}
	if (got.lock == nil) != (want.lock == nil) || got.lock != nil && got.lock.Session != want.lock.Session {
		t.Fatalf("%s: lock %+v, want %+v", what, got.lock, want.lock)
	}
	if len(got.entries) != len(want.entries) {
		t.Fatalf("%s: %d entries, want %d", what, len(got.entries), len(want.entries))
	}
	for i := range got.entries {
		if got.entries[i].Hash() != want.entries[i].Hash() {
			t.Fatalf("%s: entry %d differs", what, i)
		}
	}
	if len(got.checkpoints) != len(want.checkpoints) {
		t.Fatalf("%s: checkpoints %v, want %v", what, keys(got.checkpoints), keys(want.checkpoints))
	}
	for k, v := range want.checkpoints {
		if !bytes.Equal(got.checkpoints[k], v) {
			t.Fatalf("%s: checkpoint %s is %x, want %x", what, k, got.checkpoints[k], v)
		}
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// writeMix applies a lock, appends, checkpoints (one deleted again, one
// empty) and, if release, the release: every kind of journal record.
func writeMix(t *testing.T, c *Chain, key string, release bool) {
	t.Helper()
	k := testKey(t, key)
	must := func(w Write) {
		t.Helper()
		if err := c.Apply(w); err != nil {
			t.Fatal(err)
		}
	}
	must(Write{Session: "S1", AcquireLock: &Lock{Session: "S1", Since: 5}, Checkpoint: []byte("locked")})
	for i := 0; i < 5; i++ {
		e, err := c.NewEntry(k, KindNote, fmt.Sprintf("note %d", i), int64(10+i))
		if err != nil {
			t.Fatal(err)
		}
		must(Write{Session: "S1", Append: e, Checkpoint: []byte(fmt.Sprintf("at %d", e.Seq))})
	}
	must(Write{Session: "gone", Checkpoint: []byte("soon deleted")})
	must(Write{Session: "gone", DeleteCheckpoint: true})
	must(Write{Session: "empty", Checkpoint: []byte{}})
	if release {
		must(Write{Session: "S1", ReleaseLock: true, Checkpoint: []byte("released")})
	}
}

// TestJournalReplay crashes a chain file and a store with every write still
// only in the journal, then checks that a read-only open sees all of it
// without changing the files, and that a writable open replays it into the
// bbolt file and empties the journal.
func TestJournalReplay(t *testing.T) {
	for _, tc := range []struct {
		name    string
		release bool
	}{{"locked", false}, {"released", true}} {
		t.Run("file/"+tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "chain.db")
			c, err := Create(path, testKey(t, "j"), 1)
			if err != nil {
				t.Fatal(err)
			}
			writeMix(t, c, "j", tc.release)
			want := viewOf(t, c)
			if c.commits.stats().Flushes != 0 {
				t.Fatal("flushed already: the test would not exercise the journal")
			}
			crash(t, c.commits)
			if n := journalRecords(t, path); n != 9+btoi(tc.release) {
				t.Fatalf("journal holds %d records", n)
			}
			dbBefore, _ := os.ReadFile(path)

			ro, err := OpenReadOnly(path)
			if err != nil {
				t.Fatal(err)
			}
			sameView(t, "read-only", viewOf(t, ro), want)
			if verr := ro.Verify(VerifyOptions{}); verr != nil {
				t.Fatal(verr)
			}
			ro.Close()
			if dbAfter, _ := os.ReadFile(path); !bytes.Equal(dbBefore, dbAfter) {
				t.Fatal("a read-only open changed the chain file")
			}

			c, err = Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			sameView(t, "replayed", viewOf(t, c), want)
			if n := unappliedRecords(t, c); n != 0 {
				t.Fatalf("journal still holds %d records the file has not applied, after the replay", n)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			for _, p := range journalPaths(path) {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Fatalf("journal %s left after Close: %v", p, err)
				}
			}
			c, err = Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			sameView(t, "closed and reopened", viewOf(t, c), want)
		})
		t.Run("store/"+tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "store.db")
			s, err := CreateStore(path)
			if err != nil {
				t.Fatal(err)
			}
			var wants []chainView
			var ids []string
			for i := 0; i < 3; i++ {
				name := fmt.Sprintf("s%d", i)
				c, err := s.Create(testKey(t, name), 1)
				if err != nil {
					t.Fatal(err)
				}
				writeMix(t, c, name, tc.release)
				wants = append(wants, viewOf(t, c))
				ids = append(ids, string(c.AgentID()))
			}
			crash(t, s.commits)
			for _, ro := range []bool{true, false} {
				s, err := OpenStore(path, Options{ReadOnly: ro})
				if err != nil {
					t.Fatal(err)
				}
				agents, _ := s.Agents()
				if len(agents) != 3 {
					t.Fatalf("%d agents", len(agents))
				}
				for i, id := range ids {
					c, err := s.Chain(sign.AgentID(id))
					if err != nil {
						t.Fatal(err)
					}
					sameView(t, fmt.Sprintf("read-only %v, agent %d", ro, i), viewOf(t, c), wants[i])
					if verr := c.Verify(VerifyOptions{}); verr != nil {
						t.Fatal(verr)
					}
				}
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestJournalTornTail damages the last record of a crashed journal, as a
// write cut by power loss would (its sync never returned, so its Apply never
// succeeded): the open applies every record before it and drops it.
func TestJournalTornTail(t *testing.T) {
	for _, damage := range []string{"truncated", "flipped", "garbage after", "torn over an older record"} {
		t.Run(damage, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "chain.db")
			key := testKey(t, "torn")
			c, err := Create(path, key, 1)
			if err != nil {
				t.Fatal(err)
			}
			var heads []Head
			for i := 0; i < 4; i++ {
				e, err := c.NewEntry(key, KindNote, i, 2)
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Apply(Write{Append: e}); err != nil {
					t.Fatal(err)
				}
				heads = append(heads, c.Head())
			}
			active := journalPaths(path)[c.commits.active]
			crash(t, c.commits)
			data, err := os.ReadFile(active)
			if err != nil {
				t.Fatal(err)
			}
			want := heads[2] // the last record is damaged
			off, size := lastFrame(t, data)
			switch damage {
			case "truncated":
				data = data[:off+size-7]
			case "flipped":
				data[off+size-3] ^= 0x40
			case "garbage after":
				copy(data[off+size:], []byte{0, 0, 0, 9, 1, 2, 3, 4, 5, 6})
				want = heads[3]
			case "torn over an older record":
				// The last write tore its record, whose bytes went over the
				// start of a record written before the file was reused.
				copy(data[off+journalFrameHeader+2:], data[journalHeaderSize:off])
			}
			if err := os.WriteFile(active, data, 0o600); err != nil {
				t.Fatal(err)
			}
			c, err = Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.Head() != want {
				t.Fatalf("head %s after the replay, want %s", c.Head(), want)
			}
			if verr := c.Verify(VerifyOptions{}); verr != nil {
				t.Fatal(verr)
			}
			// The chain goes on from there.
			e, err := c.NewEntry(key, KindNote, "after", 3)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Apply(Write{Append: e}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestJournalAppliedRecordsSkipped puts back into a journal file a record
// that a flush already applied (a crash between the flush and emptying the
// file): the open must not apply it again over a newer change.
func TestJournalAppliedRecordsSkipped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "chain.db")
	c, err := Create(path, testKey(t, "lsn"), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(Write{Session: "X", Checkpoint: []byte("old")}); err != nil {
		t.Fatal(err)
	}
	first := journalPaths(path)[c.commits.active]
	stale, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.commits.flushNow(); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(Write{Session: "X", DeleteCheckpoint: true}); err != nil {
		t.Fatal(err)
	}
	if err := c.commits.flushNow(); err != nil {
		t.Fatal(err)
	}
	crash(t, c.commits)
	if err := os.WriteFile(first, stale, 0o600); err != nil {
		t.Fatal(err)
	}
	if recs, _ := readJournal(first, c.commits.id); len(recs) == 0 || recs[0].LSN != 1 || !recs[0].PutCheckpoint {
		t.Fatalf("the applied record is not in the journal: %+v", recs)
	}
	c, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cp, ok, _ := c.Checkpoint("X"); ok {
		t.Fatalf("checkpoint X came back as %q: an applied record was replayed", cp)
	}
}

// TestJournalOfAnotherFileIgnored restores a chain file from a copy while
// the journal of a crashed, different chain lies next to it: its records
// belong to that other file and are not applied.
func TestJournalOfAnotherFileIgnored(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "chain.db")
	key := testKey(t, "mine")
	c, err := Create(path, key, 1)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	c, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := c.NewEntry(key, KindNote, "lost with the crash", 2)
	if err := c.Apply(Write{Append: e, Session: "S", Checkpoint: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	crash(t, c.commits)
	// A different chain file takes the path; the journal stays.
	os.Remove(path)
	other, err := Create(filepath.Join(dir, "other.db"), testKey(t, "other"), 1)
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	raw, _ := os.ReadFile(filepath.Join(dir, "other.db"))
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if journalRecords(t, path) != 1 {
		t.Fatal("the crashed chain's record is not in the journal")
	}
	c, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Head().Seq != 0 || c.AgentID() != testKey(t, "other").AgentID() {
		t.Fatalf("head %s of %s: another file's journal was applied", c.Head(), c.AgentID().Short())
	}
	if _, ok, _ := c.Checkpoint("S"); ok {
		t.Fatal("another file's checkpoint was applied")
	}
	if n := journalRecords(t, path); n != 0 {
		t.Fatalf("the foreign journal still holds %d records under this file's header", n)
	}
	c.Close()
}

// TestJournalReadsDuringFlushes writes from several goroutines while
// flushes run, and checks every read against what was acknowledged: a head
// read always has its entry, a checkpoint is never older than the last
// acknowledged one, and Verify passes.
func TestJournalReadsDuringFlushes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := CreateStore(path)
	if err != nil {
		t.Fatal(err)
	}
	const agents, writes = 3, 150
	var chains []*Chain
	for i := 0; i < agents; i++ {
		c, err := s.Create(testKey(t, fmt.Sprintf("r%d", i)), 1)
		if err != nil {
			t.Fatal(err)
		}
		chains = append(chains, c)
	}
	stop := make(chan struct{})
	var flusher sync.WaitGroup
	flusher.Add(1)
	go func() { // flush often, as the flush policy does under load
		defer flusher.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				if err := s.commits.flushNow(); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for i, c := range chains {
		wg.Add(2)
		key := testKey(t, fmt.Sprintf("r%d", i))
		go func() { // writer
			defer wg.Done()
			for n := 1; n <= writes; n++ {
				e, err := c.NewEntry(key, KindNote, n, 2)
				if err != nil {
					t.Error(err)
					return
				}
				var cp [8]byte
				binary.BigEndian.PutUint64(cp[:], uint64(n))
				if err := c.Apply(Write{Session: "S", Append: e, Checkpoint: cp[:]}); err != nil {
					t.Error(err)
					return
				}
				if n%10 == 0 {
					if err := c.Apply(Write{Session: fmt.Sprintf("tmp%d", n), Checkpoint: []byte{1}}); err != nil {
						t.Error(err)
						return
					}
					if err := c.Apply(Write{Session: fmt.Sprintf("tmp%d", n), DeleteCheckpoint: true}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
		go func() { // reader
			defer wg.Done()
			for {
				h := c.Head()
				if _, err := c.Entry(h.Seq); err != nil {
					t.Errorf("head %s read, its entry: %v", h, err)
					return
				}
				cp, ok, err := c.Checkpoint("S")
				if err != nil || h.Seq > 0 && (!ok || binary.BigEndian.Uint64(cp) < h.Seq) {
					t.Errorf("head %s read before checkpoint %x (%v, %v): older than acknowledged", h, cp, ok, err)
					return
				}
				n := 0
				if err := c.ForEachCheckpoint(func(string, []byte) error { n++; return nil }); err != nil || n > 2 {
					t.Errorf("%d checkpoints listed (%v): a deleted one came back", n, err)
					return
				}
				es, err := c.Entries(h.Seq, 0)
				if err != nil || len(es) == 0 || es[0].Seq != h.Seq {
					t.Errorf("entries from head %s: %d (%v)", h, len(es), err)
					return
				}
				if h.Seq == writes {
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	flusher.Wait()
	for i, c := range chains {
		if c.Head().Seq != writes {
			t.Fatalf("agent %d: head %s", i, c.Head())
		}
		if verr := c.Verify(VerifyOptions{}); verr != nil {
			t.Fatal(verr)
		}
	}
	// The journal files are reused: they stay at their first growth.
	for _, p := range journalPaths(path) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > journalGrowMin+int64(journalHeaderSize) {
			t.Fatalf("journal %s grew to %d bytes: not reused", p, fi.Size())
		}
	}
	st := s.CommitStats()
	if st.Flushes < 2 {
		t.Fatalf("only %d flushes ran", st.Flushes)
	}
	t.Logf("%d writes in %d journal writes, %d flushes", st.Writes, st.Transactions, st.Flushes)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestAppendRefusedOverEntryStoredBeyondHead damages a file so that an entry
// lies above the recorded head: an append there is refused, not overwritten,
// and Verify names the damage.
func TestAppendRefusedOverEntryStoredBeyondHead(t *testing.T) {
	key := testKey(t, "beyond")
	c, path := newTestChain(t, key, 3)
	head := c.Head()
	c.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEntries)
		return b.Put(seqKey(head.Seq+1), bytes.Clone(b.Get(seqKey(head.Seq))))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	c, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e, err := c.NewEntry(key, KindNote, "over it", 9)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Apply(Write{Append: e})
	wantErr(t, err, ErrSeqMismatch)
	if !strings.Contains(err.Error(), "stored beyond the head") {
		t.Fatalf("error %q does not name the damage", err)
	}
	if c.Head() != head {
		t.Fatalf("head moved to %s", c.Head())
	}
	if verr := c.Verify(VerifyOptions{}); verr == nil || !strings.Contains(verr.Error(), "beyond the recorded head") {
		t.Fatalf("verify: %v", verr)
	}
}

// BenchmarkFlush applies one flush's worth of journal records (2,500 of a
// session-like mix over 48 chains: checkpoints written three times, then
// an append with its checkpoint) to a store that already holds 20,000
// ended sessions' checkpoints, in one synced bbolt transaction, record by
// record ("one-by-one", as a flush does) and with only the newest value of
// each key put, in key order ("coalesced": tried, no faster, not kept).
func BenchmarkFlush(b *testing.B) {
	const chains, records, existing = 48, 2500, 20000
	for _, mode := range []string{"one-by-one", "coalesced", "time-ordered"} {
		b.Run(mode, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "store.db")
			s, err := CreateStore(path)
			if err != nil {
				b.Fatal(err)
			}
			var roots [][]byte
			for a := 0; a < chains; a++ {
				c, err := s.Create(testKey(b, fmt.Sprintf("flush%d", a)), 1)
				if err != nil {
					b.Fatal(err)
				}
				roots = append(roots, c.root)
			}
			s.Close()
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			cp := bytes.Repeat([]byte{7}, 1700)
			entry := bytes.Repeat([]byte{9}, 830)
			session := func(i int) string { return fmt.Sprintf("%016x%016x", uint64(i)*0x9e3779b97f4a7c15, i) }
			if mode == "time-ordered" { // IDs that start with their creation time
				session = func(i int) string { return fmt.Sprintf("%012x%020x", i, uint64(i)*0x9e3779b97f4a7c15) }
			}
			if err := db.Update(func(tx *bolt.Tx) error {
				for i := 0; i < existing; i++ {
					_, _, cps := chainBuckets(tx, roots[i%chains])
					if err := cps.Put([]byte(session(i)), cp); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
			seq := make([]uint64, chains)
			next := existing
			batch := func() []*journalRecord {
				var recs []*journalRecord
				for len(recs) < records {
					a := next % chains
					sid := session(next)
					next++
					for k := 0; k < 3; k++ {
						recs = append(recs, &journalRecord{Root: roots[a], Session: sid, PutCheckpoint: true, Checkpoint: cp})
					}
					seq[a]++
					recs = append(recs, &journalRecord{Root: roots[a], Session: sid, Seq: seq[a], Entry: entry, Head: entry[:40], PutCheckpoint: true, Checkpoint: cp})
				}
				return recs
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				recs := batch()
				b.StartTimer()
				err := db.Update(func(tx *bolt.Tx) error {
					if mode == "coalesced" {
						recs = coalesced(recs)
					}
					for _, r := range recs {
						if err := applyRecord(tx, r); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*records), "µs/record")
		})
	}
}

// coalesced keeps, of each chain's records, only the newest value of each
// key, in key order (for BenchmarkFlush).
func coalesced(recs []*journalRecord) []*journalRecord {
	chains := map[string]*pendingChain{}
	var roots []string
	for _, r := range recs {
		p := chains[string(r.Root)]
		if p == nil {
			p = newPendingChain()
			chains[string(r.Root)] = p
			roots = append(roots, string(r.Root))
		}
		p.add(r)
	}
	sort.Strings(roots)
	var out []*journalRecord
	for _, root := range roots {
		p := chains[root]
		for _, seq := range p.entrySeqs() {
			out = append(out, &journalRecord{Root: []byte(root), Seq: seq, Entry: p.entries[seq].val, Head: p.head.val})
		}
		names := make([]string, 0, len(p.checkpoints))
		for s := range p.checkpoints {
			names = append(names, s)
		}
		sort.Strings(names)
		for _, s := range names {
			v := p.checkpoints[s]
			out = append(out, &journalRecord{Root: []byte(root), Session: s, PutCheckpoint: !v.deleted, Checkpoint: v.val, DeleteCheckpoint: v.deleted})
		}
	}
	return out
}

// TestJournalWriteFailureStopsWrites makes the journal's file fail under
// a write, as a full or failing disk would: that Apply fails and says so,
// every later one fails too (whether the record reached the disk is not
// known), nothing changes in memory, and reopening the file gives the
// state before the failed write.
func TestJournalWriteFailureStopsWrites(t *testing.T) {
	key := testKey(t, "fail")
	path := filepath.Join(t.TempDir(), "chain.db")
	c, err := Create(path, key, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(Write{Session: "S", Checkpoint: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	head := c.Head()
	c.commits.files[c.commits.active].f.Close() // the disk fails
	e, err := c.NewEntry(key, KindNote, "lost", 2)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Apply(Write{Session: "S", Append: e, Checkpoint: []byte("after")})
	if err == nil || !strings.Contains(err.Error(), "journal") {
		t.Fatalf("apply over a failed journal: %v", err)
	}
	if c.Head() != head {
		t.Fatalf("head moved to %s after a failed write", c.Head())
	}
	if cp, _, _ := c.Checkpoint("S"); string(cp) != "before" {
		t.Fatalf("checkpoint %q after a failed write", cp)
	}
	err = c.Apply(Write{Session: "T", Checkpoint: []byte("x")})
	if err == nil || !strings.Contains(err.Error(), "takes no more writes") {
		t.Fatalf("apply after the failure: %v", err)
	}
	if err := c.Close(); err == nil {
		t.Fatal("Close hid the failed journal")
	}
	c, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Head() != head {
		t.Fatalf("reopened at head %s, want %s", c.Head(), head)
	}
	if cp, _, _ := c.Checkpoint("S"); string(cp) != "before" {
		t.Fatalf("reopened with checkpoint %q", cp)
	}
	if err := c.Apply(Write{Session: "T", Checkpoint: []byte("x")}); err != nil {
		t.Fatalf("the reopened chain takes no writes: %v", err)
	}
}

// TestJournalFlushFailureKeepsWrites makes a flush fail (the bbolt file
// cannot be written): acknowledged writes stay readable, later writes fail
// naming the flush, and reopening replays every acknowledged write from the
// journal.
func TestJournalFlushFailureKeepsWrites(t *testing.T) {
	key := testKey(t, "flushfail")
	path := filepath.Join(t.TempDir(), "chain.db")
	c, err := Create(path, key, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		e, err := c.NewEntry(key, KindNote, i, 2)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(Write{Session: "S", Append: e, Checkpoint: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	want := viewOf(t, c)
	db := c.commits.db
	if err := db.Close(); err != nil { // the bbolt file fails
		t.Fatal(err)
	}
	if err := c.commits.flushNow(); err == nil || !strings.Contains(err.Error(), "flush") {
		t.Fatalf("flush into a failed file: %v", err)
	}
	e, err := c.NewEntry(key, KindNote, "after", 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(Write{Append: e}); err == nil || !strings.Contains(err.Error(), "takes no more writes") {
		t.Fatalf("apply after a failed flush: %v", err)
	}
	if got := c.Head(); got != want.head {
		t.Fatalf("head %s, want %s", got, want.head)
	}
	if cp, ok, _ := c.Checkpoint("S"); !ok || !bytes.Equal(cp, []byte{2}) {
		t.Fatalf("acknowledged checkpoint unreadable after a failed flush: %x %v", cp, ok)
	}
	c.commits.abandon()
	c, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sameView(t, "reopened after a failed flush", viewOf(t, c), want)
}

// TestChainCommitStats counts a chain file's durable writes, journal syncs
// and flushes: sequential writes take a sync each, a write that changes
// nothing takes none, and a flush is counted once it ran.
func TestChainCommitStats(t *testing.T) {
	key := testKey(t, "stats")
	c, _ := newTestChain(t, key, 4)
	h := c.Head()
	if err := c.Apply(Write{ExpectHead: &h}); err != nil {
		t.Fatal(err)
	}
	if got, want := c.CommitStats(), (CommitStats{Transactions: 4, Writes: 4}); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
	if err := c.commits.flushNow(); err != nil {
		t.Fatal(err)
	}
	if got := c.CommitStats().Flushes; got != 1 {
		t.Fatalf("%d flushes counted after one", got)
	}
}
