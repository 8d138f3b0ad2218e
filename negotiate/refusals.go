package negotiate

import (
	"errors"
	"maps"
	"sync/atomic"

	"github.com/negotiate-dev/negotiate/negotiate/engine"
)

// Refusal reasons of session messages the transport handed on (verified,
// addressed to this agent, not replayed) and the engine refused. They
// join the transport's (transport.RefusalReasons) in Node.Refusals.
const (
	// RefusedUnknownSession: a message for a session this agent does not know.
	RefusedUnknownSession = "unknown_session"
	// RefusedWarranted: a new session with an agent that has a warrant.
	RefusedWarranted = "warranted"
	// RefusedProtocol: any other message the engine refused: out of turn,
	// from a non-party, a stale round, an equivocation, limits.
	RefusedProtocol = "protocol"
)

// engineRefusals counts the session messages the engine refused, by reason.
type engineRefusals struct {
	unknown, warranted, protocol atomic.Uint64
}

func (r *engineRefusals) add(err error) {
	switch {
	case errors.Is(err, engine.ErrUnknownSession):
		r.unknown.Add(1)
	case errors.Is(err, engine.ErrWarranted):
		r.warranted.Add(1)
	default:
		r.protocol.Add(1)
	}
}

// Refusals counts the inbound messages this node refused since it started,
// by reason: the transport's (framing, signatures, replays, rate limits:
// transport.RefusalReasons) and the engine's (RefusedUnknownSession,
// RefusedWarranted, RefusedProtocol). Every reason is present, zero or not.
func (n *Node) Refusals() map[string]uint64 {
	out := maps.Clone(n.host.Stats().RefusedBy)
	if out == nil {
		out = map[string]uint64{}
	}
	out[RefusedUnknownSession] = n.refused.unknown.Load()
	out[RefusedWarranted] = n.refused.warranted.Load()
	out[RefusedProtocol] = n.refused.protocol.Load()
	return out
}
