package sign_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/negotiate-dev/negotiate/sign"
)

// savedKey writes a derived key of scheme to a fresh key file and returns
// the path, the key and the file's JSON as a generic map.
func savedKey(t *testing.T, scheme, seed string) (string, *sign.PrivateKey, map[string]any) {
	t.Helper()
	k := mustDerive(t, scheme, seed)
	path := filepath.Join(t.TempDir(), "agent.key")
	if err := sign.SaveKeyFile(path, k); err != nil {
		t.Fatalf("SaveKeyFile: %v", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("key file is not JSON: %v\n%s", err, data)
	}
	return path, k, m
}

// writeJSON replaces the key file at path with m, keeping mode 0600.
func writeJSON(t *testing.T, path string, m map[string]any) {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// loadFails asserts LoadKeyFile(path) fails with every substring in want and
// leaves the file unchanged.
func loadFails(t *testing.T, path string, want ...string) {
	t.Helper()
	before, _ := os.ReadFile(path)
	stBefore, _ := os.Stat(path)
	k, err := sign.LoadKeyFile(path)
	if err == nil {
		t.Fatalf("LoadKeyFile succeeded (agent %s), want error containing %q", k.AgentID().Short(), want)
	}
	if k != nil {
		t.Errorf("LoadKeyFile returned a key alongside error %v", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	after, _ := os.ReadFile(path)
	stAfter, _ := os.Stat(path)
	if !bytes.Equal(before, after) || (stBefore != nil && stAfter != nil && stBefore.Mode() != stAfter.Mode()) {
		t.Error("LoadKeyFile changed the file")
	}
}

func TestKeyFileRoundTrip(t *testing.T) {
	for _, name := range allSchemes {
		t.Run(name, func(t *testing.T) {
			s := mustScheme(t, name)
			k, err := s.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "agent.key")
			if err := sign.SaveKeyFile(path, k); err != nil {
				t.Fatalf("SaveKeyFile: %v", err)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Fatalf("key file mode = %04o, want 0600", st.Mode().Perm())
			}
			got, err := sign.LoadKeyFile(path)
			if err != nil {
				t.Fatalf("LoadKeyFile: %v", err)
			}
			if got.Scheme() != s || !got.Public().Equal(k.Public()) || got.AgentID() != k.AgentID() {
				t.Fatalf("loaded key %s (%s) differs from saved %s", got.AgentID().Short(), got.Scheme().Name(), k.AgentID().Short())
			}
			// The loaded private key signs for the original public key and vice versa.
			msg := []byte("round trip")
			if err := k.Public().Verify("d", msg, got.Sign("d", msg)); err != nil {
				t.Fatalf("loaded key's signature: %v", err)
			}
			if err := got.Public().Verify("d", msg, k.Sign("d", msg)); err != nil {
				t.Fatalf("original key's signature under loaded public key: %v", err)
			}
			// The file names scheme and agent ID in clear for humans.
			data, _ := os.ReadFile(path)
			if !bytes.Contains(data, []byte(`"scheme": "`+name+`"`)) || !bytes.Contains(data, []byte(k.AgentID())) {
				t.Errorf("key file does not show scheme and agent ID:\n%s", data)
			}
		})
	}
}

func TestKeyFileModeCheck(t *testing.T) {
	for _, mode := range []fs.FileMode{0o644, 0o640, 0o604, 0o660, 0o666, 0o601} {
		t.Run(mode.String(), func(t *testing.T) {
			path, k, _ := savedKey(t, "ed25519", "mode")
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			loadFails(t, path, "chmod 600", path, "readable by others")
			// Following the advice fixes it.
			if err := os.Chmod(path, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := sign.LoadKeyFile(path)
			if err != nil || got.AgentID() != k.AgentID() {
				t.Fatalf("after chmod 600: %v", err)
			}
		})
	}
	// Stricter than 0600 is fine.
	path, _, _ := savedKey(t, "ed25519", "mode")
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := sign.LoadKeyFile(path); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
}

func TestKeyFileMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope", "agent.key")
	_, err := sign.LoadKeyFile(path)
	if err == nil || !strings.Contains(err.Error(), "negotiate init") || !strings.Contains(err.Error(), path) {
		t.Fatalf("missing file: err = %v, want mention of path and `negotiate init`", err)
	}
}

func TestKeyFileMalformed(t *testing.T) {
	tests := []struct {
		name string
		data string
		want []string
	}{
		{"empty", "", []string{"malformed", "backup"}},
		{"not json", "{not json", []string{"malformed"}},
		{"truncated json", `{"version": 1, "scheme": "ed25519"`, []string{"malformed"}},
		{"array", `[1,2,3]`, []string{"malformed"}},
		{"private key not base64", `{"version":1,"scheme":"ed25519","private_key":"!!"}`, []string{"malformed"}},
		{"wrong field type", `{"version":"1"}`, []string{"malformed"}},
		{"missing version", `{"scheme":"ed25519"}`, []string{"version 0"}},
		{"future version", `{"version":2,"scheme":"ed25519"}`, []string{"version 2", "version 1"}},
		{"unknown scheme", `{"version":1,"scheme":"rsa"}`, []string{"unknown scheme", "ed25519", "ml-dsa-65"}},
		{"no private key", `{"version":1,"scheme":"ed25519"}`, []string{"private key is 0 bytes"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "agent.key")
			if err := os.WriteFile(path, []byte(tc.data), 0o600); err != nil {
				t.Fatal(err)
			}
			loadFails(t, path, append(tc.want, path)...)
		})
	}
}

func TestKeyFileTooLarge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.key")
	if err := os.WriteFile(path, bytes.Repeat([]byte(" "), 1<<20+1), 0o600); err != nil {
		t.Fatal(err)
	}
	loadFails(t, path, "too large")
}

func TestKeyFileSchemeSwapped(t *testing.T) {
	for _, from := range allSchemes {
		for _, to := range allSchemes {
			if from == to {
				continue
			}
			t.Run(from+"->"+to, func(t *testing.T) {
				path, _, m := savedKey(t, from, "swap")
				m["scheme"] = to
				writeJSON(t, path, m)
				loadFails(t, path, "private key is", to, "another scheme")
			})
		}
	}
}

func TestKeyFileDamaged(t *testing.T) {
	other := map[string]*sign.PrivateKey{}
	for _, name := range allSchemes {
		other[name] = mustDerive(t, name, "other")
	}
	tests := []struct {
		name   string
		modify func(m map[string]any, scheme string)
		want   []string
	}{
		{"private key truncated", func(m map[string]any, _ string) {
			raw := decodeB64(t, m["private_key"])
			m["private_key"] = raw[:len(raw)-1]
		}, []string{"private key is", "damaged"}},
		{"private key extended", func(m map[string]any, _ string) {
			m["private_key"] = append(decodeB64(t, m["private_key"]), 0)
		}, []string{"private key is", "damaged"}},
		{"agent id of another key", func(m map[string]any, s string) {
			m["agent_id"] = string(other[s].AgentID())
		}, []string{"agent ID does not match"}},
		{"agent id garbage", func(m map[string]any, _ string) {
			m["agent_id"] = "hello"
		}, []string{"agent ID does not match"}},
		{"secret part damaged, public part intact", func(m map[string]any, _ string) {
			raw := decodeB64(t, m["private_key"])
			raw[0] ^= 0x01 // first byte: the seed / secret of every scheme here
			m["private_key"] = raw
		}, []string{"does not match its public key", "damaged"}},
		{"public key of another key", func(m map[string]any, s string) {
			m["public_key"] = other[s].Public().Bytes()
		}, []string{"public key does not match"}},
		{"public key truncated", func(m map[string]any, _ string) {
			raw := decodeB64(t, m["public_key"])
			m["public_key"] = raw[:len(raw)-1]
		}, []string{"public key does not match"}},
	}
	for _, name := range allSchemes {
		for _, tc := range tests {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				path, _, m := savedKey(t, name, "damaged")
				tc.modify(m, name)
				writeJSON(t, path, m)
				loadFails(t, path, tc.want...)
			})
		}
	}
}

func TestKeyFileOptionalFields(t *testing.T) {
	// agent_id and public_key are redundant; a file without them still loads.
	for _, name := range allSchemes {
		t.Run(name, func(t *testing.T) {
			path, k, m := savedKey(t, name, "optional")
			delete(m, "agent_id")
			delete(m, "public_key")
			writeJSON(t, path, m)
			got, err := sign.LoadKeyFile(path)
			if err != nil || got.AgentID() != k.AgentID() {
				t.Fatalf("LoadKeyFile without redundant fields: %v", err)
			}
		})
	}
}

func TestSaveKeyFileRefusesOverwrite(t *testing.T) {
	path, first, _ := savedKey(t, "ed25519", "first")
	before, _ := os.ReadFile(path)
	second := mustDerive(t, "ed448", "second")
	err := sign.SaveKeyFile(path, second)
	if err == nil {
		t.Fatal("SaveKeyFile overwrote an existing key file")
	}
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("err = %v, want it to wrap fs.ErrExist", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("existing key file changed")
	}
	got, err := sign.LoadKeyFile(path)
	if err != nil || got.AgentID() != first.AgentID() {
		t.Fatalf("existing key no longer loads as the first key: %v", err)
	}
	// Also for a symlink pointing at a missing file (O_EXCL does not follow it).
	link := filepath.Join(t.TempDir(), "link.key")
	if err := os.Symlink(filepath.Join(t.TempDir(), "target.key"), link); err != nil {
		t.Skip("symlinks unsupported:", err)
	}
	if err := sign.SaveKeyFile(link, second); err == nil {
		t.Fatal("SaveKeyFile wrote through a dangling symlink")
	}
}

func TestSaveKeyFileBadDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "agent.key")
	err := sign.SaveKeyFile(path, mustDerive(t, "ed25519", "x"))
	if err == nil || !strings.Contains(err.Error(), "key file") {
		t.Fatalf("SaveKeyFile into a missing directory: err = %v", err)
	}
}

// TestKeyFileRandomPrivateKey: a private key field of the right size
// but random content never panics; if it loads, the key is self-consistent.
func TestKeyFileRandomPrivateKey(t *testing.T) {
	for _, name := range allSchemes {
		t.Run(name, func(t *testing.T) {
			path, k, m := savedKey(t, name, "random")
			size := len(decodeB64(t, m["private_key"]))
			delete(m, "agent_id")
			delete(m, "public_key")
			for i := range 8 {
				raw := bytes.Repeat([]byte{byte(i*37 + 1)}, size)
				for j := range raw {
					raw[j] ^= byte(j * (i + 3))
				}
				m["private_key"] = raw
				writeJSON(t, path, m)
				got, err := sign.LoadKeyFile(path)
				if err != nil {
					t.Logf("rejected: %v", err)
					continue
				}
				if got.AgentID() == k.AgentID() {
					t.Fatal("random private key loaded as the original key")
				}
				msg := []byte("consistency")
				if err := got.Public().Verify("d", msg, got.Sign("d", msg)); err != nil {
					t.Fatalf("LoadKeyFile accepted a key that cannot make valid signatures: %v", err)
				}
			}
		})
	}
}

func decodeB64(t *testing.T, v any) []byte {
	t.Helper()
	var b []byte
	data, _ := json.Marshal(v)
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatalf("decode %v: %v", v, err)
	}
	return b
}
