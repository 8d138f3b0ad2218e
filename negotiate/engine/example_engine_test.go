package engine_test

import (
	"fmt"

	"github.com/negotiate-dev/negotiate/negotiate/engine"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// ExampleEngine runs a 2-party session through two pure engines, carrying
// messages between them by hand. A real node does the same with libp2p,
// bbolt (Persist, made durable before Send) and the wall clock.
func ExampleEngine() {
	scheme, _ := sign.SchemeByName("ed25519")
	newEngine := func(name string) *engine.Engine {
		key, _ := scheme.DeriveKey([]byte("example/" + name))
		genesis, _ := chain.NewGenesis(key, 1)
		e, _ := engine.NewEngine(engine.CoreConfig{Key: key, Head: genesis.Head()})
		return e
	}
	alice, bob := newEngine("alice"), newEngine("bob")
	byID := map[sign.AgentID]*engine.Engine{alice.Self().ID: alice, bob.Self().ID: bob}
	now := int64(1_800_000_000_000)

	terms, _ := protocol.EncodeTerms(map[string]any{"item": "book", "price": 20})
	queue := []engine.Output{alice.Step(engine.Input{Now: now, Start: &engine.Start{
		Session: "0123456789abcdef0123456789abcdef", Parties: []protocol.Party{alice.Self(), bob.Self()},
		Terms: terms, Deadline: now + 60_000,
	}})}
	for len(queue) > 0 {
		out := queue[0]
		queue = queue[1:]
		// (out.Persist would be written durably here, before sending.)
		for _, ev := range out.Events {
			if ev.Kind == negotiate.EvProposal { // bob's application accepts
				queue = append(queue, bob.Step(engine.Input{Now: now, Decision: &negotiate.Decision{Session: ev.Session, Action: negotiate.ActAccept}}))
			}
		}
		for _, m := range append(out.SendFirst, out.Send...) {
			to := byID[m.To]
			queue = append(queue, to.Step(engine.Input{Now: now, Message: &engine.Received{
				From: otherThan(byID, to), Type: m.Type, Session: m.Session, Body: m.Body,
			}}))
		}
	}
	a, _ := alice.Outcome("0123456789abcdef0123456789abcdef")
	b, _ := bob.Outcome("0123456789abcdef0123456789abcdef")
	fmt.Println(a.State, b.State, a.RecordHash == b.RecordHash)
	// Output: committed committed true
}

func otherThan(byID map[sign.AgentID]*engine.Engine, e *engine.Engine) sign.AgentID {
	for id, x := range byID {
		if x != e {
			return id
		}
	}
	return ""
}
