// Package scenarios runs scripted multi-party negotiation scenarios.
//
// A scenario is a YAML file (see README.md beside this file) naming the
// parties, their policies, the network, the steps to play, the faults to
// inject and what to expect. It runs two ways:
//
//   - RunSim: a deterministic simulation. The real engine (negotiate/engine) of every
//     party runs over a simulated network (latency, jitter, loss, partitions,
//     duplicates, reorders), a crashable in-memory store with the chain.Write
//     semantics (MemStore) and a virtual clock. One seed decides everything,
//     so a run is reproducible from its seed alone.
//   - RunReal: real nodes on 127.0.0.1 with real bbolt chains in a temp dir.
//
// Explore runs a scenario under many seeds with random faults and checks the
// invariants of DESIGN §4 after every run (atomicity, agreement, no stuck
// lock, consent, integrity); a failure names the seed and the command that
// replays it.
//
// The package never edits the engine: faults are injected around it (the
// network, the store, crashes). The Bug option of SimOptions and
// ExploreOptions deliberately breaks the store's durability to prove that
// the invariant checks can fail; it exists for tests only.
package scenarios
