package negotiate

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/negotiate/transport"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Rollback protection. A node restarted on an older copy of its chain (a
// backup put back) has forgotten records it signed: signing again at those
// seqs would fork its chain. Its counterparties hold those records, each
// with this agent's head in it, so every session message carries a chain
// note (protocol.ChainNote): the sender's head and lock, and the newest
// record of the recipient the sender holds. A recipient whose chain ends
// before that record (and is not locked by its session, about to append
// it) knows it is behind, and signs nothing until `negotiate chain
// recover` fetched the records back (Node.Recover). A sender whose head is
// behind a record the recipient holds is refused by the recipient: it will
// not sign a session with a party whose chain is behind.

// ErrBehind: this agent's chain lacks records its counterparties hold (it
// was restored from an older copy); it signs nothing until they are back.
var ErrBehind = errors.New("negotiate: this agent's chain is behind")

// Recovery limits.
const (
	// maxRecordsPerReply bounds the records in one recovery answer; the
	// asker asks again from its new head.
	maxRecordsPerReply = 64
	// maxRecordsReplyBytes keeps an answer under the direct message limit.
	maxRecordsReplyBytes = protocol.MaxDirectBytes - 16<<10
	// maxRecoverRounds bounds the requests of one Recover call.
	maxRecoverRounds = 1000
)

// rollbackState is what the node knows of chain positions: its own
// counterparties' (from its chain) and what they told it.
type rollbackState struct {
	mu sync.Mutex
	// held is, per counterparty, the newest record of it on this chain.
	held map[sign.AgentID]protocol.HeldRecord
	// told is, per counterparty, a record of this agent it holds that this
	// chain lacks.
	told map[sign.AgentID]protocol.HeldRecord
	// laggards are counterparties whose chain, as they presented it, lacks
	// a record this chain holds: presented head seq and the record.
	laggards map[sign.AgentID]laggard
	// probed are the counterparties asked since the start (probeBehind).
	probed map[sign.AgentID]bool
}

type laggard struct {
	head uint64
	rec  protocol.HeldRecord
}

// recordParties is the part of a Record the index reads.
type recordParties struct {
	Agreement struct {
		Session string `cbor:"session"`
		Parties []struct {
			ID sign.AgentID `cbor:"id"`
		} `cbor:"parties"`
	} `cbor:"agreement"`
	Heads []chain.Head `cbor:"heads"`
}

// lenient decodes only the fields named (records are verified elsewhere).
var lenient, _ = cbor.DecOptions{MaxArrayElements: 1 << 16}.DecMode()

// newRollbackState indexes the records of c: for every counterparty, the
// newest record naming it.
func newRollbackState(c *chain.Chain) (*rollbackState, error) {
	rb := &rollbackState{held: map[sign.AgentID]protocol.HeldRecord{}, told: map[sign.AgentID]protocol.HeldRecord{}, laggards: map[sign.AgentID]laggard{}, probed: map[sign.AgentID]bool{}}
	self := c.AgentID()
	for from := uint64(1); ; {
		es, err := c.Entries(from, 0)
		if err != nil {
			return nil, fmt.Errorf("negotiate: index the chain's records: %w", err)
		}
		for i := range es {
			if es[i].Kind == engine.KindAgreement {
				rb.note(self, es[i].Payload)
			}
		}
		if len(es) < chain.MaxEntriesPerRead {
			return rb, nil
		}
		from = es[len(es)-1].Seq + 1
	}
}

// note indexes one record on this chain.
func (rb *rollbackState) note(self sign.AgentID, payload []byte) {
	var r recordParties
	if lenient.Unmarshal(payload, &r) != nil || len(r.Heads) != len(r.Agreement.Parties) {
		return
	}
	rb.mu.Lock()
	defer rb.mu.Unlock()
	for i, p := range r.Agreement.Parties {
		if p.ID == self {
			continue
		}
		seq := r.Heads[i].Seq + 1
		if cur, ok := rb.held[p.ID]; !ok || seq > cur.Seq {
			rb.held[p.ID] = protocol.HeldRecord{Seq: seq, Session: r.Agreement.Session}
		}
	}
}

// chainNote is the note for a message to agent to.
func (n *Node) chainNote(to sign.AgentID) *protocol.ChainNote {
	note := &protocol.ChainNote{Head: n.chain.Head()}
	if l, ok := n.chain.Lock(); ok {
		note.Locked = l.Session
	}
	n.rb.mu.Lock()
	if h, ok := n.rb.held[to]; ok {
		note.Yours = &h
	}
	n.rb.mu.Unlock()
	return note
}

// checkNote reads the chain note of a message from agent from.
func (n *Node) checkNote(from sign.AgentID, note *protocol.ChainNote) {
	if note == nil {
		return
	}
	if note.Yours != nil {
		n.checkTold(from, note.Yours)
	}
	n.rb.mu.Lock()
	defer n.rb.mu.Unlock()
	if h, ok := n.rb.held[from]; ok && lacks(note.Head, note.Locked, h) {
		n.rb.laggards[from] = laggard{head: note.Head.Seq, rec: h}
	} else {
		delete(n.rb.laggards, from)
	}
}

// checkTold records that agent from holds record y of this agent, if this
// chain lacks it.
func (n *Node) checkTold(from sign.AgentID, y *protocol.HeldRecord) {
	head := n.chain.Head()
	locked := ""
	if l, ok := n.chain.Lock(); ok {
		locked = l.Session
	}
	if !lacks(head, locked, *y) {
		return
	}
	n.rb.mu.Lock()
	defer n.rb.mu.Unlock()
	if old, ok := n.rb.told[from]; !ok || old != *y {
		n.log.Error("this agent's chain is behind: a counterparty holds a record of it this chain lacks; it signs nothing until `negotiate chain recover --from` that agent", "from", from, "seq", y.Seq, "session", y.Session, "head", head.Seq)
	}
	n.rb.told[from] = *y
}

// lacks reports whether a chain at head, locked by session locked, lacks
// record r: it ends before r's seq, and is not about to append r (locked
// by its session, at the seq before).
func lacks(head chain.Head, locked string, r protocol.HeldRecord) bool {
	if head.Seq >= r.Seq {
		return false
	}
	return !(head.Seq+1 == r.Seq && locked == r.Session)
}

// behind returns ErrBehind, naming the missing seqs and who holds them,
// while a counterparty told this agent of a record its chain lacks.
func (n *Node) behind() error {
	head := n.chain.Head()
	locked := ""
	if l, ok := n.chain.Lock(); ok {
		locked = l.Session
	}
	n.rb.mu.Lock()
	defer n.rb.mu.Unlock()
	var holders []sign.AgentID
	var last uint64
	for a, r := range n.rb.told {
		if !lacks(head, locked, r) {
			delete(n.rb.told, a)
			continue
		}
		holders = append(holders, a)
		last = max(last, r.Seq)
	}
	if len(holders) == 0 {
		return nil
	}
	sort.Slice(holders, func(i, j int) bool { return holders[i] < holders[j] })
	var who []string
	for _, a := range holders {
		r := n.rb.told[a]
		who = append(who, fmt.Sprintf("%s holds its record at seq %d (session %s)", a, r.Seq, r.Session))
	}
	missing := fmt.Sprintf("seq %d", last)
	if last > head.Seq+1 {
		missing = fmt.Sprintf("seqs %d to %d", head.Seq+1, last)
	}
	return fmt.Errorf("%w: it ends at seq %d, but %s: %s are missing (was it restored from an older copy?); it signs nothing until they are back: run `negotiate chain recover --from %s`",
		ErrBehind, head.Seq, strings.Join(who, "; "), missing, holders[0])
}

// knows reports whether the engine holds session id (in memory or as a
// checkpoint).
func (n *Node) knows(id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, err := n.eng.Session(id)
	return err == nil
}

// Behind reports, as ErrBehind says it, what this agent's chain lacks
// that its counterparties told it they hold (nil when nothing).
func (n *Node) Behind() error { return n.behind() }

// signCheck is the engine's SignCheck: this agent signs nothing while its
// chain is behind, nor with a party whose chain is behind a record this
// chain holds; then the application's check.
func (n *Node) signCheck(a *protocol.Agreement) error {
	if err := n.behind(); err != nil {
		return err
	}
	n.rb.mu.Lock()
	for _, p := range a.Parties {
		if l, ok := n.rb.laggards[p.ID]; ok {
			n.rb.mu.Unlock()
			return fmt.Errorf("party %s's chain is behind: it is at seq %d, but %s holds its record at seq %d (session %s); it must recover with `negotiate chain recover --from %s` before it signs again",
				p.ID, l.head, n.AgentID(), l.rec.Seq, l.rec.Session, n.AgentID())
		}
	}
	n.rb.mu.Unlock()
	if n.cfg.SignCheck != nil {
		return n.cfg.SignCheck(a)
	}
	return nil
}

// recordsRequest asks for the records naming the asker above its seq After.
type recordsRequest struct {
	After uint64 `cbor:"after"`
	// Newest asks for the newest such record only (a probe).
	Newest bool `cbor:"newest,omitempty"`
}

// recordsReply holds the records, ascending by the asker's seq.
type recordsReply struct {
	Records []cbor.RawMessage `cbor:"records"`
}

// answerRecords answers a ContentTypeRecords request: the records on this
// chain that name the asker at a seq above the one it gives, oldest first,
// up to maxRecordsPerReply and maxRecordsReplyBytes.
func (n *Node) answerRecords(ctx context.Context, from sign.AgentID, d *protocol.Direct) *protocol.DirectReply {
	var req recordsRequest
	if err := protocol.Unmarshal(d.Payload, &req); err != nil {
		return &protocol.DirectReply{Accepted: false, Reason: "malformed records request: " + err.Error()}
	}
	type found struct {
		seq uint64
		raw []byte
	}
	var out []found
	size := 0
	for next := uint64(1); ; {
		es, err := n.chain.Entries(next, 0)
		if err != nil {
			return &protocol.DirectReply{Accepted: false, Reason: "read the chain: " + err.Error()}
		}
		for i := range es {
			if es[i].Kind != engine.KindAgreement {
				continue
			}
			var r recordParties
			if lenient.Unmarshal(es[i].Payload, &r) != nil || len(r.Heads) != len(r.Agreement.Parties) {
				continue
			}
			for j, p := range r.Agreement.Parties {
				if p.ID == from && r.Heads[j].Seq+1 > req.After && (req.Newest || len(out) < maxRecordsPerReply && size+len(es[i].Payload) <= maxRecordsReplyBytes) {
					out = append(out, found{seq: r.Heads[j].Seq + 1, raw: es[i].Payload})
					size += len(es[i].Payload)
				}
			}
		}
		if len(es) < chain.MaxEntriesPerRead || ctx.Err() != nil {
			break
		}
		next = es[len(es)-1].Seq + 1
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	if req.Newest && len(out) > 1 {
		out = out[len(out)-1:]
	}
	var rep recordsReply
	for _, f := range out {
		rep.Records = append(rep.Records, f.raw)
	}
	payload, err := protocol.Marshal(&rep)
	if err != nil {
		return &protocol.DirectReply{Accepted: false, Reason: "encode records: " + err.Error()}
	}
	return &protocol.DirectReply{Accepted: true, Payload: payload}
}

// probeBehind asks each agent not yet asked since the node started for the
// newest record naming this agent above its chain's head (one request
// each, in parallel). A signed offer is signed before any answer could
// tell this agent its chain is behind, so before its first offer to a
// counterparty a node restarted on an older copy learns it this way. An
// agent that does not answer is asked again next time.
func (n *Node) probeBehind(ctx context.Context, agents []sign.AgentID) {
	head := n.chain.Head()
	req, err := protocol.Marshal(&recordsRequest{After: head.Seq, Newest: true})
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	for _, a := range agents {
		n.rb.mu.Lock()
		done := n.rb.probed[a]
		n.rb.mu.Unlock()
		if done {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := n.host.Request(ctx, a, transport.ContentTypeRecords, req)
			if err != nil {
				return
			}
			var rep recordsReply
			if protocol.Unmarshal(r.Payload, &rep) != nil {
				return
			}
			var note *protocol.ChainNote
			if len(rep.Records) > 0 {
				var rec recordParties
				if lenient.Unmarshal(rep.Records[len(rep.Records)-1], &rec) == nil && len(rec.Heads) == len(rec.Agreement.Parties) {
					for i, p := range rec.Agreement.Parties {
						if p.ID == n.AgentID() {
							note = &protocol.ChainNote{Yours: &protocol.HeldRecord{Seq: rec.Heads[i].Seq + 1, Session: rec.Agreement.Session}}
						}
					}
				}
			}
			if note != nil {
				n.checkTold(a, note.Yours)
			}
			n.rb.mu.Lock()
			n.rb.probed[a] = true
			n.rb.mu.Unlock()
		}()
	}
	wg.Wait()
}

// RecoverResult says what Recover did.
type RecoverResult struct {
	From sign.AgentID `json:"from"`
	// Appended are the seqs of the records put back, in order.
	Appended []uint64   `json:"appended"`
	Head     chain.Head `json:"head"`
	// Behind is what the chain still lacks, as ErrBehind says it ("" when
	// no counterparty told of more).
	Behind string `json:"behind,omitempty"`
}

// Recover asks agent from for the countersigned records it holds that
// name this agent above this chain's head, and puts them back where they
// were (each verified: every signature, and this agent's head in it equal
// to the chain's head, so the entry made is the lost one and the chain
// verifies). It stops at the first record that does not go next (one the
// asked agent does not hold is missing: ask another counterparty).
func (n *Node) Recover(ctx context.Context, from sign.AgentID) (RecoverResult, error) {
	res := RecoverResult{From: from, Appended: []uint64{}}
	for round := 0; round < maxRecoverRounds; round++ {
		head := n.chain.Head()
		req, err := protocol.Marshal(&recordsRequest{After: head.Seq})
		if err != nil {
			return res, err
		}
		r, err := n.host.Request(ctx, from, transport.ContentTypeRecords, req)
		if err != nil {
			return res, fmt.Errorf("negotiate: recover from %s: %w", from.Short(), err)
		}
		var rep recordsReply
		if err := protocol.Unmarshal(r.Payload, &rep); err != nil {
			return res, fmt.Errorf("negotiate: recover from %s: malformed answer: %w", from.Short(), err)
		}
		if len(rep.Records) == 0 {
			break
		}
		for _, raw := range rep.Records {
			if err := n.step(engine.Input{Recover: &engine.Recover{Record: raw}}); err != nil {
				res.Head = n.chain.Head()
				return res, fmt.Errorf("negotiate: recover from %s: %w", from.Short(), err)
			}
			res.Appended = append(res.Appended, n.chain.Head().Seq)
		}
		if n.chain.Head() == head {
			break
		}
	}
	res.Head = n.chain.Head()
	if err := n.behind(); err != nil {
		res.Behind = err.Error()
	}
	return res, nil
}
