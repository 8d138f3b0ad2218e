package protocol

import (
	"errors"
	"testing"

	"github.com/negotiate-dev/negotiate/chain"
)

func TestVerifyRecord(t *testing.T) {
	f := newFixture(t)
	if err := VerifyRecord(&f.record); err != nil {
		t.Fatalf("valid record: %v", err)
	}
	swapped := f.record
	swapped.Signatures = [][]byte{f.record.Signatures[1], f.record.Signatures[0], f.record.Signatures[2]}
	moved := f.record
	moved.Heads = append([]chain.Head(nil), f.record.Heads...)
	moved.Heads[2].Seq++
	otherTerms := f.record
	otherTerms.Agreement.Round++
	for name, r := range map[string]*Record{"swapped signatures": &swapped, "other chain position": &moved, "other round": &otherTerms} {
		if err := VerifyRecord(r); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", name, err)
		}
	}
}

func TestStatementNotReusableForAnotherSigner(t *testing.T) {
	f := newFixture(t)
	st, err := StatementFor(&f.agreement, f.keys[0].AgentID(), f.record.Heads[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SignStatement(f.keys[1], &st); err == nil {
		t.Fatal("signed a statement with a key that is not its signer")
	}
	sig, _ := SignStatement(f.keys[0], &st)
	if err := VerifyStatement(f.keys[1].Public(), &st, sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("verify with another party's key: %v", err)
	}
}

func TestAgentInfo(t *testing.T) {
	key := testKey(t, "ml-dsa-65", "node")
	info := AgentInfo{PeerID: "12D3KooWexample", Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}, Seq: 7, Expires: testExp}
	b, err := SignAgentInfo(key, info)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenAgentInfo(b, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if got.AgentID != key.AgentID() || got.Seq != 7 || got.Addrs[0] != info.Addrs[0] {
		t.Fatalf("record changed: %+v", got)
	}
	if _, err := OpenAgentInfo(b, testExp+1); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired record: %v", err)
	}
	forged := *got
	forged.Seq = 8
	fb, _ := Marshal(&forged)
	if _, err := OpenAgentInfo(fb, testNow); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("changed seq: %v, want ErrBadSignature", err)
	}
	if _, err := OpenAgentInfo(append(b, 0), testNow); !errors.Is(err, ErrTrailing) {
		t.Fatalf("trailing byte: %v", err)
	}
	many := info
	many.Addrs = make([]string, MaxAddrs+1)
	for i := range many.Addrs {
		many.Addrs[i] = "/ip4/127.0.0.1/tcp/1"
	}
	if _, err := SignAgentInfo(key, many); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too many addresses: %v", err)
	}
}
