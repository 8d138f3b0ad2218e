package scenarios

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Scenario file limits. Each bounds what a file can make the runner hold.
const (
	// MaxScenarioBytes bounds a scenario file: scripts are hand-written.
	MaxScenarioBytes = 1 << 20
	// MaxSteps bounds the steps of one scenario.
	MaxSteps = 1000
	// MaxFaults bounds the faults of one scenario.
	MaxFaults = 200
	// MaxDuration bounds every duration in a file (virtual or real); a
	// longer one is a typo, not a test.
	MaxDuration = 24 * time.Hour
	// DefaultTimeout is a proposal's timeout (deadline) when none is given.
	DefaultTimeout = 30 * time.Second
)

// Sentinel errors callers branch on.
var (
	// ErrBadScenario: a scenario file is malformed; the message names the
	// file, line and field.
	ErrBadScenario = errors.New("scenarios: bad scenario")
	// ErrNotSupported: the scenario needs something this mode cannot do.
	ErrNotSupported = errors.New("scenarios: not supported")
)

// Crash points, named by protocol step.
const (
	PointAfterPropose     = "after-propose"     // the initiator sent / a participant received the first proposal
	PointAfterAccept      = "after-accept"      // a participant sent / the initiator received an accept
	PointAfterVote        = "after-vote"        // lock and signed vote are durable; the Ready has not left
	PointAfterReadySent   = "after-ready-sent"  // the Ready (and preflight) left
	PointAfterCertificate = "after-certificate" // the commit certificate is held, before the append
	PointAfterAppend      = "after-append"      // the record is appended; nothing after it was sent
)

// CrashPoints lists the named crash points.
var CrashPoints = []string{PointAfterPropose, PointAfterAccept, PointAfterVote, PointAfterReadySent, PointAfterCertificate, PointAfterAppend}

// Byzantine behaviours.
const (
	ByzTamperSignature = "tamper-signature" // flips a bit of every statement signature it sends
	ByzOtherTerms      = "other-terms"      // initiator: asks to sign other terms than accepted; participant: accepts a wrong terms hash
	ByzEquivocate      = "equivocate"       // initiator: a different agreement to each participant; participant: two different statements
	ByzReplay          = "replay"           // re-sends every message it sent once more, later, and replays old sessions' messages into new ones
)

var byzantineKinds = []string{ByzTamperSignature, ByzOtherTerms, ByzEquivocate, ByzReplay}

// Scenario is one parsed scenario file.
type Scenario struct {
	Name        string   `yaml:"name"`
	Description string   `yaml:"description"`
	Seed        uint64   `yaml:"seed"` // default seed of a simulated run (0 = 1)
	Parties     []Party  `yaml:"parties"`
	Network     Network  `yaml:"network"`
	Steps       []Step   `yaml:"steps"`
	Faults      []Fault  `yaml:"faults"`
	Expect      Expect   `yaml:"expect"`
	Tags        []string `yaml:"tags"`

	// File is the path it was loaded from (empty when parsed from bytes).
	File string `yaml:"-"`
}

// Party is one agent of a scenario.
type Party struct {
	Name   string `yaml:"name"`
	Scheme string `yaml:"scheme"` // default ed25519
	Policy Policy `yaml:"policy"` // default accept
}

// Network is the simulated network. Every link uses Latency ± Jitter and
// drops a message with probability Loss unless a Links entry overrides it.
type Network struct {
	Latency Duration `yaml:"latency"` // default 10ms
	Jitter  Duration `yaml:"jitter"`
	Loss    float64  `yaml:"loss"`
	Links   []Link   `yaml:"links"`
}

// Link overrides the network for messages from From to To ("" or "*" = any).
type Link struct {
	From    string    `yaml:"from"`
	To      string    `yaml:"to"`
	Latency *Duration `yaml:"latency"`
	Jitter  *Duration `yaml:"jitter"`
	Loss    *float64  `yaml:"loss"`
}

// Step is one scripted action; exactly one field is set.
type Step struct {
	Propose *ProposeStep `yaml:"propose"`
	Accept  *DecideStep  `yaml:"accept"`
	Reject  *DecideStep  `yaml:"reject"`
	Counter *DecideStep  `yaml:"counter"`
	Message *MessageStep `yaml:"message"`
	Wait    *Duration    `yaml:"wait"`
	Abort   *DecideStep  `yaml:"abort"`
}

// ProposeStep starts a session.
type ProposeStep struct {
	ID        string         `yaml:"id"` // name used by decisions, faults and expectations (default s1, s2, ...)
	From      string         `yaml:"from"`
	With      []string       `yaml:"with"`
	Terms     map[string]any `yaml:"terms"`
	MaxRounds uint32         `yaml:"max_rounds"`
	Timeout   Duration       `yaml:"timeout"` // default 30s
	Witness   string         `yaml:"witness"`
	// Offer makes it a signed offer (negotiate.ProposeOptions.Offer): the
	// initiator signs the terms at once, each participant accepts (its
	// signature) or rejects; one round, no counter, no witness.
	Offer bool `yaml:"offer"`
}

// DecideStep is a party's decision on a session that waits for it. The step
// waits (in virtual time, up to Within, default the session timeout) until
// the decision is pending.
type DecideStep struct {
	Party   string         `yaml:"party"`
	Session string         `yaml:"session"` // default: the last proposed
	Terms   map[string]any `yaml:"terms"`   // counter
	Reason  string         `yaml:"reason"`
	Within  Duration       `yaml:"within"`
}

// MessageStep sends a direct off-the-record message (real mode only; the
// simulator skips it with a note).
type MessageStep struct {
	From    string   `yaml:"from"`
	To      string   `yaml:"to"`
	Payload string   `yaml:"payload"`
	Timeout Duration `yaml:"timeout"`
}

// Fault is one injected fault; exactly one field is set.
type Fault struct {
	Crash     *CrashFault     `yaml:"crash"`
	Partition *PartitionFault `yaml:"partition"`
	Drop      *LinkFault      `yaml:"drop"`
	Delay     *LinkFault      `yaml:"delay"`
	Duplicate *LinkFault      `yaml:"duplicate"`
	Reorder   *LinkFault      `yaml:"reorder"`
	Byzantine *ByzantineFault `yaml:"byzantine"`
}

// CrashFault crashes a party at a named protocol step (At) or at a virtual
// time (AtTime) and restarts it after RestartAfter (default 1s).
type CrashFault struct {
	Party        string    `yaml:"party"`
	At           string    `yaml:"at"`
	AtTime       *Duration `yaml:"at_time"`
	Session      string    `yaml:"session"` // only steps of this session (default any)
	RestartAfter *Duration `yaml:"restart_after"`
}

// PartitionFault splits the network into groups (parties not listed form
// one more group) from a protocol step of Party (At) or a time (AtTime),
// and heals it after HealAfter (default: at the end of the script).
type PartitionFault struct {
	Groups    [][]string `yaml:"groups"`
	At        string     `yaml:"at"`
	Party     string     `yaml:"party"`
	AtTime    *Duration  `yaml:"at_time"`
	HealAfter *Duration  `yaml:"heal_after"`
}

// LinkFault matches messages by sender, receiver and type ("" = any) and
// drops, delays, duplicates or reorders them.
type LinkFault struct {
	From        string   `yaml:"from"`
	To          string   `yaml:"to"`
	Type        string   `yaml:"type"`        // message type: propose, accept, ready, commit, ... or "cert"
	Count       int      `yaml:"count"`       // at most this many matches (0 = unlimited)
	Probability *float64 `yaml:"probability"` // chance per matching message (default 1)
	By          Duration `yaml:"by"`          // delay: extra latency; reorder: maximal extra latency
}

// ByzantineFault makes a party misbehave on the wire.
type ByzantineFault struct {
	Party    string `yaml:"party"`
	Behavior string `yaml:"behavior"`
}

// Expect is what a run must show. Every field is optional.
type Expect struct {
	// Outcome per party of the first session: committed, rejected,
	// aborted, busy (aborted because a chain was locked), none (the party
	// never knew the session), or alternatives "committed|aborted".
	Outcome map[string]string `yaml:"outcome"`
	// Sessions is Outcome per session ID, for scenarios with several.
	Sessions map[string]map[string]string `yaml:"sessions"`
	// RecordOn lists exactly the parties whose chains hold a record (of
	// any session); [] means none.
	RecordOn *[]string `yaml:"record_on"`
	// IdenticalRecord: every chain holding a session's record holds the
	// same bytes (always checked as an invariant; this makes it an expectation line).
	IdenticalRecord bool `yaml:"identical_record"`
	// ChainsVerify: every chain verifies (default true).
	ChainsVerify *bool `yaml:"chains_verify"`
	// NoLock: no chain lock is held at the end (default true).
	NoLock *bool `yaml:"no_lock"`
	// MaxMessages bounds the messages sent in the whole run.
	MaxMessages int `yaml:"max_messages"`
	// Within bounds, in virtual time from the proposal, when every party
	// of every session reached its outcome.
	Within Duration `yaml:"within"`
	// Rounds is the round the first session ended in.
	Rounds uint32 `yaml:"rounds"`
	// Violation lists parties that must report a protocol violation by a peer.
	Violation []string `yaml:"violation"`
	// Warrant lists the parties some party must hold a valid warrant
	// against (evidence of equivocation); a warrant against any party not
	// listed fails it. In a real run each must also be found in the DHT.
	Warrant *[]string `yaml:"warrant"`
}

// Duration is a time.Duration written as "250ms", "2s", "1m".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(b []byte) error {
	s := strings.Trim(strings.TrimSpace(string(b)), `"'`)
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: write it like 250ms, 2s or 1m", s)
	}
	if v < 0 || v > MaxDuration {
		return fmt.Errorf("duration %s: must be between 0 and %s", v, MaxDuration)
	}
	*d = Duration(v)
	return nil
}

// MarshalText prints the duration as Go does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) millis() int64 { return time.Duration(d).Milliseconds() }

// Load reads and checks scenario files. A directory loads every *.yaml and
// *.yml file in it, sorted by name. Unknown fields and invalid values are
// errors naming the file, line and field.
func Load(paths ...string) ([]*Scenario, error) {
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("scenarios: %w", err)
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		var found []string
		for _, pat := range []string{"*.yaml", "*.yml"} {
			m, err := filepath.Glob(filepath.Join(p, pat))
			if err != nil {
				return nil, fmt.Errorf("scenarios: %s: %w", p, err)
			}
			found = append(found, m...)
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("%w: directory %s holds no *.yaml scenario file", ErrBadScenario, p)
		}
		sort.Strings(found)
		files = append(files, found...)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: no scenario file given", ErrBadScenario)
	}
	var out []*Scenario
	for _, f := range files {
		data, err := readLimited(f)
		if err != nil {
			return nil, err
		}
		sc, err := Parse(data, f)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scenarios: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxScenarioBytes+1))
	if err != nil {
		return nil, fmt.Errorf("scenarios: read %s: %w", path, err)
	}
	if len(data) > MaxScenarioBytes {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadScenario, path, MaxScenarioBytes)
	}
	return data, nil
}

// Parse parses and checks one scenario; source names it in errors.
func Parse(data []byte, source string) (*Scenario, error) {
	var sc Scenario
	if err := yaml.UnmarshalWithOptions(data, &sc, yaml.Strict()); err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrBadScenario, source, yaml.FormatError(err, false, false))
	}
	sc.File = source
	if err := sc.check(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadScenario, source, err)
	}
	return &sc, nil
}

// sessionIDs returns the scenario's session names in proposal order.
func (sc *Scenario) sessionIDs() []string {
	var ids []string
	for _, st := range sc.Steps {
		if st.Propose != nil {
			ids = append(ids, st.Propose.ID)
		}
	}
	return ids
}

func (sc *Scenario) partyIndex(name string) int {
	for i, p := range sc.Parties {
		if p.Name == name {
			return i
		}
	}
	return -1
}

// usesOffer reports whether a proposal is a signed offer.
func (sc *Scenario) usesOffer() bool {
	for _, st := range sc.Steps {
		if st.Propose != nil && st.Propose.Offer {
			return true
		}
	}
	return false
}

// usesWitness reports whether a proposal names a witness.
func (sc *Scenario) usesWitness() bool {
	for _, st := range sc.Steps {
		if st.Propose != nil && st.Propose.Witness != "" {
			return true
		}
	}
	return false
}

func (sc *Scenario) check() error {
	if sc.Name == "" {
		return fmt.Errorf("field name: every scenario needs a name")
	}
	if len(sc.Parties) < 2 {
		return fmt.Errorf("field parties: a scenario needs at least 2 parties, it has %d", len(sc.Parties))
	}
	if len(sc.Parties) > protocol.MaxParties+1 {
		return fmt.Errorf("field parties: at most %d parties", protocol.MaxParties+1)
	}
	if len(sc.Steps) == 0 || len(sc.Steps) > MaxSteps {
		return fmt.Errorf("field steps: a scenario needs 1 to %d steps, it has %d", MaxSteps, len(sc.Steps))
	}
	if len(sc.Faults) > MaxFaults {
		return fmt.Errorf("field faults: at most %d faults, it has %d", MaxFaults, len(sc.Faults))
	}
	seen := map[string]bool{}
	for i := range sc.Parties {
		p := &sc.Parties[i]
		if p.Name == "" || strings.ContainsAny(p.Name, " \t/|") {
			return fmt.Errorf("parties[%d].name %q: give each party a name without spaces, '/' or '|'", i, p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("parties[%d].name: %q is listed twice", i, p.Name)
		}
		seen[p.Name] = true
		if p.Scheme == "" {
			p.Scheme = sign.DefaultScheme
		}
		if _, err := sign.SchemeByName(p.Scheme); err != nil {
			return fmt.Errorf("parties[%d].scheme: %v", i, err)
		}
		if err := p.Policy.check(); err != nil {
			return fmt.Errorf("parties[%d].policy: %v", i, err)
		}
	}
	known := func(field, name string) error {
		if name == "" || name == "*" {
			return nil
		}
		if !seen[name] {
			return fmt.Errorf("%s: no party named %q (parties: %s)", field, name, sc.partyNames())
		}
		return nil
	}
	if err := checkProb("network.loss", sc.Network.Loss); err != nil {
		return err
	}
	if sc.Network.Latency == 0 {
		sc.Network.Latency = Duration(10 * time.Millisecond)
	}
	for i, l := range sc.Network.Links {
		if err := known(fmt.Sprintf("network.links[%d].from", i), l.From); err != nil {
			return err
		}
		if err := known(fmt.Sprintf("network.links[%d].to", i), l.To); err != nil {
			return err
		}
		if l.Loss != nil {
			if err := checkProb(fmt.Sprintf("network.links[%d].loss", i), *l.Loss); err != nil {
				return err
			}
		}
	}
	sessions := map[string]bool{}
	offers := map[string]string{} // sessions proposed as signed offers → their initiator
	last := ""
	for i := range sc.Steps {
		st := &sc.Steps[i]
		field := fmt.Sprintf("steps[%d]", i)
		n := 0
		for _, set := range []bool{st.Propose != nil, st.Accept != nil, st.Reject != nil, st.Counter != nil, st.Message != nil, st.Wait != nil, st.Abort != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%s: set exactly one of propose, accept, reject, counter, abort, message, wait (it sets %d)", field, n)
		}
		switch {
		case st.Propose != nil:
			p := st.Propose
			if p.ID == "" {
				p.ID = fmt.Sprintf("s%d", len(sessions)+1)
			}
			if sessions[p.ID] {
				return fmt.Errorf("%s.propose.id: session %q is proposed twice", field, p.ID)
			}
			sessions[p.ID] = true
			last = p.ID
			if p.From == "" {
				return fmt.Errorf("%s.propose.from: name the initiator", field)
			}
			if err := known(field+".propose.from", p.From); err != nil {
				return err
			}
			if len(p.With) == 0 {
				return fmt.Errorf("%s.propose.with: name at least one other party", field)
			}
			if len(p.With)+1 > protocol.MaxParties {
				return fmt.Errorf("%s.propose.with: a session has at most %d parties", field, protocol.MaxParties)
			}
			in := map[string]bool{p.From: true}
			for _, w := range p.With {
				if err := known(field+".propose.with", w); err != nil {
					return err
				}
				if w == "" || in[w] {
					return fmt.Errorf("%s.propose.with: %q is listed twice or is the initiator", field, w)
				}
				in[w] = true
			}
			if p.Witness != "" {
				if err := known(field+".propose.witness", p.Witness); err != nil {
					return err
				}
				if in[p.Witness] {
					return fmt.Errorf("%s.propose.witness: the witness %q must not be a party", field, p.Witness)
				}
			}
			if len(p.Terms) == 0 {
				return fmt.Errorf("%s.propose.terms: give at least one term, e.g. {item: book, price: 10}", field)
			}
			if _, err := encodeTerms(p.Terms); err != nil {
				return fmt.Errorf("%s.propose.terms: %v", field, err)
			}
			if p.MaxRounds > protocol.MaxRounds {
				return fmt.Errorf("%s.propose.max_rounds: at most %d", field, protocol.MaxRounds)
			}
			if p.Timeout == 0 {
				p.Timeout = Duration(DefaultTimeout)
			}
			if p.Offer {
				if p.Witness != "" {
					return fmt.Errorf("%s.propose.witness: a signed offer (offer: true) cannot name a witness; drop witness or offer", field)
				}
				if p.MaxRounds > 1 {
					return fmt.Errorf("%s.propose.max_rounds: a signed offer (offer: true) has exactly one round, not %d; drop max_rounds or offer", field, p.MaxRounds)
				}
				offers[p.ID] = p.From
			}
		case st.Accept != nil, st.Reject != nil, st.Counter != nil, st.Abort != nil:
			d, name := st.decision()
			if err := known(field+"."+name+".party", d.Party); err != nil {
				return err
			}
			if d.Party == "" {
				return fmt.Errorf("%s.%s.party: name the deciding party", field, name)
			}
			if d.Session == "" {
				d.Session = last
			}
			if !sessions[d.Session] {
				return fmt.Errorf("%s.%s.session: no session %q was proposed before this step", field, name, d.Session)
			}
			if st.Counter != nil {
				if _, ok := offers[d.Session]; ok {
					// The language has no expected-failure steps: a counter
					// on an offer could only fail (negotiate.ErrNotYourTurn).
					return fmt.Errorf("%s.counter: session %q is a signed offer (offer: true), which takes accept or reject only; use reject, or propose the new terms in another session", field, d.Session)
				}
				if len(d.Terms) == 0 {
					return fmt.Errorf("%s.counter.terms: a counter needs terms", field)
				}
				if _, err := encodeTerms(d.Terms); err != nil {
					return fmt.Errorf("%s.counter.terms: %v", field, err)
				}
			}
		case st.Message != nil:
			m := st.Message
			if err := known(field+".message.from", m.From); err != nil {
				return err
			}
			if err := known(field+".message.to", m.To); err != nil {
				return err
			}
			if m.From == "" || m.To == "" || m.From == m.To {
				return fmt.Errorf("%s.message: name two different parties in from and to", field)
			}
			if len(m.Payload) > protocol.MaxDirectBytes {
				return fmt.Errorf("%s.message.payload: at most %d bytes", field, protocol.MaxDirectBytes)
			}
		}
	}
	if len(sessions) == 0 {
		return fmt.Errorf("steps: propose at least one session")
	}
	byz := map[string]bool{}
	for i := range sc.Faults {
		f := &sc.Faults[i]
		field := fmt.Sprintf("faults[%d]", i)
		n := 0
		for _, set := range []bool{f.Crash != nil, f.Partition != nil, f.Drop != nil, f.Delay != nil, f.Duplicate != nil, f.Reorder != nil, f.Byzantine != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%s: set exactly one of crash, partition, drop, delay, duplicate, reorder, byzantine (it sets %d)", field, n)
		}
		switch {
		case f.Crash != nil:
			c := f.Crash
			if c.Party == "" {
				return fmt.Errorf("%s.crash.party: name the party that crashes", field)
			}
			if err := known(field+".crash.party", c.Party); err != nil {
				return err
			}
			if err := checkTrigger(field+".crash", c.At, c.AtTime); err != nil {
				return err
			}
			if c.Session != "" && !sessions[c.Session] {
				return fmt.Errorf("%s.crash.session: no session %q", field, c.Session)
			}
			if why := offerUnreached(offers, sessions, c.At, c.Session); why != "" {
				return fmt.Errorf("%s.crash.at %q: %s", field, c.At, why)
			}
		case f.Partition != nil:
			p := f.Partition
			if len(p.Groups) == 0 {
				return fmt.Errorf("%s.partition.groups: list the groups, e.g. [[alice], [bob, carol]]", field)
			}
			in := map[string]bool{}
			for _, g := range p.Groups {
				for _, name := range g {
					if err := known(field+".partition.groups", name); err != nil {
						return err
					}
					if in[name] {
						return fmt.Errorf("%s.partition.groups: %q is in two groups", field, name)
					}
					in[name] = true
				}
			}
			if err := checkTrigger(field+".partition", p.At, p.AtTime); err != nil {
				return err
			}
			if p.At != "" {
				if err := known(field+".partition.party", p.Party); err != nil {
					return err
				}
				if p.Party == "" {
					return fmt.Errorf("%s.partition.party: name whose step %q starts the partition", field, p.At)
				}
				if why := offerUnreached(offers, sessions, p.At, ""); why != "" {
					return fmt.Errorf("%s.partition.at %q: %s", field, p.At, why)
				}
			}
		case f.Byzantine != nil:
			b := f.Byzantine
			if err := known(field+".byzantine.party", b.Party); err != nil {
				return err
			}
			if b.Party == "" {
				return fmt.Errorf("%s.byzantine.party: name the misbehaving party", field)
			}
			if !contains(byzantineKinds, b.Behavior) {
				return fmt.Errorf("%s.byzantine.behavior %q: use one of %s", field, b.Behavior, strings.Join(byzantineKinds, ", "))
			}
			byz[b.Party] = true
		default:
			lf, name := f.link()
			if err := known(field+"."+name+".from", lf.From); err != nil {
				return err
			}
			if err := known(field+"."+name+".to", lf.To); err != nil {
				return err
			}
			if lf.Type != "" && lf.Type != "cert" && !protocol.KnownType(lf.Type) {
				return fmt.Errorf("%s.%s.type %q: not a message type (propose, accept, reject, counter, preflight, offer, ready, refuse, commit, abort, query, status, cert)", field, name, lf.Type)
			}
			if lf.Count < 0 {
				return fmt.Errorf("%s.%s.count: must not be negative", field, name)
			}
			if lf.Probability != nil {
				if err := checkProb(field+"."+name+".probability", *lf.Probability); err != nil {
					return err
				}
			}
			if (name == "delay" || name == "reorder") && lf.By == 0 {
				return fmt.Errorf("%s.%s.by: give the extra latency, e.g. 2s", field, name)
			}
		}
	}
	checkOutcomes := func(field string, m map[string]string) error {
		for party, want := range m {
			if err := known(field, party); err != nil {
				return err
			}
			for _, alt := range strings.Split(want, "|") {
				if !contains([]string{"committed", "rejected", "aborted", "busy", "none"}, alt) {
					return fmt.Errorf("%s.%s: outcome %q: use committed, rejected, aborted, busy or none (alternatives with |)", field, party, want)
				}
			}
		}
		return nil
	}
	if err := checkOutcomes("expect.outcome", sc.Expect.Outcome); err != nil {
		return err
	}
	for id, m := range sc.Expect.Sessions {
		if !sessions[id] {
			return fmt.Errorf("expect.sessions: no session %q was proposed", id)
		}
		if err := checkOutcomes("expect.sessions."+id, m); err != nil {
			return err
		}
	}
	if sc.Expect.RecordOn != nil {
		for _, p := range *sc.Expect.RecordOn {
			if err := known("expect.record_on", p); err != nil {
				return err
			}
		}
	}
	for _, p := range sc.Expect.Violation {
		if err := known("expect.violation", p); err != nil {
			return err
		}
	}
	if sc.Expect.Warrant != nil {
		for _, p := range *sc.Expect.Warrant {
			if err := known("expect.warrant", p); err != nil {
				return err
			}
		}
	}
	return nil
}

func (st *Step) decision() (*DecideStep, string) {
	switch {
	case st.Accept != nil:
		return st.Accept, "accept"
	case st.Reject != nil:
		return st.Reject, "reject"
	case st.Counter != nil:
		return st.Counter, "counter"
	case st.Abort != nil:
		return st.Abort, "abort"
	}
	return nil, ""
}

func (f *Fault) link() (*LinkFault, string) {
	switch {
	case f.Drop != nil:
		return f.Drop, "drop"
	case f.Delay != nil:
		return f.Delay, "delay"
	case f.Duplicate != nil:
		return f.Duplicate, "duplicate"
	case f.Reorder != nil:
		return f.Reorder, "reorder"
	}
	return nil, ""
}

// offerUnreached says why protocol step point is never reached when
// every session it could apply to (session, or all) is a signed offer;
// "" if it may. A trigger that can never fire is a mistake in the script.
// Every step but after-accept is reached in an offer (the initiator's
// after-ready-sent is where its offer frame, which carries its Ready, left).
func offerUnreached(offers map[string]string, sessions map[string]bool, point, session string) string {
	if point != PointAfterAccept {
		return ""
	}
	for id := range sessions {
		if session != "" && id != session {
			continue
		}
		if _, offer := offers[id]; !offer {
			return ""
		}
	}
	return "never reached in a signed offer (offer: true), which sends no accept message; use after-vote, after-ready-sent or after-append"
}

func checkTrigger(field, at string, atTime *Duration) error {
	if (at == "") == (atTime == nil) {
		return fmt.Errorf("%s: set exactly one of at (a protocol step: %s) and at_time", field, strings.Join(CrashPoints, ", "))
	}
	if at != "" && !contains(CrashPoints, at) {
		return fmt.Errorf("%s.at %q: use one of %s", field, at, strings.Join(CrashPoints, ", "))
	}
	return nil
}

func checkProb(field string, p float64) error {
	if p < 0 || p > 1 || p != p {
		return fmt.Errorf("%s: %v is not a probability between 0 and 1", field, p)
	}
	return nil
}

func (sc *Scenario) partyNames() string {
	names := make([]string, len(sc.Parties))
	for i, p := range sc.Parties {
		names[i] = p.Name
	}
	return strings.Join(names, ", ")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// encodeTerms turns YAML terms into the deterministic CBOR map of the protocol.
func encodeTerms(m map[string]any) ([]byte, error) {
	return protocol.EncodeTerms(normalize(m).(map[string]any))
}

// normalize turns YAML-decoded values into CBOR-friendly ones.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			out[k] = normalize(val)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			out[fmt.Sprint(k)] = normalize(val)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = normalize(val)
		}
		return out
	case uint64:
		if x <= 1<<63-1 {
			return int64(x)
		}
		return x
	case int:
		return int64(x)
	}
	return v
}
