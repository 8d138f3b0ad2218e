package sign

import (
	"crypto/ed25519"
	"fmt"
	"testing"

	circl "github.com/cloudflare/circl/sign"
	circled "github.com/cloudflare/circl/sign/ed25519"
)

// TestStdEd25519MatchesCircl checks that the crypto/ed25519 path signs
// exactly as circl does (Ed25519 is deterministic) and that each verifies
// the other's signatures and rejects altered ones, for keys made every way
// the package makes them.
func TestStdEd25519MatchesCircl(t *testing.T) {
	s, err := SchemeByName("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	std, ok := s.impl.(stdEd25519)
	if !ok {
		t.Fatalf("ed25519 scheme is %T, want stdEd25519", s.impl)
	}
	ref := std.Scheme
	generated, err := s.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	derived, err := s.DeriveKey([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []*PrivateKey{generated, derived} {
		// The fast path must apply to the package's own key types.
		if _, ok := key.priv.(circled.PrivateKey); !ok {
			t.Fatalf("private key is %T, want circl ed25519.PrivateKey", key.priv)
		}
		parsed, err := ParsePublicKey("ed25519", key.pub.raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := parsed.key.(circled.PublicKey); !ok {
			t.Fatalf("parsed public key is %T, want circl ed25519.PublicKey", parsed.key)
		}
		for n := 0; n < 64; n++ {
			msg := []byte(fmt.Sprintf("message %d %x", n, make([]byte, n)))
			sig := std.Sign(key.priv, msg, nil)
			want := ref.Sign(key.priv, msg, nil)
			if string(sig) != string(want) {
				t.Fatalf("message %d: crypto/ed25519 and circl signatures differ", n)
			}
			if !ref.Verify(parsed.key, msg, sig, nil) || !std.Verify(parsed.key, msg, want, nil) {
				t.Fatalf("message %d: a valid signature did not verify", n)
			}
			bad := append([]byte(nil), sig...)
			bad[n%len(bad)] ^= 1
			if std.Verify(parsed.key, msg, bad, nil) || ref.Verify(parsed.key, msg, bad, nil) {
				t.Fatalf("message %d: an altered signature verified", n)
			}
			if std.Verify(parsed.key, append(msg, 'x'), sig, nil) {
				t.Fatalf("message %d: a signature verified for another message", n)
			}
			if !ed25519.Verify(ed25519.PublicKey(parsed.key.(circled.PublicKey)), msg, sig) {
				t.Fatalf("message %d: crypto/ed25519 rejects the signature", n)
			}
		}
	}
	// A signature context is not something crypto/ed25519 does; circl's
	// Ed25519 (pure) refuses it the same way with or without the wrapper.
	ctx := &circl.SignatureOpts{Context: "ctx"}
	for name, sch := range map[string]circl.Scheme{"std": std, "circl": ref} {
		if !panics(func() { sch.Sign(generated.priv, []byte("m"), ctx) }) {
			t.Errorf("%s: Sign with a context did not fall back to circl's refusal", name)
		}
	}
}

func panics(f func()) (p bool) {
	defer func() { p = recover() != nil }()
	f()
	return false
}
