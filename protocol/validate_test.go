package protocol

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

func TestBodiesValidate(t *testing.T) {
	f := newFixture(t)
	for typ, body := range f.bodies() {
		if err := body.(interface{ Validate() error }).Validate(); err != nil {
			t.Errorf("fixture %s: %v", typ, err)
		}
	}
}

func TestValidateRejects(t *testing.T) {
	f := newFixture(t)
	b := f.bodies()
	prop := *b[TypePropose].(*Propose)
	other := partyOf(testKey(t, "ed25519", "dave"))
	badKey := f.parties[0]
	badKey.Key = f.parties[1].Key
	many := make([]Party, MaxParties+1)
	for i := range many {
		many[i] = f.parties[0]
	}
	ag := f.agreement
	rec := f.record
	tests := []struct {
		name string
		body interface{ Validate() error }
		want error
	}{
		{"propose round over cap", with(prop, func(p *Propose) { p.Round = MaxRounds + 1 }), ErrTooLarge},
		{"propose round past its max_rounds", with(prop, func(p *Propose) { p.Round = 9 }), ErrMalformed},
		{"propose max_rounds over cap", with(prop, func(p *Propose) { p.MaxRounds = MaxRounds + 1 }), ErrTooLarge},
		{"propose one party", with(prop, func(p *Propose) { p.Parties = p.Parties[:1] }), ErrMalformed},
		{"propose too many parties", with(prop, func(p *Propose) { p.Parties = many }), ErrTooLarge},
		{"propose party twice", with(prop, func(p *Propose) { p.Parties = append(p.Parties, p.Parties[0]) }), ErrMalformed},
		{"propose key of another party", with(prop, func(p *Propose) { p.Parties = []Party{badKey, other} }), ErrMalformed},
		{"propose terms not a map", with(prop, func(p *Propose) { p.Terms = []byte{0x83, 1, 2, 3} }), ErrMalformed},
		{"propose terms not canonical", with(prop, func(p *Propose) { p.Terms = []byte{0xa2, 0x61, 'b', 1, 0x61, 'a', 2} }), ErrMalformed},
		{"propose terms too large", with(prop, func(p *Propose) { p.Terms, _ = Marshal(map[string]string{"x": strings.Repeat("y", MaxTermsBytes)}) }), ErrTooLarge},
		{"propose no deadline", with(prop, func(p *Propose) { p.Deadline = 0 }), ErrMalformed},
		{"propose witness is a party", with(prop, func(p *Propose) { p.Witness = &p.Parties[1] }), ErrMalformed},
		{"accept zero hash", &Accept{Round: 1}, ErrMalformed},
		{"reject long reason", &Reject{Reason: strings.Repeat("r", MaxReasonBytes+1)}, ErrTooLarge},
		{"counter bad terms", &Counter{Terms: []byte{0x01}}, ErrMalformed},
		{"agreement bad session", with(ag, func(a *Agreement) { a.Session = strings.Repeat("G", SessionIDLen) }), ErrMalformed},
		{"agreement terms hash mismatch", with(ag, func(a *Agreement) { a.TermsHash[0] ^= 1 }), ErrMalformed},
		{"agreement no timestamp", with(ag, func(a *Agreement) { a.Timestamp = 0 }), ErrMalformed},
		{"preflight hash mismatch", &Preflight{Agreement: f.agreement, AgreementHash: chain.Hash{1}}, ErrMalformed},
		{"preflight bad agreement", &Preflight{Agreement: *with(ag, func(a *Agreement) { a.Deadline = 0 }), AgreementHash: f.agHash}, ErrMalformed},
		{"offer statement for another agreement", with(*f.offer(), func(o *Offer) { o.Ready.AgreementHash = chain.Hash{1} }), ErrMalformed},
		{"offer of round 2", &Offer{Preflight: Preflight{Agreement: f.agreement, AgreementHash: f.agHash}, Ready: Ready{AgreementHash: f.agHash, Signature: []byte{1}}}, ErrMalformed},
		{"offer without a signature", with(*f.offer(), func(o *Offer) { o.Ready.Signature = nil }), ErrMalformed},
		{"offer bad preflight", with(*f.offer(), func(o *Offer) { o.Preflight.AgreementHash = chain.Hash{2} }), ErrMalformed},
		{"statement signer not a party", &Statement{Session: f.session, AgreementHash: f.agHash, Parties: []sign.AgentID{f.parties[0].ID, f.parties[1].ID}, Signer: other.ID}, ErrMalformed},
		{"ready no signature", &Ready{AgreementHash: f.agHash}, ErrMalformed},
		{"ready huge signature", &Ready{AgreementHash: f.agHash, Signature: make([]byte, MaxSignatureBytes+1)}, ErrTooLarge},
		{"refuse locked_by without busy", &Refuse{AgreementHash: f.agHash, LockedBy: f.session}, ErrMalformed},
		{"refuse bad locked_by", &Refuse{AgreementHash: f.agHash, Busy: true, LockedBy: "x"}, ErrMalformed},
		{"record missing signature", with(rec, func(r *Record) { r.Signatures = r.Signatures[:2] }), ErrMalformed},
		{"record empty signature", with(rec, func(r *Record) { r.Signatures = [][]byte{{1}, nil, {1}} }), ErrMalformed},
		{"record decision without witness", with(rec, func(r *Record) { r.WitnessDecision = []byte{1} }), ErrMalformed},
		{"record witness without decision", with(rec, func(r *Record) { w := partyOf(f.witness); r.Agreement.Witness = &w }), ErrMalformed},
		{"abort no certificate", &Abort{}, ErrMalformed},
		{"status empty", &Status{}, ErrMalformed},
		{"status bad ready", &Status{State: "signed", Ready: &Ready{}}, ErrMalformed},
		{"decision commit without record", &Decision{AgreementHash: f.agHash, Commit: true}, ErrMalformed},
		{"decision abort with record", &Decision{AgreementHash: f.agHash, RecordHash: chain.Hash{1}}, ErrMalformed},
		{"abort-ask zero hash", &AbortAsk{}, ErrMalformed},
		{"direct payload too large", &Direct{Payload: make([]byte, MaxDirectBytes+1)}, ErrTooLarge},
		{"direct content type too long", &Direct{ContentType: strings.Repeat("c", MaxContentTypeBytes+1)}, ErrTooLarge},
		{"direct reply long reason", &DirectReply{Reason: strings.Repeat("r", MaxReasonBytes+1)}, ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.body.Validate()
			if !errors.Is(err, tc.want) {
				t.Fatalf("Validate = %v, want %v", err, tc.want)
			}
		})
	}
}

// with returns a pointer to a changed copy of v.
func with[T any](v T, change func(*T)) *T {
	change(&v)
	return &v
}

func TestCheckSessionID(t *testing.T) {
	if err := CheckSessionID(NewSessionID()); err != nil {
		t.Fatalf("NewSessionID: %v", err)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("A", 32), strings.Repeat("g", 32), strings.Repeat("a", 33)} {
		if err := CheckSessionID(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("CheckSessionID(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestEncodeTermsCanonical(t *testing.T) {
	a, err := EncodeTerms(map[string]any{"b": 1, "a": []any{"x", 2.5}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := EncodeTerms(map[string]any{"a": []any{"x", 2.5}, "b": 1})
	if err != nil {
		t.Fatal(err)
	}
	if TermsHash(a) != TermsHash(b) {
		t.Fatal("the same terms hash differently")
	}
	if _, err := EncodeTerms([]int{1}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("terms that are not a map: %v", err)
	}
}

func TestHashesChangeWithContent(t *testing.T) {
	f := newFixture(t)
	h1, _ := AgreementHash(&f.agreement)
	changed := f.agreement
	changed.Round++
	h2, _ := AgreementHash(&changed)
	if h1 == h2 || h1 != f.agHash {
		t.Fatal("agreement hash does not follow the agreement")
	}
	r1, _ := RecordHash(&f.record)
	rec := f.record
	rec.Heads = append([]chain.Head(nil), rec.Heads...)
	rec.Heads[0].Seq++
	r2, _ := RecordHash(&rec)
	if r1 == r2 {
		t.Fatal("record hash ignores the heads")
	}
}

// TestNewSessionIDIsTimeOrdered checks new session IDs: well-formed, in
// the order of their creation time across milliseconds, and distinct
// within one millisecond (the random part).
func TestNewSessionIDIsTimeOrdered(t *testing.T) {
	t0 := time.UnixMilli(1_764_000_000_000)
	prev := ""
	for i := 0; i < 50; i++ {
		at := t0.Add(time.Duration(i*37) * time.Millisecond)
		id := newSessionIDAt(at)
		if err := CheckSessionID(id); err != nil {
			t.Fatal(err)
		}
		if id <= prev {
			t.Fatalf("ID %s made at %v sorts before %s made earlier", id, at, prev)
		}
		prev = id
	}
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := newSessionIDAt(t0)
		if seen[id] {
			t.Fatalf("ID %s made twice in one millisecond", id)
		}
		seen[id] = true
		if id[:12] != fmt.Sprintf("%012x", t0.UnixMilli()) {
			t.Fatalf("ID %s does not start with its time %012x", id, t0.UnixMilli())
		}
	}
}
