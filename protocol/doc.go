// Package protocol defines what travels between negotiate agents: the
// signed wire message, its CBOR encoding, the length-prefixed frames that
// carry it, the size and lifetime limits, the libp2p protocol IDs and a
// replay guard.
//
// A wire message is a CBOR map (core deterministic encoding, string keys):
// a [Message] with the sender's agent ID, scheme and public key, the
// recipient, a 16-byte nonce, an expiry and a type-specific body. [Seal]
// signs the exact payload bytes with the sender's agent key under the
// domain "msg/<type>" and wraps payload and signature in a [Signed] frame
// body. [Open] checks everything a peer could get wrong or forge, in this
// order, and returns a typed error for the first failure: size, CBOR
// well-formedness and limits (no duplicate map keys, no indefinite
// lengths, no tags, no trailing bytes, canonical encoding), the type,
// the nonce, session and recipient formats, the expiry window, that the
// sender ID belongs to the included key, the signature over the exact
// bytes received, and finally the body decoded into its registered struct
// and its Validate method.
//
// The package does no I/O beyond an [io.Reader] or [io.Writer] handed to
// [ReadFrame] and [WriteFrame], keeps no clock (time is always a
// parameter), and must never import chain's callers (negotiate and above)
// nor be imported by chain. Nothing received from the network may make it
// panic or allocate more than the limits below allow.
package protocol
