package protocol

import (
	"fmt"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// StatementFor builds the statement that signer signs for agreement a at
// its chain head: it binds the session, the agreement hash, the parties in
// order and the signer's own chain position, so the signature cannot be
// reused for other terms, another session or another chain position.
func StatementFor(a *Agreement, signer sign.AgentID, head chain.Head) (Statement, error) {
	h, err := AgreementHash(a)
	if err != nil {
		return Statement{}, err
	}
	ids := make([]sign.AgentID, len(a.Parties))
	for i, p := range a.Parties {
		ids[i] = p.ID
	}
	st := Statement{Session: a.Session, AgreementHash: h, Parties: ids, Signer: signer, Head: head}
	if err := st.Validate(); err != nil {
		return Statement{}, fmt.Errorf("%w (statement of %s)", err, signer.Short())
	}
	return st, nil
}

// SignStatement signs st with key under DomainStatement. The key must be
// the statement's signer.
func SignStatement(key *sign.PrivateKey, st *Statement) ([]byte, error) {
	if key == nil || key.AgentID() != st.Signer {
		return nil, fmt.Errorf("protocol: sign statement: key is not the signer %s", st.Signer.Short())
	}
	b, err := Marshal(st)
	if err != nil {
		return nil, err
	}
	return key.Sign(DomainStatement, b), nil
}

// VerifyStatement checks sig over st by pub; errors wrap ErrBadSignature.
func VerifyStatement(pub sign.PublicKey, st *Statement, sig []byte) error {
	if err := st.Signer.Check(pub); err != nil {
		return fmt.Errorf("%w: statement: %w", ErrBadSignature, err)
	}
	b, err := Marshal(st)
	if err != nil {
		return err
	}
	if err := pub.Verify(DomainStatement, b, sig); err != nil {
		return fmt.Errorf("%w: statement of %s at seq %d: %w", ErrBadSignature, st.Signer.Short(), st.Head.Seq, err)
	}
	return nil
}

// VerifyRecord checks that r is a complete commit certificate: its shape
// (Validate) and every party's signature over its statement at its head.
// It does not check the witness decision's frame; the engine does.
func VerifyRecord(r *Record) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("%w (record)", err)
	}
	for i, p := range r.Agreement.Parties {
		pub, err := p.PublicKey()
		if err != nil {
			return fmt.Errorf("%w: record party %d: %w", ErrMalformed, i, err)
		}
		st, err := StatementFor(&r.Agreement, p.ID, r.Heads[i])
		if err != nil {
			return fmt.Errorf("%w (record)", err)
		}
		if err := VerifyStatement(pub, &st, r.Signatures[i]); err != nil {
			return fmt.Errorf("%w (record party %d)", err, i)
		}
	}
	return nil
}

// SignAgentInfo fills the key fields of info from key, signs it under
// DomainAgentInfo (over its CBOR with Signature empty) and returns the
// encoded record for the DHT.
func SignAgentInfo(key *sign.PrivateKey, info AgentInfo) ([]byte, error) {
	if key == nil {
		return nil, fmt.Errorf("protocol: sign agent record: no key")
	}
	info.AgentID = key.AgentID()
	info.Scheme = key.Scheme().Name()
	info.PublicKey = key.Public().Bytes()
	info.Signature = nil
	if err := info.Validate(); err != nil {
		return nil, fmt.Errorf("%w (signing agent record)", err)
	}
	unsigned, err := Marshal(&info)
	if err != nil {
		return nil, err
	}
	info.Signature = key.Sign(DomainAgentInfo, unsigned)
	out, err := Marshal(&info)
	if err != nil {
		return nil, err
	}
	if len(out) > MaxAgentInfoBytes {
		return nil, fmt.Errorf("%w: agent record is %d bytes, the limit is %d: publish fewer addresses", ErrTooLarge, len(out), MaxAgentInfoBytes)
	}
	return out, nil
}

// OpenAgentInfo decodes and verifies an agent record from the DHT at
// nowMillis: size, strict canonical CBOR, fields, expiry and signature.
func OpenAgentInfo(b []byte, nowMillis int64) (*AgentInfo, error) {
	if len(b) > MaxAgentInfoBytes {
		return nil, fmt.Errorf("%w: agent record is %d bytes, the limit is %d", ErrTooLarge, len(b), MaxAgentInfoBytes)
	}
	var info AgentInfo
	if err := unmarshal("agent record", b, &info); err != nil {
		return nil, fmt.Errorf("%w (agent record)", err)
	}
	if err := checkCanonical("agent record", b, &info); err != nil {
		return nil, fmt.Errorf("%w (agent record)", err)
	}
	if err := info.Validate(); err != nil {
		return nil, fmt.Errorf("%w (agent record)", err)
	}
	if nowMillis > info.Expires {
		return nil, fmt.Errorf("%w: agent record of %s expired at %s", ErrExpired, info.AgentID.Short(), fmtMillis(info.Expires))
	}
	pub, _ := sign.ParsePublicKey(info.Scheme, info.PublicKey) // checked by Validate
	sig := info.Signature
	info.Signature = nil
	unsigned, err := Marshal(&info)
	if err != nil {
		return nil, err
	}
	if err := pub.Verify(DomainAgentInfo, unsigned, sig); err != nil {
		return nil, fmt.Errorf("%w: agent record of %s: %w", ErrBadSignature, info.AgentID.Short(), err)
	}
	info.Signature = sig
	return &info, nil
}
