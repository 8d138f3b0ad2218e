package negotiate_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate/transport"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// A signed offer between two nodes on loopback, each with its own chain
// file: Alice signs a fixed price at once, Bob's policy accepts it (a
// signed offer takes accept or reject only), and the identical record is on
// both chains after one round trip.
func ExampleNode_Propose_offer() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, _ := os.MkdirTemp("", "offer-example")
	defer os.RemoveAll(dir)
	scheme, _ := sign.SchemeByName(sign.DefaultScheme)
	start := func(name string, policy negotiate.Policy, bootstrap []string) (*negotiate.Node, error) {
		key, _ := scheme.DeriveKey([]byte("offer-example/" + name))
		ch, err := chain.Create(filepath.Join(dir, name+".db"), key, time.Now().UnixMilli())
		if err != nil {
			return nil, err
		}
		return negotiate.StartNode(ctx, negotiate.NodeConfig{
			Key: key, Chain: ch, Policy: policy, Host: transport.Config{Bootstrap: bootstrap},
		})
	}
	alice, err := start("alice", nil, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer alice.Chain().Close()
	defer alice.Close()
	bobPolicy := negotiate.PolicyFunc(func(p negotiate.Proposal) (negotiate.Decision, bool) {
		fmt.Println("bob is offered", p.Terms["item"], "at", p.Terms["price"], "- signed offer:", p.Offer)
		return negotiate.Decision{Action: negotiate.ActAccept}, true
	})
	bob, err := start("bob", bobPolicy, alice.Host().Addrs()[:1])
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bob.Chain().Close()
	defer bob.Close()
	// Bob's agent record may take a moment to reach the DHT.
	for _, err := alice.Host().Resolve(ctx, bob.AgentID()); err != nil; _, err = alice.Host().Resolve(ctx, bob.AgentID()) {
		if ctx.Err() != nil {
			fmt.Println(err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}

	terms, _ := protocol.EncodeTerms(map[string]any{"item": "lamp", "price": 40})
	p, err := alice.Propose(ctx, []sign.AgentID{bob.AgentID()}, terms, negotiate.ProposeOptions{Offer: true, Timeout: 20 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	a, err := p.Wait(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	b, err := bob.Wait(ctx, p.ID())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("alice:", a.State, "in round", a.Round)
	fmt.Println("bob:", b.State, "in round", b.Round)
	fmt.Println("same record:", a.RecordHash == b.RecordHash)
	for _, n := range []*negotiate.Node{alice, bob} {
		_, locked := n.Chain().Lock()
		fmt.Println("chain length", n.Chain().Length(), "locked", locked)
	}
	// Output:
	// bob is offered lamp at 40 - signed offer: true
	// alice: committed in round 1
	// bob: committed in round 1
	// same record: true
	// chain length 2 locked false
	// chain length 2 locked false
}
