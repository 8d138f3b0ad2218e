package chain_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// A chain is created with its genesis entry; each append is built and signed
// with the agent key, then written durably together with the session's lock
// and checkpoint.
func Example() {
	dir, _ := os.MkdirTemp("", "chain-example")
	defer os.RemoveAll(dir)
	scheme, _ := sign.SchemeByName("ed25519")
	key, _ := scheme.DeriveKey([]byte("example agent"))

	c, err := chain.Create(filepath.Join(dir, "chain.db"), key, 1_700_000_000_000)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	// A countersigning session locks the chain, then commits its record and
	// releases the lock in one transaction.
	head := c.Head()
	lock := &chain.Lock{Session: "s1", Since: 1_700_000_000_500, Parties: []sign.AgentID{key.AgentID()}}
	if err := c.Apply(chain.Write{Session: "s1", AcquireLock: lock, ExpectHead: &head, Checkpoint: []byte("signed")}); err != nil {
		fmt.Println(err)
		return
	}
	e, _ := c.NewEntry(key, chain.KindAgreement, map[string]string{"terms": "10 apples"}, 1_700_000_001_000)
	fmt.Println("append while locked by s1, as s2:", c.Apply(chain.Write{Session: "s2", Append: e}) != nil)
	if err := c.Apply(chain.Write{Session: "s1", Append: e, ReleaseLock: true, DeleteCheckpoint: true}); err != nil {
		fmt.Println(err)
		return
	}
	_, locked := c.Lock()
	fmt.Println("length:", c.Length(), "locked:", locked)
	fmt.Println("verify:", c.Verify(chain.VerifyOptions{}) == nil)

	// An export verifies offline.
	var buf bytes.Buffer
	_ = c.ExportCBOR(&buf)
	entries, err := chain.ReadCBORExport(&buf)
	fmt.Println("export entries:", len(entries), "verify:", err == nil && chain.VerifyEntries(entries, chain.VerifyOptions{Agent: key.AgentID()}) == nil)
	// Output:
	// append while locked by s1, as s2: true
	// length: 2 locked: false
	// verify: true
	// export entries: 2 verify: true
}

// A Store keeps the chains of many agents in one file, so that their
// durable writes share transactions (group commit). Each chain is still
// its agent's own, with its own head, lock and checkpoints.
func ExampleStore() {
	dir, _ := os.MkdirTemp("", "store-example")
	defer os.RemoveAll(dir)
	scheme, _ := sign.SchemeByName("ed25519")
	alice, _ := scheme.DeriveKey([]byte("alice"))
	bob, _ := scheme.DeriveKey([]byte("bob"))

	s, err := chain.CreateStore(filepath.Join(dir, "agents.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	ca, _ := s.Create(alice, 1_700_000_000_000)
	cb, _ := s.Create(bob, 1_700_000_000_000)
	e, _ := ca.NewEntry(alice, chain.KindNote, map[string]string{"text": "hello"}, 1_700_000_000_100)
	if err := ca.Apply(chain.Write{Append: e}); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("alice:", ca.Length(), "entries; bob:", cb.Length())
	s.Close()

	s, _ = chain.OpenStore(filepath.Join(dir, "agents.db"), chain.Options{})
	defer s.Close()
	agents, _ := s.Agents()
	again, _ := s.Chain(alice.AgentID())
	fmt.Println("agents:", len(agents), "alice after reopen:", again.Length(), "verify:", again.Verify(chain.VerifyOptions{}) == nil)
	// Output:
	// alice: 2 entries; bob: 1
	// agents: 2 alice after reopen: 2 verify: true
}
