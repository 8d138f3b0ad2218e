package main

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

type chainStatusOut struct {
	Length  uint64 `json:"length"`
	HeadSeq uint64 `json:"head_seq"`
	Head    string `json:"head"`
}

func chainStatusOf(t *testing.T, home string) chainStatusOut {
	t.Helper()
	r := runCLI(t, nil, "--home", home, "chain", "status", "--json")
	if r.code != 0 {
		t.Fatalf("chain status %s: %s", home, r.stderr)
	}
	var st chainStatusOut
	decodeJSON(t, r.stdout, &st)
	return st
}

// TestChainBackupRestore backs a chain up through a running node while
// sessions commit, and with no node; restore refuses while the node runs,
// refuses an older copy over a longer chain without --force and a file
// that is not a chain, changing nothing, and with --force puts the copy
// back, which verifies.
func TestChainBackupRestore(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two libp2p daemons")
	}
	dir, homeA, _, _, idB, a, _ := sessionPair(t, "rules:\n  - action: accept\ndefault: reject\n")
	propose := func() result {
		return runCLI(t, nil, "--home", homeA, "propose", "--with", idB.String(), "--term", "x=1", "--timeout", "10s", "--json")
	}
	for i := 0; i < 2; i++ {
		if r := propose(); r.code != 0 {
			t.Fatalf("propose: %s %s", r.stdout, r.stderr)
		}
	}
	// Back up while sessions keep committing.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 3; i++ {
			if r := propose(); r.code != 0 {
				t.Errorf("propose during the backup: %s %s", r.stdout, r.stderr)
			}
		}
	}()
	early := filepath.Join(dir, "early.db")
	r := runCLI(t, nil, "--home", homeA, "chain", "backup", early, "--json")
	wg.Wait()
	if r.code != 0 {
		t.Fatalf("backup: exit %d %s", r.code, r.stderr)
	}
	var b backupOut
	decodeJSON(t, r.stdout, &b)
	if b.Via != "node" || b.Length < 3 || b.Bytes == 0 || b.File != early {
		t.Fatalf("backup output %+v", b)
	}
	if fi, err := os.Stat(early); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	live := chainStatusOf(t, homeA)
	if live.Length != 6 || b.Length > live.Length {
		t.Fatalf("live length %d, backup %d", live.Length, b.Length)
	}

	if r := runCLI(t, nil, "--home", homeA, "chain", "restore", early); r.code != 1 || !strings.Contains(r.stderr, "stop it first") {
		t.Fatalf("restore while the node runs: exit %d %s", r.code, r.stderr)
	}
	a.stop(t)
	// Without a node, the backup reads the file.
	r = runCLI(t, nil, "--home", homeA, "chain", "backup", filepath.Join(dir, "late.db"), "--json")
	var late backupOut
	decodeJSON(t, r.stdout, &late)
	if r.code != 0 || late.Via != "file" || late.Length != live.Length || late.Head != live.Head {
		t.Fatalf("backup without a node: exit %d %+v (live %+v) %s", r.code, late, live, r.stderr)
	}
	garbage := filepath.Join(dir, "garbage.db")
	writeFile(t, garbage, strings.Repeat("not a chain ", 1000))
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"chain", "restore", early}, 1, "use --force"},
		{[]string{"chain", "restore", garbage, "--force"}, 1, "not a chain"},
		{[]string{"chain", "restore", filepath.Join(dir, "missing.db")}, 1, "no such file"},
		{[]string{"chain", "restore"}, 2, "usage"},
		{[]string{"chain", "backup"}, 2, "usage"},
	} {
		r := runCLI(t, nil, append([]string{"--home", homeA}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d %q, want %d %q", tc.args, r.code, r.stderr, tc.code, tc.want)
		}
		if st := chainStatusOf(t, homeA); st != live {
			t.Fatalf("%v changed the chain: %+v -> %+v", tc.args, live, st)
		}
	}
	r = runCLI(t, nil, "--home", homeA, "chain", "restore", early, "--force", "--json")
	if r.code != 0 {
		t.Fatalf("restore --force: exit %d %s", r.code, r.stderr)
	}
	var ro restoreOut
	decodeJSON(t, r.stdout, &ro)
	if ro.Length != b.Length || ro.Replaced != live.Length || ro.Dropped != live.Length-b.Length || !ro.Forced {
		t.Fatalf("restore output %+v (backup %+v, live %+v)", ro, b, live)
	}
	if st := chainStatusOf(t, homeA); st.Length != b.Length || st.Head != b.Head {
		t.Fatalf("restored chain %+v, backup %+v", st, b)
	}
	if v := runCLI(t, nil, "--home", homeA, "chain", "verify"); v.code != 0 {
		t.Fatalf("restored chain does not verify: %s %s", v.stdout, v.stderr)
	}
	// The later copy goes back on (--force: the early copy may have been
	// taken while a session held the lock, which restore will not drop
	// without it).
	if r := runCLI(t, nil, "--home", homeA, "chain", "restore", filepath.Join(dir, "late.db"), "--force"); r.code != 0 {
		t.Fatalf("restore the later copy: exit %d %s", r.code, r.stderr)
	}
	if st := chainStatusOf(t, homeA); st != live {
		t.Fatalf("after restoring the later copy: %+v, want %+v", st, live)
	}
}
