package transport

import (
	"bytes"
	"fmt"
	"time"

	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// introMinLife is the least time an agent record must have left to be
// handed on in Message.Intro: one that expires in transit is dropped by
// its recipient.
const introMinLife = 10 * time.Second

// IntroRecords returns the signed agent records to carry in a message's
// Intro (protocol.Message.Intro): this node's own, then the cached,
// unexpired records of ids, as far as protocol.MaxIntroRecords and
// protocol.MaxIntroBytes allow. An agent whose record is not cached is
// left out; its recipient looks it up as before. A node sends the other
// parties' records with a proposal so that no participant has to look up
// the initiator or another participant in the DHT.
func (h *Host) IntroRecords(ids []sign.AgentID) [][]byte {
	minExpiry := h.now().Add(introMinLife).UnixMilli()
	h.mu.Lock()
	infos := make([]protocol.AgentInfo, 0, len(ids)+1)
	if h.ownRecord != nil && h.ownRecord.Expires > minExpiry {
		infos = append(infos, *h.ownRecord)
	}
	seen := map[sign.AgentID]bool{h.self: true}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		if r, ok := h.records[id]; ok && r.info.Expires > minExpiry {
			infos = append(infos, *r.info)
		}
	}
	h.mu.Unlock()
	var out [][]byte
	total := 0
	for i := range infos {
		b, err := protocol.Marshal(&infos[i])
		if err != nil || len(out) == protocol.MaxIntroRecords || total+len(b) > protocol.MaxIntroBytes {
			continue
		}
		out = append(out, b)
		total += len(b)
	}
	return out
}

// hostAcceptIntro checks the agent records a verified message from agent
// from carries (Message.Intro) as a DHT record is checked and caches
// them, so that the sender's record and those of the other parties need
// no lookup. A record that fails its check refuses the message (an honest
// sender only hands on records it verified); one that expired on the way
// is skipped. A record never replaces a newer one in the cache, and one
// that came this way is looked up again at once if its agent turns up on
// another peer.
func (h *Host) hostAcceptIntro(from sign.AgentID, recs [][]byte) error {
	if len(recs) == 0 {
		return nil
	}
	now := h.now()
	infos := make([]*protocol.AgentInfo, 0, len(recs))
	for i, rec := range recs {
		var head protocol.AgentInfo
		if err := protocol.Unmarshal(rec, &head); err != nil {
			return fmt.Errorf("%w: agent record %d introduced by %s: %w", ErrBadAgentRecord, i, from.Short(), err)
		}
		id, err := sign.ParseAgentID(string(head.AgentID))
		if err != nil {
			return fmt.Errorf("%w: agent record %d introduced by %s: %w", ErrBadAgentRecord, i, from.Short(), err)
		}
		if id == h.self || h.hostHoldsRecord(id, rec, now) {
			// Ours, or the very record already verified and cached: a
			// session's every proposal carries the same records, and
			// verifying them again costs a signature check each.
			continue
		}
		info, err := VerifyAgentInfo(id, rec, now)
		if err != nil {
			if head.Expires <= now.UnixMilli() {
				continue
			}
			return fmt.Errorf("agent record %d introduced by %s: %w", i, from.Short(), err)
		}
		infos = append(infos, info)
	}
	for _, info := range infos {
		h.hostRememberAs(info, time.Time{})
	}
	h.stats.introduced.Add(uint64(len(infos)))
	return nil
}

// hostHoldsRecord reports whether the cache holds, unexpired, exactly the
// encoded record rec of agent id (records encode deterministically).
func (h *Host) hostHoldsRecord(id sign.AgentID, rec []byte, now time.Time) bool {
	h.mu.Lock()
	r, ok := h.records[id]
	h.mu.Unlock()
	if !ok || r.info.Expires <= now.UnixMilli() {
		return false
	}
	held, err := protocol.Marshal(r.info)
	return err == nil && bytes.Equal(held, rec)
}
