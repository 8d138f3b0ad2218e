package protocol

import (
	"errors"

	"github.com/negotiate-dev/negotiate/sign"
)

// Errors returned by this package; test with errors.Is. Every returned
// error wraps exactly one of them and says in its text what was wrong.
var (
	// ErrTooLarge: a frame, body or CBOR item exceeds a limit of this package.
	ErrTooLarge = errors.New("protocol: too large")
	// ErrMalformed: the bytes are not a well-formed message of this protocol.
	ErrMalformed = errors.New("protocol: malformed message")
	// ErrUnknownType: the message type is not one this version knows.
	ErrUnknownType = errors.New("protocol: unknown message type")
	// ErrBadSignature: the signature does not verify, or the sender ID does
	// not belong to the included key. It wraps sign.ErrBadSignature.
	ErrBadSignature error = &wrappedError{msg: "protocol: bad signature", inner: sign.ErrBadSignature}
	// ErrExpired: the message has expired, or expires further in the future
	// than MaxMessageLifetime allows.
	ErrExpired = errors.New("protocol: message expired")
	// ErrTrailing: bytes follow the CBOR item of a frame or payload.
	ErrTrailing = errors.New("protocol: trailing bytes")
	// ErrWrongRecipient: the message names another agent as its recipient.
	ErrWrongRecipient = errors.New("protocol: message is for another agent")
	// ErrReplay: a message with this sender and nonce was already accepted.
	ErrReplay = errors.New("protocol: replayed message")
	// ErrReplayFull: the replay guard is at capacity (overall or for this
	// sender) and cannot remember another nonce until some expire.
	ErrReplayFull = errors.New("protocol: too many messages in flight")
)

// wrappedError is a sentinel that itself wraps another sentinel.
type wrappedError struct {
	msg   string
	inner error
}

func (e *wrappedError) Error() string { return e.msg }
func (e *wrappedError) Unwrap() error { return e.inner }
