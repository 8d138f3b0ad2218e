// Package engine is the pure countersigning state machine of one agent.
//
// Engine.Step takes an input (a message received, a timer fired, an
// application decision, a session started, a failed delivery) and returns
// an Output the caller carries out in order: messages that may leave at
// once, durable writes (one chain transaction each), then the messages
// that depend on them, timers and events. The engine never touches a
// clock, the network or the disk (time is an input; a dropped session's
// checkpoint is read through a function the caller supplies), so the same
// engine runs under the real node (package negotiate) and under the
// deterministic simulator (package scenarios).
//
// It holds sessions, signed offers, witness decisions, commit and abort
// certificates, records and checkpoints. It must never sign terms its
// agent did not accept in that exact round, never unlock a chain it
// signed on but by a certificate, and never panic on input.
package engine
