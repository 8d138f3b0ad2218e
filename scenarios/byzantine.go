package scenarios

import (
	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Byzantine behaviour shared by the simulator and real mode: both rewrite
// an engine's outgoing message before it is sealed.

// byzantineBodies returns the bodies a party misbehaving as behavior (one
// of the Byz* kinds) sends instead of o.Body, signing any second statement
// with key; parties lists the session's parties in order (for a forged
// statement). A certificate frame (o.Frame) is never rewritten.
func byzantineBodies(behavior string, key *sign.PrivateKey, o negotiate.Outgoing, parties func() []sign.AgentID) []any {
	switch behavior {
	case ByzTamperSignature:
		switch b := o.Body.(type) {
		case *protocol.Ready:
			c := *b
			c.Signature = flipped(b.Signature)
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
			c.AgreementHash = negotiate.AgreementHash(&c.Agreement)
			return []any{&c}
		case *protocol.Accept:
			c := *b
			c.TermsHash[0] ^= 0xff
			return []any{&c}
		}
	case ByzEquivocate:
		switch b := o.Body.(type) {
		case *protocol.Preflight:
			c := *b
			c.Agreement = otherTerms(b.Agreement)
			c.AgreementHash = negotiate.AgreementHash(&c.Agreement)
			return []any{o.Body, &c}
		case *protocol.Ready:
			c := *b
			c.Head = chain.Head{Seq: b.Head.Seq + 7, Hash: chain.Hash(sign.Hash(b.Head.Hash[:]))}
			st := protocol.Statement{Session: o.Session, AgreementHash: b.AgreementHash, Signer: key.AgentID(), Head: c.Head}
			st.Parties = parties()
			sig, err := protocol.SignStatement(key, &st)
			if err != nil {
				return []any{o.Body}
			}
			c.Signature = sig
			return []any{o.Body, &c}
		}
	}
	return []any{o.Body}
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
