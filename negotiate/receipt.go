package negotiate

import (
	"fmt"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// VerifyReceipt checks a receipt (Outcome.Receipt, Node.Receipt, or the
// file `negotiate receipt` writes) on its own, with no network: it decodes
// the countersigned record, checks that the parties' keys match their
// agent IDs, the terms hash matches the terms and every party's signature
// is valid for the chain head it signed at. It returns the record and its
// hash, which is the same on every party's chain.
func VerifyReceipt(receipt []byte) (*protocol.Record, chain.Hash, error) {
	r, err := engine.DecodeRecord(receipt)
	if err != nil {
		return nil, chain.Hash{}, fmt.Errorf("negotiate: receipt: %w", err)
	}
	if err := engine.VerifyRecord(r); err != nil {
		return nil, chain.Hash{}, fmt.Errorf("negotiate: receipt: %w", err)
	}
	return r, engine.RecordHash(r), nil
}

// VerifyChain checks entries that must form the whole source chain of
// agent owner, from its genesis: hash links, seqs, every entry's
// signature by owner, and every countersigned record (all parties'
// signatures, and each record sitting right after the head owner signed
// at). An application uses it on a counterpart's chain before it trusts
// what the chain says (a balance, a history); a *chain.VerifyError names
// the first entry that fails.
func VerifyChain(owner sign.AgentID, entries []chain.Entry) error {
	if verr := chain.VerifyEntries(entries, chain.VerifyOptions{Agent: owner, CheckPayload: engine.CheckAgreementEntry}); verr != nil {
		return fmt.Errorf("negotiate: chain of %s: %w", owner.Short(), verr)
	}
	return nil
}
