// Package smallfs gives tests a small file system of their own (a tmpfs
// mounted for the test), so they can fill it and see what a full disk does
// to a chain or a node. It must never be used outside tests: it mounts and
// unmounts file systems.
package smallfs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs of sizeBytes on a new directory and unmounts it when
// the test ends. It skips the test, saying why, where mounting is
// impossible (not root, no mount permission).
func Mount(t testing.TB, sizeBytes int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("smallfs: needs root to mount a tmpfs (running as uid %d)", os.Geteuid())
	}
	dir, err := os.MkdirTemp("", "smallfs-")
	if err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("size=%d,mode=0700", sizeBytes)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		os.Remove(dir)
		t.Skipf("smallfs: cannot mount a tmpfs here (%v: %s)", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("smallfs: umount %s: %v: %s", dir, err, out)
		}
		os.Remove(dir)
	})
	return dir
}

// Fill writes a new file in dir until the file system is full, and
// returns a function that removes it again (freeing the space). Each call
// fills what was freed since the last one.
func Fill(t testing.TB, dir string) (free func()) {
	t.Helper()
	f, err := os.CreateTemp(dir, "filler-")
	if err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			return func() {}
		}
		t.Fatal(err)
	}
	path := f.Name()
	buf := make([]byte, 64<<10)
	for len(buf) > 0 {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				f.Close()
				t.Fatalf("smallfs: fill %s: %v", dir, err)
			}
			buf = buf[:len(buf)/2]
		}
	}
	f.Close()
	return func() {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("smallfs: free %s: %v", dir, err)
		}
	}
}

// Free reports the bytes free in the file system holding dir.
func Free(t testing.TB, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
