// Package soak is the crash soak: it runs several `negotiate node` daemons
// as separate processes on 127.0.0.1, drives continuous random sessions
// through the CLI (2 to 4 parties, negotiated and signed offers, policy
// rejections and counters) while it SIGKILLs a random daemon at random
// moments and restarts it on the same home, and at the end checks the
// invariants on the real chain files: every chain verifies, every record is
// on all its parties' chains or none with identical bytes, no lock is left
// and every session ended.
//
// The package drives only the `negotiate` binary (its CLI and the control
// API on each home's socket) and reads the chains with package chain once
// the daemons are stopped; it never links the engine, so what it checks is
// what an operator would see. CheckHomes is the same final check on its
// own, for other harnesses (scripts/netns-test.sh uses it through
// scripts/chaincheck).
//
// It must never be pointed at homes that hold real agents: it kills their
// daemons.
package soak
