package engine

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/negotiate-dev/negotiate/internal/heap"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// benchCore runs engines through an in-memory FIFO message loop with no
// disk: Persist writes are counted, not applied (the engine keeps its own
// head and lock), and every message is really sealed and opened.
type benchCore struct {
	now     int64
	engines map[sign.AgentID]*Engine
	keys    map[sign.AgentID]*sign.PrivateKey
	queue   []benchMsg
	// counters per run
	writes, persistSteps, multiWriteSteps, frames int
}

type benchMsg struct {
	to    sign.AgentID
	frame []byte
}

func newBenchCore(b *testing.B, scheme string, n int) (*benchCore, []protocol.Party) {
	b.Helper()
	s, err := sign.SchemeByName(scheme)
	if err != nil {
		b.Fatal(err)
	}
	c := &benchCore{now: 1_800_000_000_000, engines: map[sign.AgentID]*Engine{}, keys: map[sign.AgentID]*sign.PrivateKey{}}
	var parties []protocol.Party
	for i := 0; i < n; i++ {
		k, err := s.DeriveKey([]byte(fmt.Sprintf("core-bench/%d", i)))
		if err != nil {
			b.Fatal(err)
		}
		e, err := NewEngine(CoreConfig{Key: k})
		if err != nil {
			b.Fatal(err)
		}
		c.engines[k.AgentID()], c.keys[k.AgentID()] = e, k
		parties = append(parties, e.Self())
	}
	return c, parties
}

// step feeds one input and carries out the output; participants accept
// every proposal (the AcceptAll policy, inline).
func (c *benchCore) step(b *testing.B, id sign.AgentID, in Input) {
	in.Now = c.now
	out := c.engines[id].Step(in)
	if out.Err != nil {
		b.Fatalf("step: %v", out.Err)
	}
	c.writes += len(out.Persist)
	if len(out.Persist) > 0 {
		c.persistSteps++
	}
	if len(out.Persist) > 1 {
		c.multiWriteSteps++
	}
	for _, o := range append(out.SendFirst, out.Send...) {
		frame := o.Frame
		if frame == nil {
			body, err := protocol.EncodeBody(o.Body)
			if err != nil {
				b.Fatal(err)
			}
			frame, err = protocol.Seal(c.keys[id], protocol.Message{Type: o.Type, Session: o.Session, To: o.To,
				Nonce: protocol.NewNonce(), Expires: c.now + 60_000, Body: body})
			if err != nil {
				b.Fatal(err)
			}
		}
		c.frames++
		c.queue = append(c.queue, benchMsg{to: o.To, frame: frame})
	}
	for _, ev := range out.Events {
		if ev.Kind == EvProposal {
			c.step(b, id, Input{Decision: &Decision{Session: ev.Session, Action: ActAccept}})
		}
	}
}

func (c *benchCore) drain(b *testing.B) {
	for len(c.queue) > 0 {
		m := c.queue[0]
		c.queue = c.queue[1:]
		env, err := protocol.OpenFor(m.frame, m.to, c.now)
		if err != nil {
			b.Fatalf("open: %v", err)
		}
		c.step(b, m.to, Input{Message: &Received{From: env.Msg.From, Type: env.Msg.Type, Session: env.Msg.Session, Body: env.Body, Raw: env.Raw}})
	}
}

// BenchmarkCoreSession runs whole accepted sessions (negotiated, or signed
// offers) through the pure core
// (no disk, no network): CPU cost of the protocol per session, all parties
// together. It reports the durable writes a driver must make per session,
// how many steps carry more than one write (each a separate fsync in
// today's driver) and frames per session.
func BenchmarkCoreSession(b *testing.B) {
	for _, tc := range []struct {
		scheme  string
		parties int
		offer   bool
	}{{"ed25519", 2, false}, {"ed25519", 2, true}, {"ed25519", 8, false}, {"ed25519", 8, true}, {"ml-dsa-65", 2, false}, {"ed25519-dilithium2", 2, false}} {
		kind := "negotiated"
		if tc.offer {
			kind = "offer"
		}
		b.Run(fmt.Sprintf("%s/parties=%d/%s", tc.scheme, tc.parties, kind), func(b *testing.B) {
			c, parties := newBenchCore(b, tc.scheme, tc.parties)
			terms, err := protocol.EncodeTerms(map[string]any{"item": "widget", "price": 1250})
			if err != nil {
				b.Fatal(err)
			}
			init := parties[0].ID
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := protocol.NewSessionID()
				c.step(b, init, Input{Start: &Start{Session: id, Parties: parties, Terms: terms, Deadline: c.now + 60_000, Offer: tc.offer}})
				c.drain(b)
				if o, _ := c.engines[init].Outcome(id); o == nil || o.State != StateCommitted {
					b.Fatalf("session %d: outcome %+v", i, o)
				}
				c.now++
			}
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(float64(c.writes)/n, "writes/session")
			b.ReportMetric(float64(c.multiWriteSteps)/n, "multi-write-steps/session")
			b.ReportMetric(float64(c.frames)/n, "frames/session")
		})
	}
}

// BenchmarkCoreEndedSessionMemory runs 2-party signed offers through the
// pure core and reports the heap the ended sessions still hold (both
// engines, after forced GCs) per session: kept for the node's life, and
// dropped as an engine with CoreConfig.Checkpoint does (Node: after
// NodeConfig.EndedRetention).
func BenchmarkCoreEndedSessionMemory(b *testing.B) {
	for _, drop := range []bool{false, true} {
		name := "kept"
		if drop {
			name = "dropped"
		}
		b.Run(name, func(b *testing.B) {
			c, parties := newBenchCore(b, "ed25519", 2)
			terms, err := protocol.EncodeTerms(map[string]any{"item": "widget", "price": 1250})
			if err != nil {
				b.Fatal(err)
			}
			before := heap.Live()
			for i := 0; i < b.N; i++ {
				id := protocol.NewSessionID()
				c.step(b, parties[0].ID, Input{Start: &Start{Session: id, Parties: parties, Terms: terms, Deadline: c.now + 1, Offer: true}})
				c.drain(b)
				c.now += 2
				if drop {
					for _, e := range c.engines {
						e.Evict(c.now, 0)
					}
				}
			}
			b.StopTimer()
			held := 0
			for _, e := range c.engines {
				held += e.Held()
			}
			if drop && held != 0 {
				b.Fatalf("%d sessions held after dropping", held)
			}
			after := heap.Live()
			b.ReportMetric(float64(int64(after)-int64(before))/float64(b.N), "heap-B/ended-session")
			b.ReportMetric(float64(held), "sessions-held")
			runtime.KeepAlive(c)
		})
	}
}
