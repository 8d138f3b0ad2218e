package chain

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkApply measures one durable append (one bbolt transaction and
// its fsyncs) including the signature check.
func BenchmarkApply(b *testing.B) {
	key := testKey(b, "bench")
	c, _ := newTestChain(b, key, 0)
	payload := map[string]any{"terms": "100 widgets at 3.50", "parties": []string{"a", "b"}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e, err := c.NewEntry(key, KindNote, payload, int64(i))
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Apply(Write{Session: "s", Append: e, Checkpoint: []byte("cp")}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyBatchParallel measures durable checkpoint writes of many
// concurrent sessions through ApplyBatch (group commit), the engine's load
// when many sessions are in flight.
func BenchmarkApplyBatchParallel(b *testing.B) {
	for _, writers := range []int{8, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			c, _ := newTestChain(b, testKey(b, "bench"), 0)
			var id atomic.Int64
			cp := make([]byte, 256)
			b.SetParallelism(writers)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				session := fmt.Sprintf("session-%d", id.Add(1))
				for pb.Next() {
					if err := c.ApplyBatch(Write{Session: session, Checkpoint: cp}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkVerify measures Verify per entry on a chain of 300 notes.
func BenchmarkVerify(b *testing.B) {
	const entries = 300
	key := testKey(b, "bench")
	c, _ := newTestChain(b, key, 0)
	for i := 0; i < entries; i++ {
		e, err := c.NewEntry(key, KindNote, map[string]any{"i": i, "text": "some note text"}, int64(i))
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Apply(Write{Append: e}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if verr := c.Verify(VerifyOptions{}); verr != nil {
			b.Fatal(verr)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(entries+1), "ns/entry")
}
