package chain

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// journalID reads the journal ID stored in a closed chain file.
func journalID(t *testing.T, path string) []byte {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var id []byte
	db.View(func(tx *bolt.Tx) error {
		id = append(id, tx.Bucket(bucketMeta).Get(keyJournalID)...)
		return nil
	})
	return id
}

// TestBackupWhileWriting backs a chain up while another goroutine keeps
// appending: the copy is a chain of its own, verifies, and holds a prefix
// of the live chain, with every write made before the call.
func TestBackupWhileWriting(t *testing.T) {
	key := testKey(t, "backup")
	c, path := newTestChain(t, key, 30)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			e, err := c.NewEntry(key, KindNote, map[string]any{"w": 1}, 1_700_000_000_000+int64(c.Length()))
			if err == nil {
				err = c.Apply(Write{Append: e})
			}
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()
	before := c.Length()
	file := filepath.Join(filepath.Dir(path), "backup.db")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Backup(f)
	f.Close()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if info.Length < before || info.Length > c.Length() || info.AgentID != key.AgentID() {
		t.Fatalf("backup info %+v: live length was %d before, %d after", info, before, c.Length())
	}
	b, err := OpenReadOnly(file)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if verr := b.Verify(VerifyOptions{}); verr != nil {
		t.Fatalf("backup does not verify: %v", verr)
	}
	if b.Head() != info.Head {
		t.Fatalf("backup head %+v, info says %+v", b.Head(), info.Head)
	}
	live, err := c.Entry(info.Head.Seq)
	if err != nil || live.Hash() != info.Head.Hash {
		t.Fatalf("backup head is not the live chain's entry %d: %v", info.Head.Seq, err)
	}
}

// TestRestore: a restore refuses (changing nothing) a backup of another
// agent, a file that is not a chain, and an older copy over a longer chain
// without Force; with Force it puts the older copy back with a new journal
// ID, and the chain opens, verifies and takes writes.
func TestRestore(t *testing.T) {
	key := testKey(t, "restore")
	c, path := newTestChain(t, key, 5)
	dir := filepath.Dir(path)
	old := filepath.Join(dir, "old.db")
	f, _ := os.Create(old)
	if _, err := c.Backup(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	appendNotes(t, c, key, 5)
	if _, err := Restore(old, path, RestoreOptions{}); !errors.Is(err, ErrHeldByOther) {
		t.Fatalf("restore over an open chain: %v, want ErrHeldByOther", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	liveID := journalID(t, path)
	stat := func() []byte { b, _ := os.ReadFile(path); return b }
	orig := stat()

	other, otherPath := newTestChain(t, testKey(t, "someone else"), 1)
	other.Close()
	garbage := filepath.Join(dir, "garbage.db")
	os.WriteFile(garbage, bytes.Repeat([]byte("x"), 8192), 0o600)
	for name, tc := range map[string]struct {
		file string
		opts RestoreOptions
		want error
	}{
		"older without force": {old, RestoreOptions{}, ErrWouldShorten},
		"another agent":       {otherPath, RestoreOptions{Force: true}, nil},
		"not a chain":         {garbage, RestoreOptions{Force: true}, ErrNotChain},
		"missing":             {filepath.Join(dir, "none.db"), RestoreOptions{}, os.ErrNotExist},
	} {
		_, err := Restore(tc.file, path, tc.opts)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
		t.Logf("%s: %v", name, err)
		if !bytes.Equal(stat(), orig) {
			t.Fatalf("%s: the refused restore changed the chain file", name)
		}
		if _, err := os.Stat(path + ".restore"); err == nil {
			t.Fatalf("%s: left the temporary copy", name)
		}
	}

	info, err := Restore(old, path, RestoreOptions{Force: true, Agent: key.AgentID()})
	if err != nil {
		t.Fatal(err)
	}
	if info.Length != 6 || info.Replaced != 11 || info.Dropped != 5 || !info.Forced {
		t.Fatalf("restore info %+v", info)
	}
	if bytes.Equal(journalID(t, path), liveID) {
		t.Fatal("the restored file kept the replaced file's journal ID")
	}
	r, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Length() != 6 {
		t.Fatalf("restored length %d, want 6", r.Length())
	}
	appendNotes(t, r, key, 2)
	if verr := r.Verify(VerifyOptions{}); verr != nil {
		t.Fatal(verr)
	}
}
