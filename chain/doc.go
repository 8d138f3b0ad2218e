// Package chain is an agent's source chain: an append-only, hash-linked,
// signed list of entries in one bbolt file per agent, with the chain lock
// and the session checkpoints of the countersigning engine in the same file.
//
// Entry 0 is the genesis entry naming the agent and its public key; every
// other entry links to the previous one by hash and is signed by that key
// (domain "chain-entry") over the SHA-256 of its core deterministic CBOR
// without the signature. A Write — lock, append, release, checkpoint — is
// atomic and durable before Apply returns: after a crash it is all there or
// not at all. Verify and VerifyEntries find the first entry that is changed,
// missing, reordered, duplicated or forged.
//
// Durability comes from a write-ahead journal next to the bbolt file
// (path-journal-0 and path-journal-1): a Write is one checksummed record,
// and concurrent Writes share one journal write and one fdatasync (group
// commit). The records are applied to the bbolt file in the background,
// thousands per synced transaction, and reads see them at once through an
// in-memory overlay. Opening a file replays the records it does not hold
// yet (a read-only open only reads them); Close applies them all and
// removes the journal, so a closed chain is its one file.
//
// The package must never:
//   - write without fsync (no NoSync), or return from Apply before the write's
//     journal record is synced;
//   - change anything when a Write fails or is refused;
//   - release a lock on its own (no timeout): only a Write with ReleaseLock
//     from the holding session frees it;
//   - append an entry that does not extend the head or is not signed by the chain's key;
//   - panic on anything read from a file or given by a caller;
//   - import any package of this module except sign.
package chain
