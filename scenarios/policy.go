package scenarios

import (
	"fmt"
	"math"
	"strings"

	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/protocol"
)

// Built-in policy kinds.
const (
	PolicyAccept       = "accept"        // accept every proposal; initiator: take every counter
	PolicyReject       = "reject"        // reject every proposal and counter
	PolicyManual       = "manual"        // decide nothing: the steps accept, reject or counter
	PolicySilent       = "silent"        // never answer (the session expires)
	PolicyCounterUntil = "counter-until" // accept once field reaches target, else counter by step
	PolicyAcceptIf     = "accept-if"     // accept when min <= field <= max, else reject
)

var policyKinds = []string{PolicyAccept, PolicyReject, PolicyManual, PolicySilent, PolicyCounterUntil, PolicyAcceptIf}

// Policy is how a party decides on proposals (participant) and counters
// (initiator). In YAML it is a kind name ("accept") or a map with kind and
// its parameters.
type Policy struct {
	Kind      string   `yaml:"kind"`
	Field     string   `yaml:"field"`     // counter-until, accept-if: the numeric term decided on
	Target    *float64 `yaml:"target"`    // counter-until: the value this party holds out for
	Step      float64  `yaml:"step"`      // counter-until: how far each counter moves
	Direction string   `yaml:"direction"` // counter-until: "up" (wants field >= target, default) or "down"
	Min       *float64 `yaml:"min"`       // accept-if
	Max       *float64 `yaml:"max"`       // accept-if
	Reason    string   `yaml:"reason"`    // reject: the reason given
	Think     Duration `yaml:"think"`     // virtual time a decision takes
}

type policyFields Policy

// UnmarshalYAML takes a kind name or a map.
func (p *Policy) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err == nil {
		*p = Policy{Kind: s}
		return nil
	}
	var f policyFields
	if err := unmarshal(&f); err != nil {
		return err
	}
	*p = Policy(f)
	return nil
}

func (p *Policy) check() error {
	if p.Kind == "" {
		p.Kind = PolicyAccept
	}
	if !contains(policyKinds, p.Kind) {
		return fmt.Errorf("kind %q: use one of %s", p.Kind, strings.Join(policyKinds, ", "))
	}
	switch p.Kind {
	case PolicyCounterUntil:
		if p.Field == "" || p.Target == nil || p.Step <= 0 {
			return fmt.Errorf("counter-until needs field, target and a positive step, e.g. {kind: counter-until, field: price, target: 40, step: 10}")
		}
		if p.Direction == "" {
			p.Direction = "up"
		}
		if p.Direction != "up" && p.Direction != "down" {
			return fmt.Errorf("direction %q: use up or down", p.Direction)
		}
	case PolicyAcceptIf:
		if p.Field == "" || (p.Min == nil && p.Max == nil) {
			return fmt.Errorf("accept-if needs field and min and/or max, e.g. {kind: accept-if, field: price, max: 50}")
		}
	}
	if p.Reason == "" {
		p.Reason = "rejected by policy"
	}
	return nil
}

// decide answers a proposal (participant) or a counter (initiator); nil
// means no decision (manual, silent, or an event that needs none).
func (p *Policy) decide(ev negotiate.Event) *negotiate.Decision {
	if ev.Kind != negotiate.EvProposal && ev.Kind != negotiate.EvCounter {
		return nil
	}
	d := &negotiate.Decision{Session: ev.Session}
	switch p.Kind {
	case PolicyAccept:
		d.Action = negotiate.ActAccept
	case PolicyReject:
		d.Action, d.Reason = negotiate.ActReject, p.Reason
	case PolicyCounterUntil:
		terms, v, ok := numericTerm(ev.Terms, p.Field)
		if !ok {
			d.Action, d.Reason = negotiate.ActReject, fmt.Sprintf("terms have no numeric %q", p.Field)
			break
		}
		good := v >= *p.Target
		next := v + p.Step
		if p.Direction == "down" {
			good, next = v <= *p.Target, v-p.Step
		}
		if good {
			d.Action = negotiate.ActAccept
			break
		}
		terms[p.Field] = number(next)
		b, err := protocol.EncodeTerms(terms)
		if err != nil {
			d.Action, d.Reason = negotiate.ActReject, "cannot encode a counter"
			break
		}
		d.Action, d.Terms = negotiate.ActCounter, b
	case PolicyAcceptIf:
		_, v, ok := numericTerm(ev.Terms, p.Field)
		if ok && (p.Min == nil || v >= *p.Min) && (p.Max == nil || v <= *p.Max) {
			d.Action = negotiate.ActAccept
		} else {
			d.Action, d.Reason = negotiate.ActReject, fmt.Sprintf("%s out of range", p.Field)
		}
	default:
		return nil
	}
	return d
}

func numericTerm(raw []byte, field string) (map[string]any, float64, bool) {
	var m map[string]any
	if err := protocol.Unmarshal(raw, &m); err != nil {
		return nil, 0, false
	}
	switch x := m[field].(type) {
	case uint64:
		return m, float64(x), true
	case int64:
		return m, float64(x), true
	case float64:
		return m, x, true
	}
	return m, 0, false
}

func number(v float64) any {
	if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
		return int64(v)
	}
	return v
}
