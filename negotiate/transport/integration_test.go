package transport

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestIntegrationNetwork runs seven real nodes on loopback. Each knows one
// bootstrap node only: a chain n0 ← n1 ← n2 ← n3, and a star n3 ← n4, n5,
// n6. Agents reach each other by agent ID alone.
func TestIntegrationNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts seven libp2p nodes")
	}
	const n = 7
	nodes := make([]*Host, n)
	for i := range nodes {
		name := fmt.Sprintf("net-%d", i)
		switch {
		case i == 0:
			nodes[i] = hostTestNew(t, name)
		case i <= 3:
			nodes[i] = hostTestNew(t, name, nodes[i-1])
		default:
			nodes[i] = hostTestNew(t, name, nodes[3])
		}
	}
	a, f := nodes[0], nodes[n-1]
	for _, d := range nodes {
		if len(d.Peers()) == 0 {
			t.Fatalf("node %s has no peers", d.AgentID().Short())
		}
	}

	t.Run("A to F by agent ID", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := a.Request(ctx, f.AgentID(), "text/plain", []byte("hello F"))
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Payload) != "ack from "+string(f.AgentID()) {
			t.Fatalf("answer %q", r.Payload)
		}
		in := f.Inbox()
		if len(in) != 1 || in[0].From != a.AgentID() || string(in[0].Payload) != "hello F" {
			t.Fatalf("F's inbox %+v", in)
		}
		// And back, by F, which learnt nothing about A but its ID.
		if _, err := f.Request(ctx, a.AgentID(), "text/plain", []byte("hello A")); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("every pair", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for _, x := range nodes {
			for _, y := range nodes {
				if x == y {
					continue
				}
				if _, err := x.Ping(ctx, y.AgentID()); err != nil {
					t.Fatalf("%s → %s: %v", x.AgentID().Short(), y.AgentID().Short(), err)
				}
			}
		}
	})

	const timeout = 1500 * time.Millisecond
	const slack = 500 * time.Millisecond

	t.Run("unknown agent", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		start := time.Now()
		_, err := a.Request(ctx, hostTestKey(t, "never-started").AgentID(), "text/plain", []byte("?"))
		if el := time.Since(start); el > timeout+slack {
			t.Fatalf("took %v with a %v timeout", el, timeout)
		}
		if !errors.Is(err, ErrAgentNotFound) && !errors.Is(err, ErrTimeout) {
			t.Fatalf("error %v, want ErrAgentNotFound or ErrTimeout", err)
		}
	})

	t.Run("stopped agent", func(t *testing.T) {
		stopped := nodes[5]
		id := stopped.AgentID()
		if err := stopped.Close(); err != nil {
			t.Fatal(err)
		}
		for _, from := range []*Host{a, nodes[2]} { // one knew its record, one did not
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			start := time.Now()
			_, err := from.Request(ctx, id, "text/plain", []byte("are you there?"))
			el := time.Since(start)
			cancel()
			t.Logf("stopped agent from %s: %v after %v", from.AgentID().Short(), err, el)
			if el > timeout+slack {
				t.Fatalf("took %v with a %v timeout", el, timeout)
			}
			if !errors.Is(err, ErrUnreachable) && !errors.Is(err, ErrTimeout) {
				t.Fatalf("error %v, want ErrUnreachable or ErrTimeout", err)
			}
		}
		// The others keep working.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := a.Ping(ctx, f.AgentID()); err != nil {
			t.Fatal(err)
		}
	})
}
