package sign_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/negotiate-dev/negotiate/sign"
)

// allSchemes is every scheme the package supports, in code order.
var allSchemes = []string{"ed25519", "ed448", "ml-dsa-65", "ed25519-dilithium2"}

// fataler is the part of testing.TB that helpers need; *rapid.T has it too.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

func mustScheme(t fataler, name string) *sign.Scheme {
	t.Helper()
	s, err := sign.SchemeByName(name)
	if err != nil {
		t.Fatalf("SchemeByName(%q): %v", name, err)
	}
	return s
}

func mustDerive(t fataler, scheme, seed string) *sign.PrivateKey {
	t.Helper()
	k, err := mustScheme(t, scheme).DeriveKey([]byte(seed))
	if err != nil {
		t.Fatalf("DeriveKey(%s, %q): %v", scheme, seed, err)
	}
	return k
}

func TestSchemeNamesMatchesKnownSchemes(t *testing.T) {
	got := sign.SchemeNames()
	want := slices.Clone(allSchemes)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("SchemeNames() = %v, want %v", got, want)
	}
	if !slices.IsSorted(got) {
		t.Fatalf("SchemeNames() not sorted: %v", got)
	}
	if !slices.Contains(got, sign.DefaultScheme) {
		t.Fatalf("DefaultScheme %q not among %v", sign.DefaultScheme, got)
	}
}

func TestSchemeByName(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means error
	}{
		{"ed25519", "ed25519"},
		{"Ed25519", "ed25519"},
		{"ED448", "ed448"},
		{"ML-DSA-65", "ml-dsa-65"},
		{"Ed25519-Dilithium2", "ed25519-dilithium2"},
		{"  ed448\n", "ed448"},
		{"", sign.DefaultScheme},
		{"rsa", ""},
		{"ed25519x", ""},
		{"ml-dsa-44", ""},
		{"ed 25519", ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			s, err := sign.SchemeByName(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("SchemeByName(%q) = %v, want error", tc.in, s.Name())
				}
				msg := err.Error()
				if !strings.Contains(msg, "unknown scheme") || !strings.Contains(msg, tc.in) {
					t.Errorf("error %q does not name the unknown scheme %q", msg, tc.in)
				}
				for _, n := range allSchemes {
					if !strings.Contains(msg, n) {
						t.Errorf("error %q does not list known scheme %q", msg, n)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("SchemeByName(%q): %v", tc.in, err)
			}
			if s.Name() != tc.want {
				t.Fatalf("SchemeByName(%q).Name() = %q, want %q", tc.in, s.Name(), tc.want)
			}
			if again := mustScheme(t, tc.want); again != s {
				t.Errorf("SchemeByName returns distinct *Scheme values for %q", tc.want)
			}
		})
	}
}

func TestSignVerify(t *testing.T) {
	msg := []byte("pay 10 EUR to bob for order #42")
	for _, name := range allSchemes {
		t.Run(name, func(t *testing.T) {
			s := mustScheme(t, name)
			k, err := s.GenerateKey()
			if err != nil {
				t.Fatalf("GenerateKey: %v", err)
			}
			if k.Scheme() != s {
				t.Fatalf("key scheme = %v, want %v", k.Scheme().Name(), name)
			}
			pub := k.Public()
			if pub.IsZero() || pub.Scheme() != s || pub.SchemeName() != name {
				t.Fatalf("public key scheme = %q (zero=%v), want %q", pub.SchemeName(), pub.IsZero(), name)
			}
			if got := len(pub.Bytes()); got != s.PublicKeySize() {
				t.Fatalf("public key is %d bytes, scheme says %d", got, s.PublicKeySize())
			}
			sig := k.Sign("statement", msg)
			if len(sig) != s.SignatureSize() {
				t.Fatalf("signature is %d bytes, scheme says %d", len(sig), s.SignatureSize())
			}
			if err := pub.Verify("statement", msg, sig); err != nil {
				t.Fatalf("Verify own signature: %v", err)
			}
			// Empty message and empty domain are valid inputs.
			if err := pub.Verify("", nil, k.Sign("", nil)); err != nil {
				t.Fatalf("Verify empty domain/msg: %v", err)
			}
			// Another key of the same scheme does not verify it.
			other, err := s.GenerateKey()
			if err != nil {
				t.Fatalf("GenerateKey: %v", err)
			}
			if other.Public().Equal(pub) {
				t.Fatal("two generated keys are equal")
			}
			if err := other.Public().Verify("statement", msg, sig); !errors.Is(err, sign.ErrBadSignature) {
				t.Fatalf("Verify with another key: err = %v, want ErrBadSignature", err)
			}
		})
	}
}

func TestDomainSeparation(t *testing.T) {
	msg := []byte("hello")
	cases := []struct {
		name               string
		signDom, verifyDom string
		signMsg, verifyMsg []byte
	}{
		{"other domain", "a", "b", msg, msg},
		{"real domains", "chain-entry", "statement", msg, msg},
		{"msg types", "msg/propose", "msg/accept", msg, msg},
		{"domain prefix", "msg/propose", "msg/propos", msg, msg},
		{"byte moved into msg", "ab", "a", msg, append([]byte("b"), msg...)},
		{"byte moved into domain", "a", "ab", append([]byte("b"), msg...), msg},
		{"empty vs nonempty domain", "", "x", msg, msg},
		{"domain looks like separator", "a/b", "a", msg, append([]byte("/b"), msg...)},
	}
	for _, name := range allSchemes {
		k := mustDerive(t, name, "domain-separation")
		for _, tc := range cases {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				sig := k.Sign(tc.signDom, tc.signMsg)
				if err := k.Public().Verify(tc.signDom, tc.signMsg, sig); err != nil {
					t.Fatalf("Verify for the signing domain: %v", err)
				}
				err := k.Public().Verify(tc.verifyDom, tc.verifyMsg, sig)
				if !errors.Is(err, sign.ErrBadSignature) {
					t.Fatalf("signature for (%q, %q) verified as (%q, %q): err = %v", tc.signDom, tc.signMsg, tc.verifyDom, tc.verifyMsg, err)
				}
			})
		}
	}
}

func TestVerifyRejectsTampering(t *testing.T) {
	msg := []byte("transfer 100 units to carol")
	for _, name := range allSchemes {
		k := mustDerive(t, name, "tamper")
		pub := k.Public()
		sig := k.Sign("statement", msg)
		n := len(sig)
		tests := []struct {
			name string
			msg  []byte
			sig  []byte
		}{
			{"msg first byte", flip(msg, 0), sig},
			{"msg last byte", flip(msg, len(msg)-1), sig},
			{"msg extended", append(slices.Clone(msg), '0'), sig},
			{"msg truncated", msg[:len(msg)-1], sig},
			{"msg nil", nil, sig},
			{"sig first byte", msg, flip(sig, 0)},
			{"sig middle byte", msg, flip(sig, n/2)},
			{"sig last byte", msg, flip(sig, n-1)},
			{"sig all zero", msg, make([]byte, n)},
			{"sig too short", msg, sig[:n-1]},
			{"sig too long", msg, append(slices.Clone(sig), 0)},
			{"sig empty", msg, []byte{}},
			{"sig nil", msg, nil},
			{"sig twice", msg, append(slices.Clone(sig), sig...)},
			{"domain with NUL", msg, sig},
		}
		for _, tc := range tests {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				domain := "statement"
				if tc.name == "domain with NUL" {
					domain = "statement\x00"
				}
				err := pub.Verify(domain, tc.msg, tc.sig)
				if !errors.Is(err, sign.ErrBadSignature) {
					t.Fatalf("Verify = %v, want ErrBadSignature", err)
				}
			})
		}
		// The original still verifies: flip() copied, nothing was mutated.
		if err := pub.Verify("statement", msg, sig); err != nil {
			t.Fatalf("%s: original signature no longer verifies: %v", name, err)
		}
	}
}

func TestWrongLengthSignatureErrorSaysLengths(t *testing.T) {
	for _, name := range allSchemes {
		t.Run(name, func(t *testing.T) {
			k := mustDerive(t, name, "len")
			sig := k.Sign("d", []byte("m"))
			err := k.Public().Verify("d", []byte("m"), sig[:10])
			if !errors.Is(err, sign.ErrBadSignature) {
				t.Fatalf("err = %v, want ErrBadSignature", err)
			}
			if !strings.Contains(err.Error(), "is 10 bytes") || !strings.Contains(err.Error(), name) {
				t.Errorf("error %q should name the scheme and the wrong length", err)
			}
		})
	}
}

func TestZeroPublicKey(t *testing.T) {
	var p sign.PublicKey
	if !p.IsZero() || p.Scheme() != nil || p.SchemeName() != "" || p.AgentID() != "" || len(p.Bytes()) != 0 {
		t.Fatalf("zero PublicKey not empty: %+v", p)
	}
	err := p.Verify("d", []byte("m"), make([]byte, 64))
	if err == nil {
		t.Fatal("zero PublicKey verified a signature")
	}
	if !strings.Contains(err.Error(), "no public key") {
		t.Errorf("error %q should say there is no key", err)
	}
	k := mustDerive(t, "ed25519", "zero")
	if p.Equal(k.Public()) || k.Public().Equal(p) {
		t.Fatal("zero key equals a real key")
	}
}

func TestSignPanicsOnNULDomain(t *testing.T) {
	// Domains are constants chosen by the program; a NUL is a programming error.
	k := mustDerive(t, "ed25519", "nul")
	defer func() {
		if recover() == nil {
			t.Fatal("Sign with a NUL in the domain did not panic")
		}
	}()
	k.Sign("a\x00b", nil)
}

func TestParsePublicKey(t *testing.T) {
	for _, name := range allSchemes {
		t.Run(name, func(t *testing.T) {
			k := mustDerive(t, name, "parse")
			raw := k.Public().Bytes()
			p, err := sign.ParsePublicKey(strings.ToUpper(name), raw)
			if err != nil {
				t.Fatalf("ParsePublicKey: %v", err)
			}
			if !p.Equal(k.Public()) || p.AgentID() != k.AgentID() {
				t.Fatal("parsed key differs from the original")
			}
			// ParsePublicKey copies its input and Bytes returns a copy.
			raw[0] ^= 0xff
			p.Bytes()[1] ^= 0xff
			if !p.Equal(k.Public()) {
				t.Fatal("parsed key changed when caller mutated its buffers")
			}
			if err := p.Verify("d", []byte("m"), k.Sign("d", []byte("m"))); err != nil {
				t.Fatalf("parsed key does not verify: %v", err)
			}

			good := k.Public().Bytes()
			for _, bad := range [][]byte{nil, {}, good[:len(good)-1], append(slices.Clone(good), 0)} {
				_, err := sign.ParsePublicKey(name, bad)
				if err == nil {
					t.Fatalf("ParsePublicKey accepted %d bytes", len(bad))
				}
				if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "want") {
					t.Errorf("error %q should name scheme and wanted size", err)
				}
			}
		})
	}
	if _, err := sign.ParsePublicKey("rsa", make([]byte, 32)); err == nil || !strings.Contains(err.Error(), "ed25519") {
		t.Fatalf("unknown scheme: err = %v, want error listing known schemes", err)
	}
}

func TestPublicKeyEqualAcrossSchemes(t *testing.T) {
	keys := map[string]sign.PublicKey{}
	for _, name := range allSchemes {
		keys[name] = mustDerive(t, name, "same-seed").Public()
	}
	for a, ka := range keys {
		for b, kb := range keys {
			if ka.Equal(kb) != (a == b) {
				t.Errorf("%s.Equal(%s) = %v", a, b, ka.Equal(kb))
			}
		}
	}
}

func TestDeriveKeyDeterministic(t *testing.T) {
	for _, name := range allSchemes {
		t.Run(name, func(t *testing.T) {
			a := mustDerive(t, name, "seed-1")
			b := mustDerive(t, name, "seed-1")
			c := mustDerive(t, name, "seed-2")
			if !a.Public().Equal(b.Public()) {
				t.Fatal("same seed gave different keys")
			}
			if a.Public().Equal(c.Public()) {
				t.Fatal("different seeds gave the same key")
			}
			// Keys derived from the same seed sign interchangeably.
			if err := b.Public().Verify("d", []byte("m"), a.Sign("d", []byte("m"))); err != nil {
				t.Fatal(err)
			}
			// Seeds of any length work, including empty and very long.
			for _, seed := range [][]byte{nil, bytes.Repeat([]byte{7}, 1000)} {
				if _, err := mustScheme(t, name).DeriveKey(seed); err != nil {
					t.Fatalf("DeriveKey(%d-byte seed): %v", len(seed), err)
				}
			}
		})
	}
}

func TestHash(t *testing.T) {
	got := sign.Hash([]byte("abc"))
	want, _ := hex.DecodeString("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
	if !bytes.Equal(got[:], want) {
		t.Fatalf("Hash(abc) = %x", got)
	}
	if sign.Hash(nil) != sha256.Sum256(nil) {
		t.Fatal("Hash(nil) is not SHA-256")
	}
}

// flip returns a copy of b with byte i inverted.
func flip(b []byte, i int) []byte {
	c := slices.Clone(b)
	c[i] ^= 0xff
	return c
}
