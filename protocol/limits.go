package protocol

import "time"

// Protocol identifiers. The version is part of every ID: a change to the
// wire format gets new IDs and both versions can be served side by side.
const (
	// ProtocolVersion is the version of the wire format in this package.
	ProtocolVersion = "1.1.0"
	// ProtocolSession is the libp2p protocol ID of negotiation session streams.
	ProtocolSession = "/negotiate/" + ProtocolVersion
	// ProtocolMsg is the libp2p protocol ID of direct (off-the-record) messages.
	ProtocolMsg = "/negotiate/msg/" + ProtocolVersion
	// DHTPrefix is the kad-dht protocol prefix, so negotiate agents form
	// their own DHT instead of joining the public IPFS one.
	DHTPrefix = "/negotiate"
)

// Size limits.
const (
	// MaxFrameBytes is the hard limit of one frame: a message is a
	// transaction proposal, not a file transfer, and a peer must not make
	// us buffer more than this per stream.
	MaxFrameBytes = 1 << 20
	// maxEnvelopeOverhead bounds everything in a frame but the body: the
	// largest key (ML-DSA-65, 1952 bytes) and signature (3309 bytes) plus
	// IDs, nonce and CBOR headers fit in 16 KiB with room to spare, and
	// the agent records of Message.Intro take at most MaxIntroBytes.
	maxEnvelopeOverhead = 16<<10 + MaxIntroBytes
	// MaxIntroRecords bounds the agent records one message carries: every
	// party of a session and its witness.
	MaxIntroRecords = MaxParties + 1
	// MaxIntroBytes bounds their total size: eight post-quantum records
	// (about 6 KiB each) or every party's Ed25519 record (about 400 bytes).
	// A sender leaves out what does not fit; the recipient looks those
	// agents up.
	MaxIntroBytes = 48 << 10
	// MaxBodyBytes is the largest encoded body [Seal] accepts, so that any
	// sealed message fits in one frame whatever the sender's scheme.
	MaxBodyBytes = MaxFrameBytes - maxEnvelopeOverhead
	// NonceSize is the length of every message nonce: 128 random bits
	// never repeat by chance.
	NonceSize = 16
	// SessionIDLen is the length of a session ID: 16 random bytes as lower
	// hex.
	SessionIDLen = 32
)

// CBOR decoding limits, applied to everything decoded from the wire.
const (
	// MaxNestedLevels bounds CBOR nesting: terms are business documents and
	// deeper nesting only costs decoder stack.
	MaxNestedLevels = 16
	// MaxArrayElements bounds one CBOR array (parties, signatures, terms
	// line items); a longer one is an attack, not a deal.
	MaxArrayElements = 4096
	// MaxMapPairs bounds one CBOR map; no body or terms map needs more keys.
	MaxMapPairs = 1024
)

// Lifetime limits.
const (
	// MaxMessageLifetime is how far in the future a message may expire: it
	// bounds how long the replay guard must remember each nonce.
	MaxMessageLifetime = 10 * time.Minute
	// MaxClockSkew is the tolerance for a sender whose clock runs ahead of
	// ours when checking an expiry against MaxMessageLifetime.
	MaxClockSkew = 1 * time.Minute
)

// maxExpiryAheadMillis is the furthest an accepted expiry may lie beyond now.
const maxExpiryAheadMillis = int64((MaxMessageLifetime + MaxClockSkew) / time.Millisecond)
