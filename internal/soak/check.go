package soak

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sort"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// kindAgreement is the chain entry kind of a countersigned record.
const kindAgreement = "agreement"

// Expectation is what a harness saw of one session: its final state at
// the initiator and the parties it was proposed to. CheckHomes checks the
// chains agree with it.
type Expectation struct {
	Session string   `json:"session"`
	Parties []string `json:"parties"`
	// Outcome is "committed", "rejected", "aborted", "lost" (the
	// initiator forgot it at a crash: nothing was durable) or anything
	// else for unknown (e.g. "unresolved", "timeout"), which is not
	// checked against the chains.
	Outcome string `json:"outcome"`
	// RecordHash is the hex record hash the initiator reported for a
	// committed session ("" if not known).
	RecordHash string `json:"record_hash,omitempty"`
}

// ChainCheck is what CheckHomes found on one chain.
type ChainCheck struct {
	Home     string `json:"home"`
	Agent    string `json:"agent"`
	Length   uint64 `json:"length"`
	Records  int    `json:"records"`  // agreement entries
	Verified bool   `json:"verified"` // `negotiate chain verify` said ok
	Locked   string `json:"locked,omitempty"`
}

// CheckReport is the result of CheckHomes.
type CheckReport struct {
	Chains []ChainCheck `json:"chains"`
	// Records counts distinct countersigned records (sessions) found.
	Records int `json:"records"`
	// Untracked counts records of sessions no expectation named.
	Untracked int `json:"untracked"`
	// Expected counts the expectations checked against the chains.
	Expected int `json:"expected"`
	// Violations lists every broken invariant.
	Violations []string `json:"violations"`
}

// OK reports whether no invariant was broken.
func (c *CheckReport) OK() bool { return len(c.Violations) == 0 }

func (c *CheckReport) violate(format string, args ...any) {
	if len(c.Violations) < maxViolations {
		c.Violations = append(c.Violations, fmt.Sprintf(format, args...))
	}
}

// WriteText prints what was checked, chain by chain.
func (c *CheckReport) WriteText(w io.Writer) {
	for _, ch := range c.Chains {
		lock := "no lock"
		if ch.Locked != "" {
			lock = "LOCKED by session " + ch.Locked
		}
		verified := "verifies"
		if !ch.Verified {
			verified = "DOES NOT VERIFY"
		}
		fmt.Fprintf(w, "chain %s (%s): %d entries, %d records, %s, %s\n", ch.Home, short(ch.Agent), ch.Length, ch.Records, verified, lock)
	}
	fmt.Fprintf(w, "records: %d distinct, each checked on all its parties' chains with identical bytes (%d of sessions not in the expected outcomes)\n",
		c.Records, c.Untracked)
	fmt.Fprintf(w, "outcomes: %d sessions checked against the chains (committed: record on every party with the reported hash; rejected, aborted, lost: on none)\n",
		c.Expected)
}

// placement is where one session's record sits.
type placement struct {
	parties []string
	payload map[string][]byte // agent -> record bytes on its chain
	seq     map[string]uint64
}

// CheckHomes checks the invariants on the chains of homes, whose nodes
// must be stopped: `negotiate chain verify` passes on each (with the
// agreement record checks), no chain is locked, every countersigned record
// is on the chain of every party (among homes) with identical bytes and
// at most once per chain, and each expectation matches the chains. An
// error means a chain could not be read at all; broken invariants are in
// the report.
func CheckHomes(ctx context.Context, bin string, homes []string, expect []Expectation) (*CheckReport, error) {
	rep := &CheckReport{Violations: []string{}}
	c := cli{bin: bin}
	known := make(map[string]bool) // agents whose chain is checked
	records := make(map[string]*placement)
	for _, home := range homes {
		cc := ChainCheck{Home: home}
		// chain verify: exit 1 when broken; its JSON says why.
		out, err := c.run(ctx, "--home", home, "chain", "verify", "--json")
		var v struct {
			OK     bool    `json:"ok"`
			Length uint64  `json:"length"`
			BadSeq *uint64 `json:"bad_seq"`
			Reason string  `json:"reason"`
		}
		if jerr := json.Unmarshal(out, &v); jerr != nil {
			return nil, fmt.Errorf("soak: chain verify of %s: %v (output %q)", home, err, out)
		}
		cc.Verified = v.OK && err == nil
		if !cc.Verified {
			bad := "?"
			if v.BadSeq != nil {
				bad = fmt.Sprint(*v.BadSeq)
			}
			rep.violate("chain %s does not verify: seq %s: %s", home, bad, v.Reason)
		}
		ch, err := chain.OpenReadOnly(filepath.Join(home, "chain.db"))
		if err != nil {
			return nil, fmt.Errorf("soak: open chain of %s: %w", home, err)
		}
		err = readChain(ch, &cc, records, rep)
		ch.Close()
		if err != nil {
			return nil, fmt.Errorf("soak: read chain of %s: %w", home, err)
		}
		// And the same through the CLI, as an operator would look.
		out, err = c.run(ctx, "--home", home, "chain", "status", "--json")
		if err != nil {
			return nil, fmt.Errorf("soak: %w", err)
		}
		var st struct {
			AgentID string `json:"agent_id"`
			Lock    *struct {
				Session string `json:"session"`
			} `json:"lock"`
		}
		if err := json.Unmarshal(out, &st); err != nil {
			return nil, fmt.Errorf("soak: chain status of %s: %w (output %q)", home, err, out)
		}
		if st.Lock != nil {
			if cc.Locked == "" {
				cc.Locked = st.Lock.Session
			}
			rep.violate("chain %s: chain status shows a lock held by session %s", home, st.Lock.Session)
		}
		known[cc.Agent] = true
		rep.Chains = append(rep.Chains, cc)
	}

	// Atomicity and agreement, record by record.
	ids := make([]string, 0, len(records))
	for id := range records {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		p := records[id]
		var ref []byte
		var refAgent string
		for _, party := range p.parties {
			if !known[party] {
				continue // a party outside the checked homes
			}
			b, ok := p.payload[party]
			if !ok {
				holders := make([]string, 0, len(p.payload))
				for a := range p.payload {
					holders = append(holders, short(a))
				}
				sort.Strings(holders)
				rep.violate("atomicity: session %s's record is on %v but not on party %s's chain", id, holders, short(party))
				continue
			}
			if ref == nil {
				ref, refAgent = b, party
			} else if !bytes.Equal(ref, b) {
				h1, h2 := sign.Hash(ref), sign.Hash(b)
				rep.violate("agreement: session %s: record %x on %s's chain but %x on %s's", id, h1[:8], short(refAgent), h2[:8], short(party))
			}
		}
		for a := range p.payload {
			if !contains(p.parties, a) {
				rep.violate("session %s: record on the chain of %s, which is not one of its parties", id, short(a))
			}
		}
	}
	rep.Records = len(records)

	// Outcomes the harness saw against the chains.
	tracked := make(map[string]bool, len(expect))
	for _, e := range expect {
		tracked[e.Session] = true
		p := records[e.Session]
		switch e.Outcome {
		case "committed":
			rep.Expected++
			if p == nil {
				rep.violate("session %s committed at its initiator but no chain holds its record", e.Session)
				continue
			}
			named := make(map[string]bool)
			for _, party := range append(append([]string(nil), e.Parties...), p.parties...) {
				if named[party] {
					continue
				}
				named[party] = true
				if known[party] && p.payload[party] == nil {
					rep.violate("session %s committed at its initiator but party %s's chain lacks the record", e.Session, short(party))
				}
			}
			if e.RecordHash != "" {
				for a, b := range p.payload {
					h := sign.Hash(b)
					if hex.EncodeToString(h[:]) != e.RecordHash {
						rep.violate("session %s: the initiator reported record %s, %s's chain holds %x", e.Session, e.RecordHash, short(a), h)
					}
				}
			}
		case "rejected", "aborted", "lost":
			rep.Expected++
			if p != nil {
				holders := make([]string, 0, len(p.payload))
				for a := range p.payload {
					holders = append(holders, short(a))
				}
				sort.Strings(holders)
				rep.violate("session %s ended %s at its initiator but its record is on %v", e.Session, e.Outcome, holders)
			}
		}
	}
	for id := range records {
		if !tracked[id] {
			rep.Untracked++
		}
	}
	return rep, nil
}

// readChain reads every entry of ch into cc and records.
func readChain(ch *chain.Chain, cc *ChainCheck, records map[string]*placement, rep *CheckReport) error {
	agent := string(ch.AgentID())
	cc.Agent = agent
	cc.Length = ch.Length()
	if l, ok := ch.Lock(); ok {
		cc.Locked = l.Session
		rep.violate("chain %s is locked by session %s since %d (parties %v)", cc.Home, l.Session, l.Since, l.Parties)
	}
	seen := make(map[string]uint64)
	for from := uint64(0); from < cc.Length; {
		entries, err := ch.Entries(from, 0)
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			return fmt.Errorf("no entry at seq %d of %d", from, cc.Length)
		}
		for i := range entries {
			e := &entries[i]
			from = e.Seq + 1
			if e.Kind != kindAgreement {
				continue
			}
			cc.Records++
			var rec protocol.Record
			if err := protocol.Unmarshal(e.Payload, &rec); err != nil {
				rep.violate("chain %s seq %d: agreement entry does not decode: %v", cc.Home, e.Seq, err)
				continue
			}
			rh, err := protocol.RecordHash(&rec)
			if err != nil {
				rep.violate("chain %s seq %d: %v", cc.Home, e.Seq, err)
				continue
			}
			if ph := sign.Hash(e.Payload); !bytes.Equal(rh[:], ph[:]) {
				rep.violate("chain %s seq %d: record bytes are not in deterministic encoding", cc.Home, e.Seq)
			}
			id := rec.Agreement.Session
			if prev, dup := seen[id]; dup {
				rep.violate("chain %s: session %s recorded twice, at seq %d and %d", cc.Home, id, prev, e.Seq)
				continue
			}
			seen[id] = e.Seq
			p := records[id]
			if p == nil {
				p = &placement{payload: make(map[string][]byte), seq: make(map[string]uint64)}
				for _, party := range rec.Agreement.Parties {
					p.parties = append(p.parties, string(party.ID))
				}
				records[id] = p
			}
			p.payload[agent] = bytes.Clone(e.Payload)
			p.seq[agent] = e.Seq
		}
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// short abbreviates an agent ID for messages.
func short(id string) string {
	if len(id) <= 12 {
		return id
	}
	return id[:8] + "…" + id[len(id)-4:]
}
