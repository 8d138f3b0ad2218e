// Package transport is a node's libp2p side: one host with TCP and QUIC,
// Noise and TLS, yamux and the libp2p resource manager with explicit
// limits, or a host the application already runs (Config.Libp2p).
//
// Agents find each other by agent ID through a Kademlia DHT of their own
// (protocol prefix /negotiate) in which every node publishes its agent
// record (/negotiate-agent/<agent-id>, signed by the agent key, newest
// sequence number wins), bootstrapping from multiaddrs and, on a LAN,
// mDNS. The libp2p identity (peer key) is a separate transport key; the
// agent record binds the two, and a frame is accepted only from the peer
// its sender's record names.
//
// Session frames travel one-way on /negotiate/1.1.0 (Host.Send,
// Host.SetSessionHandler); direct off-the-record messages are request and
// answer on /negotiate/msg/1.1.0 (Host.Request, Host.SetDirectHandler,
// Host.Inbox). Every inbound frame is size-limited, verified, checked
// against replay and rate-limited per peer before anything else sees it.
//
// This package must never trust a byte from the network before it is
// verified, never hold engine logic in a stream handler, and never panic
// on input.
package transport
