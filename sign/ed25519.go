package sign

import (
	"crypto/ed25519"

	circl "github.com/cloudflare/circl/sign"
	circled "github.com/cloudflare/circl/sign/ed25519"
)

// stdEd25519 is circl's Ed25519 scheme (keys, encodings, derivation) with
// signing and verification done by Go's crypto/ed25519. Both implement
// RFC 8032 with the same key and signature encodings; the standard
// library's verification is about 15% faster and does not allocate (circl's
// converts the scalar through math/big), which matters because every wire
// message and every countersignature is verified. Keys of another type and
// signature contexts fall back to circl.
type stdEd25519 struct{ circl.Scheme }

// Sign signs message with sk.
func (s stdEd25519) Sign(sk circl.PrivateKey, message []byte, opts *circl.SignatureOpts) []byte {
	k, ok := sk.(circled.PrivateKey)
	if !ok || len(k) != ed25519.PrivateKeySize || (opts != nil && opts.Context != "") {
		return s.Scheme.Sign(sk, message, opts)
	}
	return ed25519.Sign(ed25519.PrivateKey(k), message)
}

// Verify reports whether signature is pk's signature of message.
func (s stdEd25519) Verify(pk circl.PublicKey, message, signature []byte, opts *circl.SignatureOpts) bool {
	k, ok := pk.(circled.PublicKey)
	if !ok || len(k) != ed25519.PublicKeySize || (opts != nil && opts.Context != "") {
		return s.Scheme.Verify(pk, message, signature, opts)
	}
	return ed25519.Verify(ed25519.PublicKey(k), message, signature)
}
