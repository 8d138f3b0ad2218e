package sign

import (
	"fmt"
	"sort"
	"strings"

	circl "github.com/cloudflare/circl/sign"
	"github.com/cloudflare/circl/sign/schemes"
)

// DefaultScheme is the scheme used when none is named.
const DefaultScheme = "ed25519"

// Scheme is one signature algorithm, chosen by its name.
type Scheme struct {
	name string // our lower-case name, e.g. "ed25519"
	code byte   // stable one-byte code, part of the agent ID
	impl circl.Scheme
}

// The code byte is part of every agent ID: never renumber.
var knownSchemes = []*Scheme{
	{name: "ed25519", code: 1, impl: stdEd25519{schemes.ByName("Ed25519")}},
	{name: "ed448", code: 2, impl: schemes.ByName("Ed448")},
	{name: "ml-dsa-65", code: 3, impl: schemes.ByName("ML-DSA-65")},
	{name: "ed25519-dilithium2", code: 4, impl: schemes.ByName("Ed25519-Dilithium2")},
}

// SchemeNames lists the names of the supported schemes, sorted.
func SchemeNames() []string {
	names := make([]string, 0, len(knownSchemes))
	for _, s := range knownSchemes {
		names = append(names, s.name)
	}
	sort.Strings(names)
	return names
}

// SchemeByName returns the scheme with the given name (case-insensitive).
// An unknown name is an error listing the known ones.
func SchemeByName(name string) (*Scheme, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if n == "" {
		n = DefaultScheme
	}
	for _, s := range knownSchemes {
		if s.name == n {
			return s, nil
		}
	}
	return nil, fmt.Errorf("sign: unknown scheme %q: use one of %s", name, strings.Join(SchemeNames(), ", "))
}

func schemeByCode(code byte) (*Scheme, error) {
	for _, s := range knownSchemes {
		if s.code == code {
			return s, nil
		}
	}
	return nil, fmt.Errorf("sign: unknown scheme code %d", code)
}

// Name is the scheme's name as used in flags, files and on the wire.
func (s *Scheme) Name() string { return s.name }

// PublicKeySize is the length in bytes of an encoded public key.
func (s *Scheme) PublicKeySize() int { return s.impl.PublicKeySize() }

// SignatureSize is the length in bytes of a signature.
func (s *Scheme) SignatureSize() int { return s.impl.SignatureSize() }

// GenerateKey creates a new random key pair.
func (s *Scheme) GenerateKey() (*PrivateKey, error) {
	pub, priv, err := s.impl.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("sign: generate %s key: %w", s.name, err)
	}
	return newPrivateKey(s, pub, priv)
}

// DeriveKey derives a key pair deterministically from seed, which may have
// any length (it is hashed to the scheme's seed size). Tests and the
// simulator use it; real agents use GenerateKey.
func (s *Scheme) DeriveKey(seed []byte) (*PrivateKey, error) {
	pub, priv := s.impl.DeriveKey(expandSeed(seed, s.impl.SeedSize()))
	return newPrivateKey(s, pub, priv)
}
