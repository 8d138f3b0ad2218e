package bench

import (
	"fmt"
	"runtime"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate/engine"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/internal/heap"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// MaxIdleSessions bounds IdleHeap: the engine's own cap on open sessions.
const MaxIdleSessions = engine.MaxOpenSessions

const (
	// idleDeadline keeps the idle sessions far from their deadline.
	idleDeadline = time.Hour
	// idleMessageLifetime is the wire expiry of the proposals, as the node
	// gives them (within protocol's lifetime limit).
	idleMessageLifetime = 2 * time.Minute
)

// HeapResult is the heap held by sessions waiting for a decision.
type HeapResult struct {
	Sessions int    `json:"sessions"`
	Scheme   string `json:"scheme"`
	// ParticipantBytes is the live heap of the participant's engine holding
	// Sessions proposals with no decision (policy nil): the figure the
	// memory target is about.
	ParticipantBytes uint64 `json:"participant_heap_bytes"`
	// InitiatorBytes is the initiator's engine holding the same sessions,
	// waiting for the answers.
	InitiatorBytes uint64 `json:"initiator_heap_bytes"`
	// ParticipantMiB and PerSessionBytes restate ParticipantBytes.
	ParticipantMiB  float64 `json:"participant_heap_mib"`
	PerSessionBytes float64 `json:"participant_bytes_per_session"`
	ElapsedSec      float64 `json:"elapsed_sec"`
}

// IdleHeap measures, through the pure core, the heap that n sessions in
// negotiation hold: initiator engines (one per MaxOpenSessionsPerPeer
// sessions, the cap one peer may hold open with an agent) start n
// two-party sessions with one participant; every
// proposal is really sealed, opened and stepped into a participant engine
// that leaves it pending (no policy). The live heap (heap.Live) is read
// with both engines, after dropping the initiators and after dropping the
// participant; the differences are the engines' shares.
func IdleHeap(n int, schemeName string) (*HeapResult, error) {
	if n < 1 || n > MaxIdleSessions {
		return nil, fmt.Errorf("%w: idle sessions %d: use 1 to %d", ErrBadOptions, n, MaxIdleSessions)
	}
	scheme, err := sign.SchemeByName(schemeName)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadOptions, err)
	}
	k2, err := scheme.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("bench: idle: key: %w", err)
	}
	terms, err := protocol.EncodeTerms(map[string]any{"item": "benchmark widget", "price": 1250, "currency": "EUR", "qty": 3})
	if err != nil {
		return nil, fmt.Errorf("bench: idle: terms: %w", err)
	}
	started := time.Now()
	par, err := engine.NewEngine(engine.CoreConfig{Key: k2, Head: chain.Head{}})
	if err != nil {
		return nil, err
	}
	var inis []*engine.Engine
	var k1 *sign.PrivateKey
	now := time.Now().UnixMilli()
	for i := 0; i < n; i++ {
		if i%engine.MaxOpenSessionsPerPeer == 0 {
			k1, err = scheme.GenerateKey()
			if err != nil {
				return nil, fmt.Errorf("bench: idle: key: %w", err)
			}
			e, err := engine.NewEngine(engine.CoreConfig{Key: k1, Head: chain.Head{}})
			if err != nil {
				return nil, err
			}
			inis = append(inis, e)
		}
		if err := proposeIdle(k1, inis[len(inis)-1], par, terms, now); err != nil {
			return nil, fmt.Errorf("bench: idle: session %d: %w", i, err)
		}
	}
	pending := 0
	for _, s := range par.Sessions(false) {
		if s.Pending {
			pending++
		}
	}
	if pending != n {
		return nil, fmt.Errorf("bench: idle: %d sessions wait for a decision, want %d", pending, n)
	}
	both := heap.Live()
	runtime.KeepAlive(inis)
	inis = nil
	onlyPar := heap.Live()
	runtime.KeepAlive(par)
	par = nil
	none := heap.Live()
	res := &HeapResult{Sessions: n, Scheme: scheme.Name(), ElapsedSec: round3(time.Since(started).Seconds())}
	// Each engine's share is what dropping it frees, read over two
	// collections: the growth from base spans the whole build, during
	// which other goroutines of the process (a test's nodes still
	// closing) may free more than the sessions take.
	res.ParticipantBytes = sub(onlyPar, none)
	res.InitiatorBytes = sub(both, onlyPar)
	res.ParticipantMiB = round3(float64(res.ParticipantBytes) / (1 << 20))
	res.PerSessionBytes = round3(float64(res.ParticipantBytes) / float64(n))
	return res, nil
}

// proposeIdle starts one two-party session at ini and delivers its
// proposal, really sealed and opened, to par, which leaves it pending.
func proposeIdle(key *sign.PrivateKey, ini, par *engine.Engine, terms []byte, now int64) error {
	out := ini.Step(engine.Input{Now: now, Start: &engine.Start{
		Session: protocol.NewSessionID(), Parties: []protocol.Party{ini.Self(), par.Self()}, Terms: terms,
		Deadline: now + idleDeadline.Milliseconds(),
	}})
	if out.Err != nil {
		return fmt.Errorf("start: %w", out.Err)
	}
	for _, o := range append(out.SendFirst, out.Send...) {
		body, err := protocol.EncodeBody(o.Body)
		if err != nil {
			return fmt.Errorf("encode: %w", err)
		}
		frame, err := protocol.Seal(key, protocol.Message{Type: o.Type, Session: o.Session, To: o.To,
			Nonce: protocol.NewNonce(), Expires: now + idleMessageLifetime.Milliseconds(), Body: body})
		if err != nil {
			return fmt.Errorf("seal: %w", err)
		}
		env, err := protocol.OpenFor(frame, o.To, now)
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		pout := par.Step(engine.Input{Now: now, Message: &engine.Received{
			From: env.Msg.From, Type: env.Msg.Type, Session: env.Msg.Session, Body: env.Body, Raw: env.Raw,
		}})
		if pout.Err != nil {
			return fmt.Errorf("participant: %w", pout.Err)
		}
	}
	return nil
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}
