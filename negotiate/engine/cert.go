package engine

import (
	"fmt"

	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// certificateLifetimeMillis is the wire expiry of a sealed certificate when
// first sent. Certificates are verified without the expiry window
// (protocol.OpenCertificate); later copies travel inside Abort messages.
const certificateLifetimeMillis = 5 * 60 * 1000

// sealCertificate signs a message that doubles as a certificate. The nonce
// is derived from the content so the core stays deterministic.
func sealCertificate(key *sign.PrivateKey, typ, session string, body any, now int64) ([]byte, error) {
	raw, err := protocol.EncodeBody(body)
	if err != nil {
		return nil, err
	}
	h := sign.Hash(append([]byte(typ+"/"+session+"/"), raw...))
	return protocol.Seal(key, protocol.Message{
		Type: typ, Session: session, Nonce: h[:protocol.NonceSize], Expires: now + certificateLifetimeMillis, Body: raw,
	})
}

// openDecision verifies a witness decision frame.
func openDecision(frame []byte, witness protocol.Party, session string, ah [32]byte) (*protocol.Decision, error) {
	env, err := protocol.OpenCertificate(frame)
	if err != nil {
		return nil, err
	}
	d, ok := env.Body.(*protocol.Decision)
	if !ok {
		return nil, fmt.Errorf("a %q message, not a decision", env.Msg.Type)
	}
	if env.Msg.From != witness.ID || env.Msg.Session != session || d.AgreementHash != ah {
		return nil, fmt.Errorf("decision by %s for session %s is not this witness's decision for this agreement", env.Msg.From.Short(), env.Msg.Session)
	}
	return d, nil
}
