package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// cliWarrant is a warrant against a derived "mallory" key: two statements
// of one session over different agreements.
func cliWarrant(t *testing.T) (sign.AgentID, []byte) {
	t.Helper()
	s, _ := sign.SchemeByName(sign.DefaultScheme)
	key, err := s.DeriveKey([]byte("cli-warrant/mallory"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.DeriveKey([]byte("cli-warrant/other"))
	if err != nil {
		t.Fatal(err)
	}
	sid := protocol.NewSessionID()
	item := func(ah string) protocol.WarrantItem {
		st := protocol.Statement{Session: sid, AgreementHash: chain.Hash(sign.Hash([]byte(ah))), Parties: []sign.AgentID{key.AgentID(), other.AgentID()}, Signer: key.AgentID()}
		sig, err := protocol.SignStatement(key, &st)
		if err != nil {
			t.Fatal(err)
		}
		return protocol.StatementItem(st, sig)
	}
	raw, _, err := protocol.NewWarrant(key.Public(), item("x"), item("y"))
	if err != nil {
		t.Fatal(err)
	}
	return key.AgentID(), raw
}

// TestWarrantsAndVerify: a node lists the warrant in its home's warrant
// directory and publishes it; another node finds it in the DHT (and starts
// with --allow-warranted); `verify` checks the written file offline, tells
// it from a receipt, and refuses a tampered one.
func TestWarrantsAndVerify(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two libp2p daemons")
	}
	dir := shortTemp(t)
	homeA, _ := initHome(t, filepath.Join(dir, "a"))
	homeB, _ := initHome(t, filepath.Join(dir, "b"))
	mallory, raw := cliWarrant(t)
	if err := os.MkdirAll(filepath.Join(homeA, warrantsDirName), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(homeA, warrantsDirName, "m.warrant"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	a := startDaemon(t, homeA)
	startDaemon(t, homeB, "--allow-warranted", "--bootstrap", a.info.Addrs[0])

	r := runCLI(t, nil, "--home", homeA, "warrants", "--json")
	if r.code != 0 {
		t.Fatalf("warrants on a: exit %d: %s", r.code, r.stderr)
	}
	var rep warrantsReply
	decodeJSON(t, r.stdout, &rep)
	if r.code != 0 || len(rep.Warrants) != 1 || rep.Warrants[0].Agent != mallory || rep.Warrants[0].Source != "local" {
		t.Fatalf("warrants on a: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	file := filepath.Join(dir, "w.cbor")
	eventually(t, 20*time.Second, "b finds the warrant in the DHT", func() (bool, string) {
		r := runCLI(t, nil, "--home", homeB, "warrants", mallory.String(), "--json", "--out", file)
		if r.code != 0 {
			return false, r.stderr
		}
		var rep warrantsReply
		decodeJSON(t, r.stdout, &rep)
		return r.code == 0 && len(rep.Warrants) == 1 && rep.Warrants[0].Source == "dht", r.stdout + r.stderr
	})
	v := runCLI(t, nil, "verify", "--json", file)
	if v.code != 0 || !strings.Contains(v.stdout, `"kind":"warrant"`) || !strings.Contains(v.stdout, mallory.String()) || !strings.Contains(v.stdout, "two different statements") {
		t.Fatalf("verify warrant: exit %d %s %s", v.code, v.stdout, v.stderr)
	}
	if v := runCLI(t, nil, "verify", file); v.code != 0 || !strings.Contains(v.stdout, "warrant is valid") {
		t.Fatalf("verify warrant (text): exit %d %s %s", v.code, v.stdout, v.stderr)
	}
	data, _ := os.ReadFile(file)
	data[len(data)-3] ^= 0x01 // inside the last signature
	bad := filepath.Join(dir, "bad.cbor")
	os.WriteFile(bad, data, 0o600)
	if v := runCLI(t, nil, "verify", "--json", bad); v.code != 1 || !strings.Contains(v.stdout, `"kind":"warrant"`) || !strings.Contains(v.stdout, `"ok":false`) {
		t.Fatalf("tampered warrant: exit %d %s %s", v.code, v.stdout, v.stderr)
	}
	if r := runCLI(t, nil, "--home", homeA, "warrants", "not-an-agent"); r.code != 2 {
		t.Fatalf("bad agent: exit %d, want 2: %s", r.code, r.stderr)
	}
}
