// Package bench measures the negotiate engine end to end: real nodes on
// 127.0.0.1 (libp2p, DHT bootstrap, mDNS off) with durable bbolt chains in
// a temporary directory, all accepting every proposal, running countersigned
// sessions and timing them by phase. Every run also measures the floor unit
// on the same machine — one durable chain write, one open-stream round trip,
// one signature and one verification — so latencies are reported as ratios
// that mean something across machines.
//
// After a run every chain is verified and checked for a lock left behind.
// IdleHeap measures the heap held by sessions waiting for a decision,
// through the pure core.
//
// The package must never:
//   - listen on anything but 127.0.0.1 or turn on mDNS;
//   - write outside the directory it was given or the temporary one it made;
//   - report a figure it did not measure in the same run.
package bench
