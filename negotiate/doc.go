// Package negotiate is what an application imports to negotiate and
// countersign transactions with other agents, peer to peer.
//
// StartNode runs one agent: its key, its source chain (package chain), a
// libp2p host that finds other agents by agent ID in a Kademlia DHT, and
// the engine that carries sessions from proposal to a countersigned
// record on every party's chain, or to none. The application then
//
//   - proposes: Node.Propose with the other parties' agent IDs and the
//     terms as a Go map or struct, and Pending.Wait for the Outcome;
//   - decides what others propose: a Policy in NodeConfig (PolicyFunc,
//     AcceptAll, or a rule file from package negotiate/policy), or by
//     hand with Node.Accept, Reject, Counter and Abort on the sessions
//     NodeConfig.OnEvent or Node.Sessions report;
//   - checks before signing: NodeConfig.SignCheck sees the exact agreement
//     this agent is about to sign and may refuse it, and NodeConfig.HeadCheck
//     the chain heads the other parties signed it at;
//   - keeps receipts: a committed Outcome carries the countersigned record,
//     which VerifyReceipt checks with no network, and VerifyChain checks a
//     counterpart's whole chain.
//
// What is durable when: a node signs only after its chain lock and signed
// vote are on disk, and appends the record and releases the lock in one
// transaction. Once it signed, only a commit or an abort certificate ends
// the session, never a timer; a node restarted on the same chain resumes
// every open session. Node.Close is a clean stop at any moment.
//
// The parts live in their own packages for those who need them:
// negotiate/engine (the pure state machine: no clock, network or disk),
// negotiate/transport (the libp2p host, DHT agent records, direct
// messages, per-peer limits; NodeConfig.Host.Libp2p hands it a host the
// application already runs) and negotiate/policy (declarative rules).
// docs/embedding.md is the guide.
//
// This package must never block the engine on I/O, never send a message
// before the write it depends on is durable, and never panic on input.
package negotiate
