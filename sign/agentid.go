package sign

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// ErrBadAgentID is returned for text that is not a valid agent ID.
var ErrBadAgentID = errors.New("sign: bad agent ID")

// AgentID is a short, self-certifying, copy-pasteable agent identifier:
// "a" followed by lower-case base32 of
// version(1) | scheme code(1) | sha256(scheme code | public key)(32) | checksum(4).
// It is 62 characters long and the same on every machine.
type AgentID string

const agentIDVersion = 1

// agentIDBodyLen is the decoded size: version(1) + scheme code(1) + digest(32) + checksum(4).
const agentIDBodyLen = 38

// AgentIDLen is the length of every agent ID in characters.
const AgentIDLen = 62

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func keyDigest(s *Scheme, raw []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{s.code})
	h.Write(raw)
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

func makeAgentID(s *Scheme, raw []byte) AgentID {
	d := keyDigest(s, raw)
	body := make([]byte, 0, agentIDBodyLen)
	body = append(body, agentIDVersion, s.code)
	body = append(body, d[:]...)
	sum := sha256.Sum256(body)
	body = append(body, sum[:4]...)
	return AgentID("a" + idEncoding.EncodeToString(body))
}

// ParseAgentID checks the text form of an agent ID, including its checksum,
// so a mistyped ID is a clear error.
func ParseAgentID(text string) (AgentID, error) {
	t := strings.TrimSpace(text)
	if len(t) != AgentIDLen {
		return "", fmt.Errorf("%w: %q has %d characters, an agent ID has %d (copy it from `negotiate id`)", ErrBadAgentID, abbreviate(t), len(t), AgentIDLen)
	}
	if t[0] != 'a' {
		return "", fmt.Errorf("%w: %q must start with 'a'", ErrBadAgentID, abbreviate(t))
	}
	body, err := idEncoding.DecodeString(t[1:])
	if err != nil {
		return "", fmt.Errorf("%w: %q is not lower-case base32: %v", ErrBadAgentID, abbreviate(t), err)
	}
	// The decoder ignores the unused low bits of the last character and skips
	// line breaks, so only the canonical encoding of body is accepted: any
	// single mistyped character is then an error.
	if len(body) != agentIDBodyLen || idEncoding.EncodeToString(body) != t[1:] {
		return "", fmt.Errorf("%w: %q is not a valid agent ID encoding: a character is mistyped", ErrBadAgentID, abbreviate(t))
	}
	if body[0] != agentIDVersion {
		return "", fmt.Errorf("%w: %q has an unknown version", ErrBadAgentID, abbreviate(t))
	}
	sum := sha256.Sum256(body[:34])
	if !bytes.Equal(sum[:4], body[34:]) {
		return "", fmt.Errorf("%w: %q fails its checksum: a character is mistyped", ErrBadAgentID, abbreviate(t))
	}
	if _, err := schemeByCode(body[1]); err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrBadAgentID, abbreviate(t), err)
	}
	return AgentID(t), nil
}

// Scheme returns the scheme encoded in the ID.
func (id AgentID) Scheme() (*Scheme, error) {
	if _, err := ParseAgentID(string(id)); err != nil {
		return nil, err
	}
	body, _ := idEncoding.DecodeString(string(id)[1:])
	return schemeByCode(body[1])
}

// Matches reports whether pub is the key this ID was derived from.
func (id AgentID) Matches(pub PublicKey) bool {
	return pub.scheme != nil && pub.AgentID() == id
}

// Check returns an error unless pub is the key this ID was derived from.
func (id AgentID) Check(pub PublicKey) error {
	if !id.Matches(pub) {
		return fmt.Errorf("%w: public key (%s) does not belong to agent %s", ErrBadAgentID, pub.SchemeName(), id.Short())
	}
	return nil
}

// String returns the full ID.
func (id AgentID) String() string { return string(id) }

// Short returns an abbreviation for logs and human output.
func (id AgentID) Short() string {
	if len(id) <= 12 {
		return string(id)
	}
	return string(id[:8]) + "…" + string(id[len(id)-4:])
}

func abbreviate(s string) string {
	if len(s) > 70 {
		return s[:67] + "..."
	}
	return s
}
