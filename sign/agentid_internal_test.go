package sign

import (
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
)

// encodeBody builds an ID text with a valid checksum from version, code and digest.
func encodeBody(version, code byte) string {
	body := append([]byte{version, code}, make([]byte, 32)...)
	sum := sha256.Sum256(body)
	return "a" + idEncoding.EncodeToString(append(body, sum[:4]...))
}

func TestParseAgentIDUnknownVersionAndScheme(t *testing.T) {
	tests := []struct {
		name          string
		version, code byte
		want          string
	}{
		{"version 0", 0, 1, "unknown version"},
		{"version 2", 2, 1, "unknown version"},
		{"scheme code 0", agentIDVersion, 0, "unknown scheme code 0"},
		{"scheme code 5", agentIDVersion, 5, "unknown scheme code 5"},
		{"scheme code 255", agentIDVersion, 255, "unknown scheme code 255"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			text := encodeBody(tc.version, tc.code)
			if len(text) != AgentIDLen {
				t.Fatalf("built ID has %d characters", len(text))
			}
			_, err := ParseAgentID(text)
			if !errors.Is(err, ErrBadAgentID) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseAgentID = %v, want ErrBadAgentID containing %q", err, tc.want)
			}
		})
	}
	if _, err := ParseAgentID(encodeBody(agentIDVersion, 1)); err != nil {
		t.Fatalf("control: well-formed ID rejected: %v", err)
	}
}

// TestSchemeCodesNeverChange pins the code byte of each scheme: it is part of
// every agent ID.
func TestSchemeCodesNeverChange(t *testing.T) {
	want := map[string]byte{"ed25519": 1, "ed448": 2, "ml-dsa-65": 3, "ed25519-dilithium2": 4}
	if len(knownSchemes) != len(want) {
		t.Fatalf("%d known schemes, test pins %d: add the new one here", len(knownSchemes), len(want))
	}
	for _, s := range knownSchemes {
		if s.impl == nil {
			t.Fatalf("%s: circl has no implementation", s.name)
		}
		if want[s.name] != s.code {
			t.Errorf("%s has code %d, want %d", s.name, s.code, want[s.name])
		}
	}
}

func TestDomainMessageInjective(t *testing.T) {
	a := domainMessage("ab", []byte("c"))
	b := domainMessage("a", []byte("bc"))
	if string(a) == string(b) {
		t.Fatal("(ab, c) and (a, bc) encode the same")
	}
	if got := string(domainMessage("statement", []byte("m"))); got != "negotiate/v1/statement\x00m" {
		t.Fatalf("domainMessage = %q", got)
	}
}
