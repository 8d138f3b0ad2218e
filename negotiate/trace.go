package negotiate

import "time"

// TracePoint names a moment in a node's handling of a session, reported
// to NodeConfig.Trace.
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

// trace reports a moment to NodeConfig.Trace, if set.
func (n *Node) trace(p TracePoint, session, typ string) {
	if n.cfg.Trace != nil && session != "" {
		n.cfg.Trace(TraceEvent{At: time.Now(), Session: session, Point: p, Type: typ})
	}
}
