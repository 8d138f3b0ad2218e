package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/sign"
)

// sessionPair starts two daemons; b decides by policy (or manually when
// policy is "").
func sessionPair(t *testing.T, policy string) (dir, homeA, homeB string, idA, idB sign.AgentID, a, b *daemonProc) {
	t.Helper()
	dir = shortTemp(t)
	homeA, idA = initHome(t, filepath.Join(dir, "a"))
	homeB, idB = initHome(t, filepath.Join(dir, "b"))
	a = startDaemon(t, homeA)
	var extra []string
	if policy != "" {
		pf := filepath.Join(dir, "policy.yaml")
		if err := os.WriteFile(pf, []byte(policy), 0o600); err != nil {
			t.Fatal(err)
		}
		extra = append(extra, "--policy", pf)
	}
	b = startDaemon(t, homeB, append(extra, "--bootstrap", a.info.Addrs[0])...)
	eventually(t, 20*time.Second, "a resolves b", func() (bool, string) {
		r := runCLI(t, nil, "--home", homeA, "ping", idB.String(), "--timeout", "3s")
		return r.code == 0, r.stderr
	})
	return
}

type proposeOut struct {
	Outcome    string         `json:"outcome"`
	Session    string         `json:"session"`
	RecordHash string         `json:"record_hash"`
	Parties    []string       `json:"parties"`
	Terms      map[string]any `json:"terms"`
	Rounds     int            `json:"rounds"`
}

func TestProposeCommitsAndReceiptVerifies(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two libp2p daemons")
	}
	dir, homeA, homeB, idA, idB, _, _ := sessionPair(t, "rules:\n  - when: {price: {max: 100}}\n    action: accept\ndefault: reject\n")
	r := runCLI(t, nil, "--home", homeA, "propose", "--with", idB.String(), "--term", "item=book", "--term", "price=12", "--json", "--timeout", "20s")
	if r.code != 0 {
		t.Fatalf("propose: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	var out proposeOut
	decodeJSON(t, r.stdout, &out)
	if out.Outcome != "committed" || out.RecordHash == "" || len(out.Parties) != 2 || out.Rounds != 1 || out.Terms["item"] != "book" {
		t.Fatalf("unexpected outcome: %+v", out)
	}
	// The same record hash sits on both chains; no lock is left.
	for _, h := range []string{homeA, homeB} {
		var entries []struct {
			Kind       string `json:"kind"`
			RecordHash string `json:"record_hash"`
		}
		eventually(t, 10*time.Second, "record on "+h, func() (bool, string) {
			r := runCLI(t, nil, "--home", h, "chain", "show", "--json")
			decodeJSON(t, r.stdout, &entries)
			last := entries[len(entries)-1]
			return last.Kind == "agreement" && last.RecordHash == out.RecordHash, r.stdout
		})
		st := runCLI(t, nil, "--home", h, "chain", "status", "--json")
		if !strings.Contains(st.stdout, `"lock":null`) {
			t.Fatalf("lock left on %s: %s", h, st.stdout)
		}
		if v := runCLI(t, nil, "--home", h, "chain", "verify"); v.code != 0 {
			t.Fatalf("verify %s: %s %s", h, v.stdout, v.stderr)
		}
	}
	// The receipt verifies offline, with no node and no network.
	file := filepath.Join(dir, "receipt.cbor")
	if r := runCLI(t, nil, "--home", homeB, "receipt", out.Session, "-o", file); r.code != 0 {
		t.Fatalf("receipt: %s", r.stderr)
	}
	v := runCLI(t, nil, "verify", "--json", file)
	if v.code != 0 || !strings.Contains(v.stdout, `"ok":true`) || !strings.Contains(v.stdout, idA.String()) {
		t.Fatalf("verify receipt: exit %d %s %s", v.code, v.stdout, v.stderr)
	}
	data, _ := os.ReadFile(file)
	data[len(data)/2] ^= 0x01
	bad := filepath.Join(dir, "bad.cbor")
	os.WriteFile(bad, data, 0o644)
	if v := runCLI(t, nil, "verify", bad); v.code != 1 {
		t.Fatalf("tampered receipt: exit %d, want 1: %s", v.code, v.stderr)
	}
	// The policy rejects a price over 100: exit 3.
	r = runCLI(t, nil, "--home", homeA, "propose", "--with", idB.String(), "--term", "price=500", "--timeout", "20s")
	if r.code != 3 || !strings.Contains(r.stderr, "rejected") {
		t.Fatalf("rejected propose: exit %d: %s", r.code, r.stderr)
	}
}

func TestManualDecisionsThroughInbox(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two libp2p daemons")
	}
	_, homeA, homeB, _, idB, _, _ := sessionPair(t, "")
	r := runCLI(t, nil, "--home", homeA, "propose", "--with", idB.String(), "--term", "price=10", "--wait=false", "--json", "--timeout", "30s")
	if r.code != 0 {
		t.Fatalf("propose: %s", r.stderr)
	}
	var started map[string]string
	decodeJSON(t, r.stdout, &started)
	session := started["session"]
	// b sees the proposal in its inbox and counters; a accepts the counter
	// (a new round); b accepts that round.
	var inbox []map[string]any
	eventually(t, 10*time.Second, "proposal in b's inbox", func() (bool, string) {
		r := runCLI(t, nil, "--home", homeB, "inbox", "--json")
		decodeJSON(t, r.stdout, &inbox)
		return len(inbox) == 1 && inbox[0]["session"] == session && inbox[0]["kind"] == "proposal", r.stdout
	})
	if r := runCLI(t, nil, "--home", homeB, "counter", session, "--term", "price=15"); r.code != 0 {
		t.Fatalf("counter: %s", r.stderr)
	}
	eventually(t, 10*time.Second, "counter in a's inbox", func() (bool, string) {
		r := runCLI(t, nil, "--home", homeA, "inbox", "--json")
		decodeJSON(t, r.stdout, &inbox)
		return len(inbox) == 1 && inbox[0]["kind"] == "counter", r.stdout
	})
	if r := runCLI(t, nil, "--home", homeA, "accept", session); r.code != 0 {
		t.Fatalf("accept counter: %s", r.stderr)
	}
	eventually(t, 10*time.Second, "round 2 in b's inbox", func() (bool, string) {
		r := runCLI(t, nil, "--home", homeB, "inbox", "--json")
		decodeJSON(t, r.stdout, &inbox)
		return len(inbox) == 1 && inbox[0]["round"] == float64(2), r.stdout
	})
	if r := runCLI(t, nil, "--home", homeB, "accept", session); r.code != 0 {
		t.Fatalf("accept: %s", r.stderr)
	}
	eventually(t, 10*time.Second, "committed", func() (bool, string) {
		r := runCLI(t, nil, "--home", homeA, "show", session, "--json")
		return strings.Contains(r.stdout, `"state":"committed"`), r.stdout
	})
	r = runCLI(t, nil, "--home", homeA, "sessions", "--all", "--json")
	if !strings.Contains(r.stdout, session) {
		t.Fatalf("sessions --all does not list %s: %s", session, r.stdout)
	}
	// Deciding again is refused with a clear error (exit 1).
	if r := runCLI(t, nil, "--home", homeB, "accept", session); r.code != 1 || !strings.Contains(r.stderr, "ended") {
		t.Fatalf("second accept: exit %d: %s", r.code, r.stderr)
	}
}

func TestProposeToOfflineAgentFailsInsideTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two libp2p daemons")
	}
	_, homeA, _, _, idB, _, b := sessionPair(t, "default: accept\n")
	b.stop(t)
	start := time.Now()
	r := runCLI(t, nil, "--home", homeA, "propose", "--with", idB.String(), "--term", "x=1", "--timeout", "8s")
	if r.code != 4 {
		t.Fatalf("exit %d, want 4: %s", r.code, r.stderr)
	}
	if el := time.Since(start); el > 8*time.Second+3*time.Second {
		t.Fatalf("took %v for an 8s timeout", el)
	}
	if !strings.Contains(r.stderr, idB.String()) && !strings.Contains(r.stderr, idB.Short()) {
		t.Fatalf("error does not name the agent: %s", r.stderr)
	}
}
