package negotiate_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p"
	p2pprotocol "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/negotiate/transport"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Trade is the terms of the examples: a Go struct, encoded with the
// protocol's deterministic CBOR under the names of its cbor tags.
type Trade struct {
	Item  string `cbor:"item"`
	Price int64  `cbor:"price"`
}

// exampleAgent makes an agent key (derived from name, so the example is
// repeatable; an app uses scheme.GenerateKey and sign.SaveKeyFile) and its
// chain file in dir, and starts its node, joining the DHT through boot.
func exampleAgent(ctx context.Context, dir, name string, cfg negotiate.NodeConfig, boot *negotiate.Node) (*negotiate.Node, error) {
	scheme, err := sign.SchemeByName(sign.DefaultScheme)
	if err != nil {
		return nil, err
	}
	key, err := scheme.DeriveKey([]byte("embed-example/" + name))
	if err != nil {
		return nil, err
	}
	ch, err := chain.Create(filepath.Join(dir, name+".db"), key, time.Now().UnixMilli())
	if err != nil {
		return nil, err
	}
	cfg.Key, cfg.Chain = key, ch
	if boot != nil {
		cfg.Host.Bootstrap = boot.Host().Addrs()[:1]
	}
	n, err := negotiate.StartNode(ctx, cfg)
	if err != nil {
		ch.Close()
		return nil, err
	}
	return n, nil
}

// exampleStop closes a node, then its chain.
func exampleStop(n *negotiate.Node) {
	n.Close()
	n.Chain().Close()
}

// exampleFind waits until from can find agent id in the DHT: a node just
// started publishes its agent record within a moment.
func exampleFind(ctx context.Context, from *negotiate.Node, id sign.AgentID) error {
	for {
		_, err := from.Host().Resolve(ctx, id)
		if err == nil || ctx.Err() != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// examplePair starts a seller and a buyer in a temporary directory; the
// buyer bootstraps from the seller and can find it.
func examplePair(ctx context.Context, seller, buyer negotiate.NodeConfig) (s, b *negotiate.Node, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "embed-example")
	if err != nil {
		return nil, nil, nil, err
	}
	s, err = exampleAgent(ctx, dir, "seller", seller, nil)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	b, err = exampleAgent(ctx, dir, "buyer", buyer, s)
	if err != nil {
		exampleStop(s)
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	cleanup = func() { exampleStop(b); exampleStop(s); os.RemoveAll(dir) }
	if err := exampleFind(ctx, b, s.AgentID()); err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	return s, b, cleanup, nil
}

// Start a node in your app: an agent key, a chain file, and the node that
// serves both on a libp2p host. Close stops it cleanly at any moment; a
// node started again on the same chain resumes every open session.
func ExampleStartNode() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir, _ := os.MkdirTemp("", "start-example")
	defer os.RemoveAll(dir)

	scheme, _ := sign.SchemeByName(sign.DefaultScheme)
	key, _ := scheme.GenerateKey()
	ch, err := chain.Create(filepath.Join(dir, "chain.db"), key, time.Now().UnixMilli())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ch.Close()
	node, err := negotiate.StartNode(ctx, negotiate.NodeConfig{
		Key:   key,
		Chain: ch,
		Host:  transport.Config{Listen: []string{"/ip4/127.0.0.1/tcp/0"}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("agent ID is", len(node.AgentID()), "characters; listening:", len(node.Host().Addrs()) > 0)
	fmt.Println("chain length", ch.Length())
	if err := node.Close(); err != nil {
		fmt.Println(err)
	}
	// Output:
	// agent ID is 62 characters; listening: true
	// chain length 1
}

// Decide by policy: the seller's policy reads the terms into a Go struct
// and counters a low price up to 20; the buyer's AcceptAll takes the
// counter, which becomes round 2; the seller accepts it and both chains
// get the identical record.
func ExamplePolicyFunc() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sellerPolicy := negotiate.PolicyFunc(func(p negotiate.Proposal) (negotiate.Decision, bool) {
		var t Trade
		if err := p.DecodeTerms(&t); err != nil {
			return negotiate.Decision{Action: negotiate.ActReject, Reason: "unreadable terms"}, true
		}
		fmt.Printf("seller sees round %d: %s at %d\n", p.Round, t.Item, t.Price)
		if t.Price >= 20 {
			return negotiate.Decision{Action: negotiate.ActAccept}, true
		}
		counter, err := negotiate.EncodeTerms(Trade{Item: t.Item, Price: 20})
		if err != nil {
			return negotiate.Decision{}, false // leave it to a person
		}
		return negotiate.Decision{Action: negotiate.ActCounter, Terms: counter}, true
	})
	seller, buyer, cleanup, err := examplePair(ctx,
		negotiate.NodeConfig{Policy: sellerPolicy},
		negotiate.NodeConfig{Policy: negotiate.AcceptAll})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cleanup()

	p, err := buyer.Propose(ctx, []sign.AgentID{seller.AgentID()}, Trade{Item: "book", Price: 15}, negotiate.ProposeOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	out, err := p.Wait(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("buyer:", out.State, "in round", out.Round)
	// Output:
	// seller sees round 1: book at 15
	// seller sees round 2: book at 20
	// buyer: committed in round 2
}

// Decide by hand: with no policy, proposals wait for the application. The
// seller's app learns of them through OnEvent (or Node.Sessions), looks
// at the terms and calls Accept, Reject, Counter or Abort.
func ExampleNode_Accept() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	proposals := make(chan negotiate.Event, 8)
	seller, buyer, cleanup, err := examplePair(ctx,
		negotiate.NodeConfig{OnEvent: func(ev negotiate.Event) {
			if ev.Kind == negotiate.EvProposal {
				proposals <- ev // OnEvent must not block the node: hand it on
			}
		}},
		negotiate.NodeConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cleanup()

	p, err := buyer.Propose(ctx, []sign.AgentID{seller.AgentID()}, Trade{Item: "lamp", Price: 40}, negotiate.ProposeOptions{Timeout: 20 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	ev := <-proposals
	var t Trade
	if err := ev.DecodeTerms(&t); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("seller is asked:", t.Item, "at", t.Price, "by the buyer:", ev.From == buyer.AgentID())
	if err := seller.Accept(ev.Session); err != nil {
		fmt.Println(err)
		return
	}
	out, err := p.Wait(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("buyer:", out.State)
	// A second decision on the same round is refused and changes nothing.
	fmt.Println("accept again:", errors.Is(seller.Accept(ev.Session), negotiate.ErrNotYourTurn))
	// Output:
	// seller is asked: lamp at 40 by the buyer: true
	// buyer: committed
	// accept again: true
}

// Check before signing: SignCheck sees the exact agreement this agent is
// about to sign (terms, parties, round) and may refuse it; the refusal
// aborts the session for every party, and no chain changes.
func ExampleNodeConfig_signCheck() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	creditLimit := func(a *protocol.Agreement) error {
		var t Trade
		if err := protocol.Unmarshal(a.Terms, &t); err != nil {
			return fmt.Errorf("unreadable terms: %w", err)
		}
		if t.Price > 100 {
			return fmt.Errorf("price %d is over this agent's limit of 100", t.Price)
		}
		return nil
	}
	seller, buyer, cleanup, err := examplePair(ctx,
		negotiate.NodeConfig{Policy: negotiate.AcceptAll},
		negotiate.NodeConfig{Policy: negotiate.AcceptAll, SignCheck: creditLimit})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cleanup()

	p, err := buyer.Propose(ctx, []sign.AgentID{seller.AgentID()}, Trade{Item: "car", Price: 9000}, negotiate.ProposeOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	out, err := p.Wait(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("buyer:", out.State, "- aborted:", errors.Is(out.Err(), negotiate.ErrAborted))
	fmt.Println("chain lengths:", buyer.Chain().Length(), seller.Chain().Length())
	// Output:
	// buyer: aborted - aborted: true
	// chain lengths: 1 1
}

// Read outcomes and receipts: a committed Outcome carries the receipt,
// the countersigned record that is on every party's chain. Anyone can
// check it offline with VerifyReceipt; Node.Receipt gives it again later.
func ExampleVerifyReceipt() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seller, buyer, cleanup, err := examplePair(ctx,
		negotiate.NodeConfig{Policy: negotiate.AcceptAll}, negotiate.NodeConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cleanup()
	p, err := buyer.Propose(ctx, []sign.AgentID{seller.AgentID()}, Trade{Item: "pen", Price: 3}, negotiate.ProposeOptions{Offer: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	out, err := p.Wait(ctx)
	if err != nil || out.Err() != nil {
		fmt.Println(err, out.Err())
		return
	}

	rec, hash, err := negotiate.VerifyReceipt(out.Receipt)
	if err != nil {
		fmt.Println(err)
		return
	}
	var t Trade
	if err := protocol.Unmarshal(rec.Agreement.Terms, &t); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("receipt verifies:", t.Item, "at", t.Price, "signed by", len(rec.Signatures), "parties")
	fmt.Println("same hash as the outcome:", hash == out.RecordHash)
	again, _, err := seller.Receipt(p.ID())
	fmt.Println("the seller holds the same receipt:", err == nil && string(again) == string(out.Receipt))

	forged := append([]byte(nil), out.Receipt...)
	forged[len(forged)-1] ^= 1 // flip one bit of the last signature
	_, _, err = negotiate.VerifyReceipt(forged)
	fmt.Println("a forged receipt fails:", errors.Is(err, negotiate.ErrBadRecord))
	// Output:
	// receipt verifies: pen at 3 signed by 2 parties
	// same hash as the outcome: true
	// the seller holds the same receipt: true
	// a forged receipt fails: true
}

// Verify a counterpart's chain: the entries it presents (how they reach
// you is the app's choice, e.g. a direct message) must form its whole
// chain, with every link, entry signature and countersigned record valid,
// before the app trusts what they say.
func ExampleVerifyChain() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	seller, buyer, cleanup, err := examplePair(ctx,
		negotiate.NodeConfig{Policy: negotiate.AcceptAll}, negotiate.NodeConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cleanup()
	for price := int64(1); price <= 2; price++ {
		p, err := buyer.Propose(ctx, []sign.AgentID{seller.AgentID()}, Trade{Item: "apple", Price: price}, negotiate.ProposeOptions{Offer: true})
		if err != nil {
			fmt.Println(err)
			return
		}
		if _, err := p.Wait(ctx); err != nil {
			fmt.Println(err)
			return
		}
	}

	entries, err := seller.Chain().Entries(0, 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("seller's chain:", len(entries), "entries; verifies:", negotiate.VerifyChain(seller.AgentID(), entries) == nil)
	cut := append(entries[:1:1], entries[2:]...) // a trade left out
	fmt.Println("with a trade cut out it verifies:", negotiate.VerifyChain(seller.AgentID(), cut) == nil)
	fmt.Println("as someone else's chain it verifies:", negotiate.VerifyChain(buyer.AgentID(), entries) == nil)
	// Output:
	// seller's chain: 3 entries; verifies: true
	// with a trade cut out it verifies: false
	// as someone else's chain it verifies: false
}

// An app that already runs a libp2p host hands it to the node, which adds
// its two protocols and its agent record to it. Close removes them and
// leaves the host to the app.
func ExampleNodeConfig_ownHost() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
	dir, _ := os.MkdirTemp("", "own-host-example")
	defer os.RemoveAll(dir)
	node, err := exampleAgent(ctx, dir, "app", negotiate.NodeConfig{Host: transport.Config{Libp2p: h}}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("same peer:", node.Host().PeerID() == h.ID())
	fmt.Println("protocols added:", hasProtocol(h.Mux().Protocols(), protocol.ProtocolSession), hasProtocol(h.Mux().Protocols(), protocol.ProtocolMsg))
	exampleStop(node)
	fmt.Println("after Close, protocols left:", hasProtocol(h.Mux().Protocols(), protocol.ProtocolSession), "host still listening:", len(h.Addrs()) > 0)
	// Output:
	// same peer: true
	// protocols added: true true
	// after Close, protocols left: false host still listening: true
}

// hasProtocol reports whether a libp2p host serves protocol id.
func hasProtocol(ps []p2pprotocol.ID, id string) bool {
	for _, p := range ps {
		if string(p) == id {
			return true
		}
	}
	return false
}
