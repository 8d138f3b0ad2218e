package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type recoverOut struct {
	From     string   `json:"from"`
	Appended []uint64 `json:"appended"`
	Head     struct {
		Seq uint64 `json:"seq"`
	} `json:"head"`
	Behind string `json:"behind"`
}

// TestRollbackRefusedThenRecovered: a commits sessions with b, backs its
// chain up early, commits more, stops, puts the old copy back with
// --force and restarts. Proposing again is refused with an error naming
// the missing seqs and b as their holder, and so is b's proposal to a;
// `chain recover --from b` puts the records back (the chain is exactly the
// one before the restore and verifies), and new sessions commit both ways.
func TestRollbackRefusedThenRecovered(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two libp2p daemons")
	}
	dir, homeA, homeB, idA, idB, a, b := sessionPair(t, "rules:\n  - action: accept\ndefault: reject\n")
	pf := filepath.Join(dir, "policy.yaml") // written by sessionPair
	propose := func(from, to string) result {
		return runCLI(t, nil, "--home", from, "propose", "--with", to, "--term", "x=1", "--timeout", "10s", "--json")
	}
	for i := 0; i < 2; i++ {
		if r := propose(homeA, idB.String()); r.code != 0 {
			t.Fatalf("propose: %s %s", r.stdout, r.stderr)
		}
	}
	early := filepath.Join(dir, "early.db")
	if r := runCLI(t, nil, "--home", homeA, "chain", "backup", early); r.code != 0 {
		t.Fatalf("backup: %s", r.stderr)
	}
	for i := 0; i < 3; i++ {
		if r := propose(homeA, idB.String()); r.code != 0 {
			t.Fatalf("propose: %s %s", r.stdout, r.stderr)
		}
	}
	eventually(t, 10*time.Second, "a and b both at the last record", func() (bool, string) {
		sa, sb := chainStatusOf(t, homeA), chainStatusOf(t, homeB)
		return sa.Length == 6 && sb.Length == 6, ""
	})
	before := chainStatusOf(t, homeA)
	a.stop(t)
	if r := runCLI(t, nil, "--home", homeA, "chain", "restore", early, "--force"); r.code != 0 {
		t.Fatalf("restore: %s", r.stderr)
	}
	restored := chainStatusOf(t, homeA)
	if restored.Length != 3 {
		t.Fatalf("restored length %d, want 3", restored.Length)
	}
	startDaemon(t, homeA, "--policy", pf, "--bootstrap", b.info.Addrs[0])
	eventually(t, 20*time.Second, "a resolves b after its restart", func() (bool, string) {
		r := runCLI(t, nil, "--home", homeA, "ping", idB.String(), "--timeout", "3s")
		return r.code == 0, r.stderr
	})

	// a proposes: b's answer tells a it is behind, and a will not sign.
	r := propose(homeA, idB.String())
	t.Logf("a proposes on the old copy: exit %d %s%s", r.code, r.stdout, r.stderr)
	if r.code == 0 {
		t.Fatal("a committed on a chain restored from an older copy")
	}
	for _, want := range []string{"chain is behind", "seqs 3 to 5", idB.String(), "negotiate chain recover --from " + idB.String()} {
		if !strings.Contains(r.stdout+r.stderr, want) {
			t.Errorf("refusal does not say %q", want)
		}
	}
	if st := runCLI(t, nil, "--home", homeA, "chain", "status"); !strings.Contains(st.stdout, "behind  ") {
		t.Errorf("chain status does not show the chain is behind: %s", st.stdout)
	}
	// Now a refuses at once, and b's proposal to a is refused.
	if r := propose(homeA, idB.String()); r.code == 0 || !strings.Contains(r.stderr, "chain is behind") {
		t.Fatalf("second proposal by a: exit %d %s", r.code, r.stderr)
	}
	r = propose(homeB, idA.String())
	t.Logf("b proposes to a: exit %d %s%s", r.code, r.stdout, r.stderr)
	if r.code == 0 || !strings.Contains(r.stdout+r.stderr, "behind") {
		t.Fatalf("b's proposal to a behind: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	if st := chainStatusOf(t, homeA); st.Length != 3 {
		t.Fatalf("a's chain grew while behind: %+v", st)
	}

	// Bad input to recover changes nothing.
	for _, args := range [][]string{{"chain", "recover"}, {"chain", "recover", "--from", "nobody"}} {
		if r := runCLI(t, nil, append([]string{"--home", homeA}, args...)...); r.code != 2 {
			t.Errorf("%v: exit %d %s", args, r.code, r.stderr)
		}
	}
	r = runCLI(t, nil, "--home", homeA, "chain", "recover", "--from", idB.String(), "--json")
	if r.code != 0 {
		t.Fatalf("recover: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	var rec recoverOut
	decodeJSON(t, r.stdout, &rec)
	if len(rec.Appended) != 3 || rec.Appended[0] != 3 || rec.Head.Seq != 5 || rec.Behind != "" {
		t.Fatalf("recover output %+v", rec)
	}
	if st := chainStatusOf(t, homeA); st != before {
		t.Fatalf("recovered chain %+v, the chain before the restore was %+v", st, before)
	}
	if v := runCLI(t, nil, "--home", homeA, "chain", "verify"); v.code != 0 {
		t.Fatalf("recovered chain does not verify: %s %s", v.stdout, v.stderr)
	}
	// b learns a caught up from a's next message; both ways commit.
	eventually(t, 20*time.Second, "a commits after recovering", func() (bool, string) {
		r := propose(homeA, idB.String())
		return r.code == 0, r.stdout + r.stderr
	})
	if r := propose(homeB, idA.String()); r.code != 0 {
		t.Fatalf("b proposes after a recovered: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	for _, h := range []string{homeA, homeB} {
		if v := runCLI(t, nil, "--home", h, "chain", "verify"); v.code != 0 {
			t.Fatalf("verify %s: %s %s", h, v.stdout, v.stderr)
		}
	}
}
