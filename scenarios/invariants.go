package scenarios

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate/engine"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Invariant names (DESIGN §4), as they appear in reports.
const (
	InvAtomicity   = "atomicity" // a session's record is on all honest parties' chains or on none
	InvAgreement   = "agreement" // every chain holding a session's record holds identical bytes
	InvNoStuckLock = "no-stuck-lock"
	InvConsent     = "consent"     // every record verifies and carries only terms each honest party accepted in that round
	InvIntegrity   = "integrity"   // every chain verifies
	InvDurability  = "durability"  // every durable write the engine asked for was accepted by the store
	InvTermination = "termination" // every honest party that knows a session ended it
	InvHonest      = "honest"      // no honest party reports a violation when nobody is byzantine
)

type foundRecord struct {
	node  *simNode
	entry chain.Entry
	rec   *protocol.Record
}

// records finds the agreement records per engine session on every chain.
func (s *sim) records() (map[string][]foundRecord, []string) {
	out := map[string][]foundRecord{}
	var problems []string
	for _, n := range s.nodes {
		for _, e := range n.store.entries[1:] {
			if e.Kind != engine.KindAgreement {
				continue
			}
			rec, err := engine.DecodeRecord(e.Payload)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: entry %d: %v", n.name, e.Seq, err))
				continue
			}
			out[rec.Agreement.Session] = append(out[rec.Agreement.Session], foundRecord{node: n, entry: e, rec: rec})
		}
	}
	return out, problems
}

// recordChecker is engine.CheckAgreementEntry with each distinct record
// verified once per run (every chain holds the same record).
type recordChecker struct{ verified map[chain.Hash]error }

func (c *recordChecker) check(e *chain.Entry, owner sign.PublicKey) error {
	if e.Kind != engine.KindAgreement {
		return nil
	}
	rec, err := engine.DecodeRecord(e.Payload)
	if err != nil {
		return err
	}
	h := chain.Hash(sign.Hash(e.Payload))
	verr, ok := c.verified[h]
	if !ok {
		verr = engine.VerifyRecord(rec)
		c.verified[h] = verr
	}
	if verr != nil {
		return verr
	}
	id := owner.AgentID()
	for i, p := range rec.Agreement.Parties {
		if p.ID == id {
			if hd := rec.Heads[i]; e.Seq != hd.Seq+1 || e.Prev != hd.Hash {
				return fmt.Errorf("%w: this agent signed at head %d but the record sits at seq %d", negotiate.ErrBadRecord, hd.Seq, e.Seq)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: agent %s is not a party of this record", negotiate.ErrBadRecord, id.Short())
}

func (s *sim) checkInvariants() []Line {
	recs, problems := s.records()
	var atom, agree, consent, integ, lock, term, honest []string
	integ = append(integ, problems...)
	byzantine := false
	for _, n := range s.nodes {
		if n.byz != "" {
			byzantine = true
		}
	}
	for _, ss := range s.sessions {
		found := recs[ss.id]
		on := map[string]bool{}
		for _, f := range found {
			on[f.node.name] = true
		}
		var have, lack []string
		for _, n := range ss.parties {
			if n.byz != "" {
				continue
			}
			if on[n.name] {
				have = append(have, n.name)
			} else {
				lack = append(lack, n.name)
			}
		}
		if len(have) > 0 && len(lack) > 0 {
			atom = append(atom, fmt.Sprintf("%s: record on %s but not on %s", ss.name, strings.Join(have, ","), strings.Join(lack, ",")))
		}
		var honestFound []foundRecord
		for _, f := range found {
			if f.node.byz == "" {
				honestFound = append(honestFound, f)
			}
		}
		for i := 1; i < len(honestFound); i++ {
			f := honestFound[i]
			if bytes.Equal(f.entry.Payload, honestFound[0].entry.Payload) {
				continue
			}
			// A byzantine party that signs twice (two heads) can make two
			// valid records that differ in its own entry only: its fork is
			// its own and provable. Honest parties must still agree on the
			// agreement and on every honest party's head and signature.
			if why := s.honestDifference(honestFound[0].rec, f.rec); why != "" {
				agree = append(agree, fmt.Sprintf("%s: %s and %s hold different records: %s", ss.name, honestFound[0].node.name, f.node.name, why))
			}
		}
		for _, f := range found {
			if err := s.checker.check(&f.entry, f.node.key.Public()); err != nil {
				consent = append(consent, fmt.Sprintf("%s: record on %s: %v", ss.name, f.node.name, err))
				continue
			}
			a := &f.rec.Agreement
			for _, p := range a.Parties {
				n := s.byID[p.ID]
				if n == nil || n.byz != "" {
					continue
				}
				if !n.consent[ss.id][consentKey{a.Round, a.TermsHash}] {
					consent = append(consent, fmt.Sprintf("%s: record on %s carries %s's signature over round %d terms it never accepted", ss.name, f.node.name, n.name, a.Round))
				}
			}
		}
		for _, n := range ss.parties {
			if n.byz != "" {
				continue
			}
			if s.realOutcomes != nil {
				if o := s.realOutcomes(n, ss); o.State == "open" {
					term = append(term, fmt.Sprintf("%s: %s never ended it", ss.name, n.name))
				}
				continue
			}
			if n.eng == nil {
				continue
			}
			if o, err := n.eng.Outcome(ss.id); err == nil && o == nil {
				info, _ := n.eng.Session(ss.id)
				term = append(term, fmt.Sprintf("%s: %s never ended it (phase %s, vote %q)", ss.name, n.name, info.Phase, info.Vote))
			}
		}
	}
	for _, n := range s.nodes {
		if err := n.store.Verify(s.checker.check); err != nil {
			integ = append(integ, fmt.Sprintf("%s: %v", n.name, err))
		}
		if l, ok := n.store.Lock(); ok && n.byz == "" {
			lock = append(lock, fmt.Sprintf("%s: locked by %s since +%dms", n.name, s.sname(l.Session), l.Since-simStartMillis))
		}
		if !n.up {
			term = append(term, n.name+": still down at the end")
		}
		if !byzantine && len(n.violations) > 0 {
			honest = append(honest, fmt.Sprintf("%s: %s", n.name, strings.Join(n.violations, "; ")))
		}
		// A warrant verifies on its own: one against an honest party would
		// mean an honest engine signed two conflicting things.
		for id := range n.warrants {
			if o := s.byID[id]; o != nil && o.byz == "" {
				honest = append(honest, fmt.Sprintf("%s holds a warrant against honest %s", n.name, o.name))
			}
		}
	}
	if s.aborted != "" {
		term = append(term, s.aborted)
	}
	line := func(name string, bad []string) Line {
		l := Line{Name: name, Passed: len(bad) == 0}
		if len(bad) > 0 {
			l.Detail = strings.Join(bad, "; ")
		}
		return l
	}
	return []Line{
		line(InvAtomicity, atom), line(InvAgreement, agree), line(InvNoStuckLock, lock),
		line(InvConsent, consent), line(InvIntegrity, integ), line(InvDurability, s.persistFailures),
		line(InvTermination, term), line(InvHonest, honest),
	}
}

func (s *sim) checkExpectations(r *Report) []Line {
	var out []Line
	e := &s.sc.Expect
	check := func(session string, want map[string]string) {
		outs := r.Outcomes[session]
		for _, party := range sortedNames(want) {
			got := outs[party].State
			if got == "" {
				got = "none"
			}
			ok := false
			for _, alt := range strings.Split(want[party], "|") {
				if alt == got || alt == "aborted" && got == "busy" {
					ok = true
				}
			}
			l := Line{Name: fmt.Sprintf("outcome %s %s = %s", session, party, want[party]), Passed: ok}
			if !ok {
				l.Detail = fmt.Sprintf("got %s", got)
				if reason := outs[party].Reason; reason != "" {
					l.Detail += " (" + reason + ")"
				}
			}
			out = append(out, l)
		}
	}
	if len(e.Outcome) > 0 && len(s.sessions) > 0 {
		check(s.sessions[0].name, e.Outcome)
	}
	for _, id := range sortedNames(e.Sessions) {
		check(id, e.Sessions[id])
	}
	recs, _ := s.records()
	if e.RecordOn != nil {
		want := map[string]bool{}
		for _, p := range *e.RecordOn {
			want[p] = true
		}
		var extra, missing []string
		for _, n := range s.nodes {
			has := false
			for _, fs := range recs {
				for _, f := range fs {
					if f.node == n {
						has = true
					}
				}
			}
			switch {
			case has && !want[n.name]:
				extra = append(extra, n.name)
			case !has && want[n.name]:
				missing = append(missing, n.name)
			}
		}
		l := Line{Name: fmt.Sprintf("record on exactly [%s]", strings.Join(*e.RecordOn, " ")), Passed: len(extra) == 0 && len(missing) == 0}
		if !l.Passed {
			l.Detail = fmt.Sprintf("unexpected on [%s], missing on [%s]", strings.Join(extra, " "), strings.Join(missing, " "))
		}
		out = append(out, l)
	}
	if e.IdenticalRecord {
		l := Line{Name: "identical record hash on every chain", Passed: true}
		for _, fs := range recs {
			for _, f := range fs[1:] {
				if !bytes.Equal(f.entry.Payload, fs[0].entry.Payload) {
					l.Passed, l.Detail = false, fmt.Sprintf("%s and %s differ", fs[0].node.name, f.node.name)
				}
			}
		}
		if len(recs) == 0 {
			l.Passed, l.Detail = false, "no record on any chain"
		}
		out = append(out, l)
	}
	if e.ChainsVerify == nil || *e.ChainsVerify {
		l := Line{Name: "every chain verifies", Passed: true}
		for _, n := range s.nodes {
			if err := n.store.Verify(s.checker.check); err != nil {
				l.Passed, l.Detail = false, fmt.Sprintf("%s: %v", n.name, err)
			}
		}
		out = append(out, l)
	}
	if e.NoLock == nil || *e.NoLock {
		// As the no-stuck-lock invariant: a byzantine party's lock is its
		// own (it may have signed what nobody else will), and the real
		// runner does not wait for its outcome, so counting it would make
		// a real run's verdict depend on timing the simulator never sees.
		l := Line{Name: "no lock held", Passed: true}
		for _, n := range s.nodes {
			if _, ok := n.store.Lock(); ok {
				if n.byz != "" {
					r.Notes = append(r.Notes, fmt.Sprintf("no lock held: byzantine %s holds a lock (not counted)", n.name))
					continue
				}
				l.Passed, l.Detail = false, n.name+" holds a lock"
			}
		}
		out = append(out, l)
	}
	if e.MaxMessages > 0 && s.real {
		r.Notes = append(r.Notes, "max_messages is measured in the simulator only")
	} else if e.MaxMessages > 0 {
		out = append(out, Line{Name: fmt.Sprintf("at most %d messages", e.MaxMessages), Passed: s.messages <= e.MaxMessages,
			Detail: fmt.Sprintf("%d sent", s.messages)})
	}
	if e.Within > 0 && s.real {
		// Wall-clock time on a shared machine is no pass/fail criterion:
		// real mode reports it; the simulator checks it in virtual time.
		var slowest int64
		for _, ss := range s.sessions {
			for _, n := range ss.parties {
				if at, ok := n.firstFinal[ss.id]; ok && at-ss.start > slowest {
					slowest = at - ss.start
				}
			}
		}
		r.Notes = append(r.Notes, fmt.Sprintf("within %s is checked in the simulator; here the slowest party ended after %s",
			e.Within.D(), time.Duration(slowest)*time.Millisecond))
	} else if e.Within > 0 {
		l := Line{Name: "every party ended within " + e.Within.D().String(), Passed: true}
		var late []string
		for _, ss := range s.sessions {
			for _, n := range ss.parties {
				at, ok := n.firstFinal[ss.id]
				if !ok || at-ss.start > e.Within.millis() {
					d := "never"
					if ok {
						d = (time.Duration(at-ss.start) * time.Millisecond).String()
					}
					late = append(late, fmt.Sprintf("%s/%s: %s", ss.name, n.name, d))
				}
			}
		}
		if len(late) > 0 {
			l.Passed, l.Detail = false, strings.Join(late, ", ")
		}
		out = append(out, l)
	}
	if e.Rounds > 0 && len(s.sessions) > 0 {
		ss := s.sessions[0]
		got := r.Outcomes[ss.name][ss.init.name].Round
		out = append(out, Line{Name: fmt.Sprintf("%s ended in round %d", ss.name, e.Rounds), Passed: got == e.Rounds, Detail: fmt.Sprintf("round %d", got)})
	}
	for _, p := range e.Violation {
		n := s.byName[p]
		l := Line{Name: p + " reports a protocol violation", Passed: len(n.violations) > 0}
		if len(n.violations) > 0 {
			l.Detail = n.violations[0]
		}
		out = append(out, l)
	}
	if e.Warrant != nil {
		out = append(out, s.checkWarrants(*e.Warrant)...)
	}
	return out
}

// randomFaults draws the faults of one explored run.
func randomFaults(rng *rand.Rand, sc *Scenario) []Fault {
	var out []Fault
	names := make([]string, len(sc.Parties))
	for i, p := range sc.Parties {
		names[i] = p.Name
	}
	pick := func() string { return names[rng.IntN(len(names))] }
	dur := func(maxMillis int64) *Duration {
		d := Duration(time.Duration(rng.Int64N(maxMillis+1)) * time.Millisecond)
		return &d
	}
	prob := func(p float64) *float64 { return &p }
	types := []string{protocol.TypePropose, protocol.TypeAccept, protocol.TypePreflight, protocol.TypeReady,
		protocol.TypeCommit, protocol.TypeQuery, protocol.TypeStatus, protocol.TypeAbort, "cert", ""}
	if sc.usesOffer() {
		// A signed offer sends no propose: its first frame is the offer.
		// (Swapped in place, so other scenarios draw the same faults.)
		types[0] = protocol.TypeOffer
	}
	for c := rng.IntN(3); c > 0; c-- {
		f := &CrashFault{Party: pick(), RestartAfter: dur(8000)}
		if rng.IntN(5) == 0 {
			f.AtTime = dur(3000)
		} else {
			f.At = CrashPoints[rng.IntN(len(CrashPoints))]
		}
		out = append(out, Fault{Crash: f})
	}
	if rng.IntN(3) == 0 {
		var a, b []string
		for _, n := range names {
			if rng.IntN(2) == 0 {
				a = append(a, n)
			} else {
				b = append(b, n)
			}
		}
		p := &PartitionFault{Groups: [][]string{a, b}, HealAfter: dur(20000)}
		if rng.IntN(2) == 0 {
			p.AtTime = dur(3000)
		} else {
			p.At, p.Party = CrashPoints[rng.IntN(len(CrashPoints))], pick()
		}
		out = append(out, Fault{Partition: p})
	}
	for c := rng.IntN(4); c > 0; c-- {
		lf := &LinkFault{Type: types[rng.IntN(len(types))], Count: 1 + rng.IntN(3)}
		if rng.IntN(2) == 0 {
			lf.From = pick()
		}
		if rng.IntN(2) == 0 {
			lf.To = pick()
		}
		switch rng.IntN(4) {
		case 0:
			out = append(out, Fault{Drop: lf})
		case 1:
			lf.By = *dur(5000)
			out = append(out, Fault{Delay: lf})
		case 2:
			lf.Probability = prob(0.5)
			out = append(out, Fault{Duplicate: lf})
		case 3:
			lf.By, lf.Count = *dur(800), 0
			lf.Probability = prob(0.3)
			out = append(out, Fault{Reorder: lf})
		}
	}
	if rng.IntN(3) == 0 {
		l := rng.Float64() * 0.15
		out = append(out, Fault{Drop: &LinkFault{Probability: &l}})
	}
	return out
}

// honestDifference compares two records of one session and reports how they
// differ in anything but byzantine parties' own heads and signatures.
func (s *sim) honestDifference(a, b *protocol.Record) string {
	if engine.AgreementHash(&a.Agreement) != engine.AgreementHash(&b.Agreement) {
		return "different agreements"
	}
	if len(a.Heads) != len(b.Heads) || len(a.Signatures) != len(b.Signatures) {
		return "different signature sets"
	}
	for i, p := range a.Agreement.Parties {
		if n := s.byID[p.ID]; n != nil && n.byz != "" {
			continue
		}
		if a.Heads[i] != b.Heads[i] || !bytes.Equal(a.Signatures[i], b.Signatures[i]) {
			return fmt.Sprintf("party %d's head or signature", i)
		}
	}
	if !bytes.Equal(a.WitnessDecision, b.WitnessDecision) {
		return "different witness decisions"
	}
	return ""
}

// checkWarrants checks the warrant expectation: a warrant against exactly
// the listed parties is held by some party (who holds it is the detail),
// and in a real run each is found in the DHT.
func (s *sim) checkWarrants(want []string) []Line {
	holders := map[string][]string{} // offender → holders
	for _, n := range s.nodes {
		for id := range n.warrants {
			if o := s.byID[id]; o != nil {
				holders[o.name] = append(holders[o.name], n.name)
			}
		}
	}
	var out []Line
	for _, p := range want {
		l := Line{Name: "warrant against " + p, Passed: len(holders[p]) > 0}
		if l.Passed {
			sort.Strings(holders[p])
			l.Detail = "held by " + strings.Join(holders[p], ",")
		}
		out = append(out, l)
		if s.real && s.findWarrant != nil {
			l := Line{Name: "warrant against " + p + " found in the DHT"}
			if err := s.findWarrant(s.byName[p]); err != nil {
				l.Detail = err.Error()
			} else {
				l.Passed = true
			}
			out = append(out, l)
		}
	}
	var extra []string
	for name := range holders {
		if !slices.Contains(want, name) {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	l := Line{Name: fmt.Sprintf("no warrant against others than [%s]", strings.Join(want, " ")), Passed: len(extra) == 0}
	if len(extra) > 0 {
		l.Detail = "warrants against " + strings.Join(extra, ",")
	}
	return append(out, l)
}
