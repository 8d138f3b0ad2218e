package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/internal/smallfs"
)

// TestNodeFullDiskCLI runs two `negotiate node` daemons; a's home sits on
// a small tmpfs the test fills. Sessions run until a's chain refuses a
// write; then the daemon's log, `chain status` and `sessions` say so, with
// "no space left on device" and where to free space; nothing on either
// chain is damaged. After space is freed the daemon carries on without a
// restart (sessions commit both ways, no lock is left), stops cleanly, and
// after a restart its chain verifies and it commits again.
func TestNodeFullDiskCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two libp2p daemons")
	}
	dir := smallfs.Mount(t, 4<<20)
	homeA, idA := initHome(t, filepath.Join(dir, "a"))
	homeB, idB := initHome(t, filepath.Join(shortTemp(t), "b"))
	pf := filepath.Join(shortTemp(t), "accept.yaml")
	writeFile(t, pf, "rules:\n  - action: accept\ndefault: reject\n")
	a := startDaemon(t, homeA, "--policy", pf)
	b := startDaemon(t, homeB, "--policy", pf, "--bootstrap", a.info.Addrs[0])
	eventually(t, 20*time.Second, "a resolves b", func() (bool, string) {
		r := runCLI(t, nil, "--home", homeA, "ping", idB.String(), "--timeout", "3s")
		return r.code == 0, r.stderr
	})
	propose := func(from, to string, i int) result {
		return runCLI(t, nil, "--home", from, "propose", "--with", to, "--term", "n="+itoa(uint64(i)), "--term", "pad="+strings.Repeat("p", 900), "--timeout", "5s", "--json")
	}
	if r := propose(homeA, idB.String(), 0); r.code != 0 {
		t.Fatalf("propose before the disk is full: exit %d %s %s", r.code, r.stdout, r.stderr)
	}

	var frees []func()
	var status, sessions result
	for i := 1; ; i++ {
		if i > 300 {
			t.Fatal("300 sessions fit on a full 4 MiB file system")
		}
		frees = append(frees, smallfs.Fill(t, dir))
		from, to := homeA, idB.String()
		if i%2 == 0 {
			from, to = homeB, idA.String()
		}
		r := propose(from, to, i)
		status = runCLI(t, nil, "--home", homeA, "chain", "status")
		if strings.Contains(status.stdout, "\nwrite   ") {
			sessions = runCLI(t, nil, "--home", homeA, "sessions", "--all")
			t.Logf("session %d: propose exit %d %s%s", i, r.code, r.stdout, r.stderr)
			break
		}
	}
	t.Logf("chain status:\n%s", status.stdout)
	for _, want := range []string{"no space left on device", "free space in " + homeA, "no restart needed"} {
		if !strings.Contains(status.stdout, want) {
			t.Errorf("chain status does not say %q", want)
		}
	}
	if !strings.Contains(sessions.stderr, "warning:") || !strings.Contains(sessions.stderr, "no space left on device") {
		t.Errorf("sessions does not warn of the refused write: %s", sessions.stderr)
	}
	if logs := a.logs(); !strings.Contains(logs, "durable write refused") || !strings.Contains(logs, "no space left on device") {
		t.Errorf("daemon log does not say why: %s", logs)
	}
	for _, h := range []string{homeA, homeB} {
		if v := runCLI(t, nil, "--home", h, "chain", "verify"); v.code != 0 {
			t.Fatalf("verify %s with the disk full: %s %s", h, v.stdout, v.stderr)
		}
	}

	for _, f := range frees {
		f()
	}
	for _, h := range []string{homeA, homeB} {
		eventually(t, 60*time.Second, "no lock on "+h, func() (bool, string) {
			r := runCLI(t, nil, "--home", h, "chain", "status", "--json")
			return strings.Contains(r.stdout, `"lock":null`), r.stdout
		})
	}
	if r := propose(homeA, idB.String(), 1000); r.code != 0 {
		t.Fatalf("a proposes after space was freed: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	if r := propose(homeB, idA.String(), 1001); r.code != 0 {
		t.Fatalf("b proposes after space was freed: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	if st := runCLI(t, nil, "--home", homeA, "chain", "status", "--json"); strings.Contains(st.stdout, "write_error") {
		t.Errorf("write_error still reported after writes succeeded: %s", st.stdout)
	}
	a.stop(t)
	for _, h := range []string{homeA, homeB} {
		if v := runCLI(t, nil, "--home", h, "chain", "verify"); v.code != 0 {
			t.Fatalf("verify %s: %s %s", h, v.stdout, v.stderr)
		}
	}
	startDaemon(t, homeA, "--policy", pf, "--bootstrap", b.info.Addrs[0])
	eventually(t, 20*time.Second, "b commits with a after its restart", func() (bool, string) {
		r := propose(homeB, idA.String(), 2000)
		return r.code == 0, r.stdout + r.stderr
	})
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
