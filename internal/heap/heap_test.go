package heap

import "testing"

var sink [][]byte

// TestLiveCountsWhatIsHeld checks that Live grows by what the program
// holds and falls back when it lets go.
func TestLiveCountsWhatIsHeld(t *testing.T) {
	before := Live()
	for i := 0; i < 64; i++ {
		sink = append(sink, make([]byte, 1<<16))
	}
	held := Live()
	sink = nil
	after := Live()
	if held < before+3<<20 {
		t.Fatalf("holding 4 MiB raised the live heap from %d to %d", before, held)
	}
	if after > held-3<<20 {
		t.Fatalf("letting 4 MiB go left the live heap at %d (held %d)", after, held)
	}
}
