package transport

import (
	"errors"
	"io"
	"sync/atomic"

	"github.com/negotiate-dev/negotiate/protocol"
)

// Refusal reasons: the label of negotiate_messages_refused_total. A fixed
// set, so a hostile peer cannot grow the metric's label space.
const (
	RefusedFraming        = "framing"         // a zero length or a broken frame header
	RefusedTooLarge       = "too_large"       // a frame, body or CBOR item over a limit
	RefusedTruncated      = "truncated"       // the stream ended inside a frame
	RefusedMalformed      = "malformed"       // not a well-formed message (CBOR, fields, unknown type, trailing bytes)
	RefusedBadSignature   = "bad_signature"   // the envelope signature or sender key does not verify
	RefusedWrongRecipient = "wrong_recipient" // addressed to another agent
	RefusedExpired        = "expired"         // expired, or expiring too far ahead
	RefusedReplay         = "replay"          // a nonce already seen (or the replay guard is full)
	RefusedPeerMismatch   = "peer_mismatch"   // the sender's agent record names another peer
	RefusedRateLimited    = "rate_limited"    // the peer is over PeerFramesPerSecond
	RefusedStreams        = "streams"         // the peer holds too many streams (or memory)
	RefusedOther          = "other"
)

// RefusalReasons lists every reason the host counts, in a stable order.
var RefusalReasons = []string{RefusedFraming, RefusedTooLarge, RefusedTruncated, RefusedMalformed, RefusedBadSignature,
	RefusedWrongRecipient, RefusedExpired, RefusedReplay, RefusedPeerMismatch, RefusedRateLimited, RefusedStreams, RefusedOther}

// refusalCounters counts refusals by reason.
type refusalCounters struct {
	by map[string]*atomic.Uint64 // fixed keys (RefusalReasons), built once
}

func newRefusalCounters() *refusalCounters {
	c := &refusalCounters{by: make(map[string]*atomic.Uint64, len(RefusalReasons))}
	for _, r := range RefusalReasons {
		c.by[r] = new(atomic.Uint64)
	}
	return c
}

func (c *refusalCounters) add(reason string) {
	n, ok := c.by[reason]
	if !ok {
		n = c.by[RefusedOther]
	}
	n.Add(1)
}

func (c *refusalCounters) snapshot() map[string]uint64 {
	out := make(map[string]uint64, len(c.by))
	for r, n := range c.by {
		out[r] = n.Load()
	}
	return out
}

// RefusalReason classifies why an inbound frame was refused.
func RefusalReason(err error) string {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		return RefusedTruncated
	case errors.Is(err, protocol.ErrTooLarge):
		return RefusedTooLarge
	case errors.Is(err, protocol.ErrBadSignature):
		return RefusedBadSignature
	case errors.Is(err, protocol.ErrWrongRecipient):
		return RefusedWrongRecipient
	case errors.Is(err, protocol.ErrExpired):
		return RefusedExpired
	case errors.Is(err, protocol.ErrReplay), errors.Is(err, protocol.ErrReplayFull):
		return RefusedReplay
	case errors.Is(err, ErrPeerMismatch):
		return RefusedPeerMismatch
	case errors.Is(err, protocol.ErrMalformed), errors.Is(err, protocol.ErrUnknownType), errors.Is(err, protocol.ErrTrailing):
		return RefusedMalformed
	}
	return RefusedOther
}
