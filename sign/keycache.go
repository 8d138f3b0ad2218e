package sign

import "sync"

// maxParsedKeys bounds the parsed-key cache: far more peers than one node
// talks to at once, and at most a few MiB of post-quantum keys.
const maxParsedKeys = 1024

// keyCacheKey identifies an encoded public key of a scheme.
type keyCacheKey struct {
	scheme *Scheme
	raw    string
}

// keyCache keeps recently parsed public keys. Parsed keys are immutable,
// so one value may be shared by every goroutine.
type keyCache struct {
	mu sync.Mutex
	m  map[keyCacheKey]PublicKey
}

var parsedKeys = &keyCache{m: map[keyCacheKey]PublicKey{}}

func (c *keyCache) get(k keyCacheKey) (PublicKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.m[k]
	return p, ok
}

func (c *keyCache) put(k keyCacheKey, p PublicKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxParsedKeys {
		for old := range c.m { // drop an arbitrary key
			delete(c.m, old)
			break
		}
	}
	c.m[k] = p
}
