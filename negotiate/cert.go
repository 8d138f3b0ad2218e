package negotiate

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

// openRefusal verifies an abort certificate for session s: a signed Refuse
// by one of its parties.
func openRefusal(cert []byte, s *session) (sign.AgentID, *protocol.Refuse, error) {
	env, err := protocol.OpenCertificate(cert)
	if err != nil {
		return "", nil, fmt.Errorf("abort certificate: %w", err)
	}
	rf, ok := env.Body.(*protocol.Refuse)
	if !ok || env.Msg.Type != protocol.TypeRefuse {
		return "", nil, fmt.Errorf("abort certificate is a %q message, not a refusal", env.Msg.Type)
	}
	if env.Msg.Session != s.id {
		return "", nil, fmt.Errorf("abort certificate is for session %s, not %s", env.Msg.Session, s.id)
	}
	i := s.indexOf(env.Msg.From)
	if i < 0 || !s.parties[i].ID.Matches(env.Key) {
		return "", nil, fmt.Errorf("abort certificate is signed by %s, not a party", env.Msg.From.Short())
	}
	return env.Msg.From, rf, nil
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
