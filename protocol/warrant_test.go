package protocol

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

func warrantKey(t *testing.T, name string) *sign.PrivateKey {
	t.Helper()
	s, err := sign.SchemeByName(sign.DefaultScheme)
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.DeriveKey([]byte("warrant-test/" + name))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signedStatement(t *testing.T, key *sign.PrivateKey, session string, ah chain.Hash, head chain.Head) WarrantItem {
	t.Helper()
	st := Statement{Session: session, AgreementHash: ah, Parties: []sign.AgentID{key.AgentID(), warrantKey(t, "other").AgentID()}, Signer: key.AgentID(), Head: head}
	sig, err := SignStatement(key, &st)
	if err != nil {
		t.Fatal(err)
	}
	return StatementItem(st, sig)
}

func sealedFrame(t *testing.T, key *sign.PrivateKey, typ, session string, body any) WarrantItem {
	t.Helper()
	b, err := EncodeBody(body)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Seal(key, Message{Type: typ, Session: session, Nonce: NewNonce(), Expires: time.Now().Add(time.Minute).UnixMilli(), Body: b})
	if err != nil {
		t.Fatal(err)
	}
	return FrameItem(f)
}

func TestWarrantVerifies(t *testing.T) {
	mallory, other := warrantKey(t, "mallory"), warrantKey(t, "other")
	sid, sid2 := NewSessionID(), NewSessionID()
	ah1, ah2 := chain.Hash(sign.Hash([]byte("a1"))), chain.Hash(sign.Hash([]byte("a2")))
	h1 := chain.Head{Seq: 3, Hash: chain.Hash(sign.Hash([]byte("h1")))}
	h2 := chain.Head{Seq: 3, Hash: chain.Hash(sign.Hash([]byte("h2")))}
	h4 := chain.Head{Seq: 4, Hash: chain.Hash(sign.Hash([]byte("h4")))}
	terms1, _ := EncodeTerms(map[string]any{"p": 1})
	terms2, _ := EncodeTerms(map[string]any{"p": 2})
	parties := []Party{{ID: mallory.AgentID(), Scheme: mallory.Scheme().Name(), Key: mallory.Public().Bytes()},
		{ID: other.AgentID(), Scheme: other.Scheme().Name(), Key: other.Public().Bytes()}}
	propose := func(terms []byte) *Propose {
		return &Propose{Round: 1, Parties: parties, Terms: terms, Deadline: time.Now().Add(time.Minute).UnixMilli(), MaxRounds: 8}
	}
	tests := []struct {
		name string
		a, b WarrantItem
		want string // substring of what it proves; "" = an error is wanted
		err  error
	}{
		{"two agreements signed in one session", signedStatement(t, mallory, sid, ah1, h1), signedStatement(t, mallory, sid, ah2, h1), "two different statements", nil},
		{"one agreement at two heads", signedStatement(t, mallory, sid, ah1, h1), signedStatement(t, mallory, sid, ah1, h4), "two different statements", nil},
		{"forked chain across sessions", signedStatement(t, mallory, sid, ah1, h1), signedStatement(t, mallory, sid2, ah2, h2), "forked chain", nil},
		{"signed and refused", signedStatement(t, mallory, sid, ah1, h1), sealedFrame(t, mallory, TypeRefuse, sid, &Refuse{AgreementHash: ah1, Reason: "no"}), "signed and refused", nil},
		{"two terms for one round", sealedFrame(t, mallory, TypePropose, sid, propose(terms1)), sealedFrame(t, mallory, TypePropose, sid, propose(terms2)), "two different terms", nil},
		{"same statement twice", signedStatement(t, mallory, sid, ah1, h1), signedStatement(t, mallory, sid, ah1, h1), "", ErrNotEquivocation},
		{"two sessions at one head", signedStatement(t, mallory, sid, ah1, h1), signedStatement(t, mallory, sid2, ah2, h1), "", ErrNotEquivocation},
		{"refusal of another agreement", signedStatement(t, mallory, sid, ah1, h1), sealedFrame(t, mallory, TypeRefuse, sid, &Refuse{AgreementHash: ah2, Reason: "no"}), "", ErrNotEquivocation},
		{"another agent's statement", signedStatement(t, mallory, sid, ah1, h1), signedStatement(t, other, sid, ah2, h1), "", ErrMalformed},
		{"another agent's frame", signedStatement(t, mallory, sid, ah1, h1), sealedFrame(t, other, TypeRefuse, sid, &Refuse{AgreementHash: ah1, Reason: "no"}), "", ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, _, err := NewWarrant(mallory.Public(), tc.a, tc.b)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("err %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			w, what, err := VerifyWarrant(raw)
			if err != nil || !strings.Contains(what, tc.want) || w.Agent != mallory.AgentID() {
				t.Fatalf("verify: %v, %q, want %q against mallory", err, what, tc.want)
			}
			// The same pair in the other order encodes the same.
			raw2, _, err := NewWarrant(mallory.Public(), tc.b, tc.a)
			if err != nil || string(raw2) != string(raw) {
				t.Fatalf("warrant depends on the order of its items (%v)", err)
			}
		})
	}
}

func TestWarrantRefusesForgery(t *testing.T) {
	mallory := warrantKey(t, "mallory")
	sid := NewSessionID()
	ah1, ah2 := chain.Hash(sign.Hash([]byte("a1"))), chain.Hash(sign.Hash([]byte("a2")))
	h := chain.Head{Seq: 1, Hash: chain.Hash(sign.Hash([]byte("h")))}
	raw, w, err := NewWarrant(mallory.Public(), signedStatement(t, mallory, sid, ah1, h), signedStatement(t, mallory, sid, ah2, h))
	if err != nil {
		t.Fatal(err)
	}
	forged := *w
	b := *w.B.Statement
	sig := append([]byte(nil), w.B.Sig...)
	sig[0] ^= 1
	forged.B = WarrantItem{Statement: &b, Sig: sig}
	fr, err := Marshal(&forged)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := VerifyWarrant(fr); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered signature: %v, want ErrBadSignature", err)
	}
	other := warrantKey(t, "other")
	stolen := *w
	stolen.Agent, stolen.Key = other.AgentID(), other.Public().Bytes()
	sr, _ := Marshal(&stolen)
	if _, _, err := VerifyWarrant(sr); err == nil {
		t.Fatal("a warrant naming another agent verifies")
	}
	for _, bad := range [][]byte{nil, {0xff}, raw[:len(raw)/2], append(append([]byte(nil), raw...), 0)} {
		if _, _, err := VerifyWarrant(bad); err == nil {
			t.Fatalf("garbage %x verifies", bad)
		}
	}
}
