package chain

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/negotiate-dev/negotiate/sign"
)

func newTestStore(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := CreateStore(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// A store keeps several agents' chains apart: each has its own head, lock
// and checkpoints, survives reopening, and verifies on its own.
func TestStoreChainsAreSeparateAndDurable(t *testing.T) {
	s, path := newTestStore(t)
	keys := []*sign.PrivateKey{testKey(t, "a"), testKey(t, "b"), testKey(t, "c")}
	for i, k := range keys {
		c, err := s.Create(k, 1_700_000_000_000)
		if err != nil {
			t.Fatal(err)
		}
		appendNotes(t, c, k, i+1) // a: 1 note, b: 2, c: 3
		if i == 1 {
			lock := &Lock{Session: "s-b", Since: 1, Parties: []sign.AgentID{k.AgentID()}}
			if err := c.Apply(Write{Session: "s-b", AcquireLock: lock, Checkpoint: []byte("cp-b")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.Create(keys[0], 1); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create of agent a: err = %v, want ErrExists", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := OpenStore(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	agents, err := s2.Agents()
	if err != nil || len(agents) != 3 {
		t.Fatalf("Agents = %v, %v; want 3", agents, err)
	}
	for i, k := range keys {
		c, err := s2.Chain(k.AgentID())
		if err != nil {
			t.Fatal(err)
		}
		if again, _ := s2.Chain(k.AgentID()); again != c {
			t.Fatal("Chain returned two objects for one agent")
		}
		if got := c.Head().Seq; got != uint64(i+1) {
			t.Errorf("agent %d head = %d, want %d", i, got, i+1)
		}
		_, locked := c.Lock()
		if locked != (i == 1) {
			t.Errorf("agent %d locked = %v, want %v", i, locked, i == 1)
		}
		cps, err := c.Checkpoints()
		if err != nil || len(cps) != map[bool]int{true: 1, false: 0}[i == 1] {
			t.Errorf("agent %d checkpoints = %v, %v", i, cps, err)
		}
		if verr := c.Verify(VerifyOptions{}); verr != nil {
			t.Errorf("agent %d: verify: %v", i, verr)
		}
	}
	if _, err := s2.Chain(testKey(t, "stranger").AgentID()); !errors.Is(err, ErrNoChain) {
		t.Fatalf("Chain of an unknown agent: err = %v, want ErrNoChain", err)
	}
}

// A store and a chain file are told apart, with errors that say which is
// which; a read-only store refuses writes.
func TestStoreOpenErrors(t *testing.T) {
	dir := t.TempDir()
	chainPath := filepath.Join(dir, "chain.db")
	c, err := Create(chainPath, testKey(t, "a"), 1)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	s, storePath := newTestStore(t)
	if _, err := s.Create(testKey(t, "a"), 1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not a database at all, just text"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		open func() error
		want error
	}{
		{"store opened as chain", func() error {
			_, err := Open(storePath, Options{})
			if err != nil && !strings.Contains(err.Error(), "OpenStore") {
				return fmt.Errorf("message does not say to use OpenStore: %v", err)
			}
			return err
		}, ErrNotChain},
		{"chain opened as store", func() error { _, err := OpenStore(chainPath, Options{}); return err }, ErrNotChain},
		{"garbage as store", func() error { _, err := OpenStore(garbage, Options{}); return err }, ErrNotChain},
		{"missing store", func() error { _, err := OpenStore(filepath.Join(dir, "nope"), Options{}); return err }, ErrNoChain},
		{"create over existing", func() error { _, err := CreateStore(chainPath); return err }, ErrExists},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.open(); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}

	ro, err := OpenStore(storePath, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	rc, err := ro.Chain(testKey(t, "a").AgentID())
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Apply(Write{Session: "s", Checkpoint: []byte("x")}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Apply on a read-only store: err = %v, want ErrReadOnly", err)
	}
	if _, err := ro.Create(testKey(t, "b"), 1); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Create on a read-only store: err = %v, want ErrReadOnly", err)
	}
}

// Many agents writing at once share transactions (group commit), every
// write is durable and in order, and every chain verifies after reopening.
func TestStoreGroupCommit(t *testing.T) {
	const agents, perAgent = 32, 15
	s, path := newTestStore(t)
	keys := make([]*sign.PrivateKey, agents)
	chains := make([]*Chain, agents)
	for i := range keys {
		keys[i] = testKey(t, fmt.Sprintf("agent-%d", i))
		c, err := s.Create(keys[i], 1)
		if err != nil {
			t.Fatal(err)
		}
		chains[i] = c
	}
	before := s.CommitStats()
	var wg sync.WaitGroup
	errs := make(chan error, agents)
	for i := range chains {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < perAgent; n++ {
				e, err := chains[i].NewEntry(keys[i], KindNote, map[string]any{"n": n}, int64(n))
				if err == nil {
					err = chains[i].Apply(Write{Session: "s", Append: e, Checkpoint: []byte{byte(n)}})
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := s.CommitStats()
	writes, txs := st.Writes-before.Writes, st.Transactions-before.Transactions
	if writes != agents*perAgent {
		t.Fatalf("writes = %d, want %d", writes, agents*perAgent)
	}
	if txs >= writes {
		t.Fatalf("%d writes took %d transactions: no group commit", writes, txs)
	}
	t.Logf("%d writes in %d transactions (%.1f per fsync)", writes, txs, float64(writes)/float64(txs))
	s.Close()

	s2, err := OpenStore(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for i, k := range keys {
		c, err := s2.Chain(k.AgentID())
		if err != nil {
			t.Fatal(err)
		}
		if c.Head().Seq != perAgent {
			t.Fatalf("agent %d: head %d, want %d", i, c.Head().Seq, perAgent)
		}
		if verr := c.Verify(VerifyOptions{}); verr != nil {
			t.Fatalf("agent %d: %v", i, verr)
		}
	}
}

// In one group commit, a Write that fails its checks gets its own error
// and writes nothing, while the other Writes of the batch commit.
func TestGroupCommitFailingWriteAlone(t *testing.T) {
	s, _ := newTestStore(t)
	ka, kb := testKey(t, "a"), testKey(t, "b")
	a, err := s.Create(ka, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Create(kb, 1)
	if err != nil {
		t.Fatal(err)
	}
	good1 := mustEntry(t, a, ka, KindNote, map[string]any{"x": 1})
	stale := mustEntry(t, b, kb, KindNote, map[string]any{"x": 2})
	good2 := mustEntry(t, b, kb, KindNote, map[string]any{"x": 3})
	stale.Seq += 5 // would leave a gap: ErrSeqMismatch
	resign(stale, kb)
	var reqs []*commitReq
	for _, w := range []struct {
		c *Chain
		w Write
	}{{a, Write{Append: good1}}, {b, Write{Append: stale}}, {b, Write{Append: good2}}} {
		p, err := w.c.prepare(w.w)
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, &commitReq{c: w.c, p: p, done: make(chan struct{})})
	}
	before := s.CommitStats()
	s.commits.commit(reqs)
	if reqs[0].err != nil || reqs[2].err != nil {
		t.Fatalf("good writes failed: %v, %v", reqs[0].err, reqs[2].err)
	}
	if !errors.Is(reqs[1].err, ErrSeqMismatch) {
		t.Fatalf("gap write: err = %v, want ErrSeqMismatch", reqs[1].err)
	}
	if st := s.CommitStats(); st.Transactions-before.Transactions != 1 || st.Writes-before.Writes != 2 {
		t.Fatalf("stats moved by %+v, want 1 transaction with 2 writes", st)
	}
	if a.Head().Seq != 1 || b.Head().Seq != 1 {
		t.Fatalf("heads a=%d b=%d, want 1 and 1", a.Head().Seq, b.Head().Seq)
	}
}

// BenchmarkGroupCommit compares durable appends of many agents writing at
// once: one file per agent (each write its own fsyncs) against one Store
// (writes share transactions).
func BenchmarkGroupCommit(b *testing.B) {
	const agents = 64
	for _, mode := range []string{"file-per-agent", "store"} {
		b.Run(mode, func(b *testing.B) {
			keys := make([]*sign.PrivateKey, agents)
			chains := make([]*Chain, agents)
			var s *Store
			if mode == "store" {
				s, _ = newTestStore(b)
			}
			for i := range keys {
				keys[i] = testKey(b, fmt.Sprintf("agent-%d", i))
				var err error
				if s != nil {
					chains[i], err = s.Create(keys[i], 1)
				} else {
					chains[i], err = Create(filepath.Join(b.TempDir(), "c.db"), keys[i], 1)
					if err == nil {
						b.Cleanup(func() { chains[i].Close() })
					}
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			var wg sync.WaitGroup
			per := (b.N + agents - 1) / agents
			for i := range chains {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := 0; n < per; n++ {
						e, err := chains[i].NewEntry(keys[i], KindNote, map[string]any{"n": n}, int64(n))
						if err == nil {
							err = chains[i].Apply(Write{Session: "s", Append: e, Checkpoint: []byte("cp")})
						}
						if err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if s != nil {
				st := s.CommitStats()
				b.ReportMetric(float64(st.Writes)/float64(st.Transactions), "writes/tx")
			}
		})
	}
}

// Apply skips re-checking only an entry signed here with the chain's own
// key and left unchanged; a changed entry or another key's entry is
// checked in full and refused.
func TestApplySignedHereStillChecked(t *testing.T) {
	key, other := testKey(t, "owner"), testKey(t, "other")
	for _, tc := range []struct {
		name   string
		mutate func(c *Chain) *Entry
		want   error
	}{
		{"unchanged", func(c *Chain) *Entry { return mustEntry(t, c, key, KindNote, map[string]any{"x": 1}) }, nil},
		{"other key", func(c *Chain) *Entry {
			e, err := NewEntryAt(other, c.Head(), KindNote, map[string]any{"x": 1}, 5)
			if err != nil {
				t.Fatal(err)
			}
			return e
		}, ErrBadSignature},
		{"payload changed after signing", func(c *Chain) *Entry {
			e := mustEntry(t, c, key, KindNote, map[string]any{"x": 1})
			e.Payload = mustCBOR(t, map[string]any{"x": 2})
			return e
		}, ErrBadSignature},
		{"signature bytes changed in place after signing", func(c *Chain) *Entry {
			e := mustEntry(t, c, key, KindNote, map[string]any{"x": 1})
			e.Signature[0] ^= 1
			return e
		}, ErrBadSignature},
		{"signature changed after signing", func(c *Chain) *Entry {
			e := mustEntry(t, c, key, KindNote, map[string]any{"x": 1})
			e.Signature = append([]byte(nil), e.Signature...)
			e.Signature[0] ^= 1
			return e
		}, ErrBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestChain(t, key, 0)
			err := c.Apply(Write{Append: tc.mutate(c)})
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if tc.want != nil && c.Head().Seq != 0 {
				t.Fatalf("refused entry moved the head to %d", c.Head().Seq)
			}
		})
	}
}
