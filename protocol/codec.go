package protocol

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
)

// The CBOR modes of the wire. Encoding is the project's one encoder,
// chain.EncMode(): core deterministic (RFC 8949 §4.2.1: shortest lengths,
// sorted map keys, no indefinite lengths), so one value has exactly one
// encoding and hashes agree on every machine. Decoding is stricter than
// chain's because its input comes from the network: duplicate map keys,
// indefinite lengths, tags and unknown struct fields are errors, and sizes
// are bounded by the limits in limits.go.
var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode = chain.EncMode()
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   MaxNestedLevels,
		MaxArrayElements:  MaxArrayElements,
		MaxMapPairs:       MaxMapPairs,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(fmt.Sprintf("protocol: CBOR decoding options: %v", err)) // constant options: a programming error
	}
}

// Marshal encodes v in the core deterministic CBOR encoding of the wire.
func Marshal(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode %T: %w", v, err)
	}
	return b, nil
}

// Unmarshal decodes exactly one CBOR item from b into v with the strict
// wire rules. Errors wrap ErrTrailing, ErrTooLarge or ErrMalformed.
func Unmarshal(b []byte, v any) error {
	return unmarshal(fmt.Sprintf("%T", v), b, v)
}

// unmarshal decodes one item of what (named in errors) and rejects
// trailing bytes.
func unmarshal(what string, b []byte, v any) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: %s is empty", ErrMalformed, what)
	}
	rest, err := decMode.UnmarshalFirst(b, v)
	if err != nil {
		return decodeError(what, err)
	}
	if len(rest) > 0 {
		return fmt.Errorf("%w: %d bytes after the %s", ErrTrailing, len(rest), what)
	}
	return nil
}

// decodeError maps a CBOR decoding error to this package's sentinels.
func decodeError(what string, err error) error {
	var (
		nested *cbor.MaxNestedLevelError
		arr    *cbor.MaxArrayElementsError
		pairs  *cbor.MaxMapPairsError
		extra  *cbor.ExtraneousDataError
	)
	switch {
	case errors.As(err, &nested), errors.As(err, &arr), errors.As(err, &pairs):
		return fmt.Errorf("%w: %s: %w", ErrTooLarge, what, err)
	case errors.As(err, &extra):
		return fmt.Errorf("%w: %s: %w", ErrTrailing, what, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %s is truncated", ErrMalformed, what)
	default:
		return fmt.Errorf("%w: %s: %w", ErrMalformed, what, err)
	}
}

// checkCanonical fails unless b is the core deterministic encoding of v,
// which was just decoded from b. A message has one encoding only, so its
// bytes (and their hash) identify it.
func checkCanonical(what string, b []byte, v any) error {
	again, err := encMode.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: %s cannot be re-encoded: %w", ErrMalformed, what, err)
	}
	if !bytes.Equal(again, b) {
		return fmt.Errorf("%w: %s is not in core deterministic CBOR encoding (sorted keys, shortest forms, no omitted or extra fields)", ErrMalformed, what)
	}
	return nil
}

// isMap reports whether b starts a definite-length CBOR map.
func isMap(b []byte) bool {
	return len(b) > 0 && b[0]>>5 == 5 && b[0] != 0xbf
}
