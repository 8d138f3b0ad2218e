//go:build unix

package bench

import (
	"fmt"
	"syscall"
)

// ensureFDs raises this process's open-file limit to what nodes nodes
// need, or says what to do when it cannot.
func ensureFDs(nodes int) error { return ensureFDsFor(nodes, connsPerNode) }

// ensureFDsFor is ensureFDs for nodes keeping up to conns connections each.
func ensureFDsFor(nodes, conns int) error {
	need := neededFDsFor(nodes, conns)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil // cannot tell: let the run try
	}
	if lim.Cur >= need {
		return nil
	}
	// Within the hard limit anyone may raise the soft one; above it only a
	// privileged process may raise both.
	want := syscall.Rlimit{Cur: need, Max: max(lim.Max, need)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return nil
	}
	return fmt.Errorf("%w: %d nodes need about %d open files, but this process may open %d (hard limit %d): raise it (`ulimit -n %d`, as root or in limits.conf) or use fewer --pairs or --parties",
		ErrBadOptions, nodes, need, lim.Cur, lim.Max, need)
}
