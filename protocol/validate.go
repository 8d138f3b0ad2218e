package protocol

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// Field limits used by the Validate methods, beside those in messages.go.
const (
	// MaxSignatureBytes bounds one signature field: the largest scheme's
	// signature (ML-DSA-65, 3309 bytes) with room for a bigger one.
	MaxSignatureBytes = 8 << 10
	// MaxStateBytes bounds a Status state name ("unknown", "signed", ...).
	MaxStateBytes = 64
	// MaxContentTypeBytes bounds a direct message's content type (a MIME
	// type is at most 255 characters).
	MaxContentTypeBytes = 255
	// MaxPeerIDBytes bounds the text of a libp2p peer ID in an agent record
	// (an identity-hashed key is about 60 characters).
	MaxPeerIDBytes = 128
	// MaxAddrBytes bounds one multiaddr in an agent record.
	MaxAddrBytes = 256
	// MaxAgentInfoBytes bounds an encoded agent record, so the DHT
	// validator decodes nothing larger.
	MaxAgentInfoBytes = 16 << 10
)

// Signature domains of the signed things that are not wire messages.
const (
	// DomainStatement is the domain of a party's countersigning statement.
	DomainStatement = "statement"
	// DomainAgentInfo is the domain of a DHT agent record.
	DomainAgentInfo = "agent-info"
)

// sessionIDTimeBytes is how much of a new session ID is its creation time.
const sessionIDTimeBytes = 6

// NewSessionID returns a new session ID (SessionIDLen lower-hex chars): the
// current Unix time in milliseconds in its first 12 hex digits (48 bits),
// then 80 random bits. Chains store checkpoints by session ID, so
// time-ordered IDs put a node's new sessions at the end of its B+tree
// instead of on random pages (chain's BenchmarkFlush: 8.7 against 13.4 µs
// per record); the random part keeps IDs unique and unguessable.
func NewSessionID() string {
	return newSessionIDAt(time.Now())
}

func newSessionIDAt(now time.Time) string {
	var b [SessionIDLen / 2]byte
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(now.UnixMilli()))
	copy(b[:sessionIDTimeBytes], ms[8-sessionIDTimeBytes:])
	rand.Read(b[sessionIDTimeBytes:]) // never fails (crypto/rand since Go 1.24)
	return hex.EncodeToString(b[:])
}

// CheckSessionID fails (ErrMalformed) unless s is SessionIDLen lower-hex
// characters.
func CheckSessionID(s string) error {
	if len(s) != SessionIDLen {
		return fmt.Errorf("%w: session ID %q has %d characters, want %d lower-hex", ErrMalformed, abbreviate(s), len(s), SessionIDLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%w: session ID %q has %q at %d, want lower-hex only", ErrMalformed, s, c, i)
		}
	}
	return nil
}

// EncodeTerms encodes terms (typically a map or struct) as the canonical
// CBOR map used in Propose, Counter and Agreement, and checks it.
func EncodeTerms(v any) (cbor.RawMessage, error) {
	b, err := Marshal(v)
	if err != nil {
		return nil, err
	}
	if err := CheckTerms(b); err != nil {
		return nil, err
	}
	return b, nil
}

// CheckTerms fails unless terms is one core-deterministic CBOR map of at
// most MaxTermsBytes within the decoding limits. Canonical bytes make the
// terms hash the same for every party.
func CheckTerms(terms []byte) error {
	if len(terms) > MaxTermsBytes {
		return fmt.Errorf("%w: terms are %d bytes, the limit is %d", ErrTooLarge, len(terms), MaxTermsBytes)
	}
	if !isMap(terms) {
		return fmt.Errorf("%w: terms are not a CBOR map", ErrMalformed)
	}
	var v any
	if err := unmarshal("terms", terms, &v); err != nil {
		return err
	}
	return checkCanonical("terms", terms, v)
}

// TermsHash is the hash of encoded terms, as signed in Accept.
func TermsHash(terms []byte) chain.Hash { return chain.Hash(sign.Hash(terms)) }

// AgreementHash is the hash of the agreement's canonical CBOR.
func AgreementHash(a *Agreement) (chain.Hash, error) { return hashOf("agreement", a) }

// RecordHash is the hash of the record's canonical CBOR: the same bytes on
// every party's chain.
func RecordHash(r *Record) (chain.Hash, error) { return hashOf("record", r) }

func hashOf(what string, v any) (chain.Hash, error) {
	b, err := Marshal(v)
	if err != nil {
		return chain.Hash{}, fmt.Errorf("protocol: hash %s: %w", what, err)
	}
	return chain.Hash(sign.Hash(b)), nil
}

// Validate checks the party's ID, scheme and key, and that the key belongs
// to the ID.
func (p Party) Validate() error {
	pub, err := sign.ParsePublicKey(p.Scheme, p.Key)
	if err != nil {
		return fmt.Errorf("%w: party %s: %w", ErrMalformed, p.ID.Short(), err)
	}
	if err := p.ID.Check(pub); err != nil {
		return fmt.Errorf("%w: party %s: %w", ErrMalformed, p.ID.Short(), err)
	}
	return nil
}

// validateParties checks a session's party list: 2..MaxParties valid,
// distinct parties.
func validateParties(parties []Party) error {
	if len(parties) < 2 {
		return fmt.Errorf("%w: %d parties, a session needs at least 2", ErrMalformed, len(parties))
	}
	if len(parties) > MaxParties {
		return fmt.Errorf("%w: %d parties, the limit is %d", ErrTooLarge, len(parties), MaxParties)
	}
	seen := make(map[sign.AgentID]bool, len(parties))
	for i, p := range parties {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("%w (party %d)", err, i)
		}
		if seen[p.ID] {
			return fmt.Errorf("%w: party %s is listed twice", ErrMalformed, p.ID.Short())
		}
		seen[p.ID] = true
	}
	return nil
}

func validateWitness(w *Party, parties []Party) error {
	if w == nil {
		return nil
	}
	if err := w.Validate(); err != nil {
		return fmt.Errorf("%w (witness)", err)
	}
	for _, p := range parties {
		if p.ID == w.ID {
			return fmt.Errorf("%w: witness %s is also a party: name a node that is not a party", ErrMalformed, w.ID.Short())
		}
	}
	return nil
}

func validateRound(round uint32) error {
	if round > MaxRounds {
		return fmt.Errorf("%w: round %d, the limit is %d", ErrTooLarge, round, MaxRounds)
	}
	return nil
}

func validateReason(reason string) error {
	if len(reason) > MaxReasonBytes {
		return fmt.Errorf("%w: reason is %d bytes, the limit is %d", ErrTooLarge, len(reason), MaxReasonBytes)
	}
	return nil
}

func validateSig(what string, sig []byte) error {
	if len(sig) == 0 {
		return fmt.Errorf("%w: %s is missing", ErrMalformed, what)
	}
	if len(sig) > MaxSignatureBytes {
		return fmt.Errorf("%w: %s is %d bytes, the limit is %d", ErrTooLarge, what, len(sig), MaxSignatureBytes)
	}
	return nil
}

func validateHash(what string, h chain.Hash) error {
	if h == (chain.Hash{}) {
		return fmt.Errorf("%w: %s is missing (all zero)", ErrMalformed, what)
	}
	return nil
}

// Validate checks a Propose body: round, round cap, parties (the first is
// the initiator), terms, deadline and witness.
func (p *Propose) Validate() error {
	if err := validateRound(p.Round); err != nil {
		return err
	}
	if p.MaxRounds > MaxRounds {
		return fmt.Errorf("%w: max_rounds %d, the limit is %d", ErrTooLarge, p.MaxRounds, MaxRounds)
	}
	if p.MaxRounds != 0 && p.Round > p.MaxRounds {
		return fmt.Errorf("%w: round %d is past the session's max_rounds %d", ErrMalformed, p.Round, p.MaxRounds)
	}
	if err := validateParties(p.Parties); err != nil {
		return err
	}
	if err := CheckTerms(p.Terms); err != nil {
		return err
	}
	if p.Deadline <= 0 {
		return fmt.Errorf("%w: deadline is not set", ErrMalformed)
	}
	return validateWitness(p.Witness, p.Parties)
}

// Validate checks an Accept body.
func (a *Accept) Validate() error {
	if err := validateRound(a.Round); err != nil {
		return err
	}
	return validateHash("terms_hash", a.TermsHash)
}

// Validate checks a Reject body.
func (r *Reject) Validate() error {
	if err := validateRound(r.Round); err != nil {
		return err
	}
	return validateReason(r.Reason)
}

// Validate checks a Counter body.
func (c *Counter) Validate() error {
	if err := validateRound(c.Round); err != nil {
		return err
	}
	return CheckTerms(c.Terms)
}

// Validate checks an Agreement: session, round, terms and their hash,
// parties, witness, deadline and timestamp.
func (a *Agreement) Validate() error {
	if err := CheckSessionID(a.Session); err != nil {
		return err
	}
	if err := validateRound(a.Round); err != nil {
		return err
	}
	if err := CheckTerms(a.Terms); err != nil {
		return err
	}
	if TermsHash(a.Terms) != a.TermsHash {
		return fmt.Errorf("%w: agreement terms_hash does not match its terms", ErrMalformed)
	}
	if err := validateParties(a.Parties); err != nil {
		return err
	}
	if err := validateWitness(a.Witness, a.Parties); err != nil {
		return err
	}
	if a.Deadline <= 0 {
		return fmt.Errorf("%w: agreement deadline is not set", ErrMalformed)
	}
	if a.Timestamp <= 0 {
		return fmt.Errorf("%w: agreement timestamp is not set", ErrMalformed)
	}
	return nil
}

// Validate checks a Preflight body: the agreement and that AgreementHash is
// its hash.
func (p *Preflight) Validate() error {
	if err := p.Agreement.Validate(); err != nil {
		return fmt.Errorf("%w (agreement)", err)
	}
	h, err := AgreementHash(&p.Agreement)
	if err != nil {
		return fmt.Errorf("%w: agreement hash: %w", ErrMalformed, err)
	}
	if h != p.AgreementHash {
		return fmt.Errorf("%w: agreement_hash does not match the agreement", ErrMalformed)
	}
	return nil
}

// Validate checks an Offer: its preflight, its statement, that both name
// the same agreement and that the agreement is round 1.
func (o *Offer) Validate() error {
	if err := o.Preflight.Validate(); err != nil {
		return err
	}
	if err := o.Ready.Validate(); err != nil {
		return err
	}
	if o.Ready.AgreementHash != o.Preflight.AgreementHash {
		return fmt.Errorf("%w: the offer's statement is for another agreement", ErrMalformed)
	}
	if o.Preflight.Agreement.Round != 1 {
		return fmt.Errorf("%w: an offer is round 1, not %d", ErrMalformed, o.Preflight.Agreement.Round)
	}
	return nil
}

// Validate checks a Statement: session, agreement hash, parties and that
// the signer is one of them.
func (s *Statement) Validate() error {
	if err := CheckSessionID(s.Session); err != nil {
		return err
	}
	if err := validateHash("agreement_hash", s.AgreementHash); err != nil {
		return err
	}
	if len(s.Parties) < 2 || len(s.Parties) > MaxParties {
		return fmt.Errorf("%w: statement lists %d parties, want 2 to %d", ErrMalformed, len(s.Parties), MaxParties)
	}
	signerListed := false
	for _, id := range s.Parties {
		if _, err := sign.ParseAgentID(string(id)); err != nil {
			return fmt.Errorf("%w: statement party: %w", ErrMalformed, err)
		}
		signerListed = signerListed || id == s.Signer
	}
	if !signerListed {
		return fmt.Errorf("%w: statement signer %s is not a party", ErrMalformed, s.Signer.Short())
	}
	return nil
}

// Validate checks a Ready body.
func (r *Ready) Validate() error {
	if err := validateHash("agreement_hash", r.AgreementHash); err != nil {
		return err
	}
	return validateSig("statement signature", r.Signature)
}

// Validate checks a Refuse body; LockedBy is a session ID and only set when
// Busy.
func (r *Refuse) Validate() error {
	if err := validateHash("agreement_hash", r.AgreementHash); err != nil {
		return err
	}
	if err := validateReason(r.Reason); err != nil {
		return err
	}
	if r.LockedBy != "" {
		if !r.Busy {
			return fmt.Errorf("%w: locked_by is set but busy is not", ErrMalformed)
		}
		if err := CheckSessionID(r.LockedBy); err != nil {
			return fmt.Errorf("%w (locked_by)", err)
		}
	}
	return nil
}

// Validate checks a Record's shape: a valid agreement, one head and one
// signature per party in party order, and a witness decision exactly when
// the agreement names a witness. VerifyRecord also checks the signatures.
func (r *Record) Validate() error {
	if err := r.Agreement.Validate(); err != nil {
		return fmt.Errorf("%w (agreement)", err)
	}
	n := len(r.Agreement.Parties)
	if len(r.Heads) != n || len(r.Signatures) != n {
		return fmt.Errorf("%w: record has %d heads and %d signatures for %d parties", ErrMalformed, len(r.Heads), len(r.Signatures), n)
	}
	for i, sig := range r.Signatures {
		if err := validateSig(fmt.Sprintf("signature of party %d", i), sig); err != nil {
			return err
		}
	}
	switch {
	case r.Agreement.Witness == nil && r.WitnessDecision != nil:
		return fmt.Errorf("%w: record has a witness decision but the agreement names no witness", ErrMalformed)
	case r.Agreement.Witness != nil && len(r.WitnessDecision) == 0:
		return fmt.Errorf("%w: the agreement names a witness but the record has no witness decision", ErrMalformed)
	case len(r.WitnessDecision) > MaxFrameBytes:
		return fmt.Errorf("%w: witness decision is %d bytes, the limit is %d", ErrTooLarge, len(r.WitnessDecision), MaxFrameBytes)
	}
	return nil
}

// Validate checks a Commit body.
func (c *Commit) Validate() error { return c.Record.Validate() }

// Validate checks an Abort body: the certificate is a frame body.
func (a *Abort) Validate() error {
	if len(a.Certificate) == 0 {
		return fmt.Errorf("%w: abort certificate is missing", ErrMalformed)
	}
	if len(a.Certificate) > MaxFrameBytes {
		return fmt.Errorf("%w: abort certificate is %d bytes, the limit is %d", ErrTooLarge, len(a.Certificate), MaxFrameBytes)
	}
	return nil
}

// Validate checks a Query body (any agreement hash, zero when unknown).
func (q *Query) Validate() error { return validateHash("query agreement_hash", q.AgreementHash) }

// Validate checks a Status body.
func (s *Status) Validate() error {
	if s.State == "" {
		return fmt.Errorf("%w: status state is empty", ErrMalformed)
	}
	if len(s.State) > MaxStateBytes {
		return fmt.Errorf("%w: status state is %d bytes, the limit is %d", ErrTooLarge, len(s.State), MaxStateBytes)
	}
	if s.Ready != nil {
		if err := s.Ready.Validate(); err != nil {
			return fmt.Errorf("%w (status ready)", err)
		}
	}
	return nil
}

// Validate checks a Decision body: a commit names the record hash, an
// abort does not.
func (d *Decision) Validate() error {
	if err := validateHash("agreement_hash", d.AgreementHash); err != nil {
		return err
	}
	if d.Commit {
		return validateHash("record_hash of a commit decision", d.RecordHash)
	}
	if d.RecordHash != (chain.Hash{}) {
		return fmt.Errorf("%w: abort decision carries a record_hash", ErrMalformed)
	}
	return nil
}

// Validate checks an AbortAsk body.
func (a *AbortAsk) Validate() error { return validateHash("agreement_hash", a.AgreementHash) }

// Validate checks a Direct body.
func (d *Direct) Validate() error {
	if len(d.ContentType) > MaxContentTypeBytes {
		return fmt.Errorf("%w: content type is %d bytes, the limit is %d", ErrTooLarge, len(d.ContentType), MaxContentTypeBytes)
	}
	if len(d.Payload) > MaxDirectBytes {
		return fmt.Errorf("%w: direct payload is %d bytes, the limit is %d", ErrTooLarge, len(d.Payload), MaxDirectBytes)
	}
	return nil
}

// Validate checks a DirectReply body.
func (d *DirectReply) Validate() error {
	if err := validateReason(d.Reason); err != nil {
		return err
	}
	if len(d.Payload) > MaxDirectBytes {
		return fmt.Errorf("%w: reply payload is %d bytes, the limit is %d", ErrTooLarge, len(d.Payload), MaxDirectBytes)
	}
	return nil
}

// Validate checks an AgentInfo's fields (not its signature; OpenAgentInfo
// does both).
func (a *AgentInfo) Validate() error {
	if err := (Party{ID: a.AgentID, Scheme: a.Scheme, Key: a.PublicKey}).Validate(); err != nil {
		return fmt.Errorf("%w (agent record)", err)
	}
	if a.PeerID == "" || len(a.PeerID) > MaxPeerIDBytes {
		return fmt.Errorf("%w: agent record peer ID is %d bytes, want 1 to %d", ErrMalformed, len(a.PeerID), MaxPeerIDBytes)
	}
	if len(a.Addrs) > MaxAddrs {
		return fmt.Errorf("%w: agent record has %d addresses, the limit is %d", ErrTooLarge, len(a.Addrs), MaxAddrs)
	}
	for i, addr := range a.Addrs {
		if addr == "" || len(addr) > MaxAddrBytes {
			return fmt.Errorf("%w: agent record address %d is %d bytes, want 1 to %d", ErrMalformed, i, len(addr), MaxAddrBytes)
		}
	}
	if a.Expires <= 0 {
		return fmt.Errorf("%w: agent record has no expiry", ErrMalformed)
	}
	if len(a.Signature) > MaxSignatureBytes {
		return fmt.Errorf("%w: agent record signature is %d bytes, the limit is %d", ErrTooLarge, len(a.Signature), MaxSignatureBytes)
	}
	return nil
}
