package scenarios

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	base := "name: x\nparties:\n  - name: a\n  - name: b\nsteps:\n  - propose: {from: a, with: [b], terms: {p: 1}}\n"
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"unknown top-level field", base + "expectt: {}\n", []string{"bad.yaml", "7:1", "expectt"}},
		{"unknown nested field", strings.Replace(base, "{from: a,", "{form: a, from: a,", 1), []string{"bad.yaml", "6:", "form"}},
		{"unknown party", strings.Replace(base, "with: [b]", "with: [zed]", 1), []string{"steps[0].propose.with", `"zed"`}},
		{"bad duration", base + "network: {latency: fast}\n", []string{"bad.yaml", "fast", "250ms"}},
		{"bad crash point", base + "faults:\n  - crash: {party: a, at: after-lunch}\n", []string{"faults[0].crash.at", "after-vote"}},
		{"two step kinds", base + "  - {wait: 1s, accept: {party: b}}\n", []string{"steps[1]", "exactly one"}},
		{"bad policy", strings.Replace(base, "- name: b", "- name: b\n    policy: maybe", 1), []string{"parties[1].policy", "maybe"}},
		{"bad outcome", base + "expect: {outcome: {a: won}}\n", []string{"expect.outcome.a", "won"}},
		{"bad probability", base + "network: {loss: 2}\n", []string{"network.loss"}},
		{"no steps", "name: x\nparties: [{name: a}, {name: b}]\n", []string{"steps"}},
		{"decision before propose", "name: x\nparties: [{name: a}, {name: b}]\nsteps:\n  - accept: {party: b}\n  - propose: {from: a, with: [b], terms: {p: 1}}\n", []string{"steps[0].accept.session"}},
		{"bad byzantine", base + "faults:\n  - byzantine: {party: a, behavior: lie}\n", []string{"behavior", "equivocate"}},
		{"bad message type", base + "faults:\n  - drop: {type: hello}\n", []string{"faults[0].drop.type", "hello"}},
		{"offer with a witness", "name: x\nparties: [{name: a}, {name: b}, {name: w}]\nsteps:\n  - propose: {from: a, with: [b], terms: {p: 1}, offer: true, witness: w}\n",
			[]string{"steps[0].propose.witness", "offer"}},
		{"offer with rounds", strings.Replace(base, "terms: {p: 1}}", "terms: {p: 1}, offer: true, max_rounds: 2}", 1), []string{"steps[0].propose.max_rounds", "offer", "one round"}},
		{"counter on an offer", strings.Replace(base, "terms: {p: 1}}", "terms: {p: 1}, offer: true}", 1) + "  - counter: {party: b, terms: {p: 2}}\n",
			[]string{"steps[1].counter", `"s1"`, "signed offer", "accept or reject"}},
		{"after-accept in an offer", strings.Replace(base, "terms: {p: 1}}", "terms: {p: 1}, offer: true}", 1) + "faults:\n  - crash: {party: b, at: after-accept}\n",
			[]string{"faults[0].crash.at", "after-accept", "signed offer"}},
		{"offer flag typo", strings.Replace(base, "terms: {p: 1}}", "terms: {p: 1}, offer: yes please}", 1), []string{"bad.yaml", "6:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "bad.yaml")
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrBadScenario) {
				t.Errorf("error %v does not wrap ErrBadScenario", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoadDefaults(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.yaml")
	data := "name: d\nparties:\n  - name: a\n  - name: b\n    policy: {kind: counter-until, field: price, target: 5, step: 1}\nsteps:\n  - propose: {from: a, with: [b], terms: {price: 1}}\n"
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	scs, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	sc := scs[0]
	if sc.File != path || sc.Parties[0].Scheme != "ed25519" || sc.Parties[0].Policy.Kind != PolicyAccept {
		t.Fatalf("defaults not applied: %+v", sc.Parties[0])
	}
	if p := sc.Steps[0].Propose; p.ID != "s1" || p.Timeout.D() != DefaultTimeout {
		t.Fatalf("propose defaults not applied: %+v", p)
	}
	if sc.Parties[1].Policy.Direction != "up" {
		t.Fatalf("counter-until direction default: %q", sc.Parties[1].Policy.Direction)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file loaded")
	}
	if _, err := Load(t.TempDir()); !errors.Is(err, ErrBadScenario) {
		t.Fatalf("empty directory: %v", err)
	}
}
