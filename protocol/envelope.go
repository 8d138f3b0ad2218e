package protocol

import (
	"crypto/rand"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// Message is the signed payload of every wire message. Its CBOR (core
// deterministic, string keys) is what the sender signs.
type Message struct {
	Type    string          `cbor:"t"`             // a Type* constant
	Session string          `cbor:"sid,omitempty"` // SessionIDLen lower-hex chars where it applies
	From    sign.AgentID    `cbor:"from"`          // sender; must be derived from FromKey
	Scheme  string          `cbor:"scheme"`        // sender's signature scheme
	FromKey []byte          `cbor:"key"`           // sender's public key
	To      sign.AgentID    `cbor:"to"`            // recipient; empty for any
	Nonce   []byte          `cbor:"nonce"`         // NonceSize random bytes
	Expires int64           `cbor:"exp"`           // unix milliseconds
	Body    cbor.RawMessage `cbor:"body"`          // CBOR map of the body struct for Type
	// Chain, when set, is the sender's chain position when it sealed the
	// message and the newest record of the recipient it holds: how a
	// party restored from an old copy of its chain learns it is behind
	// (rollback protection, docs/protocol.md).
	Chain *ChainNote `cbor:"chain,omitempty"`
	// Intro, when set, holds signed agent records (AgentInfo, as stored
	// in the DHT): the sender's own and those of agents the recipient is
	// about to deal with, such as the other parties of a proposal. The
	// recipient checks each as it checks a record from the DHT and may
	// use it instead of looking the agent up. At most MaxIntroRecords,
	// MaxIntroBytes in all.
	Intro [][]byte `cbor:"intro,omitempty"`
}

// ChainNote is what a session message says about the chains of its
// sender and recipient.
type ChainNote struct {
	// Head is the sender's chain head; Locked the session holding its
	// chain lock ("" when free).
	Head   chain.Head `cbor:"head"`
	Locked string     `cbor:"locked,omitempty"`
	// Yours is the newest record the sender's chain holds that names the
	// recipient: the recipient's chain held it at seq Yours.Seq.
	Yours *HeldRecord `cbor:"yours,omitempty"`
}

// HeldRecord names a countersigned record by its seq on one party's chain
// and its session.
type HeldRecord struct {
	Seq     uint64 `cbor:"seq"`
	Session string `cbor:"sid"`
}

// Signed is the frame body: the exact payload bytes and the sender's
// signature over them (domain "msg/" + type).
type Signed struct {
	Payload []byte `cbor:"p"`
	Sig     []byte `cbor:"s"`
}

// Envelope is an opened, verified message.
type Envelope struct {
	Msg  Message        // the decoded payload
	Raw  []byte         // the exact Signed bytes received, not copied (a certificate can be forwarded as is)
	Sig  []byte         // the sender's signature over the payload
	Key  sign.PublicKey // the sender's public key, checked against Msg.From
	Body any            // pointer to the body struct registered for Msg.Type, e.g. *Propose
}

// Domain is the signature domain of a message type.
func Domain(msgType string) string { return "msg/" + msgType }

// NewNonce returns NonceSize random bytes.
func NewNonce() []byte {
	n := make([]byte, NonceSize)
	rand.Read(n) // never fails (crypto/rand since Go 1.24)
	return n
}

// EncodeBody encodes a body struct for Message.Body.
func EncodeBody(body any) (cbor.RawMessage, error) {
	b, err := Marshal(body)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// KnownType reports whether t is a message type of this protocol version.
func KnownType(t string) bool {
	_, ok := bodyTypes[t]
	return ok
}

// Seal signs m with key and returns the frame body (CBOR of Signed). It
// fills From, Scheme and FromKey from key and a random Nonce when m.Nonce
// is nil. It refuses, with the same typed errors as Open, a message the
// receiver would refuse: unknown type, missing expiry, bad session or
// recipient, a body that is too large, not the registered struct or fails
// its Validate method. Seal does not check the expiry against a clock.
func Seal(key *sign.PrivateKey, m Message) ([]byte, error) {
	if key == nil {
		return nil, fmt.Errorf("protocol: seal %s: no signing key", m.Type)
	}
	m.From = key.AgentID()
	m.Scheme = key.Scheme().Name()
	m.FromKey = key.Public().Bytes()
	if m.Nonce == nil {
		m.Nonce = NewNonce()
	}
	if len(m.Body) > MaxBodyBytes {
		return nil, fmt.Errorf("%w: seal %s: body is %d bytes, the limit is %d", ErrTooLarge, m.Type, len(m.Body), MaxBodyBytes)
	}
	if err := checkHeader(&m); err != nil {
		return nil, err
	}
	if m.Expires <= 0 {
		return nil, fmt.Errorf("%w: seal %s: Expires is not set (unix milliseconds)", ErrMalformed, m.Type)
	}
	if _, err := decodeBody(&m); err != nil {
		return nil, err
	}
	payload, err := Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("protocol: seal %s: %w", m.Type, err)
	}
	sig := key.Sign(Domain(m.Type), payload)
	out, err := Marshal(Signed{Payload: payload, Sig: sig})
	if err != nil {
		return nil, fmt.Errorf("protocol: seal %s: %w", m.Type, err)
	}
	if len(out) > MaxFrameBytes {
		return nil, fmt.Errorf("%w: seal %s: sealed message is %d bytes, the frame limit is %d", ErrTooLarge, m.Type, len(out), MaxFrameBytes)
	}
	return out, nil
}

// Open decodes and verifies a frame body made by Seal, at time nowMillis
// (unix milliseconds). It does not check the recipient; use OpenFor for
// that. Every failure is a typed error: ErrTooLarge, ErrMalformed,
// ErrTrailing, ErrUnknownType, ErrExpired or ErrBadSignature.
func Open(signed []byte, nowMillis int64) (*Envelope, error) {
	return open(signed, "", nowMillis, true)
}

// OpenFor is Open for the agent me: a message whose To is set and is not
// me fails with ErrWrongRecipient.
func OpenFor(signed []byte, me sign.AgentID, nowMillis int64) (*Envelope, error) {
	if me == "" {
		return nil, fmt.Errorf("protocol: open: no recipient agent ID given to OpenFor")
	}
	return open(signed, me, nowMillis, true)
}

// OpenCertificate verifies a stored frame body, such as the Refuse inside an
// abort certificate, with every check of Open except the expiry window: a
// signed refusal remains proof after its message has expired.
func OpenCertificate(signed []byte) (*Envelope, error) {
	return open(signed, "", 0, false)
}

func open(signed []byte, me sign.AgentID, nowMillis int64, checkExpiry bool) (*Envelope, error) {
	if len(signed) > MaxFrameBytes {
		return nil, fmt.Errorf("%w: message is %d bytes, the limit is %d", ErrTooLarge, len(signed), MaxFrameBytes)
	}
	var s Signed
	if err := unmarshal("signed frame", signed, &s); err != nil {
		return nil, err
	}
	if err := checkCanonical("signed frame", signed, &s); err != nil {
		return nil, err
	}
	var m Message
	if err := unmarshal("message payload", s.Payload, &m); err != nil {
		return nil, err
	}
	if err := checkCanonical("message payload", s.Payload, &m); err != nil {
		return nil, err
	}
	if err := checkHeader(&m); err != nil {
		return nil, err
	}
	if checkExpiry {
		if err := CheckExpiry(m.Expires, nowMillis); err != nil {
			return nil, fmt.Errorf("%w (%s from %s)", err, m.Type, m.From.Short())
		}
	} else if m.Expires <= 0 {
		return nil, fmt.Errorf("%w: %s from %s has no expiry", ErrMalformed, m.Type, m.From.Short())
	}
	if me != "" && m.To != "" && m.To != me {
		return nil, fmt.Errorf("%w: %s from %s is addressed to %s, this agent is %s", ErrWrongRecipient, m.Type, m.From.Short(), m.To.Short(), me.Short())
	}
	pub, err := sign.ParsePublicKey(m.Scheme, m.FromKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %s from %s: sender key: %w", ErrBadSignature, m.Type, m.From.Short(), err)
	}
	if err := m.From.Check(pub); err != nil {
		return nil, fmt.Errorf("%w: %s: sender %s: %w", ErrBadSignature, m.Type, m.From.Short(), err)
	}
	if err := pub.Verify(Domain(m.Type), s.Payload, s.Sig); err != nil {
		return nil, fmt.Errorf("%w: %s from %s: the message was altered or forged: %w", ErrBadSignature, m.Type, m.From.Short(), err)
	}
	body, err := decodeBody(&m)
	if err != nil {
		return nil, err
	}
	return &Envelope{Msg: m, Raw: signed, Sig: s.Sig, Key: pub, Body: body}, nil
}

// CheckExpiry checks an expiry (unix ms) at nowMillis: it must not have
// passed, and must not lie more than MaxMessageLifetime (plus MaxClockSkew)
// ahead. Errors wrap ErrExpired, or ErrMalformed for a missing expiry.
func CheckExpiry(expiresMillis, nowMillis int64) error {
	if expiresMillis <= 0 {
		return fmt.Errorf("%w: message has no expiry", ErrMalformed)
	}
	if nowMillis > expiresMillis {
		return fmt.Errorf("%w: it expired at %s, %v ago", ErrExpired, fmtMillis(expiresMillis), time.Duration(nowMillis-expiresMillis)*time.Millisecond)
	}
	if ahead := expiresMillis - nowMillis; ahead > maxExpiryAheadMillis {
		return fmt.Errorf("%w: it expires at %s, %v from now, beyond the %v message lifetime limit: the sender's clock may be wrong", ErrExpired, fmtMillis(expiresMillis), time.Duration(ahead)*time.Millisecond, MaxMessageLifetime)
	}
	return nil
}

func fmtMillis(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

// checkHeader checks the fields of m that need no key and no clock.
func checkHeader(m *Message) error {
	if !KnownType(m.Type) {
		return fmt.Errorf("%w: %q (this version knows %s)", ErrUnknownType, abbreviate(m.Type), knownTypesText())
	}
	if len(m.Nonce) != NonceSize {
		return fmt.Errorf("%w: %s nonce is %d bytes, want %d", ErrMalformed, m.Type, len(m.Nonce), NonceSize)
	}
	if m.Session != "" {
		if err := CheckSessionID(m.Session); err != nil {
			return fmt.Errorf("%w (%s session)", err, m.Type)
		}
	}
	if m.To != "" {
		if _, err := sign.ParseAgentID(string(m.To)); err != nil {
			return fmt.Errorf("%w: %s recipient: %w", ErrMalformed, m.Type, err)
		}
	}
	if _, err := sign.ParseAgentID(string(m.From)); err != nil {
		return fmt.Errorf("%w: %s sender: %w", ErrMalformed, m.Type, err)
	}
	if len(m.Intro) > MaxIntroRecords {
		return fmt.Errorf("%w: %s carries %d agent records, the limit is %d", ErrTooLarge, m.Type, len(m.Intro), MaxIntroRecords)
	}
	introBytes := 0
	for i, r := range m.Intro {
		if len(r) == 0 {
			return fmt.Errorf("%w: %s agent record %d is empty", ErrMalformed, m.Type, i)
		}
		introBytes += len(r)
	}
	if introBytes > MaxIntroBytes {
		return fmt.Errorf("%w: %s carries %d bytes of agent records, the limit is %d", ErrTooLarge, m.Type, introBytes, MaxIntroBytes)
	}
	if c := m.Chain; c != nil {
		if c.Locked != "" {
			if err := CheckSessionID(c.Locked); err != nil {
				return fmt.Errorf("%w (%s chain note, locked)", err, m.Type)
			}
		}
		if c.Yours != nil {
			if err := CheckSessionID(c.Yours.Session); err != nil {
				return fmt.Errorf("%w (%s chain note, held record)", err, m.Type)
			}
			if c.Yours.Seq == 0 {
				return fmt.Errorf("%w: %s chain note names a record at seq 0 (the genesis)", ErrMalformed, m.Type)
			}
		}
	}
	return nil
}

// decodeBody decodes m.Body into the struct registered for m.Type and runs
// its Validate method.
func decodeBody(m *Message) (any, error) {
	newBody, ok := bodyTypes[m.Type]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownType, abbreviate(m.Type))
	}
	if !isMap(m.Body) {
		return nil, fmt.Errorf("%w: %s body is not a CBOR map", ErrMalformed, m.Type)
	}
	body := newBody()
	if err := unmarshal(m.Type+" body", m.Body, body); err != nil {
		return nil, err
	}
	if v, ok := body.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			if errors.Is(err, ErrMalformed) || errors.Is(err, ErrTooLarge) {
				return nil, fmt.Errorf("%w (%s body)", err, m.Type)
			}
			return nil, fmt.Errorf("%w: %s body: %w", ErrMalformed, m.Type, err)
		}
	}
	return body, nil
}

func abbreviate(s string) string {
	const maxShown = 40 // enough to recognise, short enough for a log line
	if len(s) > maxShown {
		return s[:maxShown] + "..."
	}
	return s
}

func knownTypesText() string {
	names := make([]string, 0, len(bodyTypes))
	for t := range bodyTypes {
		names = append(names, t)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
