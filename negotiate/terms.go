package negotiate

import (
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/protocol"
)

// EncodeTerms encodes terms the way the protocol signs them: one
// core-deterministic CBOR map (sorted keys, shortest forms), at most
// protocol.MaxTermsBytes. terms is a Go map or struct (use `cbor:"name"`
// tags to name struct fields); a cbor.RawMessage or []byte holding encoded
// terms is checked and passed through unchanged. The same terms always give the same bytes, so two
// agents that encode the same value agree on its hash.
func EncodeTerms(terms any) (cbor.RawMessage, error) {
	if terms == nil {
		return nil, errors.New("negotiate: terms: none given; pass a map or a struct")
	}
	var raw []byte
	switch t := terms.(type) {
	case cbor.RawMessage:
		raw = t
	case []byte:
		raw = t
	}
	if raw != nil {
		if err := protocol.CheckTerms(raw); err != nil {
			return nil, fmt.Errorf("negotiate: terms: %w", err)
		}
		return raw, nil
	}
	b, err := protocol.EncodeTerms(terms)
	if err != nil {
		return nil, fmt.Errorf("negotiate: terms: %w (terms must encode as a CBOR map: pass a map or a struct)", err)
	}
	return b, nil
}
