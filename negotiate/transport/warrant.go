package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/routing"

	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// ErrNoWarrant: the DHT holds no warrant against the agent.
var ErrNoWarrant = errors.New("negotiate: no warrant in the DHT")

// WarrantValidator is the DHT validator of the protocol.WarrantNamespace:
// a value under "/negotiate-warrant/<agent>" must be a warrant against that
// agent that verifies (protocol.VerifyWarrant), so no peer can store a
// forged accusation.
type WarrantValidator struct{}

var _ record.Validator = WarrantValidator{}

func warrantAgentFromKey(key string) (sign.AgentID, error) {
	rest, ok := strings.CutPrefix(key, "/"+protocol.WarrantNamespace+"/")
	if !ok {
		return "", fmt.Errorf("negotiate: key %q is not in the %s namespace", key, protocol.WarrantNamespace)
	}
	return sign.ParseAgentID(rest)
}

// Validate checks that value is a valid warrant against the key's agent.
func (WarrantValidator) Validate(key string, value []byte) error {
	id, err := warrantAgentFromKey(key)
	if err != nil {
		return err
	}
	w, _, err := protocol.VerifyWarrant(value)
	if err != nil {
		return err
	}
	if w.Agent != id {
		return fmt.Errorf("negotiate: warrant against %s stored under %s", w.Agent.Short(), id.Short())
	}
	return nil
}

// Select keeps the valid warrant with the smallest hash: any one warrant
// convicts, and every node picks the same one from the same values.
func (v WarrantValidator) Select(key string, vals [][]byte) (int, error) {
	best := -1
	var bestHash [32]byte
	for i, val := range vals {
		if v.Validate(key, val) != nil {
			continue
		}
		h := sign.Hash(val)
		if best < 0 || bytes.Compare(h[:], bestHash[:]) < 0 {
			best, bestHash = i, h
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("negotiate: none of %d warrants under %s is valid", len(vals), key)
	}
	return best, nil
}

// PublishWarrant stores a warrant in the DHT under the offender's agent ID
// (protocol.WarrantKey). It verifies it first.
func (h *Host) PublishWarrant(ctx context.Context, raw []byte) error {
	w, _, err := protocol.VerifyWarrant(raw)
	if err != nil {
		return fmt.Errorf("negotiate: publish warrant: %w", err)
	}
	ctx, cancel := h.hostCtx(ctx, DefaultResolveTimeout)
	defer cancel()
	if err := h.dht.PutValue(ctx, protocol.WarrantKey(w.Agent), raw); err != nil {
		return fmt.Errorf("negotiate: publish warrant against %s: %w", w.Agent.Short(), err)
	}
	return nil
}

// FindWarrant looks a warrant against agent up in the DHT and verifies it.
// It fails with ErrNoWarrant when the DHT holds none.
func (h *Host) FindWarrant(ctx context.Context, agent sign.AgentID) ([]byte, error) {
	ctx, cancel := h.hostCtx(ctx, DefaultResolveTimeout)
	defer cancel()
	h.hostAwaitRoutingTable(ctx)
	value, err := h.dht.GetValue(ctx, protocol.WarrantKey(agent))
	if err != nil {
		if errors.Is(err, routing.ErrNotFound) {
			return nil, fmt.Errorf("%w against %s", ErrNoWarrant, agent.Short())
		}
		return nil, fmt.Errorf("negotiate: find warrant against %s: %w", agent.Short(), err)
	}
	if err := (WarrantValidator{}).Validate(protocol.WarrantKey(agent), value); err != nil {
		return nil, fmt.Errorf("negotiate: find warrant against %s: %w", agent.Short(), err)
	}
	return value, nil
}
