package sign_test

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/negotiate-dev/negotiate/sign"
)

// goldenSeed derives the keys whose IDs are pinned in goldenIDs.
const goldenSeed = "negotiate golden seed"

// goldenIDs pins the agent ID of DeriveKey(goldenSeed) per scheme. An agent
// ID must be the same on every machine and in every build: if one of these
// changes, existing agents lose their identity. Never update them to make the
// test pass.
var goldenIDs = map[string]sign.AgentID{
	"ed25519":            "aaear4kiswhsn3smttnlg7f5pfyocc2kt52hvhmi2p4ter7no5qvnzpmpeuxrq",
	"ed448":              "aaebkwq3dkqkhkpbppypegkhmj2gz4i5mavh5f4qxvmvmtoawb4yhxmewy6ota",
	"ml-dsa-65":          "aaeb7uz73vbn6bkedpaalayjax47cxttjqr2a3jcn2a3a4gfajespyxcr4dnpa",
	"ed25519-dilithium2": "aaecl23u5ssoluly626jvyr2ncsbavdcfrniw22azwopwas76n3xrzb2rqpsge",
}

// idAlphabet is the character set of agent IDs after the leading 'a'.
const idAlphabet = "abcdefghijklmnopqrstuvwxyz234567"

func TestAgentIDGolden(t *testing.T) {
	for _, name := range allSchemes {
		t.Run(name, func(t *testing.T) {
			got := mustDerive(t, name, goldenSeed).AgentID()
			if got != goldenIDs[name] {
				t.Fatalf("DeriveKey(%q).AgentID() = %q, want %q (agent IDs must never change)", goldenSeed, got, goldenIDs[name])
			}
		})
	}
}

// TestAgentIDFormat recomputes the ID from the documented layout:
// "a" + base32(version 1 | code | sha256(code | pub) | sha256(first 34)[:4]).
func TestAgentIDFormat(t *testing.T) {
	enc := base32.NewEncoding(idAlphabet).WithPadding(base32.NoPadding)
	for i, name := range allSchemes {
		t.Run(name, func(t *testing.T) {
			k := mustDerive(t, name, "format")
			code := byte(i + 1) // codes are 1..4 in allSchemes order, and never change
			d := sha256.Sum256(append([]byte{code}, k.Public().Bytes()...))
			body := append([]byte{1, code}, d[:]...)
			sum := sha256.Sum256(body)
			body = append(body, sum[:4]...)
			want := sign.AgentID("a" + enc.EncodeToString(body))
			if got := k.AgentID(); got != want {
				t.Fatalf("AgentID = %q, want %q", got, want)
			}
		})
	}
}

func TestAgentIDProperties(t *testing.T) {
	for _, name := range allSchemes {
		t.Run(name, func(t *testing.T) {
			s := mustScheme(t, name)
			k := mustDerive(t, name, "props")
			id := k.AgentID()
			if len(id) != sign.AgentIDLen || len(id) > 64 {
				t.Fatalf("ID %q has %d characters, want %d (<= 64)", id, len(id), sign.AgentIDLen)
			}
			if id != k.Public().AgentID() || id.String() != string(id) {
				t.Fatal("PrivateKey.AgentID, PublicKey.AgentID and String disagree")
			}
			if strings.Trim(string(id), idAlphabet) != "" || id[0] != 'a' {
				t.Fatalf("ID %q has characters outside lower-case base32", id)
			}
			if mustDerive(t, name, "props").AgentID() != id {
				t.Fatal("same seed gave a different ID")
			}
			if mustDerive(t, name, "props2").AgentID() == id {
				t.Fatal("different seed gave the same ID")
			}
			parsed, err := sign.ParseAgentID(string(id))
			if err != nil || parsed != id {
				t.Fatalf("ParseAgentID(%q) = %q, %v", id, parsed, err)
			}
			got, err := id.Scheme()
			if err != nil || got != s {
				t.Fatalf("Scheme() = %v, %v; want %s", got, err, name)
			}
			short := id.Short()
			if !strings.HasPrefix(short, string(id[:8])) || !strings.HasSuffix(short, string(id[len(id)-4:])) || len([]rune(short)) != 13 {
				t.Fatalf("Short() = %q", short)
			}
		})
	}
	// The same seed under different schemes never gives the same ID.
	seen := map[sign.AgentID]string{}
	for _, name := range allSchemes {
		id := mustDerive(t, name, "same")
		if prev, ok := seen[id.AgentID()]; ok {
			t.Fatalf("%s and %s share an ID", prev, name)
		}
		seen[id.AgentID()] = name
	}
}

func TestParseAgentIDRejects(t *testing.T) {
	id := string(goldenIDs["ed25519"])
	tests := []struct {
		name string
		in   string
		want string // substring of the error
	}{
		{"empty", "", "0 characters"},
		{"one short", id[:len(id)-1], "61 characters"},
		{"one long", id + "a", "63 characters"},
		{"two IDs", id + id, "124 characters"},
		{"very long is abbreviated", strings.Repeat("a", 500), "..."},
		{"uppercase", strings.ToUpper(id), "start with 'a'"},
		{"uppercase body", "a" + strings.ToUpper(id[1:]), "base32"},
		{"prefix letter changed", "b" + id[1:], "start with 'a'"},
		{"prefixed", "agent:" + id[6:], "base32"},
		{"padding", id[:len(id)-1] + "=", "base32"},
		{"digit 0", id[:10] + "0" + id[11:], "base32"},
		{"digit 1", id[:10] + "1" + id[11:], "base32"},
		{"line break inside", id[:10] + "\n" + id[11:], "agent ID"},
		{"space inside", id[:10] + " " + id[11:], "base32"},
		{"non-ASCII", id[:59] + "é", "agent ID"},
		{"swapped neighbours", id[:20] + id[21:22] + id[20:21] + id[22:], "checksum"},
		{"other scheme's ID truncated", string(goldenIDs["ed448"][:30]) + id[30:], "checksum"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.in == id {
				t.Fatal("test case is not a mutation")
			}
			got, err := sign.ParseAgentID(tc.in)
			if !errors.Is(err, sign.ErrBadAgentID) {
				t.Fatalf("ParseAgentID(%q) = %q, %v; want ErrBadAgentID", tc.in, got, err)
			}
			if got != "" {
				t.Errorf("returned %q alongside an error", got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if _, err := sign.AgentID(tc.in).Scheme(); err == nil {
				t.Errorf("Scheme() of invalid ID %q succeeded", tc.in)
			}
		})
	}
}

func TestParseAgentIDTrimsSpace(t *testing.T) {
	id := goldenIDs["ml-dsa-65"]
	got, err := sign.ParseAgentID("  " + string(id) + "\n")
	if err != nil || got != id {
		t.Fatalf("ParseAgentID with surrounding space = %q, %v", got, err)
	}
}

// TestParseAgentIDEverySingleSubstitution tries every position with every
// other character of the alphabet (and a few outside it) for each scheme.
func TestParseAgentIDEverySingleSubstitution(t *testing.T) {
	chars := idAlphabet + "ABZ0189=-_ ./\t"
	for _, name := range allSchemes {
		id := string(goldenIDs[name])
		for pos := range len(id) {
			for _, c := range []byte(chars) {
				if c == id[pos] {
					continue
				}
				m := id[:pos] + string(c) + id[pos+1:]
				if _, err := sign.ParseAgentID(m); !errors.Is(err, sign.ErrBadAgentID) {
					t.Fatalf("%s: ParseAgentID accepted %q (position %d %q -> %q): err = %v", name, m, pos, id[pos], c, err)
				}
			}
		}
	}
}

// TestParseAgentIDMutationProperty: for any key and any single-character
// change at any position, ParseAgentID fails with ErrBadAgentID.
func TestParseAgentIDMutationProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		name := rapid.SampledFrom(allSchemes).Draw(t, "scheme")
		seed := rapid.SliceOfN(rapid.Byte(), 0, 32).Draw(t, "seed")
		k, err := mustScheme(t, name).DeriveKey(seed)
		if err != nil {
			t.Fatalf("DeriveKey: %v", err)
		}
		id := string(k.AgentID())
		if _, err := sign.ParseAgentID(id); err != nil {
			t.Fatalf("valid ID %q rejected: %v", id, err)
		}
		pos := rapid.IntRange(0, len(id)-1).Draw(t, "pos")
		c := rapid.OneOf(rapid.SampledFrom([]byte(idAlphabet)), rapid.Byte()).
			Filter(func(b byte) bool { return b != id[pos] }).Draw(t, "char")
		m := id[:pos] + string([]byte{c}) + id[pos+1:]
		if got, err := sign.ParseAgentID(m); !errors.Is(err, sign.ErrBadAgentID) {
			t.Fatalf("ParseAgentID accepted mutation %q of %q: got %q, err %v", m, id, got, err)
		}
	})
}

// TestParseAgentIDNeverPanics feeds arbitrary text.
func TestParseAgentIDNeverPanics(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := rapid.OneOf(
			rapid.String(),
			rapid.StringMatching(`a[a-z2-7]{61}`),
			rapid.StringOfN(rapid.RuneFrom([]rune(idAlphabet+"A=\n")), 60, 64, -1),
		).Draw(t, "text")
		id, err := sign.ParseAgentID(s)
		if err == nil {
			// Random text passes the 32-bit checksum only by astronomic luck;
			// if it does, it must at least be well-formed.
			if len(id) != sign.AgentIDLen {
				t.Fatalf("accepted %q", s)
			}
		}
	})
}

func TestCheckAndMatches(t *testing.T) {
	for _, name := range allSchemes {
		t.Run(name, func(t *testing.T) {
			k := mustDerive(t, name, "check")
			id := k.AgentID()
			if !id.Matches(k.Public()) {
				t.Fatal("ID does not match its own key")
			}
			if err := id.Check(k.Public()); err != nil {
				t.Fatalf("Check own key: %v", err)
			}
			wrong := []struct {
				what string
				pub  sign.PublicKey
			}{
				{"other key same scheme", mustDerive(t, name, "check-other").Public()},
				{"zero key", sign.PublicKey{}},
			}
			for _, other := range allSchemes {
				if other != name {
					wrong = append(wrong, struct {
						what string
						pub  sign.PublicKey
					}{"same seed scheme " + other, mustDerive(t, other, "check").Public()})
				}
			}
			for _, w := range wrong {
				if id.Matches(w.pub) {
					t.Errorf("%s: Matches = true", w.what)
				}
				err := id.Check(w.pub)
				if !errors.Is(err, sign.ErrBadAgentID) {
					t.Errorf("%s: Check = %v, want ErrBadAgentID", w.what, err)
				} else if !strings.Contains(err.Error(), id.Short()) {
					t.Errorf("%s: error %q does not name the agent", w.what, err)
				}
			}
			// An invalid ID matches nothing.
			if sign.AgentID("").Matches(k.Public()) || sign.AgentID("").Matches(sign.PublicKey{}) {
				t.Fatal("empty ID matched a key")
			}
		})
	}
}

func TestShortOfShortID(t *testing.T) {
	for _, s := range []string{"", "abc", "abcdefghijkl"} {
		if got := sign.AgentID(s).Short(); got != s {
			t.Errorf("Short(%q) = %q", s, got)
		}
	}
}
