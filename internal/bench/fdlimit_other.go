//go:build !unix

package bench

// ensureFDs has nothing to check where there are no rlimits.
func ensureFDs(nodes int) error { return nil }

// ensureFDsFor has nothing to check where there are no rlimits.
func ensureFDsFor(nodes, conns int) error { return nil }
