package sign_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/negotiate-dev/negotiate/sign"
)

func ExampleScheme_GenerateKey() {
	s, err := sign.SchemeByName("ml-dsa-65")
	if err != nil {
		fmt.Println(err)
		return
	}
	k, err := s.GenerateKey()
	if err != nil {
		fmt.Println(err)
		return
	}
	id := k.AgentID()
	_, err = sign.ParseAgentID(id.String())
	fmt.Println("scheme:", k.Scheme().Name())
	fmt.Println("id length:", len(id))
	fmt.Println("id valid:", err == nil)
	fmt.Println("public key bytes:", len(k.Public().Bytes()))
	// Output:
	// scheme: ml-dsa-65
	// id length: 62
	// id valid: true
	// public key bytes: 1952
}

func ExampleScheme_DeriveKey() {
	s, _ := sign.SchemeByName("ed25519")
	k, _ := s.DeriveKey([]byte("negotiate golden seed"))
	fmt.Println(k.AgentID())
	// Output: aaear4kiswhsn3smttnlg7f5pfyocc2kt52hvhmi2p4ter7no5qvnzpmpeuxrq
}

func ExamplePrivateKey_Sign() {
	s, _ := sign.SchemeByName(sign.DefaultScheme)
	k, _ := s.GenerateKey()
	msg := []byte("offer: 3 crates at 40 EUR")
	sig := k.Sign("statement", msg)

	pub := k.Public()
	fmt.Println("same domain:", pub.Verify("statement", msg, sig) == nil)
	err := pub.Verify("chain-entry", msg, sig)
	fmt.Println("other domain rejected:", errors.Is(err, sign.ErrBadSignature))
	err = pub.Verify("statement", []byte("offer: 3 crates at 4 EUR"), sig)
	fmt.Println("tampered message rejected:", errors.Is(err, sign.ErrBadSignature))
	// Output:
	// same domain: true
	// other domain rejected: true
	// tampered message rejected: true
}

func ExampleParsePublicKey() {
	s, _ := sign.SchemeByName("ed448")
	k, _ := s.GenerateKey()
	// A peer sends scheme name and raw key bytes; the receiver rebuilds the
	// key and checks it against the sender's claimed agent ID.
	pub, err := sign.ParsePublicKey(k.Public().SchemeName(), k.Public().Bytes())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(k.AgentID().Check(pub) == nil)
	_, err = sign.ParsePublicKey("ed448", []byte{1, 2, 3})
	fmt.Println(err)
	// Output:
	// true
	// sign: ed448 public key is 3 bytes, want 57
}

func ExampleParseAgentID() {
	id, err := sign.ParseAgentID("aaear4kiswhsn3smttnlg7f5pfyocc2kt52hvhmi2p4ter7no5qvnzpmpeuxrq")
	if err != nil {
		fmt.Println(err)
		return
	}
	s, _ := id.Scheme()
	fmt.Println(s.Name(), id.Short())

	// One mistyped character (r -> g near the end) is caught by the checksum.
	_, err = sign.ParseAgentID("aaear4kiswhsn3smttnlg7f5pfyocc2kt52hvhmi2p4ter7no5qvnzpmpeuxgq")
	fmt.Println(errors.Is(err, sign.ErrBadAgentID))
	// Output:
	// ed25519 aaear4ki…uxrq
	// true
}

func ExampleAgentID_Check() {
	s, _ := sign.SchemeByName("ed25519")
	alice, _ := s.DeriveKey([]byte("alice"))
	mallory, _ := s.DeriveKey([]byte("mallory"))
	fmt.Println(alice.AgentID().Check(alice.Public()) == nil)
	fmt.Println(errors.Is(alice.AgentID().Check(mallory.Public()), sign.ErrBadAgentID))
	// Output:
	// true
	// true
}

func ExampleSchemeByName() {
	s, _ := sign.SchemeByName("Ed25519-Dilithium2")
	fmt.Println(s.Name(), s.PublicKeySize(), s.SignatureSize())
	_, err := sign.SchemeByName("rsa")
	fmt.Println(err)
	// Output:
	// ed25519-dilithium2 1344 2484
	// sign: unknown scheme "rsa": use one of ed25519, ed25519-dilithium2, ed448, ml-dsa-65
}

func ExampleSchemeNames() {
	fmt.Println(sign.SchemeNames())
	// Output: [ed25519 ed25519-dilithium2 ed448 ml-dsa-65]
}

func ExampleSaveKeyFile() {
	dir, err := os.MkdirTemp("", "sign-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "agent.key")

	s, _ := sign.SchemeByName("ed25519")
	k, _ := s.GenerateKey()
	if err := sign.SaveKeyFile(path, k); err != nil {
		fmt.Println(err)
		return
	}
	st, _ := os.Stat(path)
	fmt.Printf("mode %04o\n", st.Mode().Perm())

	loaded, err := sign.LoadKeyFile(path)
	fmt.Println("loaded:", err == nil && loaded.AgentID() == k.AgentID())
	fmt.Println("overwrite refused:", sign.SaveKeyFile(path, k) != nil)
	// Output:
	// mode 0600
	// loaded: true
	// overwrite refused: true
}

func ExampleHash() {
	fmt.Printf("%x\n", sign.Hash([]byte("abc")))
	// Output: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
}
