package chain

import (
	"bytes"
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// CBOR decoding limits. They bound what a hostile file or peer can make a
// decoder allocate or recurse into.
const (
	// MaxNestedLevels bounds nesting: real payloads are a few levels deep.
	MaxNestedLevels = 32
	// MaxArrayElements bounds one array: an agreement lists at most a few
	// hundred parties and terms.
	MaxArrayElements = 65536
	// MaxMapPairs bounds one map, for the same reason.
	MaxMapPairs = 65536
)

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic("chain: cbor encoder options: " + err.Error()) // constant options: a programming error
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  MaxNestedLevels,
		MaxArrayElements: MaxArrayElements,
		MaxMapPairs:      MaxMapPairs,
	}.DecMode()
	if err != nil {
		panic("chain: cbor decoder options: " + err.Error()) // constant options: a programming error
	}
}

// EncMode is the project's one CBOR encoder: core deterministic encoding
// (RFC 8949 §4.2.1), so the same value always gives the same bytes and
// hashes agree across machines. Other packages reuse it for anything that
// is hashed or signed.
func EncMode() cbor.EncMode { return encMode }

// DecMode is the project's one CBOR decoder: duplicate map keys are an
// error, indefinite lengths are refused, and nesting, array and map sizes
// are limited (MaxNestedLevels, MaxArrayElements, MaxMapPairs).
func DecMode() cbor.DecMode { return decMode }

// CheckDeterministic returns an error unless b is exactly one well-formed
// CBOR data item in the encoding EncMode produces for it (so that its hash
// is the same wherever it is re-encoded). Time tags (0, 1) are refused: use
// integers for times.
func CheckDeterministic(b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("empty CBOR")
	}
	var v any
	if err := decMode.Unmarshal(b, &v); err != nil {
		return fmt.Errorf("not well-formed CBOR within limits: %v", err)
	}
	again, err := encMode.Marshal(v)
	if err != nil {
		return fmt.Errorf("cannot re-encode CBOR: %v", err)
	}
	if !bytes.Equal(again, b) {
		return fmt.Errorf("CBOR is not in core deterministic encoding (encode it with chain.EncMode())")
	}
	return nil
}
