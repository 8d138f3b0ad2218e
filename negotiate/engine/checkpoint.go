package engine

import (
	"fmt"
	"sort"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/protocol"
)

// checkpointVersion is the version of the durable session checkpoint.
const checkpointVersion = 1

// checkpointData is what a session keeps durably in the chain's session
// checkpoint: enough to resume a signed session after a crash, and to answer
// queries about a finished one with its certificate.
type checkpointData struct {
	V         int                 `cbor:"v"`
	Role      Role                `cbor:"role"`
	Parties   []protocol.Party    `cbor:"parties,omitempty"`
	Deadline  int64               `cbor:"deadline"`
	Round     uint32              `cbor:"round"`
	Agreement *protocol.Agreement `cbor:"agreement,omitempty"`
	Vote      vote                `cbor:"vote"`
	Head      chain.Head          `cbor:"head"`
	Ready     *protocol.Ready     `cbor:"ready,omitempty"`
	// Held are the other parties' verified statements a signed, open
	// session holds (by party index), so after a restart it still knows
	// who signed: a refusal from one of them is void (voidRefusal).
	Held      map[int]*protocol.Ready `cbor:"held,omitempty"`
	Final     State                   `cbor:"final,omitempty"`
	Reason    string                  `cbor:"reason,omitempty"`
	Busy      bool                    `cbor:"busy,omitempty"`
	Tombstone bool                    `cbor:"tombstone,omitempty"`
	Receipt   []byte                  `cbor:"receipt,omitempty"`
	AbortCert []byte                  `cbor:"abort_cert,omitempty"`
	Refusals  []refusal               `cbor:"refusals,omitempty"`
	Since     int64                   `cbor:"since"`
	Started   int64                   `cbor:"started"`
	Offer     bool                    `cbor:"offer,omitempty"`
}

type refusal struct {
	AgreementHash chain.Hash `cbor:"ah"`
	Cert          []byte     `cbor:"cert"`
}

func (e *Engine) checkpoint(s *session) []byte {
	cp := checkpointData{
		V: checkpointVersion, Role: s.role, Parties: s.parties, Deadline: s.deadline, Round: s.round,
		Agreement: s.agreement, Vote: s.vote, Head: s.head, Final: s.final, Reason: s.reason,
		Busy: s.busy, Tombstone: s.tombstone, Receipt: s.receipt, AbortCert: s.abortCert,
		Since: s.since, Started: s.startedAt, Offer: s.offer,
	}
	if s.vote == voteSigned {
		cp.Ready = s.readys[s.selfIdx]
		if s.final == "" {
			for i, r := range s.readys {
				if i != s.selfIdx && r != nil {
					if cp.Held == nil {
						cp.Held = map[int]*protocol.Ready{}
					}
					cp.Held[i] = r
				}
			}
		}
	}
	for ah, cert := range s.refusals {
		cp.Refusals = append(cp.Refusals, refusal{AgreementHash: ah, Cert: cert})
	}
	sort.Slice(cp.Refusals, func(i, j int) bool {
		return string(cp.Refusals[i].AgreementHash[:]) < string(cp.Refusals[j].AgreementHash[:])
	})
	return encode(&cp)
}

func restoreSession(e *Engine, id string, b []byte) (*session, error) {
	var cp checkpointData
	if err := protocol.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("decode checkpoint: %w", err)
	}
	if cp.V != checkpointVersion {
		return nil, fmt.Errorf("checkpoint version %d, this build reads %d", cp.V, checkpointVersion)
	}
	s := e.newSession(id, cp.Role, cp.Parties, cp.Started)
	s.deadline, s.round, s.agreement, s.vote, s.head = cp.Deadline, cp.Round, cp.Agreement, cp.Vote, cp.Head
	s.final, s.reason, s.busy, s.tombstone = cp.Final, cp.Reason, cp.Busy, cp.Tombstone
	s.receipt, s.abortCert, s.since, s.offer = cp.Receipt, cp.AbortCert, cp.Since, cp.Offer
	if s.offer {
		s.maxRounds = 1
	}
	if s.agreement != nil {
		s.ah = AgreementHash(s.agreement)
		s.terms, s.termsHash = s.agreement.Terms, s.agreement.TermsHash
		s.accepted = true
		s.witness = s.agreement.Witness
	}
	if len(cp.Refusals) > 0 {
		s.refusals = make(map[chain.Hash][]byte, len(cp.Refusals))
		for _, r := range cp.Refusals {
			s.refusals[r.AgreementHash] = r.Cert
		}
	}
	switch {
	case s.final != "":
		s.phase = PhaseDone
		if s.final == StateCommitted {
			rec, err := DecodeRecord(s.receipt)
			if err != nil {
				return nil, err
			}
			s.recordHash = RecordHash(rec)
		}
	case s.role == RoleWitness && s.agreement != nil:
		s.phase = PhaseSigning
	case s.vote == voteSigned:
		if cp.Ready == nil || s.agreement == nil || s.selfIdx < 0 {
			return nil, fmt.Errorf("signed checkpoint without its agreement or signature")
		}
		s.phase = PhaseSigning
		for i, r := range cp.Held {
			if i >= 0 && i < len(s.parties) && i != s.selfIdx && r != nil && r.AgreementHash == s.ah {
				s.readys[i] = r
			}
		}
		s.readys[s.selfIdx] = cp.Ready
	case len(s.refusals) > 0:
		// Open and unsigned, with a durable refusal of another agreement
		// (an equivocating initiator asked while this agent was still
		// deciding an offer). The decision was not durable: the restart
		// ends the session, and its refusals keep answering for it.
		s.final, s.reason, s.phase = StateAborted, "restarted before this agent decided", PhaseDone
	default:
		return nil, fmt.Errorf("checkpoint of an open session that is not signed")
	}
	return s, nil
}
