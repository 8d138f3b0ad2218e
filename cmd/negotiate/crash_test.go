package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/internal/hooks"

	"github.com/negotiate-dev/negotiate/sign"
)

// crashCase kills one party with SIGKILL at a named protocol point (the
// node's NEGOTIATE_CRASH_AT hook), restarts it, and checks that the session
// resolves by itself: the record on all chains or none, the same bytes, no
// lock left, every chain sound.
type crashCase struct {
	parties int
	victim  int // 0 = initiator
	point   string
}

func crashCases() []crashCase {
	var cs []crashCase
	for _, point := range hooks.CrashPoints {
		for _, victim := range []int{0, 1} {
			cs = append(cs, crashCase{parties: 2, victim: victim, point: point})
		}
	}
	cs = append(cs,
		crashCase{parties: 3, victim: 0, point: hooks.CrashAfterVote},
		crashCase{parties: 3, victim: 2, point: hooks.CrashAfterVote},
		crashCase{parties: 3, victim: 1, point: hooks.CrashAfterReadySent},
		crashCase{parties: 3, victim: 0, point: hooks.CrashAfterCert},
		crashCase{parties: 3, victim: 2, point: hooks.CrashNegotiating},
	)
	return cs
}

const crashPolicy = "default: accept\n"

func TestKillNineAtEachPoint(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills real node processes")
	}
	for _, tc := range crashCases() {
		role := "participant"
		if tc.victim == 0 {
			role = "initiator"
		}
		t.Run(fmt.Sprintf("%d-party/%s/%s", tc.parties, role, tc.point), func(t *testing.T) {
			t.Parallel()
			runCrashCase(t, tc)
		})
	}
}

func runCrashCase(t *testing.T, tc crashCase) {
	dir := shortTemp(t)
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte(crashPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	homes := make([]string, tc.parties)
	ids := make([]sign.AgentID, tc.parties)
	for i := range homes {
		homes[i], ids[i] = initHome(t, filepath.Join(dir, fmt.Sprint(i)))
	}
	procs := make([]*daemonProc, tc.parties)
	start := func(i int, crash bool) {
		var env []string
		if crash {
			env = []string{"NEGOTIATE_CRASH_AT=" + tc.point}
		}
		extra := []string{"--policy", policy}
		boot := 0
		if i == 0 {
			boot = 1
		}
		if procs[boot] != nil {
			extra = append(extra, "--bootstrap", procs[boot].info.Addrs[0])
		}
		if old := procs[i]; old != nil {
			// A restarted node comes back where it was, as a service would:
			// same listen address (and the same peer ID from its home).
			addr, _, _ := strings.Cut(old.info.Addrs[0], "/p2p/")
			extra = append(extra, "--listen", addr)
		}
		procs[i] = startDaemonEnv(t, homes[i], env, extra...)
	}
	for i := range homes {
		start(i, i == tc.victim)
	}
	// Everyone can find everyone before the session starts.
	for i := range homes {
		for j := range homes {
			if i != j {
				eventually(t, 20*time.Second, "resolve", func() (bool, string) {
					r := runCLI(t, nil, "--home", homes[i], "ping", ids[j].String(), "--timeout", "3s")
					return r.code == 0, r.stderr
				})
			}
		}
	}
	args := []string{"--home", homes[0], "propose", "--json", "--wait=false", "--timeout", "6s", "--term", "item=crash-test"}
	for _, id := range ids[1:] {
		args = append(args, "--with", id.String())
	}
	r := runCLI(t, nil, args...)
	session := ""
	if r.code == 0 {
		var out map[string]string
		decodeJSON(t, r.stdout, &out)
		session = out["session"]
	} else if tc.victim != 0 {
		t.Fatalf("propose: exit %d: %s", r.code, r.stderr)
	}
	// The victim dies at its crash point.
	select {
	case <-procs[tc.victim].done:
	case <-time.After(30 * time.Second):
		t.Fatalf("victim did not crash at %s: %s", tc.point, procs[tc.victim].logs())
	}
	if tc.victim != 0 && tc.point == hooks.CrashAfterVote {
		// The initiator has signed and lost its peer: it stays locked and
		// says whom it waits for, until the peer returns.
		time.Sleep(500 * time.Millisecond)
		r := runCLI(t, nil, "--home", homes[0], "show", session, "--json")
		var s struct {
			Phase     string         `json:"phase"`
			WaitingOn []sign.AgentID `json:"waiting_on"`
		}
		decodeJSON(t, r.stdout, &s)
		if s.Phase != "signing" || !containsID(s.WaitingOn, ids[tc.victim]) {
			t.Fatalf("initiator while the victim is down: %s", r.stdout)
		}
		if st := runCLI(t, nil, "--home", homes[0], "chain", "status", "--json"); !strings.Contains(st.stdout, session) {
			t.Fatalf("initiator's chain lock should name the session: %s", st.stdout)
		}
	}
	start(tc.victim, false)
	if session == "" {
		if session = findSession(t, homes); session == "" {
			// The initiator died before its proposal left: nobody knows the
			// session, and nothing may be on any chain.
			checkAtomic(t, homes, make([]string, tc.parties))
			return
		}
	}
	// Every party resolves by itself.
	states := make([]string, tc.parties)
	for i, h := range homes {
		eventually(t, 45*time.Second, "session resolves at party "+fmt.Sprint(i), func() (bool, string) {
			r := runCLI(t, nil, "--home", h, "show", session, "--json")
			var s struct {
				State string `json:"state"`
			}
			if r.code != 0 {
				if tc.victim == i || strings.Contains(r.stderr, "unknown session") {
					// A party that crashed before it knew the session, or
					// never got it, has nothing to resolve.
					states[i] = "none"
					return strings.Contains(r.stderr, "unknown session"), r.stderr
				}
				return false, r.stderr
			}
			decodeJSON(t, r.stdout, &s)
			states[i] = s.State
			return s.State != "", r.stdout
		})
	}
	checkAtomic(t, homes, states)
}

// findSession asks every node for the one session it knows.
func findSession(t *testing.T, homes []string) string {
	t.Helper()
	var id string
	deadline := time.Now().Add(10 * time.Second)
	for id == "" && time.Now().Before(deadline) {
		for _, h := range homes {
			r := runCLI(t, nil, "--home", h, "sessions", "--all", "--json")
			var list []struct {
				Session string `json:"session"`
			}
			if r.code == 0 {
				decodeJSON(t, r.stdout, &list)
				if len(list) > 0 {
					id = list[0].Session
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return id
}

// checkAtomic: record on all chains or none, identical hash, no lock, verify.
func checkAtomic(t *testing.T, homes []string, states []string) {
	t.Helper()
	hashes := map[string]int{}
	with := 0
	for i, h := range homes {
		r := runCLI(t, nil, "--home", h, "chain", "show", "--json")
		if r.code != 0 {
			t.Fatalf("party %d: chain show: %s", i, r.stderr)
		}
		var entries []struct {
			Kind       string `json:"kind"`
			RecordHash string `json:"record_hash"`
		}
		decodeJSON(t, r.stdout, &entries)
		n := 0
		for _, e := range entries {
			if e.Kind == "agreement" {
				n++
				hashes[e.RecordHash]++
			}
		}
		if n > 1 {
			t.Fatalf("party %d: %d agreement records, want at most 1", i, n)
		}
		with += n
		st := runCLI(t, nil, "--home", h, "chain", "status", "--json")
		var status struct {
			Lock any `json:"lock"`
		}
		decodeJSON(t, st.stdout, &status)
		if status.Lock != nil {
			t.Fatalf("party %d: lock left: %s", i, st.stdout)
		}
		if v := runCLI(t, nil, "--home", h, "chain", "verify"); v.code != 0 {
			t.Fatalf("party %d: chain verify: %s %s", i, v.stdout, v.stderr)
		}
	}
	t.Logf("record on %d of %d chains; states %v", with, len(homes), states)
	if with != 0 && with != len(homes) {
		t.Fatalf("atomicity: the record is on %d of %d chains (states %v)", with, len(homes), states)
	}
	if with == len(homes) && len(hashes) != 1 {
		t.Fatalf("agreement: record hashes differ: %v", hashes)
	}
	for i, s := range states {
		want := "aborted"
		if with > 0 {
			want = "committed"
		}
		if s != want && !((s == "none" || s == "") && with == 0) {
			t.Fatalf("party %d ended %s, chains say %s (states %v)", i, s, want, states)
		}
	}
}

func containsID(ids []sign.AgentID, id sign.AgentID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
