package scenarios

import (
	"context"
	"strings"
	"testing"

	"github.com/negotiate-dev/negotiate/negotiate/engine"
)

// runSimOf loads a scenario file and runs it in the simulator, keeping
// the sim so a test can look at (and tamper with) what the checks read.
func runSimOf(t *testing.T, sc *Scenario) *sim {
	t.Helper()
	s, err := newSim(sc, SimOptions{}, 1)
	if err != nil {
		t.Fatal(err)
	}
	s.run(context.Background())
	return s
}

func loadOne(t *testing.T, file string) *Scenario {
	t.Helper()
	scs, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	return scs[0]
}

func invariant(lines []Line, name string) Line {
	for _, l := range lines {
		if l.Name == name {
			return l
		}
	}
	return Line{Name: name, Detail: "missing"}
}

// TestOfferConsent: in a signed offer no Propose or Accept carries a
// party's consent; the initiator's is its proposal and a participant's its
// accept decision. The checker counts exactly those (a rejection is no
// consent) and still fails when a signer's consent is missing.
func TestOfferConsent(t *testing.T) {
	tests := []struct {
		name   string
		file   string
		forget string // this party's consent is dropped before the check
		want   map[string]int
		fail   string // the consent line must fail naming this
	}{
		{name: "2-party commit counted", file: "offer-trade.yaml", want: map[string]int{"seller": 1, "buyer": 1}},
		{name: "5-party commit counted, scripted accept included", file: "offer-5-party.yaml",
			want: map[string]int{"p00": 1, "p01": 1, "p02": 1, "p03": 1, "p04": 1}},
		{name: "rejection is no consent", file: "offer-reject.yaml", want: map[string]int{"seller": 1, "buyer": 0}},
		{name: "participant never decided", file: "offer-undecided.yaml", want: map[string]int{"seller": 1, "buyer": 0}},
		{name: "participant's consent missing", file: "offer-trade.yaml", forget: "buyer", fail: "buyer's signature"},
		{name: "initiator's consent missing", file: "offer-trade.yaml", forget: "seller", fail: "seller's signature"},
		{name: "participant that crashed after its append", file: "offer-crash-participant-after-append.yaml", forget: "buyer", fail: "buyer's signature"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sc := loadOne(t, tc.file)
			s := runSimOf(t, sc)
			id := s.sessions[0].id
			terms, err := encodeTerms(sc.Steps[0].Propose.Terms)
			if err != nil {
				t.Fatal(err)
			}
			want := consentKey{1, termsHashOf(terms)}
			for name, n := range tc.want {
				got := s.byName[name].consent[id]
				if len(got) != n || (n == 1 && !got[want]) {
					t.Errorf("%s consents to %v, want %d entry/entries {round 1, the offered terms}", name, got, n)
				}
			}
			if tc.forget != "" {
				delete(s.byName[tc.forget].consent, id)
			}
			l := invariant(s.checkInvariants(), InvConsent)
			if tc.fail == "" {
				if !l.Passed {
					t.Fatalf("consent: %s", l.Detail)
				}
				return
			}
			if l.Passed || !strings.Contains(l.Detail, tc.fail) {
				t.Fatalf("consent line %+v, want a failure naming %q", l, tc.fail)
			}
		})
	}
}

// A participant's accept counts only for the offer it was shown: consent
// recorded for other terms does not cover its signature.
func TestOfferConsentIsForTheShownTerms(t *testing.T) {
	s := runSimOf(t, loadOne(t, "offer-trade.yaml"))
	id := s.sessions[0].id
	buyer := s.byName["buyer"]
	shown, ok := buyer.offered[id]
	if !ok {
		t.Fatal("the buyer's offer event was not recorded")
	}
	other := shown
	other.terms[0] ^= 0xff
	buyer.consent[id] = map[consentKey]bool{other: true}
	if l := invariant(s.checkInvariants(), InvConsent); l.Passed {
		t.Fatal("a signature over the offered terms passed with consent to other terms only")
	}
}

// A participant whose policy would counter a signed offer rejects it, as
// negotiate.Node turns such a counter; the simulator does the same.
func TestOfferCounterPolicyRejects(t *testing.T) {
	sc, err := Parse([]byte(`
name: offer-counter-policy
parties:
  - name: seller
  - name: buyer
    policy: {kind: counter-until, field: price, target: 30, step: 5, direction: down}
steps:
  - propose: {from: seller, with: [buyer], terms: {item: lamp, price: 40}, offer: true, timeout: 5s}
expect:
  outcome: {seller: rejected, buyer: rejected}
  record_on: []
  within: 1s
`), "offer-counter-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r, err := RunSim(context.Background(), sc, SimOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Passed {
		t.Fatalf("failures %+v, outcomes %+v", r.Failures(), r.Outcomes)
	}
	if got := r.Outcomes["s1"]["seller"].Reason; !strings.Contains(got, engine.OfferCounterReason) {
		t.Fatalf("seller's reason %q, want the policy's rejection %q", got, engine.OfferCounterReason)
	}
}
