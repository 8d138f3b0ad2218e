package chain

import (
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/negotiate-dev/negotiate/sign"
)

// VerifyOptions configures Verify and VerifyEntries. The zero value checks
// links, seqs, hashes, encodings and signatures only.
type VerifyOptions struct {
	// CheckPayload, if set, is called for every entry after genesis once its
	// own checks passed; an error fails verification at that entry. pub is
	// the chain's key. The engine plugs in its agreement-record check here.
	CheckPayload func(e *Entry, pub sign.PublicKey) error
	// Agent, if set, is the agent the chain must belong to.
	Agent sign.AgentID
}

// VerifyError reports the first entry at which a chain is not sound.
// Seq is the position where the chain first goes wrong: the seq the entry
// there should have had.
type VerifyError struct {
	Seq    uint64
	Reason string
}

// Error implements error.
func (e *VerifyError) Error() string {
	return fmt.Sprintf("chain: verify: entry %d: %s", e.Seq, e.Reason)
}

// Unwrap makes errors.Is(err, ErrBroken) true.
func (e *VerifyError) Unwrap() error { return ErrBroken }

// verifier walks a chain entry by entry.
type verifier struct {
	opts    VerifyOptions
	metaKey *sign.PublicKey // the key recorded in the file, if any
	pub     sign.PublicKey
	next    uint64 // seq expected next
	prev    Hash   // hash of the last entry
}

func (v *verifier) fail(format string, args ...any) *VerifyError {
	reason := strings.ReplaceAll(fmt.Sprintf(format, args...), "chain: ", "")
	return &VerifyError{Seq: v.next, Reason: reason}
}

// step checks the entry at position v.next.
func (v *verifier) step(e *Entry) *VerifyError {
	if e.Seq != v.next {
		return v.fail("entry at this position has seq %d (entry missing, reordered or duplicated)", e.Seq)
	}
	var hash Hash
	if v.next == 0 {
		pub, err := ParseGenesis(e)
		if err != nil {
			return v.fail("bad genesis: %v", err)
		}
		if v.metaKey != nil && !pub.Equal(*v.metaKey) {
			return v.fail("genesis key (agent %s) differs from the key recorded in the file (agent %s)", pub.AgentID().Short(), v.metaKey.AgentID().Short())
		}
		if v.opts.Agent != "" && pub.AgentID() != v.opts.Agent {
			return v.fail("chain belongs to agent %s, not %s", pub.AgentID(), v.opts.Agent)
		}
		v.pub = pub
		hash = e.Hash()
	} else {
		if e.Prev != v.prev {
			return v.fail("prev %s is not the hash %s of entry %d", e.Prev, v.prev, v.next-1)
		}
		if err := e.checkShape(); err != nil {
			return v.fail("%v", err)
		}
		h, err := e.verifySignature(v.pub)
		if err != nil {
			return v.fail("%v", err)
		}
		hash = h
		if v.opts.CheckPayload != nil {
			if err := v.opts.CheckPayload(e, v.pub); err != nil {
				return v.fail("payload check (%s): %v", e.Kind, err)
			}
		}
	}
	v.prev = hash
	v.next++
	return nil
}

// Verify walks the whole chain and checks every entry: its encoding, seq,
// link to the previous entry, signature (by the key of the genesis entry,
// whose agent ID must match it, and which must be the file's key), and
// opts.CheckPayload; and that the recorded head is the last entry. It
// returns nil if the chain is sound, else the first bad position.
//
// Compare the result with nil before storing it in an error variable.
func (c *Chain) Verify(opts VerifyOptions) *VerifyError {
	pub := c.pub
	v := &verifier{opts: opts, metaKey: &pub}
	var verr *VerifyError
	var head Head
	err := c.db.View(func(tx *bolt.Tx) error {
		var err error
		head, _, err = c.recorded(c.bucket(tx, bucketMeta))
		return err
	})
	if err != nil {
		return v.fail("%v", err)
	}
	err = c.forEachEntry(0, func(ks uint64, raw []byte) (bool, error) {
		if ks != v.next {
			if ks > v.next && v.next <= head.Seq {
				verr = v.fail("entry missing (the next stored entry is %d)", ks)
			} else {
				verr = v.fail("stored under key %d, not %d", ks, v.next)
			}
			return false, nil
		}
		if v.next > head.Seq {
			verr = v.fail("entry stored beyond the recorded head %s", head)
			return false, nil
		}
		e, err := UnmarshalEntry(raw)
		if err != nil {
			verr = v.fail("%v", err)
			return false, nil
		}
		if verr = v.step(e); verr != nil {
			return false, nil
		}
		return true, nil
	})
	if err == nil && verr == nil {
		switch {
		case v.next == 0:
			verr = v.fail("no genesis entry")
		case v.next <= head.Seq:
			verr = v.fail("entry missing: the recorded head is %s", head)
		case v.prev != head.Hash:
			verr = &VerifyError{Seq: head.Seq, Reason: fmt.Sprintf("the recorded head %s does not match the last entry's hash %s", head, v.prev)}
		}
	}
	if err != nil && verr == nil {
		verr = &VerifyError{Seq: v.next, Reason: fmt.Sprintf("cannot read the chain: %v", err)}
	}
	return verr
}

// VerifyEntries checks a list of entries that must form a whole chain from
// its genesis (as read from an export) with the same checks as Verify.
func VerifyEntries(entries []Entry, opts VerifyOptions) *VerifyError {
	v := &verifier{opts: opts}
	if len(entries) == 0 {
		return v.fail("no entries: a chain starts with its genesis entry")
	}
	for i := range entries {
		if verr := v.step(&entries[i]); verr != nil {
			return verr
		}
	}
	return nil
}
