package engine

import (
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Proposal is what a policy decides on: a round proposed to this agent (Kind EvProposal, Role participant)
// or a participant's counter to this agent's proposal (Kind EvCounter, Role initiator).
type Proposal struct {
	Session   string
	Kind      EventKind // EvProposal or EvCounter
	Role      Role
	From      sign.AgentID // who proposed / countered
	Initiator sign.AgentID
	Parties   []sign.AgentID
	Round     uint32
	MaxRounds uint32
	Terms     map[string]any // decoded terms (CBOR decoded: ints as int64/uint64, floats, strings, bools)
	RawTerms  cbor.RawMessage
	// Offer: a signed offer, which takes accept or reject only (a counter
	// decision is turned into a reject).
	Offer bool
}

// OfferCounterReason is the reason of the reject that a counter decision
// on a signed offer becomes (see ForOffer).
const OfferCounterReason = "the policy would counter; a signed offer takes no counter"

// ForOffer fits a policy's decision to a signed offer, which takes accept
// or reject only: a counter becomes a reject with OfferCounterReason, so
// the initiator is freed at once; any other decision is returned as is.
func ForOffer(d Decision) Decision {
	if d.Action != ActCounter {
		return d
	}
	return Decision{Session: d.Session, Action: ActReject, Reason: OfferCounterReason}
}

// DecodeTerms decodes CBOR terms (as a proposal, event or session carries
// them) into v, a pointer to a map or a struct, with the protocol's strict
// decoding rules.
func DecodeTerms(terms cbor.RawMessage, v any) error {
	if len(terms) == 0 {
		return errors.New("negotiate: no terms to decode")
	}
	if err := protocol.Unmarshal(terms, v); err != nil {
		return fmt.Errorf("negotiate: decode terms into %T: %w", v, err)
	}
	return nil
}

// DecodeTerms decodes the proposal's terms into v (a pointer to a map or
// a struct).
func (p Proposal) DecodeTerms(v any) error { return DecodeTerms(p.RawTerms, v) }

// DecodeTerms decodes the event's terms into v (a pointer to a map or a
// struct); it fails for an event that carries none.
func (ev Event) DecodeTerms(v any) error { return DecodeTerms(ev.Terms, v) }

// DecodeTerms decodes the session's current terms into v (a pointer to a
// map or a struct).
func (s SessionInfo) DecodeTerms(v any) error { return DecodeTerms(s.Terms, v) }
