package sign

import (
	"fmt"
	"testing"
)

// Parsing a key twice (the second time from the cache) gives the same key
// and agent ID; distinct keys never share a cache entry, even when the
// cache overflows.
func TestParsePublicKeyCache(t *testing.T) {
	for _, name := range SchemeNames() {
		t.Run(name, func(t *testing.T) {
			s, err := SchemeByName(name)
			if err != nil {
				t.Fatal(err)
			}
			var keys []*PrivateKey
			for i := 0; i < 3; i++ {
				k, err := s.DeriveKey([]byte(fmt.Sprintf("cache-%d", i)))
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, k)
			}
			for round := 0; round < 2; round++ {
				for i, k := range keys {
					raw := k.Public().Bytes()
					p, err := ParsePublicKey(name, raw)
					if err != nil {
						t.Fatal(err)
					}
					if !p.Equal(k.Public()) || p.AgentID() != k.AgentID() {
						t.Fatalf("round %d key %d: parsed key or ID differs", round, i)
					}
					sig := k.Sign("test", []byte("msg"))
					if err := p.Verify("test", []byte("msg"), sig); err != nil {
						t.Fatalf("round %d key %d: %v", round, i, err)
					}
					raw[0] ^= 1 // the caller's slice is not the cached key
					if q, err := ParsePublicKey(name, k.Public().Bytes()); err != nil || !q.Equal(k.Public()) {
						t.Fatalf("cached key changed with the caller's slice: %v", err)
					}
				}
				if round == 0 { // overflow the cache between the rounds
					for i := 0; i < maxParsedKeys+1; i++ {
						parsedKeys.put(keyCacheKey{scheme: s, raw: fmt.Sprint("filler-", i)}, PublicKey{})
					}
				}
			}
		})
	}
}
