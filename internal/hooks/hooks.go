// Package hooks holds the test-only doors of a negotiate.Node: crash
// points, message rewriting and dropping, delayed injection and step
// tracing. Fault-injection tests, the scenario runner and the bench reach
// them here; the embedder's API (package negotiate) does not show them,
// the way etcd keeps its failpoints out of raft's API.
//
// A Hooks value is handed to negotiate.StartNode through the context
// (With); one value serves one node. It must never be used in production:
// a crash hook stops a node on purpose.
package hooks

import (
	"context"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/sign"
)

// Crash points: where fault-injection tests kill a node (Hooks.Crash).
const (
	CrashNegotiating    = "negotiating"       // a proposal was sent or received
	CrashAfterVote      = "after-vote"        // lock and signed vote are durable; nothing sent yet
	CrashAfterReadySent = "after-ready-sent"  // this party's signature was delivered to a peer
	CrashAfterCert      = "after-certificate" // the commit certificate is here; the append is not done
	CrashAfterAppend    = "after-append"      // the record is appended and the lock released
	// CrashAfterAccept: a participant's accept was queued, or the initiator
	// took one in. In-process fault injection only (the scenario runner);
	// not in CrashPoints, which the process-level kill tests cover.
	CrashAfterAccept = "after-accept"
)

// CrashPoints lists the crash points the process-level kill tests cover.
var CrashPoints = []string{CrashNegotiating, CrashAfterVote, CrashAfterReadySent, CrashAfterCert, CrashAfterAppend}

// TracePoint names a moment in a node's handling of a session, reported
// to Hooks.Trace.
type TracePoint string

// Trace points, in the order one step passes them.
const (
	// TraceReceived: a session frame reached the node, read, opened
	// (envelope signature verified) and checked by the host.
	TraceReceived TracePoint = "received"
	// TraceStep: an input enters the engine; TraceStepped: its output is
	// back (statements signed or verified, checkpoints encoded).
	TraceStep    TracePoint = "step"
	TraceStepped TracePoint = "stepped"
	// TraceWrite / TraceWritten: one durable chain write starts / is
	// durable.
	TraceWrite   TracePoint = "write"
	TraceWritten TracePoint = "written"
	// TraceQueued: the step's messages are sealed and queued for their
	// peers (after every write of the step).
	TraceQueued TracePoint = "queued"
	// TraceSent: a frame was written to its peer's stream.
	TraceSent TracePoint = "sent"
)

// TraceEvent is one traced moment of a session at one node.
type TraceEvent struct {
	At      time.Time
	Session string
	Point   TracePoint
	// Type is the message type for TraceReceived and TraceSent.
	Type string
}

// Hooks are a node's test-only doors. Every nil field is a door left shut.
type Hooks struct {
	// Crash, when set, is called at the named crash points (see
	// CrashPoints and CrashAfterAccept) with the session concerned;
	// process-level tests make it kill the process there. Returning true
	// crashes the node in place instead: from that instant it runs no
	// step, writes nothing, queues nothing and emits no event (frames
	// already queued still leave, as bytes already written to a socket
	// would); its calls fail with negotiate's ErrNodeStopped. The caller
	// then closes the node and may start a new one on the same chain
	// file, which resumes the open sessions from their checkpoints. It may
	// be called with the node's lock held: it must not call the node.
	Crash func(point, session string) bool
	// Outbound, when set, is given every message the engine sends, before
	// it is sealed, and returns what to send instead: nil drops it, more
	// than one duplicates or rewrites it. An Outgoing with Frame set is
	// sent as that frame.
	Outbound func(o engine.Outgoing) []engine.Outgoing
	// Inbound, when set, is asked about every session message that passed
	// the host's checks (signature, recipient, expiry, replay) before the
	// engine sees it; false drops it.
	Inbound func(from sign.AgentID, typ string) bool
	// Trace, when set, is called at each TracePoint of a session's
	// handling (`negotiate bench --trace` builds a session's timeline from
	// it). It may be called with the node's lock held and from several
	// goroutines: it must be quick and must not call the node.
	Trace func(TraceEvent)

	// Inject is filled in by the node that starts with these hooks: it
	// seals o (unless it carries a Frame) and queues it for its recipient,
	// bypassing Outbound, to deliver a delayed message or replay a
	// captured frame. It fails after the node stopped.
	Inject func(o engine.Outgoing) error
}

type ctxKey struct{}

// With returns a context that hands h to the negotiate.StartNode it is
// passed to.
func With(ctx context.Context, h *Hooks) context.Context {
	return context.WithValue(ctx, ctxKey{}, h)
}

// From returns the hooks With put in ctx, or nil.
func From(ctx context.Context) *Hooks {
	h, _ := ctx.Value(ctxKey{}).(*Hooks)
	return h
}
