package scenarios

import (
	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Byzantine behaviour shared by the simulator and real mode: both rewrite
// an engine's outgoing message before it is sealed.

// byzantineBodies returns the bodies a party misbehaving as behavior (one
// of the Byz* kinds) sends instead of o.Body, signing any second statement
// with key; parties lists the session's parties in order (for a forged
// statement). A certificate frame (o.Frame) is never rewritten.
func byzantineBodies(behavior string, key *sign.PrivateKey, o engine.Outgoing, parties func() []sign.AgentID) []any {
	switch behavior {
	case ByzTamperSignature:
		switch b := o.Body.(type) {
		case *protocol.Ready:
			c := *b
			c.Signature = flipped(b.Signature)
			return []any{&c}
		case *protocol.Offer:
			c := *b
			c.Ready.Signature = flipped(b.Ready.Signature)
			return []any{&c}
		case *protocol.Status:
			if b.Ready != nil {
				c, r := *b, *b.Ready
				r.Signature = flipped(r.Signature)
				c.Ready = &r
				return []any{&c}
			}
		}
	case ByzOtherTerms:
		switch b := o.Body.(type) {
		case *protocol.Preflight:
			c := *b
			c.Agreement = otherTerms(b.Agreement)
			c.AgreementHash = engine.AgreementHash(&c.Agreement)
			return []any{&c}
		case *protocol.Accept:
			c := *b
			c.TermsHash[0] ^= 0xff
			return []any{&c}
		case *protocol.Offer:
			if c := otherOffer(key, o.Session, b, parties); c != nil {
				return []any{c}
			}
		}
	case ByzEquivocate:
		switch b := o.Body.(type) {
		case *protocol.Preflight:
			c := *b
			c.Agreement = otherTerms(b.Agreement)
			c.AgreementHash = engine.AgreementHash(&c.Agreement)
			return []any{o.Body, &c}
		case *protocol.Ready:
			c := *b
			c.Head = chain.Head{Seq: b.Head.Seq + 7, Hash: chain.Hash(sign.Hash(b.Head.Hash[:]))}
			sig, err := resign(key, o.Session, c.AgreementHash, c.Head, parties)
			if err != nil {
				return []any{o.Body}
			}
			c.Signature = sig
			return []any{o.Body, &c}
		case *protocol.Offer:
			if c := otherOffer(key, o.Session, b, parties); c != nil {
				return []any{o.Body, c}
			}
		}
	}
	return []any{o.Body}
}

// resign is key's statement signature over agreement ah at head.
func resign(key *sign.PrivateKey, session string, ah chain.Hash, head chain.Head, parties func() []sign.AgentID) ([]byte, error) {
	st := protocol.Statement{Session: session, AgreementHash: ah, Signer: key.AgentID(), Head: head, Parties: parties()}
	return protocol.SignStatement(key, &st)
}

// otherOffer is a signed offer of other terms in the same session, its
// statement really signed by the initiator's key (nil if it cannot be).
func otherOffer(key *sign.PrivateKey, session string, b *protocol.Offer, parties func() []sign.AgentID) *protocol.Offer {
	c := *b
	c.Preflight.Agreement = otherTerms(b.Preflight.Agreement)
	c.Preflight.AgreementHash = engine.AgreementHash(&c.Preflight.Agreement)
	c.Ready.AgreementHash = c.Preflight.AgreementHash
	sig, err := resign(key, session, c.Ready.AgreementHash, c.Ready.Head, parties)
	if err != nil {
		return nil
	}
	c.Ready.Signature = sig
	return &c
}

func flipped(b []byte) []byte {
	c := append([]byte(nil), b...)
	if len(c) > 0 {
		c[len(c)/2] ^= 0x01
	}
	return c
}

func otherTerms(a protocol.Agreement) protocol.Agreement {
	var m map[string]any
	_ = protocol.Unmarshal(a.Terms, &m)
	if m == nil {
		m = map[string]any{}
	}
	m["byzantine"] = "other terms"
	t, err := protocol.EncodeTerms(m)
	if err != nil {
		return a
	}
	a.Terms = t
	a.TermsHash = chain.Hash(sign.Hash(t))
	return a
}
