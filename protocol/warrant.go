package protocol

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// ErrNotEquivocation: a warrant's two items verify but do not conflict, so
// they prove nothing against the agent.
var ErrNotEquivocation = errors.New("protocol: not an equivocation")

// Warrant limits.
const (
	// MaxWarrantBytes bounds an encoded warrant: two frames of at most
	// MaxFrameBytes and a key. It is also the largest DHT warrant record.
	MaxWarrantBytes = 2*MaxFrameBytes + 16<<10
	// WarrantNamespace is the DHT record namespace of warrants: a warrant
	// against agent A is stored under "/negotiate-warrant/<A>".
	WarrantNamespace = "negotiate-warrant"
)

// Warrant is evidence that an agent equivocated: two things it signed
// that an honest agent never signs together. It verifies on its own, with
// nothing but the agent's public key it carries (VerifyWarrant), so anyone
// can check it offline, and a DHT node can refuse a forged one.
type Warrant struct {
	Agent  sign.AgentID `cbor:"agent"`  // the offender
	Scheme string       `cbor:"scheme"` // its signature scheme
	Key    []byte       `cbor:"key"`    // its public key; Agent must be derived from it
	A      WarrantItem  `cbor:"a"`
	B      WarrantItem  `cbor:"b"`
}

// WarrantItem is one signed thing of a warrant: either a countersigning
// statement with its signature (domain DomainStatement), or an exact signed
// wire frame (a propose, preflight, offer or refuse) as the agent sent it.
type WarrantItem struct {
	Statement *Statement `cbor:"statement,omitempty"`
	Sig       []byte     `cbor:"sig,omitempty"`
	Frame     []byte     `cbor:"frame,omitempty"`
}

// StatementItem is a warrant item holding a signed statement.
func StatementItem(st Statement, sig []byte) WarrantItem {
	return WarrantItem{Statement: &st, Sig: bytes.Clone(sig)}
}

// FrameItem is a warrant item holding a signed wire frame.
func FrameItem(frame []byte) WarrantItem { return WarrantItem{Frame: bytes.Clone(frame)} }

// NewWarrant builds the warrant against the agent with key pub from two
// items, checks it (VerifyWarrant) and returns its encoding. The items are
// put in a canonical order, so the same pair always makes the same bytes.
func NewWarrant(pub sign.PublicKey, a, b WarrantItem) ([]byte, *Warrant, error) {
	ea, err := Marshal(&a)
	if err != nil {
		return nil, nil, err
	}
	eb, err := Marshal(&b)
	if err != nil {
		return nil, nil, err
	}
	if bytes.Compare(ea, eb) > 0 {
		a, b = b, a
	}
	w := &Warrant{Agent: pub.AgentID(), Scheme: pub.SchemeName(), Key: pub.Bytes(), A: a, B: b}
	raw, err := Marshal(w)
	if err != nil {
		return nil, nil, err
	}
	if _, _, err := VerifyWarrant(raw); err != nil {
		return nil, nil, err
	}
	return raw, w, nil
}

// VerifyWarrant decodes a warrant and checks that it proves equivocation:
// the key is the agent's, both items are validly signed by it, and they
// conflict. It returns the warrant and what it proves. Errors wrap
// ErrTooLarge, ErrMalformed, ErrBadSignature or ErrNotEquivocation.
//
// Conflicts that count (see docs/protocol.md, "Equivocation and warrants"):
//   - two statements of one session that differ in agreement or head;
//   - two statements, of any sessions, at one head seq with different head
//     hashes (a forked chain);
//   - a statement and a refusal of the same agreement;
//   - two preflights or offers of one session for different agreements;
//   - two proposals of one session and round with different terms.
func VerifyWarrant(raw []byte) (*Warrant, string, error) {
	if len(raw) > MaxWarrantBytes {
		return nil, "", fmt.Errorf("%w: warrant is %d bytes, the limit is %d", ErrTooLarge, len(raw), MaxWarrantBytes)
	}
	var w Warrant
	if err := unmarshal("warrant", raw, &w); err != nil {
		return nil, "", err
	}
	pub, err := sign.ParsePublicKey(w.Scheme, w.Key)
	if err != nil {
		return nil, "", fmt.Errorf("%w: warrant key: %w", ErrMalformed, err)
	}
	if err := w.Agent.Check(pub); err != nil {
		return nil, "", fmt.Errorf("%w: warrant: agent %s: %w", ErrBadSignature, w.Agent.Short(), err)
	}
	ca, err := claimOf(&w.A, w.Agent, pub)
	if err != nil {
		return nil, "", fmt.Errorf("warrant item a: %w", err)
	}
	cb, err := claimOf(&w.B, w.Agent, pub)
	if err != nil {
		return nil, "", fmt.Errorf("warrant item b: %w", err)
	}
	what := conflict(ca, cb)
	if what == "" {
		what = conflict(cb, ca)
	}
	if what == "" {
		return nil, "", fmt.Errorf("%w: the two items of the warrant against %s do not conflict", ErrNotEquivocation, w.Agent.Short())
	}
	return &w, what, nil
}

// claim is what one warrant item says its signer did.
type claim struct {
	kind      string // "signed", "refused", "agreement", "propose"
	session   string
	ah        chain.Hash
	head      chain.Head
	round     uint32
	termsHash chain.Hash
}

func claimOf(it *WarrantItem, agent sign.AgentID, pub sign.PublicKey) (claim, error) {
	switch {
	case it.Statement != nil && it.Frame == nil:
		st := it.Statement
		if st.Signer != agent {
			return claim{}, fmt.Errorf("%w: statement signer %s is not the agent %s", ErrMalformed, st.Signer.Short(), agent.Short())
		}
		if err := st.Validate(); err != nil {
			return claim{}, err
		}
		if err := VerifyStatement(pub, st, it.Sig); err != nil {
			return claim{}, err
		}
		return claim{kind: "signed", session: st.Session, ah: st.AgreementHash, head: st.Head}, nil
	case it.Frame != nil && it.Statement == nil && len(it.Sig) == 0:
		env, err := OpenCertificate(it.Frame)
		if err != nil {
			return claim{}, err
		}
		if env.Msg.From != agent {
			return claim{}, fmt.Errorf("%w: frame from %s, not the agent %s", ErrMalformed, env.Msg.From.Short(), agent.Short())
		}
		c := claim{session: env.Msg.Session}
		switch b := env.Body.(type) {
		case *Propose:
			c.kind, c.round, c.termsHash = "propose", b.Round, chain.Hash(sign.Hash(b.Terms))
		case *Preflight:
			c.kind, c.ah = "agreement", b.AgreementHash
		case *Offer:
			c.kind, c.ah = "agreement", b.Preflight.AgreementHash
		case *Refuse:
			c.kind, c.ah = "refused", b.AgreementHash
		default:
			return claim{}, fmt.Errorf("%w: a %s frame is no warrant item (propose, preflight, offer or refuse)", ErrMalformed, env.Msg.Type)
		}
		return c, nil
	default:
		return claim{}, fmt.Errorf("%w: a warrant item holds either a statement and its signature or a frame", ErrMalformed)
	}
}

// conflict says what a and b prove together, "" if nothing.
func conflict(a, b claim) string {
	switch {
	case a.kind == "signed" && b.kind == "signed":
		if a.head.Seq == b.head.Seq && a.head.Hash != b.head.Hash {
			return fmt.Sprintf("signed two different chain heads at seq %d (a forked chain)", a.head.Seq)
		}
		if a.session == b.session && (a.ah != b.ah || a.head != b.head) {
			return fmt.Sprintf("signed two different statements in session %s", a.session)
		}
	case a.kind == "signed" && b.kind == "refused":
		if a.session == b.session && a.ah == b.ah {
			return fmt.Sprintf("signed and refused one agreement of session %s", a.session)
		}
	case a.kind == "agreement" && b.kind == "agreement":
		if a.session == b.session && a.ah != b.ah {
			return fmt.Sprintf("sent two different agreements for session %s", a.session)
		}
	case a.kind == "propose" && b.kind == "propose":
		if a.session == b.session && a.round == b.round && a.termsHash != b.termsHash {
			return fmt.Sprintf("proposed two different terms for round %d of session %s", a.round, a.session)
		}
	}
	return ""
}

// WarrantKey is the DHT key of warrants against agent.
func WarrantKey(agent sign.AgentID) string { return "/" + WarrantNamespace + "/" + string(agent) }
