package control

import (
	"context"
	"io"

	"github.com/negotiate-dev/negotiate/sign"
)

// Identity describes the agent of a home and, while a node runs, its
// libp2p peer ID and listen addresses.
type Identity struct {
	AgentID   sign.AgentID `json:"agent_id"`
	Scheme    string       `json:"scheme"`
	PublicKey []byte       `json:"public_key"` // base64 in JSON
	PeerID    string       `json:"peer_id,omitempty"`
	Addrs     []string     `json:"addrs,omitempty"` // full multiaddrs ending in /p2p/<peer-id>
	PID       int          `json:"pid,omitempty"`   // the node's process ID
}

// LockInfo is the chain lock held by a session.
type LockInfo struct {
	Session string         `json:"session"`
	Since   int64          `json:"since"` // unix ms
	Parties []sign.AgentID `json:"parties"`
}

// ChainStatus summarises a chain.
type ChainStatus struct {
	AgentID sign.AgentID `json:"agent_id"`
	Length  uint64       `json:"length"`   // number of entries, genesis included
	HeadSeq uint64       `json:"head_seq"` // seq of the last entry
	Head    string       `json:"head"`     // hex hash of the last entry
	Lock    *LockInfo    `json:"lock"`     // null when unlocked
	// WriteError is the running node's last durable write that failed
	// (e.g. "no space left on device" and where to free space), absent
	// once a write succeeded after it.
	WriteError string `json:"write_error,omitempty"`
	// FlushError is the chain's last failure to apply its journal to the
	// chain file for want of space (the writes stay durable in the
	// journal), absent once a flush succeeded.
	FlushError string `json:"flush_error,omitempty"`
	// Behind says which records the running node's chain lacks that its
	// counterparties hold (restored from an older copy), and how to get
	// them back; absent when none.
	Behind string `json:"behind,omitempty"`
}

// Entry is the view of one chain entry that `chain show` prints.
type Entry struct {
	Seq          uint64 `json:"seq"`
	Hash         string `json:"hash"` // hex
	Prev         string `json:"prev"` // hex; all zeros for genesis
	Kind         string `json:"kind"`
	Timestamp    int64  `json:"timestamp"` // unix ms
	Time         string `json:"time"`      // RFC 3339, UTC
	PayloadBytes int    `json:"payload_bytes"`
	// RecordHash is the hex sign.Hash of the payload of an "agreement"
	// entry (the CBOR Record), the same on every party's chain.
	RecordHash string `json:"record_hash,omitempty"`
}

// VerifyResult is the outcome of a chain verification.
type VerifyResult struct {
	OK     bool    `json:"ok"`
	Length uint64  `json:"length"`
	BadSeq *uint64 `json:"bad_seq,omitempty"` // first bad entry when not OK
	Reason string  `json:"reason,omitempty"`
}

// Export formats.
const (
	FormatJSON = "json"
	FormatCBOR = "cbor"
)

// ChainReader is how commands read a chain. Local reads the bbolt file; the
// Client asks the running node, which holds the file open.
type ChainReader interface {
	// ChainStatus returns the chain's length, head and lock.
	ChainStatus(ctx context.Context) (ChainStatus, error)
	// ChainEntries returns up to limit entries from seq from on (limit 0 = up to MaxEntriesPerRequest).
	ChainEntries(ctx context.Context, from, limit uint64) ([]Entry, error)
	// ChainVerify checks every hash link and signature.
	ChainVerify(ctx context.Context) (VerifyResult, error)
	// ChainExport writes the whole chain in format (FormatJSON or FormatCBOR) to w.
	ChainExport(ctx context.Context, format string, w io.Writer) error
	// ChainRecords returns a page of entries newest first, agreement
	// records decoded and checked, optionally filtered by q.Search.
	ChainRecords(ctx context.Context, q RecordQuery) (RecordPage, error)
	// ChainBackup writes a consistent copy of the chain file (a bbolt
	// file, every write made before the call included) to w.
	ChainBackup(ctx context.Context, w io.Writer) error
}

// Peer is one connected libp2p peer.
type Peer struct {
	PeerID  string       `json:"peer_id"`
	AgentID sign.AgentID `json:"agent_id,omitempty"` // when known
	Addrs   []string     `json:"addrs,omitempty"`
}

// KnownAgent is an agent whose record the node has resolved or received.
type KnownAgent struct {
	AgentID sign.AgentID `json:"agent_id"`
	PeerID  string       `json:"peer_id"`
	Addrs   []string     `json:"addrs,omitempty"`
}

// Peers lists connected peers and known agents.
type Peers struct {
	Connected []Peer       `json:"connected"`
	Agents    []KnownAgent `json:"agents"`
}

// PingRequest asks the node to make one round trip to an agent.
type PingRequest struct {
	To        sign.AgentID `json:"to"`
	TimeoutMS int64        `json:"timeout_ms"` // 0 = DefaultTimeout
}

// PingResult is one round trip.
type PingResult struct {
	To     sign.AgentID `json:"to"`
	PeerID string       `json:"peer_id,omitempty"`
	RTTMS  float64      `json:"rtt_ms"`
}

// SendRequest asks the node to send a direct message and wait for the reply.
type SendRequest struct {
	To          sign.AgentID `json:"to"`
	ContentType string       `json:"content_type,omitempty"` // default "text/plain"
	Message     string       `json:"message"`
	TimeoutMS   int64        `json:"timeout_ms"` // 0 = DefaultTimeout
}

// SendResult is the receiver's reply to a direct message.
type SendResult struct {
	To         sign.AgentID `json:"to"`
	Accepted   bool         `json:"accepted"`
	Reason     string       `json:"reason,omitempty"`
	Reply      string       `json:"reply"`
	ReceivedAt int64        `json:"received_at"` // unix ms at the receiver
	RTTMS      float64      `json:"rtt_ms"`
}

// InboxMessage is one direct message the node received.
type InboxMessage struct {
	From        sign.AgentID `json:"from"`
	ReceivedAt  int64        `json:"received_at"` // unix ms
	ContentType string       `json:"content_type"`
	Message     string       `json:"message"`
	Accepted    bool         `json:"accepted"`
	Reason      string       `json:"reason,omitempty"`
}

// RecordQuery asks for chain entries newest first, optionally filtered.
type RecordQuery struct {
	// Before lists entries with seq below it; 0 starts at the head.
	Before uint64
	// Limit is the page size; 0 = DefaultRecordsPerPage, at most MaxRecordsPerPage.
	Limit int
	// Search, when not empty, keeps only agreement entries whose session ID,
	// a party's agent ID or terms (as JSON) contain it, case-insensitively.
	Search string
}

// RecordParty is one signer of a countersigned record.
type RecordParty struct {
	AgentID   sign.AgentID `json:"agent_id"`
	Scheme    string       `json:"scheme"`
	HeadSeq   uint64       `json:"head_seq"`  // the party's chain head it signed at
	Signature string       `json:"signature"` // hex of its statement signature
}

// RecordDetail is what a countersigned record says, decoded by the engine.
type RecordDetail struct {
	Session string         `json:"session"`
	Round   uint32         `json:"round"`
	Terms   map[string]any `json:"terms"`
	Parties []RecordParty  `json:"parties"`
	Witness sign.AgentID   `json:"witness,omitempty"`
}

// RecordView is one chain entry with, for an agreement, its decoded record
// and whether the entry and its record verify.
type RecordView struct {
	Entry
	Record *RecordDetail `json:"record,omitempty"`
	// Verified: the entry's signature, and for an agreement its record
	// (every signature, this chain's place in it), check out.
	Verified    bool   `json:"verified"`
	VerifyError string `json:"verify_error,omitempty"`
}

// RecordPage is one page of RecordViews, newest first.
type RecordPage struct {
	Records []RecordView `json:"records"`
	// NextBefore is the Before of the next page; 0 when no older entry is left.
	NextBefore uint64 `json:"next_before"`
	// Length is the chain's length when the page was read.
	Length uint64 `json:"length"`
	// Scanned counts the entries examined (a search stops after
	// MaxRecordsScanned and says where to go on in NextBefore).
	Scanned uint64 `json:"scanned"`
}
