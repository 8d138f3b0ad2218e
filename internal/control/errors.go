package control

import (
	"context"
	"errors"
	"fmt"
)

// Kind classifies a control API error on the wire. A client turns it back
// into the matching sentinel error.
type Kind string

// Error kinds on the wire.
const (
	KindInternal    Kind = "internal"    // anything else (exit 1)
	KindBadRequest  Kind = "bad_request" // the request was malformed (exit 2)
	KindNotFound    Kind = "not_found"   // no such route or object (exit 1)
	KindRefused     Kind = "refused"     // the peer or the node said no (exit 3)
	KindTimeout     Kind = "timeout"     // no answer in time (exit 4)
	KindUnreachable Kind = "unreachable" // the peer could not be found or dialled (exit 4)
	KindUnavailable Kind = "unavailable" // the node cannot serve this now (exit 1)
	KindConflict    Kind = "conflict"    // the node refused in this session's state: not your turn, busy chain, unsafe abort (exit 1)
)

// Sentinel errors; an *Error from the Client matches the one of its Kind.
var (
	// ErrNoNode means no node answers on the home's socket.
	ErrNoNode = errors.New("control: no node running")
	// ErrBadRequest means the node rejected the request as malformed.
	ErrBadRequest = errors.New("control: bad request")
	// ErrNotFound means the route or the object asked for does not exist.
	ErrNotFound = errors.New("control: not found")
	// ErrRefused means the peer or the node refused.
	ErrRefused = errors.New("control: refused")
	// ErrTimeout means the operation did not finish in time.
	ErrTimeout = errors.New("control: timed out")
	// ErrUnreachable means the peer could not be resolved or dialled.
	ErrUnreachable = errors.New("control: unreachable")
	// ErrUnavailable means the node cannot serve this request now.
	ErrUnavailable = errors.New("control: unavailable")
	// ErrConflict means the node refused the request in the current state
	// (a decision out of turn, a busy chain, an abort after signing).
	ErrConflict = errors.New("control: refused in this state")
	// ErrNodeRunning means another node already serves the socket.
	ErrNodeRunning = errors.New("control: a node is already running")
)

var kindErrors = map[Kind]error{
	KindBadRequest:  ErrBadRequest,
	KindNotFound:    ErrNotFound,
	KindRefused:     ErrRefused,
	KindTimeout:     ErrTimeout,
	KindUnreachable: ErrUnreachable,
	KindUnavailable: ErrUnavailable,
	KindConflict:    ErrConflict,
}

// Error is an error returned by the node over the control API.
type Error struct {
	Kind    Kind   `json:"kind"`
	Message string `json:"error"`
	Status  int    `json:"-"` // HTTP status
}

// Error returns the node's message.
func (e *Error) Error() string { return e.Message }

// Is matches the sentinel error of e's Kind.
func (e *Error) Is(target error) bool {
	s, ok := kindErrors[e.Kind]
	return ok && s == target
}

// Errorf builds an error of the given kind for a handler to return; the
// client sees exactly this kind.
func Errorf(kind Kind, format string, args ...any) error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// kindOf classifies err: an *Error keeps its kind, sentinels map to theirs,
// context deadlines are timeouts, then classify (if set) decides.
func kindOf(err error, classify func(error) Kind) Kind {
	var ce *Error
	if errors.As(err, &ce) && ce.Kind != "" {
		return ce.Kind
	}
	for k, s := range kindErrors {
		if errors.Is(err, s) {
			return k
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return KindTimeout
	}
	if classify != nil {
		if k := classify(err); k != "" {
			return k
		}
	}
	return KindInternal
}

func statusOf(k Kind) int {
	switch k {
	case KindBadRequest:
		return 400
	case KindNotFound:
		return 404
	case KindRefused, KindConflict:
		return 409
	case KindTimeout:
		return 504
	case KindUnreachable:
		return 502
	case KindUnavailable:
		return 503
	default:
		return 500
	}
}
