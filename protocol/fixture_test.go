package protocol

import (
	"fmt"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// testNow is the fixed clock of the tests (unix ms).
const testNow = int64(1_760_000_000_000)

// testExp is a valid expiry at testNow.
const testExp = testNow + 60_000

// testKey derives a deterministic key of scheme from a name.
func testKey(t testing.TB, scheme, name string) *sign.PrivateKey {
	t.Helper()
	s, err := sign.SchemeByName(scheme)
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.DeriveKey([]byte(name))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func partyOf(k *sign.PrivateKey) Party {
	return Party{ID: k.AgentID(), Scheme: k.Scheme().Name(), Key: k.Public().Bytes()}
}

// fixture is a valid three-party session with one body of every type.
type fixture struct {
	keys      []*sign.PrivateKey
	witness   *sign.PrivateKey
	parties   []Party
	session   string
	terms     cbor.RawMessage
	agreement Agreement
	agHash    chain.Hash
	record    Record
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{
		keys: []*sign.PrivateKey{
			testKey(t, "ed25519", "alice"),
			testKey(t, "ed448", "bob"),
			testKey(t, "ml-dsa-65", "carol"),
		},
		witness: testKey(t, "ed25519", "witness"),
		session: "0123456789abcdef0123456789abcdef",
	}
	for _, k := range f.keys {
		f.parties = append(f.parties, partyOf(k))
	}
	terms, err := EncodeTerms(map[string]any{"item": "widget", "qty": 3, "price": map[string]any{"amount": 1250, "currency": "EUR"}})
	if err != nil {
		t.Fatal(err)
	}
	f.terms = terms
	f.agreement = Agreement{
		Session: f.session, Round: 2, Terms: terms, TermsHash: TermsHash(terms),
		Parties: f.parties, Deadline: testNow + 120_000, Timestamp: testNow,
	}
	if f.agHash, err = AgreementHash(&f.agreement); err != nil {
		t.Fatal(err)
	}
	f.record = Record{Agreement: f.agreement}
	for i, k := range f.keys {
		head := chain.Head{Seq: uint64(10 + i), Hash: chain.Hash{byte(i + 1), 0xaa}}
		st, err := StatementFor(&f.agreement, k.AgentID(), head)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := SignStatement(k, &st)
		if err != nil {
			t.Fatal(err)
		}
		f.record.Heads = append(f.record.Heads, head)
		f.record.Signatures = append(f.record.Signatures, sig)
	}
	return f
}

// bodies returns one valid body of every registered message type.
func (f *fixture) bodies() map[string]any {
	ready := &Ready{AgreementHash: f.agHash, Head: f.record.Heads[0], Signature: f.record.Signatures[0]}
	return map[string]any{
		TypePropose:     &Propose{Round: 1, Parties: f.parties, Terms: f.terms, Deadline: testNow + 120_000, MaxRounds: 8, Witness: ptr(partyOf(f.witness))},
		TypeAccept:      &Accept{Round: 1, TermsHash: TermsHash(f.terms)},
		TypeReject:      &Reject{Round: 1, Reason: "price too high"},
		TypeCounter:     &Counter{Round: 1, Terms: f.terms},
		TypePreflight:   &Preflight{Agreement: f.agreement, AgreementHash: f.agHash},
		TypeReady:       ready,
		TypeOffer:       f.offer(),
		TypeRefuse:      &Refuse{AgreementHash: f.agHash, Reason: "busy", Busy: true, LockedBy: "fedcba9876543210fedcba9876543210"},
		TypeCommit:      &Commit{Record: f.record},
		TypeAbort:       &Abort{Certificate: []byte{0xa2, 0x61, 0x70, 0x40, 0x61, 0x73, 0x40}},
		TypeQuery:       &Query{AgreementHash: f.agHash},
		TypeStatus:      &Status{State: "signed", Ready: ready},
		TypeDecision:    &Decision{AgreementHash: f.agHash, Commit: true, RecordHash: chain.Hash{9}},
		TypeAbortAsk:    &AbortAsk{AgreementHash: f.agHash},
		TypeDirect:      &Direct{ContentType: "text/plain", Payload: []byte("ping me about entry 12")},
		TypeDirectReply: &DirectReply{Accepted: true, Payload: []byte("ok"), ReceivedAt: testNow},
	}
}

// offer is a valid signed offer: the fixture's agreement as round 1 and
// party 0's Ready for it.
func (f *fixture) offer() *Offer {
	a := f.agreement
	a.Round = 1
	ah, err := AgreementHash(&a)
	if err != nil {
		panic(err)
	}
	return &Offer{
		Preflight: Preflight{Agreement: a, AgreementHash: ah},
		Ready:     Ready{AgreementHash: ah, Head: f.record.Heads[0], Signature: f.record.Signatures[0]},
	}
}

func ptr[T any](v T) *T { return &v }

// message builds a valid Message of type typ with body.
func (f *fixture) message(t testing.TB, typ string, body any) Message {
	t.Helper()
	raw, err := EncodeBody(body)
	if err != nil {
		t.Fatal(err)
	}
	return Message{
		Type: typ, Session: f.session, To: f.keys[1].AgentID(),
		Nonce: fixedNonce(typ), Expires: testExp, Body: raw,
	}
}

// sealed seals a valid message of type typ from party 0 to party 1.
func (f *fixture) sealed(t testing.TB, typ string) []byte {
	t.Helper()
	b, err := Seal(f.keys[0], f.message(t, typ, f.bodies()[typ]))
	if err != nil {
		t.Fatalf("seal %s: %v", typ, err)
	}
	return b
}

func fixedNonce(seed string) []byte {
	n := make([]byte, NonceSize)
	copy(n, fmt.Sprintf("%-16s", seed))
	return n
}

// resign re-signs a (possibly doctored) payload with key for typ.
func resign(t testing.TB, key *sign.PrivateKey, typ string, payload []byte) []byte {
	t.Helper()
	b, err := Marshal(Signed{Payload: payload, Sig: key.Sign(Domain(typ), payload)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawMessage encodes m without Seal's checks.
func rawMessage(t testing.TB, m any) []byte {
	t.Helper()
	b, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustKey(t testing.TB, info *AgentInfo) sign.PublicKey {
	t.Helper()
	pub, err := sign.ParsePublicKey(info.Scheme, info.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}
