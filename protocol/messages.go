package protocol

// This file (owned by the lead) defines the message bodies. Their Validate()
// methods (limits above: parties <= MaxParties, 2 <= parties, round <= MaxRounds,
// terms a CBOR map <= MaxTermsBytes, reason <= MaxReasonBytes, signatures and
// heads in party order with len == len(parties), direct payload <= MaxDirectBytes,
// addrs <= MaxAddrs, agent IDs parse, session IDs 32 lower-hex chars) live in
// validate.go, owned by the protocol engineer, together with
// AgreementHash/TermsHash/RecordHash helpers (sign.Hash of the core-deterministic CBOR).

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// Message type names. The signature domain of a message is "msg/" + its type.
const (
	TypePropose     = "propose"    // initiator → participants: the terms of a round
	TypeAccept      = "accept"     // participant → initiator: accepts the round's terms
	TypeReject      = "reject"     // participant → initiator (or initiator → all): ends the negotiation
	TypeCounter     = "counter"    // participant → initiator: other terms for the next round
	TypePreflight   = "preflight"  // initiator → all: lock and sign the agreement
	TypeOffer       = "offer"      // initiator → participants: a signed offer (agreement + its statement)
	TypeReady       = "ready"      // party → every party (and witness): signed statement at its head
	TypeRefuse      = "refuse"     // party → every party: durable refusal; an abort certificate
	TypeCommit      = "commit"     // anyone → anyone: the commit certificate
	TypeAbort       = "abort"      // anyone → anyone: carries an abort certificate
	TypeQuery       = "query"      // party → party/witness: how did this session end?
	TypeStatus      = "status"     // answer to a query when nothing final is known yet
	TypeDecision    = "decision"   // witness → all: its durable first-come decision
	TypeAbortAsk    = "abort-ask"  // party → witness: please decide abort (window passed)
	TypeDirect      = "msg"        // direct off-the-record message
	TypeDirectReply = "msg-reply"  // the receiver's answer to a direct message
	TypeAgentInfo   = "agent-info" // DHT agent record (signed with domain "agent-info", not "msg/")
)

// Limits on message bodies. Each is a named constant with the reason.
const (
	// MaxParties bounds a session: fan-out and record size grow with it.
	MaxParties = 32
	// MaxRounds bounds negotiation rounds so a haggling peer cannot keep a session open forever.
	MaxRounds = 64
	// MaxTermsBytes bounds the encoded terms so a record fits well inside a frame.
	MaxTermsBytes = 64 << 10
	// MaxReasonBytes bounds free-text reasons shown to users.
	MaxReasonBytes = 1024
	// MaxDirectBytes bounds a direct message payload.
	MaxDirectBytes = 256 << 10
	// MaxAddrs bounds the multiaddrs in an agent record.
	MaxAddrs = 32
)

// Party names one party of a session by agent ID and public key.
type Party struct {
	ID     sign.AgentID `cbor:"id"`
	Scheme string       `cbor:"scheme"`
	Key    []byte       `cbor:"key"`
}

// PublicKey parses the party's key and checks it belongs to its ID.
func (p Party) PublicKey() (sign.PublicKey, error) {
	pub, err := sign.ParsePublicKey(p.Scheme, p.Key)
	if err != nil {
		return sign.PublicKey{}, fmt.Errorf("protocol: party %s: %w", p.ID.Short(), err)
	}
	if err := p.ID.Check(pub); err != nil {
		return sign.PublicKey{}, fmt.Errorf("protocol: party %s: %w", p.ID.Short(), err)
	}
	return pub, nil
}

// Propose starts a round: initiator → every participant. Parties[0] is the initiator.
type Propose struct {
	Round     uint32          `cbor:"round"`
	Parties   []Party         `cbor:"parties"`
	Terms     cbor.RawMessage `cbor:"terms"`    // a CBOR map
	Deadline  int64           `cbor:"deadline"` // unix ms: negotiation and signing must end by then
	MaxRounds uint32          `cbor:"max_rounds"`
	Witness   *Party          `cbor:"witness,omitempty"`
}

// Accept accepts exactly the terms of one round.
type Accept struct {
	Round     uint32     `cbor:"round"`
	TermsHash chain.Hash `cbor:"terms_hash"`
}

// Reject ends the negotiation with a reason.
type Reject struct {
	Round  uint32 `cbor:"round"`
	Reason string `cbor:"reason"`
	// Aborted marks an abort (deadline, busy initiator, a party's abort)
	// rather than a rejection of the terms; Busy that a chain was locked.
	Aborted bool `cbor:"aborted,omitempty"`
	Busy    bool `cbor:"busy,omitempty"`
}

// Counter proposes other terms for the next round.
type Counter struct {
	Round uint32          `cbor:"round"`
	Terms cbor.RawMessage `cbor:"terms"`
}

// Agreement is what every party signs: the accepted terms of one round.
type Agreement struct {
	Session   string          `cbor:"session"`
	Round     uint32          `cbor:"round"`
	Terms     cbor.RawMessage `cbor:"terms"`
	TermsHash chain.Hash      `cbor:"terms_hash"`
	Parties   []Party         `cbor:"parties"`
	Witness   *Party          `cbor:"witness,omitempty"`
	Deadline  int64           `cbor:"deadline"` // unix ms: signing window end
	Timestamp int64           `cbor:"ts"`       // unix ms chosen by the initiator; the record's time
}

// Preflight asks every party to lock its chain and sign the agreement.
type Preflight struct {
	Agreement     Agreement  `cbor:"agreement"`
	AgreementHash chain.Hash `cbor:"agreement_hash"`
}

// Offer is a signed offer: the agreement of a one-round session and the
// initiator's own statement over it, durable at the initiator before the
// offer leaves. It replaces Propose, Accept and Preflight: a participant
// answers with its Ready (accept) or a signed Refuse (reject); it cannot
// counter. Round is always 1.
type Offer struct {
	Preflight Preflight `cbor:"preflight"`
	Ready     Ready     `cbor:"ready"`
}

// Statement is the countersigning statement a party signs (domain "statement"):
// it binds the session, agreement, parties and the party's own chain head.
type Statement struct {
	Session       string         `cbor:"session"`
	AgreementHash chain.Hash     `cbor:"agreement_hash"`
	Parties       []sign.AgentID `cbor:"parties"`
	Signer        sign.AgentID   `cbor:"signer"`
	Head          chain.Head     `cbor:"head"`
}

// Ready carries a party's signed statement at its head.
type Ready struct {
	AgreementHash chain.Hash `cbor:"agreement_hash"`
	Head          chain.Head `cbor:"head"`
	Signature     []byte     `cbor:"sig"`
}

// Refuse is a party's durable refusal to sign. The signed frame carrying it
// is an abort certificate for the session.
type Refuse struct {
	AgreementHash chain.Hash `cbor:"agreement_hash"`
	Reason        string     `cbor:"reason"`
	Busy          bool       `cbor:"busy"`
	LockedBy      string     `cbor:"locked_by,omitempty"` // session holding the lock when Busy
	// Rejected: the party rejected a signed offer's terms (its application
	// said no), rather than refusing for a technical reason.
	Rejected bool `cbor:"rejected,omitempty"`
}

// Record is the countersigned record, identical on every party's chain: the
// agreement, every party's head and statement signature (in party order).
// It is the commit certificate.
type Record struct {
	Agreement  Agreement    `cbor:"agreement"`
	Heads      []chain.Head `cbor:"heads"`
	Signatures [][]byte     `cbor:"sigs"`
	// WitnessDecision is the exact signed frame of the witness's commit
	// decision when the agreement names a witness; nil otherwise.
	WitnessDecision []byte `cbor:"witness_decision,omitempty"`
}

// Commit carries the commit certificate.
type Commit struct {
	Record Record `cbor:"record"`
}

// Abort carries an abort certificate: the exact signed frame of a Refuse, or
// of a witness's abort Decision.
type Abort struct {
	Certificate []byte `cbor:"cert"`
}

// Query asks a party or the witness how a session ended.
type Query struct {
	AgreementHash chain.Hash `cbor:"agreement_hash"`
}

// Status answers a Query when the answerer holds no certificate yet.
type Status struct {
	State string `cbor:"state"` // "unknown", "negotiating", "signed", ...
	// Ready is the answerer's own signed statement when it has signed, so the
	// asker can complete the signature set.
	Ready *Ready `cbor:"ready,omitempty"`
}

// Decision is a witness's durable, first-come decision for a session.
type Decision struct {
	AgreementHash chain.Hash `cbor:"agreement_hash"`
	Commit        bool       `cbor:"commit"`
	RecordHash    chain.Hash `cbor:"record_hash,omitempty"`
}

// AbortAsk asks the witness to decide abort because the window passed.
type AbortAsk struct {
	AgreementHash chain.Hash `cbor:"agreement_hash"`
}

// Direct is an off-the-record message.
type Direct struct {
	ContentType string `cbor:"ctype"`
	Payload     []byte `cbor:"payload"`
}

// DirectReply is the receiver's answer to a Direct message.
type DirectReply struct {
	Accepted   bool   `cbor:"accepted"`
	Reason     string `cbor:"reason,omitempty"`
	Payload    []byte `cbor:"payload,omitempty"`
	ReceivedAt int64  `cbor:"received_at"` // unix ms at the receiver
}

// AgentInfo is the signed agent record published in the DHT under
// /negotiate-agent/<agent-id>. Signature domain "agent-info" over the CBOR
// of the record with Signature empty.
type AgentInfo struct {
	AgentID   sign.AgentID `cbor:"agent_id"`
	Scheme    string       `cbor:"scheme"`
	PublicKey []byte       `cbor:"key"`
	PeerID    string       `cbor:"peer_id"`
	Addrs     []string     `cbor:"addrs"`
	Seq       uint64       `cbor:"seq"`
	Expires   int64        `cbor:"expires"` // unix ms
	Signature []byte       `cbor:"sig,omitempty"`
}

// bodyTypes maps a message type to a constructor of its body.
var bodyTypes = map[string]func() any{
	TypePropose:     func() any { return new(Propose) },
	TypeAccept:      func() any { return new(Accept) },
	TypeReject:      func() any { return new(Reject) },
	TypeCounter:     func() any { return new(Counter) },
	TypePreflight:   func() any { return new(Preflight) },
	TypeReady:       func() any { return new(Ready) },
	TypeOffer:       func() any { return new(Offer) },
	TypeRefuse:      func() any { return new(Refuse) },
	TypeCommit:      func() any { return new(Commit) },
	TypeAbort:       func() any { return new(Abort) },
	TypeQuery:       func() any { return new(Query) },
	TypeStatus:      func() any { return new(Status) },
	TypeDecision:    func() any { return new(Decision) },
	TypeAbortAsk:    func() any { return new(AbortAsk) },
	TypeDirect:      func() any { return new(Direct) },
	TypeDirectReply: func() any { return new(DirectReply) },
}
