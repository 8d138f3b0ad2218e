package negotiate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/internal/hooks"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// testWarrant is a warrant against key: two statements of one session
// over different agreements, both really signed by key.
func testWarrant(t *testing.T, key *sign.PrivateKey) []byte {
	t.Helper()
	sid := protocol.NewSessionID()
	item := func(ah string) protocol.WarrantItem {
		st := protocol.Statement{Session: sid, AgreementHash: chain.Hash(sign.Hash([]byte(ah))),
			Parties: []sign.AgentID{key.AgentID(), hostTestKey(t, "warrant/other").AgentID()}, Signer: key.AgentID()}
		sig, err := protocol.SignStatement(key, &st)
		if err != nil {
			t.Fatal(err)
		}
		return protocol.StatementItem(st, sig)
	}
	raw, _, err := protocol.NewWarrant(key.Public(), item("one"), item("two"))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// warrantAgent starts a node on a fresh chain in dir with a warrant
// directory, allow setting NodeConfig.AllowWarranted.
func warrantAgent(t *testing.T, dir, name string, policy Policy, boot *nodeTestAgent, allow bool) *nodeTestAgent {
	t.Helper()
	key := hostTestKey(t, "warrant-node/"+name)
	path := filepath.Join(dir, name+".db")
	ch, err := chain.Create(path, key, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	a := &nodeTestAgent{name: name, key: key, ch: ch, path: path}
	a.configure = func(cfg *NodeConfig, _ *hooks.Hooks) {
		cfg.WarrantDir = filepath.Join(dir, name+".warrants")
		cfg.AllowWarranted = allow
	}
	a.startNode(t, policy, boot)
	return a
}

// TestNodeWarrants: a node that holds a warrant against mallory (a file in
// its warrant directory, loaded at start) lists it, publishes it to the
// DHT, refuses mallory's proposal with a reject naming the warrant and
// refuses to propose to her; a node with no warrant of its own finds it in
// the DHT and refuses too; with AllowWarranted a node deals with her; and
// nothing was locked or appended by the refused sessions.
func TestNodeWarrants(t *testing.T) {
	dir := t.TempDir()
	bob := warrantAgent(t, dir, "bob", AcceptAll, nil, false)
	malloryKey := hostTestKey(t, "warrant-node/mallory")
	raw := testWarrant(t, malloryKey)
	w, err := ParseWarrant(raw)
	if err != nil {
		t.Fatal(err)
	}
	// bob restarts with the warrant in his directory.
	bob.node.Close()
	bob.ch.Close()
	if err := os.WriteFile(filepath.Join(dir, "bob.warrants", string(w.Agent)+"-"+w.Hash[:16]+warrantFileExt), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	ch, err := chain.Open(bob.path, chain.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bob.ch = ch
	bob.startNode(t, AcceptAll, nil)

	mallory := warrantAgent(t, dir, "mallory", AcceptAll, bob, false)
	carol := warrantAgent(t, dir, "carol", AcceptAll, bob, false)
	dave := warrantAgent(t, dir, "dave", AcceptAll, bob, true)
	all := []*nodeTestAgent{bob, mallory, carol, dave}
	for _, a := range all {
		for _, b := range all {
			if a != b {
				hostTestResolve(t, a.node.Host(), b.key.AgentID())
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	got, err := bob.node.Warrants(ctx, mallory.key.AgentID(), false)
	if err != nil || len(got) != 1 || got[0].Hash != w.Hash || got[0].Source != "local" || !strings.Contains(got[0].Proves, "two different statements") {
		t.Fatalf("bob's warrants: %+v, %v", got, err)
	}

	// mallory proposes to bob: bob rejects at once, naming the warrant.
	p, err := mallory.node.Propose(ctx, []sign.AgentID{bob.key.AgentID()}, map[string]any{"x": 1}, ProposeOptions{Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	o, err := p.Wait(ctx)
	if err != nil || o.State != StateRejected || !strings.Contains(o.Reason, "warrant") {
		t.Fatalf("mallory's proposal to bob: %+v, %v; want rejected for the warrant", o, err)
	}
	if _, err := bob.node.Session(p.ID()); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("bob kept the refused session: %v", err)
	}

	// bob will not propose to mallory.
	if _, err := bob.node.Propose(ctx, []sign.AgentID{mallory.key.AgentID()}, map[string]any{"x": 1}, ProposeOptions{}); !errors.Is(err, ErrWarranted) {
		t.Fatalf("bob's proposal to mallory: %v, want ErrWarranted", err)
	}

	// carol holds no warrant but finds bob's in the DHT.
	waitFor(t, func() bool {
		ws, err := carol.node.Warrants(ctx, mallory.key.AgentID(), true)
		return err == nil && len(ws) == 1 && ws[0].Hash == w.Hash
	})
	if _, err := carol.node.Propose(ctx, []sign.AgentID{mallory.key.AgentID()}, map[string]any{"x": 1}, ProposeOptions{}); !errors.Is(err, ErrWarranted) {
		t.Fatalf("carol's proposal to mallory: %v, want ErrWarranted", err)
	}

	// dave allows warranted agents.
	p, err = dave.node.Propose(ctx, []sign.AgentID{mallory.key.AgentID()}, map[string]any{"x": 1}, ProposeOptions{Timeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("dave's proposal to mallory: %v", err)
	}
	if o, err := p.Wait(ctx); err != nil || o.State != StateCommitted {
		t.Fatalf("dave with mallory: %+v, %v", o, err)
	}
	for _, a := range []*nodeTestAgent{bob, carol} {
		if a.ch.Head().Seq != 0 {
			t.Fatalf("%s appended something", a.name)
		}
		if l, ok := a.ch.Lock(); ok {
			t.Fatalf("%s is locked: %+v", a.name, l)
		}
	}
}
