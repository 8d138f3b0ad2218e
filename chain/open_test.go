package chain

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rnd := make([]byte, 64<<10)
	rand.NewChaCha8([32]byte{1}).Read(rnd)
	otherBolt := filepath.Join(dir, "other.db")
	db, err := bolt.Open(otherBolt, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("stuff")); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	cases := []struct {
		name string
		path string
		want error
	}{
		{"missing file", filepath.Join(dir, "nope.db"), ErrNoChain},
		{"empty file", write("empty.db", nil), ErrNotChain},
		{"text file", write("text.db", []byte("this is my shopping list\n")), ErrNotChain},
		{"random bytes", write("random.db", rnd), ErrNotChain},
		{"a bbolt file of another program", otherBolt, ErrNotChain},
		{"a directory", dir, ErrNotChain},
	}
	for _, tc := range cases {
		for _, ro := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/readonly=%v", tc.name, ro), func(t *testing.T) {
				before, _ := os.ReadFile(tc.path)
				c, err := Open(tc.path, Options{ReadOnly: ro})
				if err == nil {
					c.Close()
					t.Fatal("opened a file that is not a chain")
				}
				wantErr(t, err, tc.want)
				if !strings.Contains(err.Error(), tc.path) {
					t.Fatalf("error %q does not name the file", err)
				}
				after, _ := os.ReadFile(tc.path)
				if !bytes.Equal(before, after) {
					t.Fatal("Open changed the file")
				}
			})
		}
	}
}

func TestCreateRefusesExistingFile(t *testing.T) {
	_, path := newTestChain(t, testKey(t, "alice"), 0)
	_, err := Create(path, testKey(t, "bob"), 1)
	wantErr(t, err, ErrExists)
}

func TestOpenHeldByOther(t *testing.T) {
	key := testKey(t, "alice")
	c, path := newTestChain(t, key, 1)
	for _, ro := range []bool{false, true} {
		start := time.Now()
		_, err := Open(path, Options{ReadOnly: ro, Timeout: 200 * time.Millisecond})
		wantErr(t, err, ErrHeldByOther)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("took %v to fail", d)
		}
		if !strings.Contains(err.Error(), "in use by another process") || !strings.Contains(err.Error(), "negotiate node") {
			t.Fatalf("unclear error %q", err)
		}
	}
	// Default timeout: about one second.
	start := time.Now()
	_, err := Open(path, Options{})
	wantErr(t, err, ErrHeldByOther)
	if d := time.Since(start); d < 900*time.Millisecond || d > 2500*time.Millisecond {
		t.Fatalf("default open timeout took %v, want about 1s", d)
	}
	// Once closed, readers share the file and cannot write.
	c.Close()
	r1, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if r1.Head() != r2.Head() || r1.Length() != 2 || r1.AgentID() != key.AgentID() || !r1.PublicKey().Equal(key.Public()) {
		t.Fatalf("reader sees head %v length %d agent %s", r1.Head(), r1.Length(), r1.AgentID())
	}
	e, err := NewEntryAt(key, r1.Head(), KindNote, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, r1.Apply(Write{Append: e}), ErrReadOnly)
}

func TestEntries(t *testing.T) {
	key := testKey(t, "alice")
	c, _ := newTestChain(t, key, 5)
	cases := []struct {
		from       uint64
		limit      int
		wantSeqs   []uint64
		wantErrIsF error
	}{
		{0, 0, []uint64{0, 1, 2, 3, 4, 5}, nil},
		{2, 2, []uint64{2, 3}, nil},
		{4, 100, []uint64{4, 5}, nil},
		{6, 1, nil, nil},
	}
	for _, tc := range cases {
		es, err := c.Entries(tc.from, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		for _, e := range es {
			seqs = append(seqs, e.Seq)
		}
		if len(seqs) != len(tc.wantSeqs) {
			t.Fatalf("Entries(%d,%d) = %v, want %v", tc.from, tc.limit, seqs, tc.wantSeqs)
		}
		for i := range seqs {
			if seqs[i] != tc.wantSeqs[i] {
				t.Fatalf("Entries(%d,%d) = %v, want %v", tc.from, tc.limit, seqs, tc.wantSeqs)
			}
		}
	}
	if _, err := c.Entry(6); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Entry(6) error %v, want ErrNotFound", err)
	}
	g, err := c.Entry(0)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParseGenesis(g)
	if err != nil || !pub.Equal(key.Public()) {
		t.Fatalf("genesis key %v (%v)", pub.AgentID(), err)
	}
}

// TestApplyBatchConcurrent runs many writers through ApplyBatch at once:
// checkpoint writers for their own sessions and appenders racing for the
// next seq. Every acknowledged write must be there and the chain sound.
func TestApplyBatchConcurrent(t *testing.T) {
	key := testKey(t, "alice")
	c, path := newTestChain(t, key, 0)
	const sessions, perSession, appenders, perAppender = 8, 15, 3, 10
	var wg sync.WaitGroup
	errs := make(chan error, sessions+appenders)
	for s := 0; s < sessions; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "session-" + string(rune('a'+s))
			for i := 0; i < perSession; i++ {
				if err := c.ApplyBatch(Write{Session: name, Checkpoint: []byte{byte(i)}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var mu sync.Mutex
	acked := map[Hash]uint64{}
	for a := 0; a < appenders; a++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < perAppender; {
				e, err := c.NewEntry(key, KindNote, map[string]int{"appender": a, "i": done}, 1)
				if err != nil {
					errs <- err
					return
				}
				err = c.ApplyBatch(Write{Append: e})
				switch {
				case err == nil:
					mu.Lock()
					acked[e.Hash()] = e.Seq
					mu.Unlock()
					done++
				case errors.Is(err, ErrSeqMismatch), errors.Is(err, ErrPrevMismatch):
					// Lost the race for this seq: build on the new head.
				default:
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
	c.Close()
	c2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if verr := c2.Verify(VerifyOptions{}); verr != nil {
		t.Fatal(verr)
	}
	if got := c2.Head().Seq; got != appenders*perAppender || len(acked) != appenders*perAppender {
		t.Fatalf("head %d, acknowledged %d, want %d", got, len(acked), appenders*perAppender)
	}
	for h, seq := range acked {
		e, err := c2.Entry(seq)
		if err != nil || e.Hash() != h {
			t.Fatalf("acknowledged entry %d missing or different (%v)", seq, err)
		}
	}
	cps, err := c2.Checkpoints()
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) != sessions {
		t.Fatalf("%d checkpoints, want %d", len(cps), sessions)
	}
	for name, cp := range cps {
		if !bytes.Equal(cp, []byte{perSession - 1}) {
			t.Fatalf("checkpoint of %s = %v, want the last write", name, cp)
		}
	}
}
