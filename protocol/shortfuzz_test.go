package protocol

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// shortFuzzMutations is how many mutations of each seed TestShortFuzz tries:
// a short, deterministic fuzzing pass that runs in every `go test` (and so
// in CI); `go test -fuzz=FuzzOpen ./protocol` explores further.
const shortFuzzMutations = 2000

// mutate applies one to four random edits: bit flips, byte sets, cuts,
// insertions and duplicated spans.
func mutate(rng *rand.Rand, seed []byte) []byte {
	b := bytes.Clone(seed)
	for n := 1 + rng.IntN(4); n > 0; n-- {
		switch op := rng.IntN(5); {
		case op == 0 && len(b) > 0:
			i := rng.IntN(len(b))
			b[i] ^= 1 << rng.IntN(8)
		case op == 1 && len(b) > 0:
			b[rng.IntN(len(b))] = byte(rng.IntN(256))
		case op == 2 && len(b) > 0:
			b = b[:rng.IntN(len(b))]
		case op == 3:
			i := rng.IntN(len(b) + 1)
			b = append(b[:i], append([]byte{byte(rng.IntN(256))}, b[i:]...)...)
		case len(b) > 1:
			i := rng.IntN(len(b) - 1)
			j := i + 1 + rng.IntN(len(b)-i-1)
			b = append(b[:j], append(bytes.Clone(b[i:j]), b[j:]...)...)
		}
	}
	return b
}

func TestShortFuzz(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	targets := []struct {
		name  string
		seeds [][]byte
		check func(*testing.T, []byte)
	}{
		{"Open", openSeeds(t), checkOpen},
		{"CheckTerms", termsSeeds, checkTerms},
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			for _, seed := range tg.seeds {
				for i := 0; i < shortFuzzMutations; i++ {
					tg.check(t, mutate(rng, seed))
				}
			}
		})
	}
}
