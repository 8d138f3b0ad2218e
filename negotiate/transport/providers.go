package transport

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Provider records (with Config.Providers): an agent announces in the DHT that it offers something
// named by a key (a marketplace category, a service name), and others find
// every agent that announced it, with no server in the middle. The DHT
// stores provider records as peer IDs; FindProviders turns each into the
// agent it speaks for by asking the peer (a ping on the direct-message
// protocol, whose signed answer names its agent) and checking that the
// agent's own DHT record names that peer, so a peer cannot pass itself off
// as another agent.

// ErrNoProviders: this node's DHT keeps no provider records; set
// Config.Providers to use Provide and FindProviders.
var ErrNoProviders = errors.New("negotiate: this node's DHT keeps no provider records (transport.Config.Providers is off)")

// MaxProviders bounds how many providers FindProviders returns (and asks
// who they are): a lookup costs one round trip per provider.
const MaxProviders = 64

// ProviderKeyPrefix is prepended to a provider key before it is hashed
// into the DHT key, so negotiate's provider keys never collide with other
// uses of the DHT.
const ProviderKeyPrefix = "/negotiate-provide/"

// providerCID is the DHT key of provider key: the SHA-256 of
// ProviderKeyPrefix+key as a raw CIDv1.
func providerCID(key string) (cid.Cid, error) {
	sum := sha256.Sum256([]byte(ProviderKeyPrefix + key))
	m, err := mh.Encode(sum[:], mh.SHA2_256)
	if err != nil {
		return cid.Undef, err
	}
	return cid.NewCidV1(cid.Raw, m), nil
}

// Provide announces in the DHT that this agent provides key. The record
// lives on the DHT peers closest to the key for the DHT's provider record
// lifetime (48 h by default); a long-running provider calls Provide again
// well within it (every few hours). It fails if no DHT peer took the
// record, and at once with ErrNoProviders if this node's DHT keeps no
// provider records (Config.Providers).
func (h *Host) Provide(ctx context.Context, key string) error {
	if key == "" {
		return fmt.Errorf("negotiate: provide: empty key")
	}
	c, err := providerCID(key)
	if err != nil {
		return fmt.Errorf("negotiate: provide %q: %w", key, err)
	}
	ctx, cancel := h.hostCtx(ctx, DefaultResolveTimeout)
	defer cancel()
	h.hostAwaitRoutingTable(ctx)
	if h.dht.ProviderStore() == nil {
		return fmt.Errorf("negotiate: provide %q: %w", key, ErrNoProviders)
	}
	if err := h.dht.Provide(ctx, c, true); err != nil {
		return fmt.Errorf("negotiate: provide %q: %w", key, hostDeadlineError(ctx, err))
	}
	return nil
}

// FindProviders finds the agents that announced key with Provide (this
// agent included, if it did), at most limit of them (0 or above
// MaxProviders means MaxProviders). The DHT holds peer IDs: each provider
// peer is asked which agent it speaks for (a ping whose signed answer
// names the agent) and kept only if that agent's own DHT record names the
// peer; one that does not answer or does not match is left out. The result may be empty; an error means the lookup itself
// failed (ErrNoProviders without Config.Providers).
func (h *Host) FindProviders(ctx context.Context, key string, limit int) ([]sign.AgentID, error) {
	if limit <= 0 || limit > MaxProviders {
		limit = MaxProviders
	}
	c, err := providerCID(key)
	if err != nil {
		return nil, fmt.Errorf("negotiate: find providers of %q: %w", key, err)
	}
	if h.dht.ProviderStore() == nil {
		return nil, fmt.Errorf("negotiate: find providers of %q: %w", key, ErrNoProviders)
	}
	ctx, cancel := h.hostCtx(ctx, DefaultResolveTimeout)
	defer cancel()
	h.hostAwaitRoutingTable(ctx)
	var out []sign.AgentID
	seen := map[sign.AgentID]bool{}
	for ai := range h.dht.FindProvidersAsync(ctx, c, limit) {
		if ai.ID == h.h.ID() {
			if !seen[h.self] {
				seen[h.self] = true
				out = append(out, h.self)
			}
			continue
		}
		id, err := h.hostIdentify(ctx, ai)
		if err != nil {
			h.log.Debug("provider left out", "key", key, "peer", ai.ID.String(), "err", err)
			continue
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	if len(out) == 0 && ctx.Err() != nil {
		return nil, fmt.Errorf("negotiate: find providers of %q: %w", key, hostDeadlineError(ctx, ctx.Err()))
	}
	return out, nil
}

// hostIdentify asks peer ai which agent it speaks for: a ping addressed to
// no agent, whose signed answer names the agent, which must then be the
// agent whose DHT record names this peer.
func (h *Host) hostIdentify(ctx context.Context, ai peer.AddrInfo) (sign.AgentID, error) {
	if err := h.h.Connect(ctx, ai); err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	body, err := protocol.EncodeBody(&protocol.Direct{ContentType: ContentTypePing})
	if err != nil {
		return "", err
	}
	frame, err := protocol.Seal(h.key, protocol.Message{
		Type:    protocol.TypeDirect,
		Expires: h.now().Add(hostMessageLifetime).UnixMilli(),
		Body:    body,
	})
	if err != nil {
		return "", err
	}
	env, err := h.hostExchange(ctx, ai.ID, frame)
	if err != nil {
		return "", err
	}
	if env.Msg.Type != protocol.TypeDirectReply {
		return "", fmt.Errorf("answer is a %q: %w", env.Msg.Type, protocol.ErrMalformed)
	}
	from := env.Msg.From
	if err := h.hostCheckSender(from, ai.ID); err != nil {
		return "", err
	}
	return from, nil
}
