package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// offerSellerPolicy accepts a lamp at 20 or more and counters below: on a
// signed offer the node turns that counter into a reject.
const offerSellerPolicy = `rules:
  - name: fair price
    when: {item: {equals: lamp}, price: {min: 20}}
    action: accept
  - name: haggle
    when: {item: {equals: lamp}}
    action: counter
    counter: {price: {toward: 20, step: 5}}
default: reject
`

// chainState is what `chain status --json` and `chain show --json` say
// about the last entry and the lock of home.
func chainState(t *testing.T, home string) (length int, lastKind, lastRecord string, lock map[string]any) {
	t.Helper()
	var st struct {
		Length int            `json:"length"`
		Lock   map[string]any `json:"lock"`
	}
	decodeJSON(t, runCLI(t, nil, "--home", home, "chain", "status", "--json").stdout, &st)
	var entries []struct {
		Kind       string `json:"kind"`
		RecordHash string `json:"record_hash"`
	}
	decodeJSON(t, runCLI(t, nil, "--home", home, "chain", "show", "--json").stdout, &entries)
	last := entries[len(entries)-1]
	return st.Length, last.Kind, last.RecordHash, st.Lock
}

func TestProposeOfferCommitsAndCounterPolicyRejects(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two libp2p daemons")
	}
	_, homeA, homeB, _, idB, _, _ := sessionPair(t, offerSellerPolicy)
	r := runCLI(t, nil, "--home", homeA, "propose", "--offer", "--with", idB.String(), "--term", "item=lamp", "--term", "price=25", "--json", "--timeout", "20s")
	if r.code != 0 {
		t.Fatalf("propose --offer: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	var out proposeOut
	decodeJSON(t, r.stdout, &out)
	if out.Outcome != "committed" || out.RecordHash == "" || out.Rounds != 1 || len(out.Parties) != 2 || out.Terms["price"] != 25.0 {
		t.Fatalf("unexpected outcome: %+v", out)
	}
	for _, h := range []string{homeA, homeB} {
		eventually(t, 10*time.Second, "record on "+h, func() (bool, string) {
			n, kind, rec, lock := chainState(t, h)
			return n == 2 && kind == "agreement" && rec == out.RecordHash && lock == nil, kind + " " + rec
		})
		if v := runCLI(t, nil, "--home", h, "chain", "verify"); v.code != 0 {
			t.Fatalf("verify %s: %s %s", h, v.stdout, v.stderr)
		}
	}
	var shown map[string]any
	decodeJSON(t, runCLI(t, nil, "--home", homeB, "show", out.Session, "--json").stdout, &shown)
	if shown["offer"] != true || shown["state"] != "committed" || shown["role"] != "participant" {
		t.Fatalf("participant's show --json: %v, want a committed offer", shown)
	}

	// Below 20 the policy would counter: the offer ends rejected (exit 3),
	// the reason says why, and the initiator's chain is unlocked.
	r = runCLI(t, nil, "--home", homeA, "propose", "--offer", "--with", idB.String(), "--term", "item=lamp", "--term", "price=12", "--timeout", "20s")
	if r.code != 3 || !strings.Contains(r.stderr, "rejected") || !strings.Contains(r.stderr, "counter") {
		t.Fatalf("offer the policy would counter: exit %d, want 3 rejected naming the counter: %s", r.code, r.stderr)
	}
	for _, h := range []string{homeA, homeB} {
		if n, _, _, lock := chainState(t, h); n != 2 || lock != nil {
			t.Fatalf("%s after the rejected offer: length %d lock %v, want 2 and no lock", h, n, lock)
		}
	}
}

func TestOfferManualParticipantCannotCounter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two libp2p daemons")
	}
	_, homeA, homeB, _, idB, _, _ := sessionPair(t, "")
	r := runCLI(t, nil, "--home", homeA, "propose", "--offer", "--with", idB.String(), "--term", "price=10", "--wait=false", "--json", "--timeout", "30s")
	if r.code != 0 {
		t.Fatalf("propose --offer: %s", r.stderr)
	}
	var started map[string]string
	decodeJSON(t, r.stdout, &started)
	session := started["session"]
	eventually(t, 10*time.Second, "offer in b's inbox", func() (bool, string) {
		r := runCLI(t, nil, "--home", homeB, "inbox", "--json")
		var inbox []map[string]any
		decodeJSON(t, r.stdout, &inbox)
		return len(inbox) == 1 && inbox[0]["session"] == session && inbox[0]["kind"] == "offer", r.stdout
	})
	var shown map[string]any
	decodeJSON(t, runCLI(t, nil, "--home", homeB, "show", session, "--json").stdout, &shown)
	if shown["offer"] != true || shown["decision_pending"] != true {
		t.Fatalf("participant's show --json: %v, want a pending offer", shown)
	}
	// The initiator signed first: its chain is locked by the offer.
	if _, _, _, lock := chainState(t, homeA); lock == nil || lock["session"] != session {
		t.Fatalf("initiator lock %v, want held by %s", lock, session)
	}

	// A counter is refused with a clear error and changes nothing.
	r = runCLI(t, nil, "--home", homeB, "counter", session, "--term", "price=8")
	if r.code != 1 || !strings.Contains(r.stderr, "accept or reject") {
		t.Fatalf("counter on an offer: exit %d, want 1 saying to accept or reject: %s", r.code, r.stderr)
	}
	decodeJSON(t, runCLI(t, nil, "--home", homeB, "show", session, "--json").stdout, &shown)
	if shown["decision_pending"] != true || shown["state"] != nil {
		t.Fatalf("after the refused counter: %v, want the offer still pending", shown)
	}

	// While its offer is open the initiator cannot make another one.
	r = runCLI(t, nil, "--home", homeA, "propose", "--offer", "--with", idB.String(), "--term", "price=11", "--timeout", "10s")
	if r.code == 0 || r.code == 2 || !strings.Contains(r.stderr, "busy") || !strings.Contains(r.stderr, session) {
		t.Fatalf("second offer while locked: exit %d, want a busy error naming %s: %s", r.code, session, r.stderr)
	}

	if r := runCLI(t, nil, "--home", homeB, "accept", session); r.code != 0 {
		t.Fatalf("accept: %s", r.stderr)
	}
	eventually(t, 10*time.Second, "committed on both", func() (bool, string) {
		var a, b map[string]any
		ra := runCLI(t, nil, "--home", homeA, "show", session, "--json")
		json.Unmarshal([]byte(ra.stdout), &a)
		json.Unmarshal([]byte(runCLI(t, nil, "--home", homeB, "show", session, "--json").stdout), &b)
		return a["state"] == "committed" && b["state"] == "committed" && a["record_hash"] == b["record_hash"] && a["round"] == 1.0, ra.stdout
	})
	for _, h := range []string{homeA, homeB} {
		if n, kind, _, lock := chainState(t, h); n != 2 || kind != "agreement" || lock != nil {
			t.Fatalf("%s: length %d, last %s, lock %v; want the record and no lock", h, n, kind, lock)
		}
	}
}

func TestProposeOfferUsage(t *testing.T) {
	dir := shortTemp(t)
	home, id := initHome(t, filepath.Join(dir, "a"))
	propose := func(extra ...string) []string {
		return append([]string{"--home", home, "propose", "--offer", "--with", id.String(), "--term", "price=1"}, extra...)
	}
	runCLICases(t, []cliCase{
		{name: "offer with a witness", args: propose("--witness", id.String()), code: 2, stderr: "--witness"},
		{name: "offer with more rounds", args: propose("--max-rounds", "3"), code: 2, stderr: "--max-rounds"},
		{name: "offer names itself", args: propose("--max-rounds", "2"), code: 2, stderr: "--offer"},
		// One round is what an offer is: the flags pass, and the command
		// gets as far as needing a node.
		{name: "offer with one round", args: propose("--max-rounds", "1"), code: 1, stderr: "no node running"},
		{name: "help", args: []string{"propose", "--help"}, stdout: "--offer"},
	})
}
