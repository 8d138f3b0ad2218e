package sign

import (
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"strings"

	circl "github.com/cloudflare/circl/sign"
)

// ErrBadSignature is returned when a signature does not verify.
var ErrBadSignature = errors.New("sign: bad signature")

// Signer signs messages for a domain. *PrivateKey implements it.
type Signer interface {
	// Sign signs msg for the given domain (e.g. "propose", "record").
	Sign(domain string, msg []byte) []byte
	// Public returns the signer's public key.
	Public() PublicKey
}

// PrivateKey is an agent's secret key.
type PrivateKey struct {
	scheme *Scheme
	priv   circl.PrivateKey
	pub    PublicKey
}

// PublicKey is an agent's public key together with its scheme.
type PublicKey struct {
	scheme *Scheme
	raw    []byte
	key    circl.PublicKey
	id     AgentID // set when parsed through the key cache; else derived on demand
}

func newPrivateKey(s *Scheme, pub circl.PublicKey, priv circl.PrivateKey) (*PrivateKey, error) {
	raw, err := pub.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("sign: marshal %s public key: %w", s.name, err)
	}
	return &PrivateKey{scheme: s, priv: priv, pub: PublicKey{scheme: s, raw: raw, key: pub}}, nil
}

// Scheme is the key's signature scheme.
func (k *PrivateKey) Scheme() *Scheme { return k.scheme }

// Public returns the public half.
func (k *PrivateKey) Public() PublicKey { return k.pub }

// AgentID is the agent ID of this key.
func (k *PrivateKey) AgentID() AgentID { return k.pub.AgentID() }

// Sign signs msg under the given domain. The same msg signed for another
// domain gives a signature that does not verify for this one.
func (k *PrivateKey) Sign(domain string, msg []byte) []byte {
	return k.scheme.impl.Sign(k.priv, domainMessage(domain, msg), nil)
}

// ParsePublicKey decodes a public key of the named scheme. Recently
// parsed keys come from a small cache: every message a peer sends carries
// its key, and decoding a post-quantum key (ML-DSA, the hybrid) costs more
// than verifying an Ed25519 signature.
func ParsePublicKey(scheme string, raw []byte) (PublicKey, error) {
	s, err := SchemeByName(scheme)
	if err != nil {
		return PublicKey{}, err
	}
	if len(raw) != s.impl.PublicKeySize() {
		return PublicKey{}, fmt.Errorf("sign: %s public key is %d bytes, want %d", s.name, len(raw), s.impl.PublicKeySize())
	}
	ck := keyCacheKey{scheme: s, raw: string(raw)}
	if p, ok := parsedKeys.get(ck); ok {
		return p, nil
	}
	key, err := s.impl.UnmarshalBinaryPublicKey(raw)
	if err != nil {
		return PublicKey{}, fmt.Errorf("sign: parse %s public key: %w", s.name, err)
	}
	p := PublicKey{scheme: s, raw: append([]byte(nil), raw...), key: key}
	p.id = makeAgentID(s, p.raw)
	parsedKeys.put(ck, p)
	return p, nil
}

// IsZero reports whether p is the zero value (no key).
func (p PublicKey) IsZero() bool { return p.scheme == nil }

// Scheme is the key's scheme; nil for the zero PublicKey.
func (p PublicKey) Scheme() *Scheme { return p.scheme }

// SchemeName is the name of the key's scheme.
func (p PublicKey) SchemeName() string {
	if p.scheme == nil {
		return ""
	}
	return p.scheme.name
}

// Bytes returns the encoded public key (a copy).
func (p PublicKey) Bytes() []byte { return append([]byte(nil), p.raw...) }

// Equal reports whether two public keys are the same key of the same scheme.
func (p PublicKey) Equal(o PublicKey) bool {
	return p.scheme == o.scheme && string(p.raw) == string(o.raw)
}

// AgentID derives the agent ID of this key.
func (p PublicKey) AgentID() AgentID {
	if p.scheme == nil {
		return ""
	}
	if p.id != "" {
		return p.id
	}
	return makeAgentID(p.scheme, p.raw)
}

// Verify checks sig over msg for the given domain. It returns an error
// wrapping ErrBadSignature when the signature does not verify.
func (p PublicKey) Verify(domain string, msg, sig []byte) error {
	if p.scheme == nil {
		return fmt.Errorf("sign: verify %s: no public key", domain)
	}
	if strings.IndexByte(domain, 0) >= 0 {
		return fmt.Errorf("%w: domain %q contains a NUL byte", ErrBadSignature, domain)
	}
	if len(sig) != p.scheme.impl.SignatureSize() {
		return fmt.Errorf("%w: %s signature for %q is %d bytes, want %d", ErrBadSignature, p.scheme.name, domain, len(sig), p.scheme.impl.SignatureSize())
	}
	if !p.scheme.impl.Verify(p.key, domainMessage(domain, msg), sig, nil) {
		return fmt.Errorf("%w: %s signature for %q by %s", ErrBadSignature, p.scheme.name, domain, p.AgentID().Short())
	}
	return nil
}

// domainMessage builds "negotiate/v1/<domain>" 0x00 msg. The domain never
// contains 0x00, so two (domain, msg) pairs never give the same bytes.
func domainMessage(domain string, msg []byte) []byte {
	for i := 0; i < len(domain); i++ {
		if domain[i] == 0 {
			panic("sign: domain contains a NUL byte") // programming error, never input
		}
	}
	out := make([]byte, 0, len("negotiate/v1/")+len(domain)+1+len(msg))
	out = append(out, "negotiate/v1/"...)
	out = append(out, domain...)
	out = append(out, 0)
	return append(out, msg...)
}

func expandSeed(seed []byte, n int) []byte {
	out := make([]byte, 0, n)
	counter := byte(0)
	for len(out) < n {
		h := sha512.Sum512(append([]byte{counter}, seed...))
		out = append(out, h[:]...)
		counter++
	}
	return out[:n]
}

// Hash is the hash used across the project (SHA-256).
func Hash(b []byte) [32]byte { return sha256.Sum256(b) }
