// Package heap measures the Go heap for benchmarks.
package heap

import "runtime"

// Live is the heap in use after two forced garbage collections: what the
// program still holds, without garbage waiting to be collected.
func Live() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
