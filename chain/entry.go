package chain

import (
	"bytes"
	"encoding/hex"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/sign"
)

// Entry limits.
const (
	// MaxPayloadBytes bounds an entry payload: an agreement record arrives
	// in wire frames of at most 1 MiB, so it fits in this.
	MaxPayloadBytes = 1 << 20
	// MaxEntryBytes bounds an encoded entry: the payload plus room for the
	// other fields and the largest post-quantum signature.
	MaxEntryBytes = MaxPayloadBytes + 64<<10
	// MaxKindBytes bounds an entry kind, a short label like "agreement".
	MaxKindBytes = 64
)

// Entry kinds known to this package. Callers may use any other kind made of
// [a-z0-9._/-], at most MaxKindBytes long.
const (
	// KindGenesis is the kind of entry 0 and only of entry 0.
	KindGenesis = "genesis"
	// KindAgreement is the kind of a countersigned agreement record.
	KindAgreement = "agreement"
	// KindNote is the kind of a note the agent appends on its own.
	KindNote = "note"
)

// SignDomain is the signature domain of chain entries.
const SignDomain = "chain-entry"

// Hash is an entry hash (SHA-256). It is a CBOR byte string and hex in JSON
// and text.
type Hash [32]byte

// String returns the hash in lower-case hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is the zero hash (the prev of the genesis entry).
func (h Hash) IsZero() bool { return h == Hash{} }

// MarshalText encodes the hash as lower-case hex.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText decodes 64 hex characters.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 2*len(h) {
		return fmt.Errorf("chain: hash %q has %d characters, want %d hex characters", abbreviate(string(b)), len(b), 2*len(h))
	}
	var out Hash
	if _, err := hex.Decode(out[:], b); err != nil {
		return fmt.Errorf("chain: hash %q is not hex: %v", abbreviate(string(b)), err)
	}
	*h = out
	return nil
}

// ParseHash parses a hash in hex.
func ParseHash(s string) (Hash, error) {
	var h Hash
	err := h.UnmarshalText([]byte(s))
	return h, err
}

// Head names the newest entry of a chain.
type Head struct {
	Seq  uint64 `cbor:"seq" json:"seq"`
	Hash Hash   `cbor:"hash" json:"hash"`
}

// String returns "seq:hash-prefix" for logs and human output.
func (h Head) String() string { return fmt.Sprintf("%d:%s", h.Seq, h.Hash.String()[:12]) }

// Entry is one chain entry. Its CBOR form is core deterministic with string
// keys; that form without Signature is what is hashed and signed.
type Entry struct {
	Seq       uint64          `cbor:"seq"`
	Prev      Hash            `cbor:"prev"`    // zero for genesis (seq 0)
	Timestamp int64           `cbor:"ts"`      // unix milliseconds, supplied by the caller
	Kind      string          `cbor:"kind"`    // "genesis", "agreement", "note", ...
	Payload   cbor.RawMessage `cbor:"payload"` // deterministic CBOR
	Signature []byte          `cbor:"sig"`     // author's signature, domain "chain-entry", over Hash()
}

// entryCore is Entry without its signature: the hashed form.
type entryCore struct {
	Seq       uint64          `cbor:"seq"`
	Prev      Hash            `cbor:"prev"`
	Timestamp int64           `cbor:"ts"`
	Kind      string          `cbor:"kind"`
	Payload   cbor.RawMessage `cbor:"payload"`
}

// ComputeHash returns the SHA-256 of the core deterministic CBOR of the
// entry without its signature. It fails only when Payload is not
// well-formed CBOR.
func (e *Entry) ComputeHash() (Hash, error) {
	b, err := encMode.Marshal(entryCore{Seq: e.Seq, Prev: e.Prev, Timestamp: e.Timestamp, Kind: e.Kind, Payload: e.Payload})
	if err != nil {
		return Hash{}, fmt.Errorf("chain: %w: seq %d: encode: %v", ErrBadEntry, e.Seq, err)
	}
	return sign.Hash(b), nil
}

// Hash returns the entry hash (see ComputeHash). For an entry whose payload
// is not well-formed CBOR it returns the zero Hash; such an entry never
// passes Verify or Apply.
func (e *Entry) Hash() Hash {
	h, err := e.ComputeHash()
	if err != nil {
		return Hash{}
	}
	return h
}

// Head returns the head this entry makes: {e.Seq, e.Hash()}.
func (e *Entry) Head() Head { return Head{Seq: e.Seq, Hash: e.Hash()} }

// Marshal returns the entry's stored form: core deterministic CBOR with
// the signature.
func (e *Entry) Marshal() ([]byte, error) {
	b, err := encMode.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("chain: %w: seq %d: encode: %v", ErrBadEntry, e.Seq, err)
	}
	return b, nil
}

// Clone returns a deep copy.
func (e *Entry) Clone() *Entry {
	c := *e
	c.Payload = append(cbor.RawMessage(nil), e.Payload...)
	c.Signature = append([]byte(nil), e.Signature...)
	return &c
}

// UnmarshalEntry decodes an entry from its stored form and checks that the
// bytes are exactly the canonical encoding (so no byte of a stored entry can
// change without changing what is hashed or signed).
func UnmarshalEntry(b []byte) (*Entry, error) {
	if len(b) > MaxEntryBytes {
		return nil, fmt.Errorf("chain: %w: %d bytes, the limit is %d", ErrBadEntry, len(b), MaxEntryBytes)
	}
	var e Entry
	if err := decMode.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("chain: %w: decode: %v", ErrBadEntry, err)
	}
	again, err := encMode.Marshal(&e)
	if err != nil {
		return nil, fmt.Errorf("chain: %w: seq %d: re-encode: %v", ErrBadEntry, e.Seq, err)
	}
	if !bytes.Equal(again, b) {
		return nil, fmt.Errorf("chain: %w: seq %d: bytes are not the canonical encoding of the entry (altered or unknown fields)", ErrBadEntry, e.Seq)
	}
	return &e, nil
}

// checkShape checks everything about e that needs no chain context: kind,
// payload size and encoding. Genesis entries are checked by parseGenesis.
func (e *Entry) checkShape() error {
	if err := checkKind(e.Kind); err != nil {
		return err
	}
	if e.Kind == KindGenesis && e.Seq != 0 {
		return fmt.Errorf("%w: kind %q is reserved for entry 0", ErrBadEntry, KindGenesis)
	}
	if e.Seq == 0 && e.Kind != KindGenesis {
		return fmt.Errorf("%w: entry 0 must be of kind %q, not %q", ErrBadEntry, KindGenesis, e.Kind)
	}
	if len(e.Payload) > MaxPayloadBytes {
		return fmt.Errorf("%w: payload is %d bytes, the limit is %d", ErrBadEntry, len(e.Payload), MaxPayloadBytes)
	}
	if err := CheckDeterministic(e.Payload); err != nil {
		return fmt.Errorf("%w: payload: %v", ErrBadEntry, err)
	}
	return nil
}

func checkKind(kind string) error {
	if kind == "" || len(kind) > MaxKindBytes {
		return fmt.Errorf("%w: kind %q must have 1 to %d characters", ErrBadEntry, abbreviate(kind), MaxKindBytes)
	}
	for i := 0; i < len(kind); i++ {
		c := kind[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '/' || c == '-') {
			return fmt.Errorf("%w: kind %q may only use a-z 0-9 . _ / -", ErrBadEntry, abbreviate(kind))
		}
	}
	return nil
}

// verifySignature checks e's signature against pub and returns e's hash.
func (e *Entry) verifySignature(pub sign.PublicKey) (Hash, error) {
	h, err := e.ComputeHash()
	if err != nil {
		return Hash{}, err
	}
	if err := pub.Verify(SignDomain, h[:], e.Signature); err != nil {
		return Hash{}, fmt.Errorf("%w: seq %d: %w", ErrBadSignature, e.Seq, err)
	}
	return h, nil
}

// Genesis is the payload of entry 0: who the chain belongs to.
type Genesis struct {
	AgentID   sign.AgentID `cbor:"agent_id" json:"agent_id"`
	Scheme    string       `cbor:"scheme" json:"scheme"`
	PublicKey []byte       `cbor:"public_key" json:"public_key"`
}

// ParseGenesis checks that e is a well-formed genesis entry whose agent ID
// belongs to its public key and whose signature verifies with that key, and
// returns the key.
func ParseGenesis(e *Entry) (sign.PublicKey, error) {
	if e.Seq != 0 || e.Kind != KindGenesis || !e.Prev.IsZero() {
		return sign.PublicKey{}, fmt.Errorf("chain: %w: genesis must have seq 0, kind %q and a zero prev (has seq %d, kind %q)", ErrBadEntry, KindGenesis, e.Seq, abbreviate(e.Kind))
	}
	if err := e.checkShape(); err != nil {
		return sign.PublicKey{}, fmt.Errorf("chain: genesis: %w", err)
	}
	var g Genesis
	if err := decMode.Unmarshal(e.Payload, &g); err != nil {
		return sign.PublicKey{}, fmt.Errorf("chain: %w: genesis payload: %v", ErrBadEntry, err)
	}
	if again, err := encMode.Marshal(g); err != nil || !bytes.Equal(again, e.Payload) {
		return sign.PublicKey{}, fmt.Errorf("chain: %w: genesis payload has unknown or missing fields", ErrBadEntry)
	}
	pub, err := sign.ParsePublicKey(g.Scheme, g.PublicKey)
	if err != nil {
		return sign.PublicKey{}, fmt.Errorf("chain: %w: genesis public key: %v", ErrBadEntry, err)
	}
	if err := g.AgentID.Check(pub); err != nil {
		return sign.PublicKey{}, fmt.Errorf("chain: %w: genesis agent ID %s: %v", ErrBadEntry, g.AgentID.Short(), err)
	}
	if _, err := e.verifySignature(pub); err != nil {
		return sign.PublicKey{}, fmt.Errorf("chain: genesis: %w", err)
	}
	return pub, nil
}

// NewGenesis builds and signs the genesis entry for key.
func NewGenesis(key *sign.PrivateKey, nowMillis int64) (*Entry, error) {
	pub := key.Public()
	payload, err := encMode.Marshal(Genesis{AgentID: key.AgentID(), Scheme: pub.SchemeName(), PublicKey: pub.Bytes()})
	if err != nil {
		return nil, fmt.Errorf("chain: encode genesis: %w", err)
	}
	e := &Entry{Seq: 0, Kind: KindGenesis, Timestamp: nowMillis, Payload: payload}
	h, err := e.ComputeHash()
	if err != nil {
		return nil, err
	}
	e.Signature = key.Sign(SignDomain, h[:])
	return e, nil
}

// NewEntryAt builds and signs the entry that follows head: seq head.Seq+1,
// prev head.Hash. payload is encoded with EncMode, except a cbor.RawMessage,
// which is used as is and must already be deterministic. It needs no chain,
// so a pure engine can build the entry a Write will append.
func NewEntryAt(key *sign.PrivateKey, head Head, kind string, payload any, nowMillis int64) (*Entry, error) {
	var raw cbor.RawMessage
	switch p := payload.(type) {
	case cbor.RawMessage:
		raw = append(cbor.RawMessage(nil), p...)
	default:
		b, err := encMode.Marshal(payload)
		if err != nil {
			return nil, fmt.Errorf("chain: %w: encode %s payload: %v", ErrBadEntry, abbreviate(kind), err)
		}
		raw = b
	}
	e := &Entry{Seq: head.Seq + 1, Prev: head.Hash, Timestamp: nowMillis, Kind: kind, Payload: raw}
	if err := e.checkShape(); err != nil {
		return nil, fmt.Errorf("chain: new entry seq %d: %w", e.Seq, err)
	}
	h, err := e.ComputeHash()
	if err != nil {
		return nil, err
	}
	e.Signature = key.Sign(SignDomain, h[:])
	rememberSigned(h, e.Signature, key.Public())
	return e, nil
}

func abbreviate(s string) string {
	if len(s) > 70 {
		return s[:67] + "..."
	}
	return s
}
