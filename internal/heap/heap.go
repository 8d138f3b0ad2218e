// Package heap measures the Go heap for benchmarks.
package heap

import (
	"runtime"
	"runtime/metrics"
)

// Live is the heap in use after two forced garbage collections: what the
// program still holds, without garbage waiting to be collected. It reads
// the heap the last collection marked live (runtime/metrics
// "/gc/heap/live:bytes"): HeapAlloc read after runtime.GC also counts
// what other goroutines allocated since the collection ended, which made
// differences of it noisy, even negative.
func Live() uint64 {
	runtime.GC()
	runtime.GC()
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64() // a uint64 metric since Go 1.21
}
