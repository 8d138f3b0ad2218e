package chain

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/negotiate-dev/negotiate/internal/smallfs"
)

// TestChainFullDisk fills the file system under a real chain file: the
// write that finds no room is refused with ErrNotWritten and ENOSPC, says
// where to free space, changes nothing, and the chain takes writes again
// once there is room, without reopening; after a reopen every write made
// is there and the chain verifies.
func TestChainFullDisk(t *testing.T) {
	dir := smallfs.Mount(t, 2<<20)
	key := testKey(t, "full-disk")
	path := filepath.Join(dir, "chain.db")
	c, err := Create(path, key, 1_700_000_000_000)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	appendNotes(t, c, key, 5)
	free := smallfs.Fill(t, dir)

	big := strings.Repeat("x", 8<<10)
	var refused error
	for i := 0; i < 2000 && refused == nil; i++ {
		e, err := c.NewEntry(key, KindNote, map[string]any{"text": big}, 1_700_000_000_000+int64(c.Length()))
		if err != nil {
			t.Fatal(err)
		}
		before := snapshot(t, c)
		if err := c.Apply(Write{Append: e}); err != nil {
			refused = err
			if after := snapshot(t, c); after.Head != before.Head || after.Entries != before.Entries {
				t.Fatalf("refused write changed the chain: %+v -> %+v", before.Head, after.Head)
			}
		}
	}
	if refused == nil {
		t.Fatal("2000 writes of 8 KiB fit in a full 2 MiB file system")
	}
	t.Logf("refused at length %d: %v", c.Length(), refused)
	if !errors.Is(refused, ErrNotWritten) || !errors.Is(refused, syscall.ENOSPC) {
		t.Fatalf("refusal does not wrap ErrNotWritten and ENOSPC: %v", refused)
	}
	for _, want := range []string{"no space left on device", "free space in " + dir} {
		if !strings.Contains(refused.Error(), want) {
			t.Errorf("refusal %q does not say %q", refused, want)
		}
	}
	if verr := c.Verify(VerifyOptions{}); verr != nil {
		t.Fatalf("chain does not verify after the refusal: %v", verr)
	}
	length := c.Length()

	free()
	appendNotes(t, c, key, 20)
	if err := c.commits.flushNow(); err != nil {
		t.Fatalf("flush once there is room: %v", err)
	}
	if err := c.FlushError(); err != nil {
		t.Fatalf("FlushError after a successful flush: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = nil
	r, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Length() != length+20 {
		t.Fatalf("reopened length %d, want %d", r.Length(), length+20)
	}
	if verr := r.Verify(VerifyOptions{}); verr != nil {
		t.Fatalf("reopened chain does not verify: %v", verr)
	}
}

// TestChainFlushWithoutRoom fills the file system while the journal has
// room but the bbolt file does not: the flush fails, the writes stay
// durable in the journal and readable, the file keeps taking writes, and
// the flush succeeds once there is room.
func TestChainFlushWithoutRoom(t *testing.T) {
	dir := smallfs.Mount(t, 4<<20)
	key := testKey(t, "flush-full")
	path := filepath.Join(dir, "chain.db")
	c, err := Create(path, key, 1_700_000_000_000)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	appendNotes(t, c, key, 2) // the journal file has grown: later small writes need no room
	free := smallfs.Fill(t, dir)
	big := strings.Repeat("y", 1<<10)
	for i := 0; i < 60; i++ {
		e, err := c.NewEntry(key, KindNote, map[string]any{"text": big}, 1_700_000_000_000+int64(c.Length()))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(Write{Append: e}); err != nil {
			t.Fatalf("write %d into the journal's room: %v", i, err)
		}
	}
	ferr := c.commits.flushNow()
	if ferr == nil || !strings.Contains(ferr.Error(), "no space left on device") {
		t.Fatalf("flush into a full file system: %v", ferr)
	}
	if c.FlushError() == nil {
		t.Fatal("FlushError is nil after a failed flush")
	}
	if verr := c.Verify(VerifyOptions{}); verr != nil {
		t.Fatalf("chain (journal overlay) does not verify: %v", verr)
	}
	appendNotes(t, c, key, 1)
	free()
	if err := c.commits.flushNow(); err != nil {
		t.Fatalf("flush once there is room: %v", err)
	}
	if c.Length() != 64 {
		t.Fatalf("length %d, want 64", c.Length())
	}
}

// TestChainReopenOnFullDisk: writes whose flush failed for want of space
// stay in the journal when the chain is closed (Close says why and keeps
// the journal); reopening while the file system is still full fails,
// saying where to free space, and changes nothing; once there is room the
// reopen replays every write and the chain verifies.
func TestChainReopenOnFullDisk(t *testing.T) {
	dir := smallfs.Mount(t, 4<<20)
	key := testKey(t, "reopen-full")
	path := filepath.Join(dir, "chain.db")
	c, err := Create(path, key, 1_700_000_000_000)
	if err != nil {
		t.Fatal(err)
	}
	appendNotes(t, c, key, 2)
	free := smallfs.Fill(t, dir)
	appendNotes(t, c, key, 40)
	head := c.Head()
	cerr := c.Close()
	t.Logf("close with the disk full: %v", cerr)
	if cerr == nil || !strings.Contains(cerr.Error(), "no space left on device") {
		t.Fatalf("close with the disk full: %v, want the flush's failure", cerr)
	}
	if _, err := os.Stat(path + journalSuffixes[0]); err != nil {
		t.Fatalf("the journal is gone after a failed close: %v", err)
	}
	_, err = Open(path, Options{})
	t.Logf("open with the disk full: %v", err)
	if err == nil || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "free space in "+dir) {
		t.Fatalf("open with the disk full: %v", err)
	}
	free()
	r, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Head() != head {
		t.Fatalf("reopened at %+v, the last write was %+v", r.Head(), head)
	}
	if verr := r.Verify(VerifyOptions{}); verr != nil {
		t.Fatal(verr)
	}
}
