// Package negotiate is the negotiation engine and the node that runs it.
//
// The engine (core*.go) is a pure state machine: Step takes an input (a
// message received, a timer fired, an application decision, a write made
// durable) and returns what the caller must do, persist before send. It
// never touches a clock, the network or the disk, so the same engine runs
// under the real driver and under the deterministic simulator.
//
// The transport layer (host.go, discovery.go, direct.go, inbox.go,
// limits.go) is one libp2p host per node: TCP and QUIC, Noise and TLS,
// yamux, and the libp2p resource manager with explicit limits. Agents find
// each other by agent ID through a Kademlia DHT of their own (protocol
// prefix /negotiate) in which every node publishes its agent record
// (/negotiate-agent/<agent-id>, signed by the agent key, newest sequence
// number wins), bootstrapping from multiaddrs and, on a LAN, mDNS. The
// libp2p identity (peer key) is a separate transport key; the agent
// record binds the two, and a frame is accepted only from the peer its
// sender's record names.
//
// Session frames travel one-way on /negotiate/1.0.0 (Host.Send,
// Host.SetSessionHandler); direct off-the-record messages are request and
// answer on /negotiate/msg/1.0.0 (Host.Request, Host.SetDirectHandler,
// Host.Inbox). Every inbound frame is size-limited, verified, checked
// against replay and rate-limited per peer before anything else sees it.
//
// This package must never trust a byte from the network before it is
// verified, never block the engine on I/O, and never panic on input.
package negotiate
