package chain

import (
	"bytes"
	"sync"

	"github.com/negotiate-dev/negotiate/sign"
)

// maxSignedHere bounds the entries remembered by signedHere: enough for
// every entry built and not yet applied by a busy process, small enough to
// be a few hundred KiB.
const maxSignedHere = 4096

// signedHere remembers the entries NewEntryAt signed in this process,
// keyed by entry hash, so that Apply can skip checks it would repeat: the
// signature it just made and the payload encoding it just checked. A hit
// needs the same hash (so the same seq, prev, time, kind and payload), the
// same signature bytes and the chain's own public key; anything else is
// checked in full.
var signedHere = struct {
	sync.Mutex
	m map[Hash]signedMark
}{m: map[Hash]signedMark{}}

type signedMark struct {
	sig []byte
	pub []byte
}

func rememberSigned(h Hash, sig []byte, pub sign.PublicKey) {
	signedHere.Lock()
	defer signedHere.Unlock()
	if len(signedHere.m) >= maxSignedHere {
		for k := range signedHere.m { // drop an arbitrary one
			delete(signedHere.m, k)
			break
		}
	}
	// A copy: the caller may change the entry's signature bytes in place.
	signedHere.m[h] = signedMark{sig: bytes.Clone(sig), pub: pub.Bytes()}
}

// takeSigned reports whether entry hash h with signature sig was signed in
// this process with pub, and forgets it.
func takeSigned(h Hash, sig []byte, pub sign.PublicKey) bool {
	signedHere.Lock()
	defer signedHere.Unlock()
	m, ok := signedHere.m[h]
	if !ok {
		return false
	}
	delete(signedHere.m, h)
	return bytes.Equal(m.sig, sig) && bytes.Equal(m.pub, pub.Bytes())
}
