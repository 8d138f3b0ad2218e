package policy_test

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/negotiate/policy"

	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// policyIDs are deterministic agent IDs for policy tests.
var policyIDs = func() map[string]sign.AgentID {
	s, err := sign.SchemeByName(sign.DefaultScheme)
	if err != nil {
		panic(err)
	}
	ids := make(map[string]sign.AgentID)
	for _, name := range []string{"alice", "bob", "carol"} {
		k, err := s.DeriveKey([]byte("policy-" + name))
		if err != nil {
			panic(err)
		}
		ids[name] = k.AgentID()
	}
	return ids
}()

// policyText replaces $alice, $bob and $carol with their agent IDs.
func policyText(s string) string {
	for name, id := range policyIDs {
		s = strings.ReplaceAll(s, "$"+name, string(id))
	}
	return s
}

// mistype changes the character at i of an agent ID.
func mistype(id string, i int) string {
	c := byte('b')
	if id[i] == 'b' {
		c = 'c'
	}
	return id[:i] + string(c) + id[i+1:]
}

func mustPolicy(t testing.TB, text string) *policy.Rules {
	t.Helper()
	p, err := policy.Parse([]byte(policyText(text)), "test.yaml")
	if err != nil {
		t.Fatalf("parse policy: %v", err)
	}
	return p
}

// proposalTo is round 1 proposed by bob (initiator) to this agent (participant).
func proposalTo(terms map[string]any) negotiate.Proposal {
	return negotiate.Proposal{
		Session: "0123456789abcdef0123456789abcdef", Kind: negotiate.EvProposal, Role: engine.RoleParticipant,
		From: policyIDs["bob"], Initiator: policyIDs["bob"],
		Parties: []sign.AgentID{policyIDs["bob"], policyIDs["alice"]}, Round: 1, MaxRounds: 8, Terms: terms,
	}
}

// counterFrom is bob's counter in round 1 to this agent's (alice's) proposal.
func counterFrom(terms map[string]any) negotiate.Proposal {
	return negotiate.Proposal{
		Session: "0123456789abcdef0123456789abcdef", Kind: negotiate.EvCounter, Role: engine.RoleInitiator,
		From: policyIDs["bob"], Initiator: policyIDs["alice"],
		Parties: []sign.AgentID{policyIDs["alice"], policyIDs["bob"]}, Round: 1, MaxRounds: 8, Terms: terms,
	}
}

func withRound(p negotiate.Proposal, round uint32) negotiate.Proposal {
	p.Round = round
	return p
}

func withFrom(p negotiate.Proposal, who string) negotiate.Proposal {
	p.From = policyIDs[who]
	return p
}

type policyWant struct {
	ok     bool
	action negotiate.Action
	terms  map[string]any // for counter: the decoded counter terms
	reason string
	rule   string
}

var (
	accept = policyWant{ok: true, action: negotiate.ActAccept}
	ask    = policyWant{}
)

func counter(terms map[string]any) policyWant {
	return policyWant{ok: true, action: negotiate.ActCounter, terms: terms}
}

func reject(reason string) policyWant {
	return policyWant{ok: true, action: negotiate.ActReject, reason: reason}
}

const buyerPolicy = `
rules:
  - name: cheap enough
    when:
      price: {max: 80}
      item: {in: [book, pen]}
    action: accept
  - name: haggle
    when:
      item: {in: [book, pen]}
    action: counter
    counter:
      price: {toward: 80, step: 5}
  - name: no weapons
    when:
      item: {equals: sword}
    action: reject
    reason: we do not buy weapons
default: ask
`

func TestRulePolicyDecide(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		in     negotiate.Proposal
		want   policyWant
	}{
		// ranges: inclusive, ints and floats, non-numbers never match
		{"range inside", buyerPolicy, proposalTo(map[string]any{"price": uint64(50), "item": "book"}), accept},
		{"range edge is inclusive", buyerPolicy, proposalTo(map[string]any{"price": uint64(80), "item": "pen"}), accept},
		{"range float just above", buyerPolicy, proposalTo(map[string]any{"price": 80.5, "item": "book"}),
			counter(map[string]any{"price": 80.0, "item": "book"})},
		{"range on a string term does not match", `
rules:
  - when: {price: {min: 0}}
    action: accept
default: reject`, proposalTo(map[string]any{"price": "cheap"}), reject("rejected by policy")},
		{"float min vs int term", `
rules:
  - when: {price: {min: 10.5}}
    action: accept`, proposalTo(map[string]any{"price": uint64(10)}), ask},
		{"negative range", `
rules:
  - when: {delta: {min: -5, max: -1}}
    action: accept`, proposalTo(map[string]any{"delta": int64(-3)}), accept},
		{"huge uint64 compares exactly", `
rules:
  - when: {n: {max: 18446744073709551614}}
    action: accept
default: reject`, proposalTo(map[string]any{"n": uint64(math.MaxUint64)}), reject("rejected by policy")},
		{"NaN term is no number", `
rules:
  - when: {price: {max: 100}}
    action: accept`, proposalTo(map[string]any{"price": math.NaN()}), ask},

		// equals / in / not_in / present
		{"equals string", buyerPolicy, proposalTo(map[string]any{"price": uint64(999), "item": "sword"}), reject("we do not buy weapons")},
		{"in: not listed falls to default", buyerPolicy, proposalTo(map[string]any{"price": uint64(1), "item": "car"}), ask},
		{"equals number matches 10.0", `
rules:
  - when: {qty: {equals: 10}}
    action: accept`, proposalTo(map[string]any{"qty": 10.0}), accept},
		{"quoted equals is text", `
rules:
  - when: {qty: {equals: "10"}}
    action: accept`, proposalTo(map[string]any{"qty": uint64(10)}), ask},
		{"equals bool", `
rules:
  - when: {insured: {equals: true}}
    action: accept`, proposalTo(map[string]any{"insured": true}), accept},
		{"not_in excludes", `
rules:
  - when: {country: {not_in: [XX, YY]}}
    action: accept
default: reject`, proposalTo(map[string]any{"country": "XX"}), reject("rejected by policy")},
		{"not_in needs the term", `
rules:
  - when: {country: {not_in: [XX]}}
    action: accept`, proposalTo(map[string]any{}), ask},
		{"present true", `
rules:
  - when: {currency: {present: true}}
    action: accept`, proposalTo(map[string]any{"currency": "EUR"}), accept},
		{"present false", `
rules:
  - when: {discount: {present: false}}
    action: accept
default: reject`, proposalTo(map[string]any{"discount": uint64(5)}), reject("rejected by policy")},
		{"all conditions must hold", `
rules:
  - when: {price: {max: 10}, item: {equals: pen}}
    action: accept`, proposalTo(map[string]any{"price": uint64(5), "item": "book"}), ask},

		// from and role filtering
		{"from matches proposer", `
rules:
  - from: [$carol, $bob]
    action: accept
default: reject`, proposalTo(nil), accept},
		{"from filters others out", `
rules:
  - from: [$carol]
    action: accept
default: reject`, proposalTo(nil), reject("rejected by policy")},
		{"from is the counter-er for an initiator", `
rules:
  - from: [$carol]
    action: accept
default: reject`, withFrom(counterFrom(nil), "carol"), accept},
		{"role filter skips", `
rules:
  - role: initiator
    action: accept
default: reject`, proposalTo(nil), reject("rejected by policy")},
		{"role filter matches", `
rules:
  - role: participant
    action: accept`, proposalTo(nil), accept},

		// first match wins, ask, defaults
		{"first match wins", `
rules:
  - name: first
    action: reject
    reason: first
  - name: second
    action: accept`, proposalTo(nil), policyWant{ok: true, action: negotiate.ActReject, reason: "first", rule: "first"}},
		{"ask rule leaves it to the user", `
rules:
  - name: big deals
    when: {price: {min: 1000}}
    action: ask
  - action: accept`, proposalTo(map[string]any{"price": uint64(5000)}), policyWant{rule: "big deals"}},
		{"default omitted is ask", `
rules:
  - when: {price: {max: 1}}
    action: accept`, proposalTo(map[string]any{"price": uint64(2)}), ask},
		{"default accept", `default: accept`, proposalTo(nil), accept},
		{"default reject", `default: reject`, proposalTo(nil), reject("rejected by policy")},
		{"unnamed rule gets a number", `
rules:
  - when: {a: {present: true}}
    action: accept
  - action: accept`, proposalTo(nil), policyWant{ok: true, action: negotiate.ActAccept, rule: "rule 2"}},

		// counter arithmetic: integers
		{"counter int steps toward", buyerPolicy, proposalTo(map[string]any{"price": uint64(100), "item": "book"}),
			counter(map[string]any{"price": uint64(95), "item": "book"})},
		{"counter int never passes the target", buyerPolicy, proposalTo(map[string]any{"price": uint64(83), "item": "book"}),
			counter(map[string]any{"price": uint64(80), "item": "book"})},
		{"counter moves up too", `
rules:
  - action: counter
    counter: {price: {toward: 80, step: 5}}`, proposalTo(map[string]any{"price": uint64(70)}),
			counter(map[string]any{"price": uint64(75)})},
		{"counter at target accepts", `
rules:
  - action: counter
    counter: {price: {toward: 80, step: 5}}`, proposalTo(map[string]any{"price": uint64(80)}), accept},
		{"counter at target as float accepts", `
rules:
  - action: counter
    counter: {price: {toward: 80, step: 5}}`, proposalTo(map[string]any{"price": 80.0}), accept},
		{"counter without step jumps to target", `
rules:
  - action: counter
    counter: {price: {toward: 80}}`, proposalTo(map[string]any{"price": uint64(1000)}),
			counter(map[string]any{"price": uint64(80)})},
		{"counter negative ints", `
rules:
  - action: counter
    counter: {t: {toward: -20, step: 3}}`, proposalTo(map[string]any{"t": int64(-10)}),
			counter(map[string]any{"t": int64(-13)})},
		{"counter crosses zero", `
rules:
  - action: counter
    counter: {t: {toward: -20, step: 3}}`, proposalTo(map[string]any{"t": uint64(1)}),
			counter(map[string]any{"t": int64(-2)})},
		{"counter near uint64 max", `
rules:
  - action: counter
    counter: {n: {toward: 0, step: 5}}`, proposalTo(map[string]any{"n": uint64(math.MaxUint64)}),
			counter(map[string]any{"n": uint64(math.MaxUint64 - 5)})},
		{"counter whole float target keeps an int", `
rules:
  - action: counter
    counter: {price: {toward: 80.0, step: 5.0}}`, proposalTo(map[string]any{"price": uint64(100)}),
			counter(map[string]any{"price": uint64(95)})},

		// counter arithmetic: floats
		{"counter float step on int term", `
rules:
  - action: counter
    counter: {price: {toward: 80, step: 2.5}}`, proposalTo(map[string]any{"price": uint64(100)}),
			counter(map[string]any{"price": 97.5})},
		{"counter float term", `
rules:
  - action: counter
    counter: {price: {toward: 0.25, step: 0.5}}`, proposalTo(map[string]any{"price": 1.5}),
			counter(map[string]any{"price": 1.0})},
		{"counter float clamps at target", `
rules:
  - action: counter
    counter: {price: {toward: 0.25, step: 0.5}}`, proposalTo(map[string]any{"price": 0.5}),
			counter(map[string]any{"price": 0.25})},
		{"counter float upward", `
rules:
  - action: counter
    counter: {rate: {toward: 2.75, step: 0.5}}`, proposalTo(map[string]any{"rate": 1.0}),
			counter(map[string]any{"rate": 1.5})},
		{"counter fractional target on int term", `
rules:
  - action: counter
    counter: {price: {toward: 79.5}}`, proposalTo(map[string]any{"price": uint64(100)}),
			counter(map[string]any{"price": 79.5})},

		// counter with set, several terms, fall-through
		{"counter set changes a term", `
rules:
  - action: counter
    counter:
      price: {toward: 80, step: 5}
      set: {currency: EUR, insured: true, days: 30}`, proposalTo(map[string]any{"price": uint64(80), "currency": "USD", "note": "x"}),
			counter(map[string]any{"price": uint64(80), "currency": "EUR", "insured": true, "days": uint64(30), "note": "x"})},
		{"counter set already in place accepts", `
rules:
  - action: counter
    counter:
      price: {toward: 80, step: 5}
      set: {currency: EUR}`, proposalTo(map[string]any{"price": uint64(80), "currency": "EUR"}), accept},
		{"counter two terms", `
rules:
  - action: counter
    counter:
      price: {toward: 80, step: 5}
      days: {toward: 30, step: 10}`, proposalTo(map[string]any{"price": uint64(80), "days": uint64(5)}),
			counter(map[string]any{"price": uint64(80), "days": uint64(15)})},
		{"counter on a missing term falls through", `
rules:
  - name: haggle
    action: counter
    counter: {price: {toward: 80, step: 5}}
  - name: fallback
    action: reject
    reason: no price`, proposalTo(map[string]any{"item": "book"}), policyWant{ok: true, action: negotiate.ActReject, reason: "no price", rule: "fallback"}},
		{"counter on a text term falls through to default", `
rules:
  - action: counter
    counter: {price: {toward: 80, step: 5}}
default: reject`, proposalTo(map[string]any{"price": "80"}), reject("rejected by policy")},

		// initiator deciding a counter
		{"initiator accepts a counter", `
rules:
  - when: {price: {min: 90}}
    action: accept`, counterFrom(map[string]any{"price": uint64(95)}), accept},
		{"initiator counters a counter", `
rules:
  - action: counter
    counter: {price: {toward: 100, step: 2}}`, counterFrom(map[string]any{"price": uint64(90)}),
			counter(map[string]any{"price": uint64(92)})},
		{"initiator rejects a counter", `
rules:
  - when: {price: {max: 50}}
    action: reject
    reason: too low`, counterFrom(map[string]any{"price": uint64(10)}), reject("too low")},

		// max_round
		{"max_round allows its round", `
max_round: 3
default: accept`, withRound(proposalTo(nil), 3), accept},
		{"max_round rejects later proposals", `
max_round: 3
default: accept`, withRound(proposalTo(nil), 4), reject("round limit reached")},
		{"max_round: an initiator would propose the next round", `
max_round: 3
default: accept`, withRound(counterFrom(nil), 3), reject("round limit reached")},
		{"max_round: an initiator below the limit", `
max_round: 3
default: accept`, withRound(counterFrom(nil), 2), accept},
		{"max_round wins over rules", `
max_round: 1
rules:
  - action: ask`, withRound(proposalTo(nil), 2), reject("round limit reached")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPolicy(t, tc.policy)
			v := p.Evaluate(tc.in)
			d, ok := p.Decide(tc.in)
			if !reflect.DeepEqual(d, v.Decision) || ok != v.Decided {
				t.Fatalf("Decide = %+v, %v; Evaluate = %+v", d, ok, v)
			}
			if ok != tc.want.ok {
				t.Fatalf("decided = %v, want %v (%s)", ok, tc.want.ok, v.Why)
			}
			if d.Session != tc.in.Session {
				t.Errorf("session = %q, want %q", d.Session, tc.in.Session)
			}
			if tc.want.rule != "" && v.Rule != tc.want.rule {
				t.Errorf("rule = %q, want %q (%s)", v.Rule, tc.want.rule, v.Why)
			}
			if !ok {
				return
			}
			if d.Action != tc.want.action {
				t.Fatalf("action = %s, want %s (%s)", d.Action, tc.want.action, v.Why)
			}
			if d.Reason != tc.want.reason {
				t.Errorf("reason = %q, want %q", d.Reason, tc.want.reason)
			}
			if d.Action != negotiate.ActCounter {
				if d.Terms != nil {
					t.Errorf("terms = %x, want none for %s", d.Terms, d.Action)
				}
				return
			}
			if err := protocol.CheckTerms(d.Terms); err != nil {
				t.Fatalf("counter terms are not canonical: %v", err)
			}
			var got map[string]any
			if err := protocol.Unmarshal(d.Terms, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want.terms) {
				t.Errorf("counter terms = %#v, want %#v", got, tc.want.terms)
			}
		})
	}
}

// A concession schedule run to its end: the buyer counters 100 down by 5
// until the price reaches its limit of 80, then accepts.
func TestRulePolicyCounterConverges(t *testing.T) {
	p := mustPolicy(t, buyerPolicy)
	terms := map[string]any{"price": uint64(100), "item": "book"}
	var prices []uint64
	for round := uint32(1); round < 10; round++ {
		pr := withRound(proposalTo(terms), round)
		d, ok := p.Decide(pr)
		if !ok {
			t.Fatalf("round %d: no decision", round)
		}
		if d.Action == negotiate.ActAccept {
			break
		}
		if d.Action != negotiate.ActCounter {
			t.Fatalf("round %d: %s", round, d.Action)
		}
		terms = nil
		if err := protocol.Unmarshal(d.Terms, &terms); err != nil {
			t.Fatal(err)
		}
		prices = append(prices, terms["price"].(uint64))
	}
	if want := []uint64{95, 90, 85, 80}; !reflect.DeepEqual(prices, want) {
		t.Fatalf("counters = %v, want %v then accept", prices, want)
	}
}

func TestRulePolicyEdges(t *testing.T) {
	p := mustPolicy(t, `default: accept`)
	raw, err := protocol.EncodeTerms(map[string]any{"price": 5})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("raw terms only", func(t *testing.T) {
		p := mustPolicy(t, "rules:\n  - when: {price: {max: 5}}\n    action: reject\n")
		pr := proposalTo(nil)
		pr.RawTerms = raw
		if d, ok := p.Decide(pr); !ok || d.Action != negotiate.ActReject {
			t.Fatalf("got %+v %v, want the terms decoded from RawTerms and rejected", d, ok)
		}
	})
	t.Run("undecodable raw terms are left to the user", func(t *testing.T) {
		pr := proposalTo(nil)
		pr.RawTerms = []byte{0xff}
		if _, ok := p.Decide(pr); ok {
			t.Fatal("decided on undecodable terms")
		}
	})
	t.Run("other events are not decided", func(t *testing.T) {
		pr := proposalTo(nil)
		pr.Kind = negotiate.EvCommitted
		if _, ok := p.Decide(pr); ok {
			t.Fatal("decided a committed event")
		}
		if _, ok := negotiate.AcceptAll.Decide(pr); ok {
			t.Fatal("AcceptAll decided a committed event")
		}
	})
	t.Run("nil policy", func(t *testing.T) {
		var np *policy.Rules
		if _, ok := np.Decide(proposalTo(nil)); ok {
			t.Fatal("a nil policy decided")
		}
	})
	t.Run("accept all", func(t *testing.T) {
		for _, pr := range []negotiate.Proposal{proposalTo(nil), counterFrom(nil)} {
			d, ok := negotiate.AcceptAll.Decide(pr)
			if !ok || d.Action != negotiate.ActAccept || d.Session != pr.Session {
				t.Fatalf("AcceptAll(%s) = %+v %v", pr.Kind, d, ok)
			}
		}
	})
	t.Run("policy func", func(t *testing.T) {
		var f negotiate.Policy = negotiate.PolicyFunc(func(p negotiate.Proposal) (negotiate.Decision, bool) {
			return negotiate.Decision{Session: p.Session, Action: negotiate.ActReject, Reason: "no"}, true
		})
		if d, ok := f.Decide(proposalTo(nil)); !ok || d.Reason != "no" {
			t.Fatalf("got %+v %v", d, ok)
		}
	})
	t.Run("rules and source", func(t *testing.T) {
		p := mustPolicy(t, buyerPolicy)
		if got, want := p.Rules(), []string{"cheap enough", "haggle", "no weapons"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("Rules() = %q, want %q", got, want)
		}
		if p.Source() != "test.yaml" {
			t.Fatalf("Source() = %q", p.Source())
		}
	})
	t.Run("counter too large to encode is left to the user", func(t *testing.T) {
		p := mustPolicy(t, "rules:\n  - action: counter\n    counter: {price: {toward: 1}}\n")
		if _, ok := p.Decide(proposalTo(map[string]any{"price": uint64(5), "blob": strings.Repeat("x", protocol.MaxTermsBytes)})); ok {
			t.Fatal("decided a counter whose terms exceed the limit")
		}
	})
}

func TestParsePolicyErrors(t *testing.T) {
	tests := []struct {
		name       string
		text       string
		line, col  int
		field, msg string
	}{
		{"unknown top field", "rules:\n  - action: accept\nrule: x\n", 3, 1, "rule", `unknown field "rule"`},
		{"unknown rule field", "rules:\n  - name: a\n    acton: accept\n", 3, 5, "rules[0].acton", `unknown field "acton"`},
		{"unknown condition field", "rules:\n  - action: accept\n    when:\n      price: {minimum: 1}\n", 4, 15, "rules[0].when.price.minimum", `unknown field "minimum"`},
		{"unknown move field", "rules:\n  - action: counter\n    counter:\n      price: {toward: 1, by: 2}\n", 4, 26, "rules[0].counter.price.by", `unknown field "by"`},
		{"unknown action", "rules:\n  - name: a\n    action: maybe\n", 3, 13, "rules[0].action", "must be one of accept, reject, counter, ask"},
		{"missing action", "rules:\n  - name: a\n", 2, 5, "rules[0].action", "is missing"},
		{"bad agent ID", "rules:\n  - from:\n      - $alice\n      - not-an-id\n    action: accept\n", 4, 9, "rules[0].from[1]", "bad agent ID"},
		{"mistyped agent ID", "rules:\n  - from: [" + mistype(string(policyIDs["alice"]), 30) + "]\n    action: accept\n", 2, 12, "rules[0].from[0]", "a character is mistyped"},
		{"min above max", "rules:\n  - action: accept\n    when:\n      price: {min: 100, max: 10}\n", 4, 20, "rules[0].when.price", "min 100 is greater than max 10"},
		{"range on a string", "rules:\n  - action: accept\n    when:\n      price: {min: ten}\n", 4, 20, "rules[0].when.price.min", `must be a finite number, not the text "ten"`},
		{"quoted number", "rules:\n  - action: accept\n    when:\n      price: {max: \"10\"}\n", 4, 20, "rules[0].when.price.max", "numbers in quotes are text"},
		{"number too large", "rules:\n  - action: accept\n    when:\n      price: {max: 99999999999999999999999}\n", 4, 20, "rules[0].when.price.max", "fit in 64 bits"},
		{"infinite bound", "rules:\n  - action: accept\n    when:\n      price: {max: .inf}\n", 4, 20, "rules[0].when.price.max", "finite number"},
		{"condition not a mapping", "rules:\n  - action: accept\n    when:\n      price: 10\n", 4, 14, "rules[0].when.price", "must be a mapping"},
		{"empty condition", "rules:\n  - action: accept\n    when:\n      price: {}\n", 4, 14, "rules[0].when.price", "has no condition"},
		{"present false with more", "rules:\n  - action: accept\n    when:\n      x: {present: false, equals: 1}\n", 4, 11, "rules[0].when.x", "cannot be combined"},
		{"present not bool", "rules:\n  - action: accept\n    when:\n      x: {present: yes}\n", 4, 20, "rules[0].when.x.present", "true or false"},
		{"empty in", "rules:\n  - action: accept\n    when:\n      x: {in: []}\n", 4, 15, "rules[0].when.x.in", "empty list"},
		{"in with a mapping", "rules:\n  - action: accept\n    when:\n      x: {in: [a, {b: 1}]}\n", 4, 20, "rules[0].when.x.in[1]", "must be text, a number or true/false"},
		{"counter without counter", "rules:\n  - action: counter\n", 2, 13, "rules[0].counter", "is missing"},
		{"counter with accept", "rules:\n  - action: accept\n    counter: {price: {toward: 1}}\n", 3, 5, "rules[0].counter", "only for action counter"},
		{"reason with accept", "rules:\n  - action: accept\n    reason: because\n", 3, 5, "rules[0].reason", "only for action reject"},
		{"zero step", "rules:\n  - action: counter\n    counter:\n      price: {toward: 80, step: 0}\n", 4, 33, "rules[0].counter.price.step", "greater than 0"},
		{"negative step", "rules:\n  - action: counter\n    counter:\n      price: {toward: 80, step: -2.5}\n", 4, 33, "rules[0].counter.price.step", "greater than 0"},
		{"missing toward", "rules:\n  - action: counter\n    counter:\n      price: {step: 5}\n", 4, 15, "rules[0].counter.price.toward", "is missing"},
		{"move not a mapping", "rules:\n  - action: counter\n    counter:\n      price: 80\n", 4, 14, "rules[0].counter.price", "fixed values go under set"},
		{"moved and set", "rules:\n  - action: counter\n    counter:\n      price: {toward: 80}\n      set: {price: 80}\n", 5, 13, "rules[0].counter.set.price", "both moved and set"},
		{"set with a list", "rules:\n  - action: counter\n    counter:\n      set: {tags: [a]}\n", 4, 19, "rules[0].counter.set.tags", "must be text, a number or true/false"},
		{"bad default", "default: maybe\n", 1, 10, "default", "must be one of accept, reject, ask"},
		{"counter default", "default: counter\n", 1, 10, "default", "must be one of accept, reject, ask"},
		{"max_round zero", "max_round: 0\n", 1, 12, "max_round", "from 1 to 64"},
		{"max_round too big", "max_round: 65\n", 1, 12, "max_round", "from 1 to 64"},
		{"max_round fraction", "max_round: 2.5\n", 1, 12, "max_round", "whole number"},
		{"bad role", "rules:\n  - role: buyer\n    action: accept\n", 2, 11, "rules[0].role", "initiator or participant"},
		{"rules not a list", "rules: {action: accept}\n", 1, 9, "rules", "must be a list"},
		{"rule not a mapping", "rules:\n  - accept\n", 2, 5, "rules[0]", "must be a mapping"},
		{"null field", "rules:\n  - action: accept\n    when:\n", 3, 5, "rules[0].when", "has no value"},
		{"empty from", "rules:\n  - from: []\n    action: accept\n", 2, 11, "rules[0].from", "empty list"},
		{"duplicate rule names", "rules:\n  - name: a\n    action: accept\n  - name: a\n    action: reject\n", 4, 5, "rules[1].name", "already used by the rule at line 2"},
		{"long reason", "rules:\n  - action: reject\n    reason: " + strings.Repeat("r", protocol.MaxReasonBytes+1) + "\n", 3, 13, "rules[0].reason", "the limit is 1024"},
		{"duplicate key", "default: accept\ndefault: reject\n", 2, 1, "", "already defined"},
		{"syntax error", "rules: [\n  {action: accept\n", 2, 3, "", "YAML syntax"},
		{"anchor", "rules:\n  - &r {action: accept}\n", 2, 5, "rules[0]", "anchors"},
		{"alias", "default: accept\nx: *a\n", 2, 1, "x", "unknown field"},
		{"tag", "default: !!str accept\n", 1, 10, "default", "tags"},
		{"two documents", "default: accept\n---\ndefault: reject\n", 3, 1, "", "more than one YAML document"},
		{"empty", "# nothing here\n", 0, 0, "", "the policy is empty"},
		{"not a mapping", "- accept\n", 1, 1, "", "must be a mapping"},
		{"json unknown field", `{"rules": [{"action": "accept", "form": []}]}`, 1, 33, "rules[0].form", `unknown field "form"`},
		{"too deep", "rules: " + strings.Repeat("[", 40) + strings.Repeat("]", 40) + "\n", 1, 24, "", "nested too deeply"},
		{"too indented", "rules:\n" + strings.Repeat("- ", 80) + "x\n", 2, 129, "", "nested too deeply"},
		{"too large", "# " + strings.Repeat("x", policy.MaxFileBytes) + "\n", 0, 0, "", "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := policy.Parse([]byte(policyText(tc.text)), "bad.yaml")
			if err == nil {
				t.Fatalf("parsed %+v, want an error", p)
			}
			if p != nil {
				t.Errorf("returned a policy with the error")
			}
			if !errors.Is(err, policy.ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			var pe *policy.Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T %v is not a *Error", err, err)
			}
			if pe.Source != "bad.yaml" || pe.Line != tc.line || pe.Column != tc.col || pe.Field != tc.field || !strings.Contains(pe.Msg, tc.msg) {
				t.Errorf("got  %s:%d:%d field %q msg %q\nwant %s:%d:%d field %q msg containing %q",
					pe.Source, pe.Line, pe.Column, pe.Field, pe.Msg, "bad.yaml", tc.line, tc.col, tc.field, tc.msg)
			}
			prefix := "policy bad.yaml"
			if tc.line > 0 {
				prefix += fmt.Sprintf(":%d:%d", tc.line, tc.col)
			}
			if !strings.HasPrefix(err.Error(), prefix+": ") {
				t.Errorf("message %q does not start with %q", err, prefix)
			}
		})
	}
}

func TestParsePolicyJSON(t *testing.T) {
	text := policyText(`{
  "rules": [
    {"name": "friends", "from": ["$alice"], "action": "accept"},
    {"when": {"price": {"min": 1, "max": 10.5}}, "action": "counter", "counter": {"price": {"toward": 5, "step": 1}}}
  ],
  "default": "reject",
  "max_round": 4
}`)
	p, err := policy.Parse([]byte(text), "p.json")
	if err != nil {
		t.Fatal(err)
	}
	d, ok := p.Decide(proposalTo(map[string]any{"price": uint64(9)}))
	if !ok || d.Action != negotiate.ActCounter {
		t.Fatalf("got %+v %v, want a counter", d, ok)
	}
	if d, ok := p.Decide(withFrom(proposalTo(nil), "alice")); !ok || d.Action != negotiate.ActAccept {
		t.Fatalf("got %+v %v, want accept from alice", d, ok)
	}
}

func TestLoadPolicyFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte(buyerPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := policy.LoadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if p.Source() != good {
		t.Errorf("Source() = %q, want %q", p.Source(), good)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("rules:\n  - action: sometimes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = policy.LoadFile(bad)
	if !errors.Is(err, policy.ErrInvalid) || !strings.HasPrefix(err.Error(), "policy "+bad+":2:13: rules[0].action: ") {
		t.Errorf("error = %v, want one naming %s:2:13", err, bad)
	}
	if _, err := policy.LoadFile(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want os.ErrNotExist", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("#"+strings.Repeat("x", policy.MaxFileBytes+10)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := policy.LoadFile(big); !errors.Is(err, policy.ErrInvalid) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("big file: %v", err)
	}
}

// The example policies shipped in examples/policies parse, and decide the
// cases their comments describe.
func TestExamplePolicies(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "policies", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no example policies found")
	}
	for _, f := range files {
		if _, err := policy.LoadFile(f); err != nil {
			t.Errorf("%v", err)
		}
	}
	load := func(name string) *policy.Rules {
		p, err := policy.LoadFile(filepath.Join("..", "..", "examples", "policies", name))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	book := func(price any, currency ...string) map[string]any {
		m := map[string]any{"item": "book", "price": price}
		if len(currency) > 0 {
			m["currency"] = currency[0]
		}
		return m
	}
	buyer, seller := load("buyer.yaml"), load("seller.yaml")
	tests := []struct {
		name string
		p    *policy.Rules
		in   negotiate.Proposal
		rule string
		want negotiate.Action // "" = ask
	}{
		{"buyer haggles", buyer, proposalTo(book(uint64(100), "EUR")), "haggle", negotiate.ActCounter},
		{"buyer takes it cheap", buyer, proposalTo(book(uint64(80), "EUR")), "cheap enough", negotiate.ActAccept},
		{"buyer wants EUR", buyer, proposalTo(book(uint64(10), "USD")), "wrong currency", negotiate.ActReject},
		{"buyer asks without currency", buyer, proposalTo(book(uint64(10))), "no currency", ""},
		{"buyer asks when far too expensive", buyer, proposalTo(book(uint64(900), "EUR")), "far too expensive", ""},
		{"buyer blocks carol", buyer, withFrom(proposalTo(book(uint64(10), "EUR")), "carol"), "blocked seller", negotiate.ActReject},
		{"buyer gives up after round 6", buyer, withRound(proposalTo(book(uint64(80), "EUR")), 7), "", negotiate.ActReject},
		{"seller takes bob's counter", seller, counterFrom(book(uint64(1))), "regular customer", negotiate.ActAccept},
		{"seller meets carol half way", seller, withFrom(counterFrom(book(uint64(70))), "carol"), "meet half way", negotiate.ActCounter},
		{"seller stops below cost", seller, withFrom(counterFrom(book(uint64(60))), "carol"), "below cost", negotiate.ActReject},
		{"seller as participant", seller, proposalTo(book(uint64(120))), "list price", negotiate.ActAccept},
	}
	for _, tc := range tests {
		v := tc.p.Evaluate(tc.in)
		if v.Rule != tc.rule || v.Decision.Action != tc.want || v.Decided != (tc.want != "") {
			t.Errorf("%s: got rule %q %q decided=%v (%s), want rule %q %q", tc.name, v.Rule, v.Decision.Action, v.Decided, v.Why, tc.rule, tc.want)
		}
	}
}

func FuzzParsePolicy(f *testing.F) {
	seeds := []string{
		buyerPolicy,
		policyText("rules:\n  - from: [$alice]\n    role: initiator\n    action: accept\nmax_round: 3\n"),
		"rules:\n  - action: counter\n    counter:\n      price: {toward: 80.5, step: 0.5}\n      set: {currency: EUR, n: 1, b: true}\ndefault: reject\n",
		"rules:\n  - when: {x: {present: false}, y: {not_in: [1, a, true]}, z: {equals: 1.5}}\n    action: reject\n    reason: |\n      multi\n      line\n",
		`{"rules": [{"action": "accept", "when": {"p": {"min": -1e300, "max": 18446744073709551615}}}], "default": "ask"}`,
		"default: accept\n---\n",
		"a: &x 1\nb: *x\n<<: *x\n",
		"rules: [[[[",
		"rules:\n- - - - x\n",
		"? a\n: b\n",
		"%YAML 1.2\n---\ndefault: accept\n",
		"default: !!binary aGVsbG8=\n",
		"",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	sample := []negotiate.Proposal{
		proposalTo(map[string]any{"price": uint64(100), "item": "book", "x": int64(-3), "y": 2.5, "currency": "EUR"}),
		withRound(counterFrom(map[string]any{"price": math.Inf(1), "n": uint64(math.MaxUint64)}), 5),
		proposalTo(nil),
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := policy.Parse(data, "fuzz.yaml")
		if err != nil {
			var pe *policy.Error
			if !errors.As(err, &pe) || !errors.Is(err, policy.ErrInvalid) {
				t.Fatalf("error %T %v is not a *Error", err, err)
			}
			if p != nil {
				t.Fatal("a policy came back with an error")
			}
			return
		}
		for _, pr := range sample {
			d, ok := p.Decide(pr)
			if !ok {
				continue
			}
			switch d.Action {
			case negotiate.ActAccept, negotiate.ActReject:
			case negotiate.ActCounter:
				if err := protocol.CheckTerms(d.Terms); err != nil {
					t.Fatalf("counter terms: %v", err)
				}
			default:
				t.Fatalf("action %q", d.Action)
			}
			if len(d.Reason) > protocol.MaxReasonBytes {
				t.Fatalf("reason of %d bytes", len(d.Reason))
			}
		}
	})
}

func BenchmarkRulePolicyDecide(b *testing.B) {
	p := mustPolicy(b, buyerPolicy)
	pr := proposalTo(map[string]any{"price": uint64(100), "item": "book"})
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := p.Decide(pr); !ok {
			b.Fatal("no decision")
		}
	}
}

func ExampleParse() {
	rules := `
# A buyer: accept books up to 80, otherwise haggle down by 5 a round.
rules:
  - name: cheap enough
    when:
      item: {equals: book}
      price: {max: 80}
    action: accept
  - name: haggle
    when:
      item: {equals: book}
    action: counter
    counter:
      price: {toward: 80, step: 5}
default: reject
max_round: 6
`
	p, err := policy.Parse([]byte(rules), "buyer.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, terms := range []map[string]any{
		{"item": "book", "price": uint64(70)},
		{"item": "book", "price": uint64(92)},
		{"item": "car", "price": uint64(10)},
	} {
		v := p.Evaluate(negotiate.Proposal{Kind: negotiate.EvProposal, Role: engine.RoleParticipant, Round: 1, Terms: terms})
		var counter map[string]any
		if v.Decision.Action == negotiate.ActCounter {
			_ = protocol.Unmarshal(v.Decision.Terms, &counter)
		}
		fmt.Printf("%s at %v: %s %v %s\n", terms["item"], terms["price"], v.Decision.Action, counter, v.Why)
	}

	_, err = policy.Parse([]byte("rules:\n  - action: acept\n"), "typo.yaml")
	fmt.Println(err)
	// Output:
	// book at 70: accept map[] rule "cheap enough": accept
	// book at 92: counter map[item:book price:87] rule "haggle": counter
	// car at 10: reject map[] no rule matched: default reject
	// policy typo.yaml:2:13: rules[0].action: must be one of accept, reject, counter, ask, not the text "acept"
}
