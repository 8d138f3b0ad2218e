package sign

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	circlsign "github.com/cloudflare/circl/sign"
)

// keyCheckDomain is the signing domain of the self-check LoadKeyFile makes;
// the signature is thrown away.
const keyCheckDomain = "key-file-check"

// keyFile is the on-disk form of a private key (JSON, mode 0600).
type keyFile struct {
	Version    int    `json:"version"`
	Scheme     string `json:"scheme"`
	AgentID    string `json:"agent_id"`
	PrivateKey []byte `json:"private_key"`
	PublicKey  []byte `json:"public_key"`
}

// SaveKeyFile writes k to path with mode 0600. It refuses to overwrite an
// existing file.
func SaveKeyFile(path string, k *PrivateKey) error {
	privRaw, err := k.priv.MarshalBinary()
	if err != nil {
		return fmt.Errorf("sign: marshal private key: %w", err)
	}
	data, err := json.MarshalIndent(keyFile{
		Version: 1, Scheme: k.scheme.name, AgentID: string(k.AgentID()),
		PrivateKey: privRaw, PublicKey: k.pub.raw,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("sign: encode key file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("sign: create key file: %w", err)
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("sign: write key file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sign: sync key file %s: %w", path, err)
	}
	return f.Close()
}

// LoadKeyFile reads a key file. It fails with an error that says how to fix
// it when the file is readable by group or others, malformed, or its keys
// do not match its scheme.
func LoadKeyFile(path string) (*PrivateKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("sign: no key file at %s: run `negotiate init` first", path)
		}
		return nil, fmt.Errorf("sign: key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("sign: key file %s has mode %04o and is readable by others: run `chmod 600 %s`", path, st.Mode().Perm(), path)
	}
	if st.Size() > 1<<20 {
		return nil, fmt.Errorf("sign: key file %s is %d bytes, too large to be a key file", path, st.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sign: read key file: %w", err)
	}
	var kf keyFile
	if err := json.Unmarshal(data, &kf); err != nil {
		return nil, fmt.Errorf("sign: key file %s is malformed (%v): restore it from a backup", path, err)
	}
	if kf.Version != 1 {
		return nil, fmt.Errorf("sign: key file %s has version %d, this build reads version 1", path, kf.Version)
	}
	s, err := SchemeByName(kf.Scheme)
	if err != nil {
		return nil, fmt.Errorf("sign: key file %s: %w", path, err)
	}
	if len(kf.PrivateKey) != s.impl.PrivateKeySize() {
		return nil, fmt.Errorf("sign: key file %s: private key is %d bytes, a %s key has %d: the file is damaged or of another scheme", path, len(kf.PrivateKey), s.name, s.impl.PrivateKeySize())
	}
	priv, err := s.impl.UnmarshalBinaryPrivateKey(kf.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("sign: key file %s: private key is not a %s key: %v", path, s.name, err)
	}
	pub, ok := priv.Public().(circlsign.PublicKey)
	if !ok {
		return nil, fmt.Errorf("sign: key file %s: cannot derive the %s public key", path, s.name)
	}
	k, err := newPrivateKey(s, pub, priv)
	if err != nil {
		return nil, err
	}
	// Many private key encodings carry a copy of the public key; a damaged
	// secret part would still give the right public key and agent ID, and
	// every signature made with it would fail. Prove the pair works.
	if err := k.pub.Verify(keyCheckDomain, []byte(path), k.Sign(keyCheckDomain, []byte(path))); err != nil {
		return nil, fmt.Errorf("sign: key file %s: private key does not match its public key: the file is damaged, restore it from a backup", path)
	}
	if kf.PublicKey != nil && string(kf.PublicKey) != string(k.pub.raw) {
		return nil, fmt.Errorf("sign: key file %s: public key does not match private key: the file is damaged", path)
	}
	if kf.AgentID != "" && kf.AgentID != string(k.AgentID()) {
		return nil, fmt.Errorf("sign: key file %s: agent ID does not match the key: the file is damaged", path)
	}
	return k, nil
}
