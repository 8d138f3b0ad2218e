package transport

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// AgentRecordNamespace is the DHT namespace of agent records.
const AgentRecordNamespace = "negotiate-agent"

// hostAgentInfoDomain is the signature domain of agent records.
const hostAgentInfoDomain = protocol.TypeAgentInfo

// errNoDHTPeers: the routing table is empty, so no lookup can start.
var errNoDHTPeers = errors.New("no DHT peers")

// errRecordExpired marks a record that is past its expiry; a lookup that
// gets one looks again, since a fresher record may be on its way.
var errRecordExpired = errors.New("expired")

// AgentRecordKey is the DHT key of an agent's record:
// /negotiate-agent/<agent-id>.
func AgentRecordKey(id sign.AgentID) string {
	return "/" + AgentRecordNamespace + "/" + string(id)
}

// SignAgentInfo fills in info's key fields from key and signs it (domain
// "agent-info", over the CBOR of the record with Signature empty). It
// returns the encoded record, ready for the DHT.
func SignAgentInfo(key *sign.PrivateKey, info *protocol.AgentInfo) ([]byte, error) {
	info.AgentID = key.AgentID()
	info.Scheme = key.Scheme().Name()
	info.PublicKey = key.Public().Bytes()
	info.Signature = nil
	unsigned, err := protocol.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("negotiate: encode agent record: %w", err)
	}
	info.Signature = key.Sign(hostAgentInfoDomain, unsigned)
	b, err := protocol.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("negotiate: encode agent record: %w", err)
	}
	if len(b) > MaxAgentRecordBytes {
		return nil, fmt.Errorf("%w: agent record is %d bytes, the limit is %d (too many addresses?)", ErrBadAgentRecord, len(b), MaxAgentRecordBytes)
	}
	return b, nil
}

// VerifyAgentInfo decodes and checks an encoded agent record for agent id
// at time now: size, strict CBOR, the ID, that the key belongs to the ID,
// the signature, the peer ID and addresses, and the expiry (not passed, not
// more than AgentRecordLifetime plus protocol.MaxClockSkew ahead). Errors
// wrap ErrBadAgentRecord.
func VerifyAgentInfo(id sign.AgentID, value []byte, now time.Time) (*protocol.AgentInfo, error) {
	if len(value) > MaxAgentRecordBytes {
		return nil, fmt.Errorf("%w: record of %s is %d bytes, the limit is %d", ErrBadAgentRecord, id.Short(), len(value), MaxAgentRecordBytes)
	}
	var info protocol.AgentInfo
	if err := protocol.Unmarshal(value, &info); err != nil {
		return nil, fmt.Errorf("%w: record of %s: %w", ErrBadAgentRecord, id.Short(), err)
	}
	if info.AgentID != id {
		return nil, fmt.Errorf("%w: record stored under %s names agent %s", ErrBadAgentRecord, id.Short(), info.AgentID.Short())
	}
	pub, err := sign.ParsePublicKey(info.Scheme, info.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: record of %s: %w", ErrBadAgentRecord, id.Short(), err)
	}
	if err := id.Check(pub); err != nil {
		return nil, fmt.Errorf("%w: record of %s is signed by another agent's key: %w", ErrBadAgentRecord, id.Short(), err)
	}
	sig := info.Signature
	info.Signature = nil
	unsigned, err := protocol.Marshal(&info)
	if err != nil {
		return nil, fmt.Errorf("%w: record of %s: %w", ErrBadAgentRecord, id.Short(), err)
	}
	if err := pub.Verify(hostAgentInfoDomain, unsigned, sig); err != nil {
		return nil, fmt.Errorf("%w: record of %s: %w", ErrBadAgentRecord, id.Short(), err)
	}
	info.Signature = sig
	if _, err := peer.Decode(info.PeerID); err != nil {
		return nil, fmt.Errorf("%w: record of %s: peer ID %q: %w", ErrBadAgentRecord, id.Short(), info.PeerID, err)
	}
	if len(info.Addrs) > protocol.MaxAddrs {
		return nil, fmt.Errorf("%w: record of %s has %d addresses, the limit is %d", ErrBadAgentRecord, id.Short(), len(info.Addrs), protocol.MaxAddrs)
	}
	for _, a := range info.Addrs {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return nil, fmt.Errorf("%w: record of %s: address %q: %w", ErrBadAgentRecord, id.Short(), a, err)
		}
	}
	nowMs := now.UnixMilli()
	if info.Expires <= nowMs {
		return nil, fmt.Errorf("%w: record of %s %w at %s", ErrBadAgentRecord, id.Short(), errRecordExpired, time.UnixMilli(info.Expires).UTC().Format(time.RFC3339))
	}
	if info.Expires > nowMs+(AgentRecordLifetime+protocol.MaxClockSkew).Milliseconds() {
		return nil, fmt.Errorf("%w: record of %s expires at %s, beyond the %v record lifetime", ErrBadAgentRecord, id.Short(), time.UnixMilli(info.Expires).UTC().Format(time.RFC3339), AgentRecordLifetime)
	}
	return &info, nil
}

// AgentRecordValidator is the DHT validator of the negotiate-agent
// namespace: Validate runs VerifyAgentInfo on the agent ID in the key;
// Select prefers the highest sequence number (then the latest expiry).
type AgentRecordValidator struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// verified, when set (DHTOptions sets it), remembers records that
	// passed VerifyAgentInfo, so the same bytes are not verified again.
	verified *verifiedRecords
}

var _ record.Validator = AgentRecordValidator{}

// verifiedRecords remembers, by the hash of key and value, the sequence
// number and expiry of records that passed VerifyAgentInfo. The DHT checks
// one record several times: a store verifies the new record, then Select
// verifies it and the one held; a lookup verifies every answer, then
// Select verifies them again. Only the expiry depends on the time, and it
// is checked on every hit.
type verifiedRecords struct {
	mu sync.Mutex
	m  map[[32]byte]verifiedRecord
}

type verifiedRecord struct {
	seq     uint64
	expires int64 // unix ms
}

// hostVerifiedRecordsCap bounds the memory of verifiedRecords (about 64
// bytes per entry): a DHT server holds the records of a few dozen agents
// and sees a few hundred more in lookups between two purges.
const hostVerifiedRecordsCap = 1024

func (v AgentRecordValidator) now() time.Time {
	if v.Now == nil {
		return time.Now()
	}
	return v.Now()
}

// check verifies value as id's record at now, through the cache if any.
func (v AgentRecordValidator) check(key string, id sign.AgentID, value []byte, now time.Time) (verifiedRecord, error) {
	c := v.verified
	if c == nil {
		info, err := VerifyAgentInfo(id, value, now)
		if err != nil {
			return verifiedRecord{}, err
		}
		return verifiedRecord{seq: info.Seq, expires: info.Expires}, nil
	}
	h := sign.Hash(append([]byte(key+"\x00"), value...))
	nowMs := now.UnixMilli()
	c.mu.Lock()
	r, ok := c.m[h]
	c.mu.Unlock()
	if ok {
		if r.expires <= nowMs {
			return verifiedRecord{}, fmt.Errorf("%w: record of %s %w at %s", ErrBadAgentRecord, id.Short(), errRecordExpired, time.UnixMilli(r.expires).UTC().Format(time.RFC3339))
		}
		return r, nil
	}
	info, err := VerifyAgentInfo(id, value, now)
	if err != nil {
		return verifiedRecord{}, err
	}
	r = verifiedRecord{seq: info.Seq, expires: info.Expires}
	c.mu.Lock()
	if len(c.m) >= hostVerifiedRecordsCap {
		for k, old := range c.m {
			if old.expires <= nowMs {
				delete(c.m, k)
			}
		}
		if len(c.m) >= hostVerifiedRecordsCap {
			clear(c.m)
		}
	}
	c.m[h] = r
	c.mu.Unlock()
	return r, nil
}

// hostAgentIDFromKey parses /negotiate-agent/<agent-id>.
func hostAgentIDFromKey(key string) (sign.AgentID, error) {
	rest, ok := strings.CutPrefix(key, "/"+AgentRecordNamespace+"/")
	if !ok {
		return "", fmt.Errorf("%w: key %q is not in the %s namespace", ErrBadAgentRecord, key, AgentRecordNamespace)
	}
	id, err := sign.ParseAgentID(rest)
	if err != nil {
		return "", fmt.Errorf("%w: key %q: %w", ErrBadAgentRecord, key, err)
	}
	return id, nil
}

// Validate checks an agent record stored under key.
func (v AgentRecordValidator) Validate(key string, value []byte) error {
	id, err := hostAgentIDFromKey(key)
	if err != nil {
		return err
	}
	_, err = v.check(key, id, value, v.now())
	return err
}

// Select returns the index of the best of vals: the valid record with the
// highest Seq (ties: latest Expires, then the first).
func (v AgentRecordValidator) Select(key string, vals [][]byte) (int, error) {
	id, err := hostAgentIDFromKey(key)
	if err != nil {
		return 0, err
	}
	best := -1
	var bestInfo verifiedRecord
	now := v.now()
	for i, val := range vals {
		info, err := v.check(key, id, val, now)
		if err != nil {
			continue
		}
		if best < 0 || info.seq > bestInfo.seq || (info.seq == bestInfo.seq && info.expires > bestInfo.expires) {
			best, bestInfo = i, info
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("%w: none of %d records for %s is valid", ErrBadAgentRecord, len(vals), id.Short())
	}
	return best, nil
}

// hostCachedRecord is a verified record and when it was fetched.
type hostCachedRecord struct {
	info    *protocol.AgentInfo
	fetched time.Time
}

// DHTOptions are the options a Kademlia DHT needs to carry agent records
// and warrants: the /negotiate protocol prefix (a DHT of its own, apart
// from the public IPFS one), server mode, the agent record validator for
// the AgentRecordNamespace and the WarrantValidator for
// protocol.WarrantNamespace. now is the clock for record expiry (nil:
// time.Now). An application that hands its own DHT to the Host
// (Config.DHT) builds it with these.
func DHTOptions(now func() time.Time) []dht.Option {
	return []dht.Option{
		dht.ProtocolPrefix(protocol.DHTPrefix),
		dht.Mode(dht.ModeServer),
		dht.Validator(record.NamespacedValidator{
			AgentRecordNamespace: AgentRecordValidator{
				Now: now, verified: &verifiedRecords{m: map[[32]byte]verifiedRecord{}},
			},
			protocol.WarrantNamespace: WarrantValidator{},
		}),
	}
}

// hostStartDiscovery starts the DHT, connects to the bootstrap peers,
// starts mDNS and the publish loop.
func (h *Host) hostStartDiscovery(ctx context.Context, d *dht.IpfsDHT, bootstrap []peer.AddrInfo, useMDNS, providers bool) error {
	if d == nil {
		opts := append(DHTOptions(h.now), dht.BootstrapPeers(bootstrap...))
		if !providers {
			opts = append(opts, dht.DisableProviders())
		}
		var err error
		d, err = dht.New(h.h, append(opts, dht.MaxRecordAge(h.lifetime))...)
		if err != nil {
			return fmt.Errorf("negotiate: start DHT: %w", err)
		}
		h.ownDHT = true
	}
	h.dht = d
	if _, err := h.hostSignOwnRecord(); err != nil {
		return err
	}
	sub, err := h.h.EventBus().Subscribe(new(event.EvtLocalAddressesUpdated))
	if err != nil {
		return fmt.Errorf("negotiate: subscribe to address changes: %w", err)
	}
	h.wg.Add(2)
	go func() {
		defer h.wg.Done()
		defer sub.Close()
		for {
			select {
			case <-h.ctx.Done():
				return
			case _, ok := <-sub.Out():
				if !ok {
					return
				}
				h.hostTriggerPublish()
			}
		}
	}()
	go h.hostPublishLoop()

	if len(bootstrap) > 0 {
		bctx, cancel := context.WithTimeout(ctx, hostBootstrapTimeout)
		connected := 0
		for _, ai := range bootstrap {
			if err := h.h.Connect(bctx, ai); err != nil {
				h.log.Warn("bootstrap peer unreachable", "peer", ai.ID.String(), "err", err)
				continue
			}
			connected++
		}
		if connected > 0 {
			select {
			case err := <-d.RefreshRoutingTable():
				if err != nil {
					h.log.Debug("DHT refresh", "err", err)
				}
			case <-bctx.Done():
			}
		}
		cancel()
		h.hostTriggerPublish()
	}
	if useMDNS {
		svc := mdns.NewMdnsService(h.h, hostMDNSService, hostMDNSNotifee{h})
		if err := svc.Start(); err != nil {
			return fmt.Errorf("negotiate: start mDNS: %w", err)
		}
		h.mdns = svc
	}
	return nil
}

// hostMDNSNotifee connects to peers found on the LAN.
type hostMDNSNotifee struct{ h *Host }

// HandlePeerFound connects to a peer found by mDNS.
func (n hostMDNSNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == n.h.h.ID() {
		return
	}
	n.h.wg.Add(1)
	go func() {
		defer n.h.wg.Done()
		ctx, cancel := context.WithTimeout(n.h.ctx, hostBootstrapTimeout)
		defer cancel()
		if err := n.h.h.Connect(ctx, ai); err != nil {
			n.h.log.Debug("mDNS peer unreachable", "peer", ai.ID.String(), "err", err)
			return
		}
		n.h.hostTriggerPublish()
	}()
}

// hostTriggerPublish asks the publish loop to publish now.
// Republish asks the host to publish its agent record again now, in the
// background: useful when peers joined after the last publish (the record
// then reaches the peers now closest to its key) and cannot find it yet.
func (h *Host) Republish() { h.hostTriggerPublish() }

func (h *Host) hostTriggerPublish() {
	select {
	case h.republish <- struct{}{}:
	default:
	}
}

// hostPublishLoop publishes the agent record at start, then after
// hostRepublishFirst, doubling the interval up to a third of the record
// lifetime, on request, when the routing table grew by
// hostRepublishGrowth peers since the last publish, and retries failures
// with backoff.
func (h *Host) hostPublishLoop() {
	defer h.wg.Done()
	retry := hostPublishRetryMin
	timer := time.NewTimer(0)
	defer timer.Stop()
	check := time.NewTicker(hostRepublishCheck)
	defer check.Stop()
	base := 0 // routing-table size at the last publish (or its low since)
	// A young node republishes sooner, then less and less often, up to a
	// third of the record lifetime: the network it joined may be young
	// and growing too, and new peers close to the record's key do not
	// hold it.
	interval := hostRepublishFirst
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-timer.C:
		case <-h.republish:
			timer.Stop()
		case <-check.C:
			size := h.dht.RoutingTable().Size()
			if size < base {
				base = size
			}
			if size < base+hostRepublishGrowth {
				continue
			}
			timer.Stop()
		}
		size := h.dht.RoutingTable().Size()
		err := h.hostPublish(h.ctx)
		if h.ctx.Err() != nil {
			return
		}
		// ±25 % jitter: nodes started together (a restarted site, a
		// simulation) would otherwise all republish at the same moments.
		next := time.Duration(float64(min(interval, h.lifetime/3)) * (0.75 + 0.5*rand.Float64()))
		if err != nil {
			h.log.Debug("publish agent record", "err", err, "retry_in", retry)
			next = retry
			retry = min(2*retry, hostPublishRetryMax)
		} else {
			retry = hostPublishRetryMin
			base = size
			interval = min(2*interval, h.lifetime/3)
		}
		timer.Reset(next)
	}
}

// hostPublish signs a fresh record (next sequence number, current
// addresses) and puts it into the DHT.
func (h *Host) hostPublish(ctx context.Context) error {
	value, err := h.hostSignOwnRecord()
	if err != nil {
		return err
	}
	now := h.now()
	pctx, cancel := context.WithTimeout(ctx, DefaultResolveTimeout)
	defer cancel()
	err = h.dht.PutValue(pctx, AgentRecordKey(h.self), value)
	h.mu.Lock()
	h.lastPubErr = err
	if err == nil {
		h.published = now
		h.stats.publishes.Add(1)
	}
	h.mu.Unlock()
	if err != nil {
		return fmt.Errorf("negotiate: publish record of %s: %w", h.self.Short(), err)
	}
	return nil
}

// hostSignOwnRecord makes and signs this node's record with the next
// sequence number and the current addresses, and keeps it as its own.
func (h *Host) hostSignOwnRecord() ([]byte, error) {
	now := h.now()
	h.mu.Lock()
	seq := uint64(now.UnixMilli())
	if seq <= h.ownSeq {
		seq = h.ownSeq + 1
	}
	h.ownSeq = seq
	h.mu.Unlock()
	var addrs []string
	for _, a := range h.h.Addrs() {
		if len(addrs) == protocol.MaxAddrs {
			break
		}
		addrs = append(addrs, a.String())
	}
	info := &protocol.AgentInfo{
		PeerID:  h.h.ID().String(),
		Addrs:   addrs,
		Seq:     seq,
		Expires: now.Add(h.lifetime).UnixMilli(),
	}
	value, err := SignAgentInfo(h.key, info)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.ownRecord = info
	h.mu.Unlock()
	return value, nil
}

// RoutingTableSize is the number of peers in the DHT routing table
// (diagnostics: it grows with about the logarithm of the network size).
func (h *Host) RoutingTableSize() int { return h.dht.RoutingTable().Size() }

// Published reports when this node's record was last stored in the DHT
// (zero if never) and the error of the last attempt (nil if it worked).
// A node without DHT peers keeps retrying with backoff.
func (h *Host) Published() (at time.Time, lastErr error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.published, h.lastPubErr
}

// Resolve returns the verified agent record of id: from the cache while
// it is valid (records a peer introduced included), else from the DHT.
// Errors wrap ErrAgentNotFound or ErrTimeout and name the agent.
func (h *Host) Resolve(ctx context.Context, id sign.AgentID) (*protocol.AgentInfo, error) {
	if _, err := sign.ParseAgentID(string(id)); err != nil {
		return nil, fmt.Errorf("negotiate: resolve: %w", err)
	}
	if id == h.self {
		h.mu.Lock()
		own := h.ownRecord
		h.mu.Unlock()
		if own != nil {
			c := *own
			return &c, nil
		}
	}
	if info := h.hostCached(id); info != nil {
		return info, nil
	}
	return h.hostLookup(ctx, id, false)
}

// Lookup is Resolve without the cache: it always asks the DHT for id's
// record (and caches what it finds), as Resolve does, with a quick lookup
// that returns the newest copy among the first holders that answered
// (docs/protocol.md, "Finding the parties"). Use it to refresh a record
// that may have changed, or to measure lookups. Errors are those of
// Resolve.
func (h *Host) Lookup(ctx context.Context, id sign.AgentID) (*protocol.AgentInfo, error) {
	if _, err := sign.ParseAgentID(string(id)); err != nil {
		return nil, fmt.Errorf("negotiate: lookup: %w", err)
	}
	return h.hostLookup(ctx, id, false)
}

// hostCached returns a copy of the cached, unexpired record of id.
func (h *Host) hostCached(id sign.AgentID) *protocol.AgentInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.records[id]
	if !ok {
		return nil
	}
	if r.info.Expires <= h.now().UnixMilli() {
		delete(h.records, id)
		return nil
	}
	c := *r.info
	return &c
}

// hostLookup fetches id's record from the DHT, verifies and caches it.
// A quick lookup (full false) ends once hostLookupQuorum holders answered
// or hostLookupGrace after the first valid record; a full one asks until
// the query ends, for the newest copy any holder has. Callers that find
// a quick lookup's record stale (its peer does not answer, or another
// peer speaks for the agent) look again in full.
func (h *Host) hostLookup(ctx context.Context, id sign.AgentID, full bool) (*protocol.AgentInfo, error) {
	ctx, cancel := h.hostCtx(ctx, DefaultResolveTimeout)
	defer cancel()
	search := func() (*protocol.AgentInfo, error) {
		h.hostAwaitRoutingTable(ctx)
		if h.dht.RoutingTable().Size() == 0 {
			return nil, errNoDHTPeers
		}
		return h.hostSearch(ctx, id, full)
	}
	info, err := search()
	for attempt := 1; err != nil && attempt <= hostResolveRetries && ctx.Err() == nil &&
		(errors.Is(err, routing.ErrNotFound) || errors.Is(err, errRecordExpired) || errors.Is(err, errNoDHTPeers)); attempt++ {
		// A record just published may not have reached the peers this
		// lookup asked, or its successor may be on its way; a peer that
		// just connected may not be in the routing table yet: look again
		// a little later while time allows.
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * hostResolveRetryDelay):
			info, err = search()
		}
	}
	if err != nil {
		switch {
		case errors.Is(err, errNoDHTPeers):
			return nil, fmt.Errorf("%w: agent %s: this node has no DHT peers yet (pass --bootstrap or wait for mDNS)", ErrAgentNotFound, id)
		case errors.Is(err, routing.ErrNotFound):
			return nil, fmt.Errorf("%w: no record of agent %s in the DHT (is it running and connected to the same network?)", ErrAgentNotFound, id)
		case errors.Is(err, errRecordExpired):
			return nil, fmt.Errorf("%w: the record of agent %s in the DHT expired (it has not published for a record lifetime): %w", ErrAgentNotFound, id, err)
		case errors.Is(err, ErrBadAgentRecord):
			return nil, fmt.Errorf("negotiate: resolve agent %s: %w", id, err)
		case ctx.Err() != nil && h.ctx.Err() != nil:
			return nil, fmt.Errorf("negotiate: resolve %s: %w", id, ErrHostClosed)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("negotiate: resolve agent %s: %w", id, hostDeadlineError(ctx, ctx.Err()))
		default:
			return nil, fmt.Errorf("%w: agent %s: %w", ErrAgentNotFound, id, err)
		}
	}
	h.hostRemember(info)
	c := *info
	return &c, nil
}

// hostSearch runs one DHT search for id's record and returns the newest
// valid record it saw: when the search ends (at hostLookupQuorum answers
// holding the record unless full, or when no closer peer is left), when
// hostLookupGrace passed after the first valid record (unless full), or
// when ctx ends with a record in hand. A search stalled on an unresponsive
// peer therefore still returns what it found. Errors: routing.ErrNotFound
// when no holder answered, the verification error when every copy was
// bad (errRecordExpired among them), else ctx's error.
func (h *Host) hostSearch(ctx context.Context, id sign.AgentID, full bool) (*protocol.AgentInfo, error) {
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	var opts []routing.Option
	if !full {
		opts = append(opts, dht.Quorum(hostLookupQuorum))
	}
	h.stats.lookups.Add(1)
	values, err := h.dht.SearchValue(sctx, AgentRecordKey(id), opts...)
	if err != nil {
		return nil, err
	}
	var best *protocol.AgentInfo
	var bad error
	var grace <-chan time.Time
search:
	for {
		select {
		case v, ok := <-values:
			if !ok {
				break search
			}
			info, err := VerifyAgentInfo(id, v, h.now())
			if err != nil {
				// The DHT checked it; it may have expired since.
				bad = err
				continue
			}
			if best == nil || info.Seq > best.Seq || (info.Seq == best.Seq && info.Expires > best.Expires) {
				best = info
			}
			if grace == nil && !full {
				t := time.NewTimer(hostLookupGrace)
				defer t.Stop()
				grace = t.C
			}
		case <-grace:
			break search
		case <-ctx.Done():
			break search
		}
	}
	switch {
	case best != nil:
		return best, nil
	case bad != nil:
		return nil, bad
	case ctx.Err() != nil:
		return nil, ctx.Err()
	default:
		return nil, routing.ErrNotFound
	}
}

// hostRemember caches a verified record fetched from the DHT now, and
// its addresses.
func (h *Host) hostRemember(info *protocol.AgentInfo) { h.hostRememberAs(info, h.now()) }

// hostRememberAs caches a verified record and its addresses as fetched
// at fetched: the zero time for a record handed on by a peer, which
// hostCheckSender may look up again at once.
func (h *Host) hostRememberAs(info *protocol.AgentInfo, fetched time.Time) {
	pid, err := peer.Decode(info.PeerID)
	if err != nil {
		return // VerifyAgentInfo checked it
	}
	var addrs []ma.Multiaddr
	for _, a := range info.Addrs {
		if m, err := ma.NewMultiaddr(a); err == nil {
			addrs = append(addrs, m)
		}
	}
	ttl := time.Until(time.UnixMilli(info.Expires))
	if ttl > 0 && pid != h.h.ID() {
		h.h.Peerstore().AddAddrs(pid, addrs, min(ttl, peerstore.RecentlyConnectedAddrTTL))
	}
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if old, ok := h.records[info.AgentID]; ok && old.info.Expires > now.UnixMilli() &&
		(old.info.Seq > info.Seq || (old.info.Seq == info.Seq && fetched.IsZero())) {
		return
	}
	if _, ok := h.records[info.AgentID]; !ok && len(h.records) >= MaxKnownAgents {
		var oldest sign.AgentID
		var oldestAt time.Time
		for id, r := range h.records {
			if oldest == "" || r.fetched.Before(oldestAt) {
				oldest, oldestAt = id, r.fetched
			}
		}
		delete(h.records, oldest)
	}
	h.records[info.AgentID] = &hostCachedRecord{info: info, fetched: fetched}
}

// hostForget drops id's cached record.
func (h *Host) hostForget(id sign.AgentID) {
	h.mu.Lock()
	delete(h.records, id)
	h.mu.Unlock()
}

// KnownAgents lists the unexpired agent records this host has resolved.
func (h *Host) KnownAgents() []protocol.AgentInfo {
	nowMs := h.now().UnixMilli()
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]protocol.AgentInfo, 0, len(h.records))
	for _, r := range h.records {
		if r.info.Expires > nowMs {
			out = append(out, *r.info)
		}
	}
	return out
}

// hostConnect resolves id and connects to the peer its record names. If
// the record's addresses fail (a cached record may be old, a quick lookup
// may have met only holders of an older copy), it looks the agent up again
// once, in full, and dials the newer record if there is one.
func (h *Host) hostConnect(ctx context.Context, id sign.AgentID) (peer.ID, error) {
	if id == h.self {
		return "", fmt.Errorf("negotiate: agent %s is this node itself", id.Short())
	}
	info, err := h.Resolve(ctx, id)
	if err != nil {
		return "", err
	}
	pid, err := h.hostDialRecord(ctx, info)
	if err == nil || ctx.Err() != nil {
		return pid, err
	}
	h.hostForget(id)
	fresh, lerr := h.hostLookup(ctx, id, true)
	if lerr != nil || (fresh.Seq == info.Seq && fresh.PeerID == info.PeerID) {
		return "", err
	}
	return h.hostDialRecord(ctx, fresh)
}

// hostDialRecord connects to the peer of a verified record. libp2p
// authenticates the peer ID during the handshake, so a node presenting
// another peer ID fails the dial.
func (h *Host) hostDialRecord(ctx context.Context, info *protocol.AgentInfo) (peer.ID, error) {
	pid, err := peer.Decode(info.PeerID)
	if err != nil {
		return "", fmt.Errorf("%w: agent %s: peer ID: %w", ErrBadAgentRecord, info.AgentID.Short(), err)
	}
	if h.h.Network().Connectedness(pid) == network.Connected {
		return pid, nil
	}
	ai := peer.AddrInfo{ID: pid}
	for _, a := range info.Addrs {
		if m, err := ma.NewMultiaddr(a); err == nil {
			ai.Addrs = append(ai.Addrs, m)
		}
	}
	if err := h.h.Connect(ctx, ai); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("negotiate: dial agent %s: %w", info.AgentID, hostDeadlineError(ctx, ctx.Err()))
		}
		return "", fmt.Errorf("%w: agent %s at %v: %w", ErrUnreachable, info.AgentID, info.Addrs, err)
	}
	return pid, nil
}

// hostCheckSender checks that the record of agent from names remote,
// resolving it if unknown and looking it up again (at most every
// hostRecordRecheck) if the cached one names another peer.
func (h *Host) hostCheckSender(from sign.AgentID, remote peer.ID) error {
	h.mu.Lock()
	r, ok := h.records[from]
	var fetched time.Time
	matches := false
	if ok && r.info.Expires > h.now().UnixMilli() {
		fetched = r.fetched
		matches = r.info.PeerID == remote.String()
	} else {
		ok = false
	}
	h.mu.Unlock()
	if matches {
		return nil
	}
	if ok && h.now().Sub(fetched) < hostRecordRecheck {
		return fmt.Errorf("%w: agent %s sent from peer %s, its record names %s", ErrPeerMismatch, from.Short(), remote, r.info.PeerID)
	}
	ctx, cancel := context.WithTimeout(h.ctx, hostSenderCheckTimeout)
	defer cancel()
	info, err := h.hostLookup(ctx, from, false)
	if err == nil && info.PeerID != remote.String() {
		// A quick lookup may have met only holders of an older copy.
		info, err = h.hostLookup(ctx, from, true)
	}
	if err != nil {
		return fmt.Errorf("%w: cannot check sender %s: %w", ErrPeerMismatch, from.Short(), err)
	}
	if info.PeerID != remote.String() {
		return fmt.Errorf("%w: agent %s sent from peer %s, its record names %s", ErrPeerMismatch, from.Short(), remote, info.PeerID)
	}
	return nil
}

// hostAwaitRoutingTable waits (at most hostRoutingTableWait, bounded by
// ctx) for the DHT routing table to hold a peer when the host is connected
// to some: right after a connection, identify and the DHT's own check run
// before the peer can be queried.
func (h *Host) hostAwaitRoutingTable(ctx context.Context) {
	if h.dht.RoutingTable().Size() > 0 || len(h.h.Network().Peers()) == 0 {
		return
	}
	wait := time.NewTimer(hostRoutingTableWait)
	defer wait.Stop()
	tick := time.NewTicker(hostRoutingTablePoll)
	defer tick.Stop()
	for h.dht.RoutingTable().Size() == 0 {
		select {
		case <-ctx.Done():
			return
		case <-wait.C:
			return
		case <-tick.C:
		}
	}
}
