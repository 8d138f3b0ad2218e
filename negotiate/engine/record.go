package engine

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// KindAgreement is the chain entry kind of a countersigned record.
const KindAgreement = "agreement"

// ErrBadRecord is returned when a countersigned record or receipt does not verify.
var ErrBadRecord = errors.New("negotiate: bad record")

// encode is the core-deterministic CBOR encoding used for every hash.
func encode(v any) []byte {
	b, err := protocol.Marshal(v)
	if err != nil {
		// Only our own well-formed structs are encoded here.
		panic(fmt.Sprintf("negotiate: encode %T: %v", v, err))
	}
	return b
}

func hashOf(v any) chain.Hash { return chain.Hash(sign.Hash(encode(v))) }

// TermsHash is the hash of terms (CBOR map bytes, re-encoded deterministically).
func TermsHash(terms cbor.RawMessage) (chain.Hash, error) {
	canon, err := canonicalTerms(terms)
	if err != nil {
		return chain.Hash{}, err
	}
	return chain.Hash(sign.Hash(canon)), nil
}

// canonicalTerms checks terms are a CBOR map and re-encodes them deterministically.
func canonicalTerms(terms cbor.RawMessage) (cbor.RawMessage, error) {
	if len(terms) == 0 {
		return nil, fmt.Errorf("negotiate: terms are empty: give at least one key=value")
	}
	if len(terms) > protocol.MaxTermsBytes {
		return nil, fmt.Errorf("negotiate: terms are %d bytes, the limit is %d", len(terms), protocol.MaxTermsBytes)
	}
	var m map[string]any
	if err := protocol.Unmarshal(terms, &m); err != nil {
		return nil, fmt.Errorf("negotiate: terms must be a CBOR map with text keys: %w", err)
	}
	b, err := protocol.EncodeTerms(m)
	if err != nil {
		return nil, fmt.Errorf("negotiate: terms: %w", err)
	}
	return b, nil
}

// AgreementHash is the hash every party's statement binds to.
func AgreementHash(a *protocol.Agreement) chain.Hash { return hashOf(a) }

// RecordHash is the hash of a countersigned record: identical on every chain.
func RecordHash(r *protocol.Record) chain.Hash { return hashOf(r) }

func partyIDs(ps []protocol.Party) []sign.AgentID {
	ids := make([]sign.AgentID, len(ps))
	for i, p := range ps {
		ids[i] = p.ID
	}
	return ids
}

// signStatement signs the countersigning statement of key's agent at head.
func signStatement(key *sign.PrivateKey, a *protocol.Agreement, ah chain.Hash, head chain.Head) []byte {
	st := protocol.Statement{Session: a.Session, AgreementHash: ah, Parties: partyIDs(a.Parties), Signer: key.AgentID(), Head: head}
	sig, err := protocol.SignStatement(key, &st)
	if err != nil {
		panic(fmt.Sprintf("negotiate: sign statement: %v", err)) // our own well-formed statement
	}
	return sig
}

// verifyStatement checks one party's statement signature.
func verifyStatement(p protocol.Party, a *protocol.Agreement, ah chain.Hash, head chain.Head, sig []byte) error {
	pub, err := p.PublicKey()
	if err != nil {
		return err
	}
	st := protocol.Statement{Session: a.Session, AgreementHash: ah, Parties: partyIDs(a.Parties), Signer: p.ID, Head: head}
	return protocol.VerifyStatement(pub, &st, sig)
}

// checkParties checks the party list: size, distinct IDs, keys match IDs.
func checkParties(ps []protocol.Party) error {
	if len(ps) < 2 || len(ps) > protocol.MaxParties {
		return fmt.Errorf("a session has 2 to %d parties, this one has %d", protocol.MaxParties, len(ps))
	}
	seen := make(map[sign.AgentID]bool, len(ps))
	for _, p := range ps {
		if seen[p.ID] {
			return fmt.Errorf("party %s is listed twice", p.ID.Short())
		}
		seen[p.ID] = true
		if _, err := p.PublicKey(); err != nil {
			return err
		}
	}
	return nil
}

// VerifyRecord checks a countersigned record on its own, with no network:
// the parties' keys match their agent IDs, the terms hash matches the terms,
// and every party's statement signature is valid for its head. With a
// witness, the witness's commit decision must be present and valid.
func VerifyRecord(r *protocol.Record) error {
	_, err := verifyRecord(r, chain.Hash{}, nil)
	return err
}

// verifyRecord is VerifyRecord that skips the statements a caller already
// verified: when the record's agreement hash is heldAH, a statement of
// party i whose head and signature equal held[i] is not verified again
// (it binds the same session, agreement, parties, signer and head, so its
// verification would give the same answer). Everything else is checked.
// It returns the record's agreement hash.
func verifyRecord(r *protocol.Record, heldAH chain.Hash, held map[int]*protocol.Ready) (chain.Hash, error) {
	a := &r.Agreement
	if err := checkParties(a.Parties); err != nil {
		return chain.Hash{}, fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	th, err := TermsHash(a.Terms)
	if err != nil {
		return chain.Hash{}, fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	if th != a.TermsHash {
		return chain.Hash{}, fmt.Errorf("%w: terms hash does not match the terms", ErrBadRecord)
	}
	if len(r.Heads) != len(a.Parties) || len(r.Signatures) != len(a.Parties) {
		return chain.Hash{}, fmt.Errorf("%w: %d parties but %d heads and %d signatures", ErrBadRecord, len(a.Parties), len(r.Heads), len(r.Signatures))
	}
	ah := AgreementHash(a)
	for i, p := range a.Parties {
		if ah == heldAH && sameStatement(held[i], r.Heads[i], r.Signatures[i]) {
			continue
		}
		if err := verifyStatement(p, a, ah, r.Heads[i], r.Signatures[i]); err != nil {
			return chain.Hash{}, fmt.Errorf("%w: signature of party %d (%s): %v", ErrBadRecord, i, p.ID.Short(), err)
		}
	}
	if a.Witness != nil {
		if len(r.WitnessDecision) == 0 {
			return chain.Hash{}, fmt.Errorf("%w: the agreement names witness %s but the record has no witness decision", ErrBadRecord, a.Witness.ID.Short())
		}
		d, err := openDecision(r.WitnessDecision, *a.Witness, a.Session, ah)
		if err != nil {
			return chain.Hash{}, fmt.Errorf("%w: witness decision: %v", ErrBadRecord, err)
		}
		if !d.Commit {
			return chain.Hash{}, fmt.Errorf("%w: the witness decided abort", ErrBadRecord)
		}
		if d.RecordHash != recordHashWithoutDecision(r) {
			return chain.Hash{}, fmt.Errorf("%w: the witness decision is for another record", ErrBadRecord)
		}
	} else if len(r.WitnessDecision) != 0 {
		return chain.Hash{}, fmt.Errorf("%w: witness decision without a witness", ErrBadRecord)
	}
	return ah, nil
}

// sameStatement reports whether held is exactly the statement (head, sig).
func sameStatement(held *protocol.Ready, head chain.Head, sig []byte) bool {
	return held != nil && held.Head == head && bytes.Equal(held.Signature, sig)
}

// recordHashWithoutDecision is what a witness signs: the record before its decision is attached.
func recordHashWithoutDecision(r *protocol.Record) chain.Hash {
	c := *r
	c.WitnessDecision = nil
	return RecordHash(&c)
}

// DecodeRecord decodes a record from CBOR (a chain payload or a receipt).
func DecodeRecord(b []byte) (*protocol.Record, error) {
	var r protocol.Record
	if err := protocol.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: decode: %v", ErrBadRecord, err)
	}
	if !bytes.Equal(encode(&r), b) {
		return nil, fmt.Errorf("%w: not in deterministic encoding", ErrBadRecord)
	}
	return &r, nil
}

// CheckAgreementEntry verifies a chain entry of kind "agreement" for the
// chain of agent owner: the record verifies, owner is a party, and the entry
// sits right after the head owner signed (seq = head.seq+1, prev = head.hash).
// Plug it into chain.VerifyOptions.CheckPayload.
func CheckAgreementEntry(e *chain.Entry, owner sign.PublicKey) error {
	if e.Kind != KindAgreement {
		return nil
	}
	r, err := DecodeRecord(e.Payload)
	if err != nil {
		return err
	}
	if err := VerifyRecord(r); err != nil {
		return err
	}
	id := owner.AgentID()
	for i, p := range r.Agreement.Parties {
		if p.ID != id {
			continue
		}
		h := r.Heads[i]
		if e.Seq != h.Seq+1 || e.Prev != h.Hash {
			return fmt.Errorf("%w: this agent signed at head %d but the record sits at seq %d", ErrBadRecord, h.Seq, e.Seq)
		}
		return nil
	}
	return fmt.Errorf("%w: agent %s is not a party of this record", ErrBadRecord, id.Short())
}
