package transport

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Errors of the transport layer; test with errors.Is. Every returned error
// wraps one of them (or a protocol error) and names the agent concerned.
var (
	// ErrAgentNotFound: no valid record of the agent is in the DHT.
	ErrAgentNotFound = errors.New("negotiate: agent not found")
	// ErrTimeout: the operation did not finish in time. Errors wrapping it
	// also wrap context.DeadlineExceeded.
	ErrTimeout = errors.New("negotiate: timed out")
	// ErrRefused: the receiver refused a direct message; see *RefusedError
	// for its reason.
	ErrRefused = errors.New("negotiate: refused")
	// ErrUnreachable: the agent's record was found but none of its
	// addresses answered.
	ErrUnreachable = errors.New("negotiate: agent unreachable")
	// ErrPeerMismatch: a connection's peer ID is not the one the agent's
	// signed record names.
	ErrPeerMismatch = errors.New("negotiate: peer ID does not match the agent record")
	// ErrBadAgentRecord: an agent record is malformed, badly signed, expired or
	// names another agent.
	ErrBadAgentRecord = errors.New("negotiate: bad agent record")
	// ErrHostClosed: the host was closed.
	ErrHostClosed = errors.New("negotiate: host closed")
)

// Config configures a Host. The zero value of every field but Key is
// usable.
type Config struct {
	// Key is the agent key: it signs messages and the agent record.
	// Required.
	Key *sign.PrivateKey
	// PeerKeyFile holds the libp2p identity (the transport key, not the
	// agent key), created with mode 0600 when missing. Empty means a new
	// identity in memory on every start (tests).
	PeerKeyFile string
	// Listen lists the multiaddrs to listen on. Empty means
	// DefaultListenAddrs (loopback only, random ports).
	Listen []string
	// Bootstrap lists multiaddrs (with /p2p/<peer-id>) of nodes to join
	// the DHT through. Empty means none: the node finds peers by mDNS or
	// by others bootstrapping from it.
	Bootstrap []string
	// MDNS turns on LAN discovery by multicast DNS. The zero value (false)
	// leaves it off; the CLI turns it on by default.
	MDNS bool
	// Logger receives debug logs of refused frames and discovery. Nil
	// means discard.
	Logger *slog.Logger
	// Now is the clock used for expiries. Nil means time.Now.
	Now func() time.Time
	// PeerFramesPerSecond and PeerFrameBurst override the per-peer inbound
	// frame rate limit (zero: the PeerFramesPerSecond and PeerFrameBurst
	// constants). Raise them for nodes that run many sessions with the
	// same peers, such as `negotiate bench`.
	PeerFramesPerSecond float64
	PeerFrameBurst      float64
	// MaxConnections, when above zero, is the connection manager's high
	// watermark: above it the host closes its least useful connections
	// down to half (the peers that carried session frames in the last 2
	// minutes are protected and stay). Zero keeps libp2p's default (160
	// to 192). Lower it when many hosts share one machine (`negotiate
	// bench` with many pairs), where every connection costs a file
	// descriptor at both ends.
	MaxConnections int
	// Providers makes the Host's own DHT keep and serve provider records,
	// so that Host.Provide and Host.FindProviders work (they need it on
	// the nodes that store the records, so turn it on across a deployment
	// that uses them, such as examples/marketplace). Off by default: a
	// node that keeps provider records stores every peer's announcements
	// for their lifetime (48 h), memory a node that does not use them
	// need not spend. Ignored with Config.DHT, whose own options decide.
	Providers bool
	// Libp2p, when set, is a libp2p host the application already runs; the
	// Host then adds its two protocols (protocol.ProtocolSession and
	// protocol.ProtocolMsg) and its DHT agent record to it instead of
	// making a host of its own, and Close removes them but leaves the
	// libp2p host running (the application owns it). Listen, PeerKeyFile
	// and MaxConnections are then ignored. The host must offer what the
	// protocol needs: a secure channel that authenticates peer IDs (Noise
	// or TLS, as libp2p.New sets up by default), a stream muxer, a
	// transport its peers can dial, and resource limits that let through
	// MaxInboundStreamsPerPeer streams per peer on each protocol. A host
	// on go-libp2p's mock network (p2p/net/mock) works for simulations.
	Libp2p host.Host
	// RecordLifetime is how long this node's agent record stays valid
	// after each publish. Zero means AgentRecordLifetime; it may not be
	// longer (other nodes refuse such records). The record is republished
	// every third of it, and a DHT the Host starts itself drops the
	// records it stores once they are older than it (dht.MaxRecordAge),
	// so a departed agent stops being found about one lifetime after it
	// left. Shorten it only for tests and simulations (`negotiate bench
	// --network --record-lifetime`): every publish costs a DHT lookup.
	RecordLifetime time.Duration
	// DHT, when set (with Libp2p), is the application's Kademlia DHT on
	// that host, used to publish and find agent records instead of one the
	// Host starts itself. It must be built with the options DHTOptions
	// returns (the /negotiate protocol prefix and the agent record
	// validator), or records will be refused or never found. Close leaves
	// it running. Nil: the Host runs a DHT of its own on the host, which
	// coexists with any other DHT there (protocol IDs differ).
	DHT *dht.IpfsDHT
}

// DefaultListenAddrs are the listen addresses when Config.Listen is
// empty: TCP and QUIC on loopback with random ports.
var DefaultListenAddrs = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}

// SessionHandler receives every verified inbound session frame (a
// protocol envelope whose sender matches its connection). It runs on the
// stream's goroutine: it must return quickly (hand the envelope to the
// engine) since frames of that stream wait for it.
type SessionHandler func(env *protocol.Envelope)

// Host is one node's libp2p host with the DHT, discovery, session frames
// and direct messages. It is safe for concurrent use. Close it when done.
type Host struct {
	key   *sign.PrivateKey
	self  sign.AgentID
	h     host.Host
	dht   *dht.IpfsDHT
	mdns  io.Closer
	log   *slog.Logger
	now   func() time.Time
	guard atomic.Pointer[protocol.ReplayGuard] // swapped only by benchmarks
	lim   *hostLimiter
	inbox *hostInbox

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	republish chan struct{}
	lifetime  time.Duration // of this node's record (Config.RecordLifetime)

	mu        sync.Mutex
	closed    bool
	session   SessionHandler
	direct    DirectHandler
	recordsFn DirectHandler // answers ContentTypeRecords (the node)
	out       map[peer.ID]*hostOutStream
	// sessionPeers: peers that carried session frames, and when last;
	// their connections are protected from the connection manager
	// (hostMarkSessionPeer). sessionSweep: the last sweep of idle ones.
	sessionPeers map[peer.ID]time.Time
	sessionSweep time.Time
	records      map[sign.AgentID]*hostCachedRecord
	ownRecord    *protocol.AgentInfo
	ownSeq       uint64
	published    time.Time
	lastPubErr   error

	stats hostCounters

	// ownHost / ownDHT: Close closes them (false when the application
	// handed them in through Config.Libp2p / Config.DHT).
	ownHost, ownDHT bool
}

// hostOutStream is the reusable outbound session stream to one peer.
type hostOutStream struct {
	mu       sync.Mutex
	s        network.Stream
	lastUsed time.Time
}

// hostCounters are the host's statistics (atomics).
type hostCounters struct {
	framesIn      atomic.Uint64
	framesOut     atomic.Uint64
	refused       atomic.Uint64
	rateLimited   atomic.Uint64
	streamsDenied atomic.Uint64
	publishes     atomic.Uint64
	lookups       atomic.Uint64
	introduced    atomic.Uint64
	lastRefusal   atomic.Pointer[string]
	refusedBy     *refusalCounters // every refusal above, by reason
}

// Stats counts what the host did since it started.
type Stats struct {
	// FramesIn counts inbound frames (session and direct) that were
	// accepted and handed on.
	FramesIn uint64 `json:"frames_in"`
	// FramesOut counts frames written by Send.
	FramesOut uint64 `json:"frames_out"`
	// Refused counts inbound frames refused: malformed, oversized, badly
	// signed, expired, replayed, for another agent or from a peer that
	// does not match the sender's record.
	Refused uint64 `json:"refused"`
	// RateLimited counts inbound frames dropped because their peer was
	// over PeerFramesPerSecond.
	RateLimited uint64 `json:"rate_limited"`
	// StreamsDenied counts inbound streams reset because their peer held
	// MaxInboundStreamsPerPeer already.
	StreamsDenied uint64 `json:"streams_denied"`
	// Publishes counts the times this node's agent record was stored in
	// the DHT.
	Publishes uint64 `json:"publishes"`
	// Lookups counts DHT searches for agent records (Resolve without a
	// cached record, Lookup, the check of an unknown sender).
	Lookups uint64 `json:"lookups"`
	// Introduced counts agent records taken from peers' messages
	// (Message.Intro) instead of the DHT.
	Introduced uint64 `json:"introduced"`
	// LastRefusal is the error of the last refused frame ("" if none).
	LastRefusal string `json:"last_refusal,omitempty"`
	// RefusedBy counts every refused frame and denied stream by reason
	// (RefusalReasons): Refused, RateLimited and StreamsDenied together.
	RefusedBy map[string]uint64 `json:"refused_by"`
}

// PeerInfo is one connected peer.
type PeerInfo struct {
	// ID is the libp2p peer ID.
	ID string `json:"id"`
	// Addrs are the remote addresses of the open connections.
	Addrs []string `json:"addrs"`
	// Agent is the agent whose known record names this peer, if any.
	Agent sign.AgentID `json:"agent,omitempty"`
}

// New starts a libp2p host for cfg.Key: it listens, joins the DHT
// through cfg.Bootstrap, starts mDNS if asked, and publishes the agent
// record (then republishes it every AgentRecordRepublish and whenever the
// listen addresses change). Bootstrap peers that cannot be reached are
// logged, not fatal: the node keeps trying to publish.
func New(ctx context.Context, cfg Config) (*Host, error) {
	if cfg.Key == nil {
		return nil, errors.New("negotiate: host: Config.Key (the agent key) is required")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	listen := cfg.Listen
	if len(listen) == 0 {
		listen = DefaultListenAddrs
	}
	bootstrap, err := hostParseBootstrap(cfg.Bootstrap)
	if err != nil {
		return nil, err
	}
	lifetime := cfg.RecordLifetime
	switch {
	case lifetime == 0:
		lifetime = AgentRecordLifetime
	case lifetime < MinRecordLifetime || lifetime > AgentRecordLifetime:
		return nil, fmt.Errorf("negotiate: host: record lifetime %v: use %v to %v (other nodes refuse records that live longer)", lifetime, MinRecordLifetime, AgentRecordLifetime)
	}
	lh, owned := cfg.Libp2p, false
	if lh == nil {
		if lh, err = newLibp2pHost(cfg, listen); err != nil {
			return nil, err
		}
		owned = true
	} else if cfg.DHT != nil && cfg.DHT.Host() != lh {
		return nil, errors.New("negotiate: host: Config.DHT runs on another libp2p host than Config.Libp2p")
	}
	hctx, cancel := context.WithCancel(context.Background())
	h := &Host{
		key:          cfg.Key,
		self:         cfg.Key.AgentID(),
		stats:        hostCounters{refusedBy: newRefusalCounters()},
		h:            lh,
		log:          logger.With("agent", cfg.Key.AgentID().Short()),
		now:          now,
		lim:          newHostLimiter(cfg.PeerFramesPerSecond, cfg.PeerFrameBurst),
		inbox:        newHostInbox(),
		ctx:          hctx,
		cancel:       cancel,
		republish:    make(chan struct{}, 1),
		lifetime:     lifetime,
		out:          make(map[peer.ID]*hostOutStream),
		sessionPeers: make(map[peer.ID]time.Time),
		records:      make(map[sign.AgentID]*hostCachedRecord),
		ownHost:      owned,
	}
	h.guard.Store(protocol.NewReplayGuard(0, 0))
	if err := h.hostStartDiscovery(ctx, cfg.DHT, bootstrap, cfg.MDNS, cfg.Providers); err != nil {
		h.Close()
		return nil, err
	}
	lh.SetStreamHandler(protocol.ProtocolSession, h.hostHandleSession)
	lh.SetStreamHandler(protocol.ProtocolMsg, h.hostHandleDirect)
	return h, nil
}

// newLibp2pHost makes the libp2p host a Host owns: TCP and QUIC, Noise and
// TLS, yamux, the resource manager with explicit limits.
func newLibp2pHost(cfg Config, listen []string) (host.Host, error) {
	peerKey, err := hostLoadPeerKey(cfg.PeerKeyFile)
	if err != nil {
		return nil, err
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(hostResourceLimits()))
	if err != nil {
		return nil, fmt.Errorf("negotiate: host: resource manager: %w", err)
	}
	var extra []libp2p.Option
	if cfg.MaxConnections > 0 {
		cm, err := connmgr.NewConnManager(max(1, cfg.MaxConnections/2), cfg.MaxConnections, connmgr.WithGracePeriod(hostConnGracePeriod))
		if err != nil {
			rm.Close()
			return nil, fmt.Errorf("negotiate: host: connection manager: %w", err)
		}
		extra = append(extra, libp2p.ConnectionManager(cm))
	}
	lh, err := libp2p.New(append([]libp2p.Option{
		libp2p.Identity(peerKey),
		libp2p.ListenAddrStrings(listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(libp2pquic.NewTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.UserAgent("negotiate/" + protocol.ProtocolVersion),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
	}, extra...)...)
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("negotiate: host: start libp2p on %v: %w", listen, err)
	}
	return lh, nil
}

// hostParseBootstrap parses bootstrap multiaddrs, each with /p2p/<id>.
func hostParseBootstrap(addrs []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for _, s := range addrs {
		ai, err := peer.AddrInfoFromString(s)
		if err != nil {
			return nil, fmt.Errorf("negotiate: bootstrap address %q: %w (want e.g. /ip4/1.2.3.4/tcp/4001/p2p/12D3KooW...)", s, err)
		}
		out = append(out, *ai)
	}
	return out, nil
}

// hostPeerKeyMaxBytes bounds a peer key file: an Ed25519 key is 68 bytes.
const hostPeerKeyMaxBytes = 64 << 10

// hostLoadPeerKey loads the libp2p identity from path, creating it (mode
// 0600) if missing. An empty path gives a fresh in-memory identity.
func hostLoadPeerKey(path string) (crypto.PrivKey, error) {
	if path == "" {
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("negotiate: generate peer key: %w", err)
		}
		return k, nil
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("negotiate: generate peer key: %w", err)
		}
		raw, err := crypto.MarshalPrivateKey(k)
		if err != nil {
			return nil, fmt.Errorf("negotiate: encode peer key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("negotiate: peer key directory: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("negotiate: create peer key file: %w", err)
		}
		if _, err := f.Write(raw); err != nil {
			f.Close()
			return nil, fmt.Errorf("negotiate: write peer key file %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("negotiate: sync peer key file %s: %w", path, err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("negotiate: close peer key file %s: %w", path, err)
		}
		return k, nil
	case err != nil:
		return nil, fmt.Errorf("negotiate: peer key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("negotiate: peer key file %s has mode %04o and is readable by others: run `chmod 600 %s`", path, st.Mode().Perm(), path)
	}
	if st.Size() > hostPeerKeyMaxBytes {
		return nil, fmt.Errorf("negotiate: peer key file %s is %d bytes, too large to be a key: delete it to make a new peer identity", path, st.Size())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("negotiate: read peer key file: %w", err)
	}
	k, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("negotiate: peer key file %s is damaged (%v): delete it to make a new peer identity", path, err)
	}
	return k, nil
}

// AgentID is the agent this host speaks for.
func (h *Host) AgentID() sign.AgentID { return h.self }

// PeerID is the libp2p peer ID of this host.
func (h *Host) PeerID() peer.ID { return h.h.ID() }

// Addrs are the host's listen multiaddrs, each ending in /p2p/<peer-id>,
// ready to be used as a bootstrap address by another node.
func (h *Host) Addrs() []string {
	suffix, err := ma.NewComponent("p2p", h.h.ID().String())
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range h.h.Addrs() {
		out = append(out, a.Encapsulate(suffix.Multiaddr()).String())
	}
	return out
}

// Libp2p exposes the underlying libp2p host (for tests and diagnostics).
func (h *Host) Libp2p() host.Host { return h.h }

// Peers lists the connected peers with their connection addresses and,
// where a known record names the peer, its agent.
func (h *Host) Peers() []PeerInfo {
	agents := make(map[string]sign.AgentID)
	h.mu.Lock()
	for id, r := range h.records {
		agents[r.info.PeerID] = id
	}
	h.mu.Unlock()
	var out []PeerInfo
	for _, p := range h.h.Network().Peers() {
		pi := PeerInfo{ID: p.String(), Agent: agents[p.String()]}
		for _, c := range h.h.Network().ConnsToPeer(p) {
			pi.Addrs = append(pi.Addrs, c.RemoteMultiaddr().String())
		}
		out = append(out, pi)
	}
	return out
}

// Stats returns the host's counters.
func (h *Host) Stats() Stats {
	s := Stats{
		FramesIn:      h.stats.framesIn.Load(),
		FramesOut:     h.stats.framesOut.Load(),
		Refused:       h.stats.refused.Load(),
		RateLimited:   h.stats.rateLimited.Load(),
		StreamsDenied: h.stats.streamsDenied.Load(),
		RefusedBy:     h.stats.refusedBy.snapshot(),
		Publishes:     h.stats.publishes.Load(),
		Lookups:       h.stats.lookups.Load(),
		Introduced:    h.stats.introduced.Load(),
	}
	if p := h.stats.lastRefusal.Load(); p != nil {
		s.LastRefusal = *p
	}
	return s
}

// SetSessionHandler sets the receiver of inbound session frames. Until it
// is set (or after it is set to nil) session frames are verified, then
// dropped.
func (h *Host) SetSessionHandler(fn SessionHandler) {
	h.mu.Lock()
	h.session = fn
	h.mu.Unlock()
}

// Close stops discovery, closes all streams and the libp2p host. It is
// safe to call more than once.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	outs := h.out
	h.out = make(map[peer.ID]*hostOutStream)
	h.mu.Unlock()
	h.cancel()
	for _, o := range outs {
		o.mu.Lock()
		if o.s != nil {
			o.s.Reset()
			o.s = nil
		}
		o.mu.Unlock()
	}
	var errs []error
	if h.mdns != nil {
		errs = append(errs, h.mdns.Close())
	}
	if h.dht != nil && h.ownDHT {
		errs = append(errs, h.dht.Close())
	}
	h.wg.Wait()
	if h.ownHost {
		errs = append(errs, h.h.Close())
	} else {
		h.h.RemoveStreamHandler(protocol.ProtocolSession)
		h.h.RemoveStreamHandler(protocol.ProtocolMsg)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("negotiate: close host: %w", err)
	}
	return nil
}

// hostCtx derives a context bounded by the host's life and, if ctx has no
// deadline, by def.
func (h *Host) hostCtx(ctx context.Context, def time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); !ok && def > 0 {
		ctx, cancel := context.WithTimeout(ctx, def)
		stop := context.AfterFunc(h.ctx, cancel)
		return ctx, func() { stop(); cancel() }
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(h.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// hostDenyStream counts an inbound stream reset for a limit.
func (h *Host) hostDenyStream() {
	h.stats.streamsDenied.Add(1)
	h.stats.refusedBy.add(RefusedStreams)
}

// hostRateLimited counts an inbound frame dropped over the rate limit.
func (h *Host) hostRateLimited() {
	h.stats.rateLimited.Add(1)
	h.stats.refusedBy.add(RefusedRateLimited)
}

// hostRefuseFraming counts a frame that could not be read: truncated,
// too large, or a broken header.
func (h *Host) hostRefuseFraming(remote peer.ID, proto string, err error) {
	reason := RefusalReason(err)
	if reason == RefusedMalformed {
		reason = RefusedFraming
	}
	h.stats.refused.Add(1)
	h.stats.refusedBy.add(reason)
	msg := "framing: " + err.Error()
	h.stats.lastRefusal.Store(&msg)
	h.log.Debug("refused inbound frame", "peer", remote.String(), "protocol", proto, "err", msg)
}

// hostRefuse counts and logs a refused inbound frame.
func (h *Host) hostRefuse(remote peer.ID, proto string, err error) {
	h.stats.refused.Add(1)
	h.stats.refusedBy.add(RefusalReason(err))
	msg := err.Error()
	h.stats.lastRefusal.Store(&msg)
	h.log.Debug("refused inbound frame", "peer", remote.String(), "protocol", proto, "err", err)
}

// hostDeadlineError maps a context or stream-deadline error to ErrTimeout
// (also wrapping context.DeadlineExceeded), keeps other errors as they are.
func hostDeadlineError(ctx context.Context, err error) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()) ||
		(ctx != nil && errors.Is(ctx.Err(), context.DeadlineExceeded)) {
		return fmt.Errorf("%w (%w): %w", ErrTimeout, context.DeadlineExceeded, err)
	}
	return err
}

// Send writes one sealed frame (from protocol.Seal) to agent to on the
// session protocol. It resolves and dials the agent as needed and reuses
// one open stream per peer; when writing on a reused stream fails it opens
// a new one once. Delivery is one-way: the peer answers, if at all, with
// its own Send.
func (h *Host) Send(ctx context.Context, to sign.AgentID, frame []byte) error {
	if len(frame) == 0 || len(frame) > protocol.MaxFrameBytes {
		return fmt.Errorf("negotiate: send to %s: frame of %d bytes: %w", to.Short(), len(frame), protocol.ErrTooLarge)
	}
	ctx, cancel := h.hostCtx(ctx, DefaultRequestTimeout)
	defer cancel()
	pid, err := h.hostConnect(ctx, to)
	if err != nil {
		return fmt.Errorf("negotiate: send to %s: %w", to.Short(), err)
	}
	h.hostMarkSessionPeer(pid)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrHostClosed
	}
	o, ok := h.out[pid]
	if !ok {
		if len(h.out) >= hostMaxTrackedPeers {
			h.hostPruneOutLocked()
		}
		o = &hostOutStream{}
		h.out[pid] = o
	}
	h.mu.Unlock()

	o.mu.Lock()
	defer o.mu.Unlock()
	for attempt := 0; ; attempt++ {
		now := time.Now()
		if o.s != nil && now.Sub(o.lastUsed) > hostOutStreamIdle {
			o.s.Close()
			o.s = nil
		}
		fresh := o.s == nil
		if fresh {
			s, err := h.h.NewStream(ctx, pid, protocol.ProtocolSession)
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("negotiate: send to %s: open stream: %w", to.Short(), hostDeadlineError(ctx, err))
				}
				return fmt.Errorf("negotiate: send to %s: %w: open stream: %w", to.Short(), ErrUnreachable, err)
			}
			o.s = s
		}
		deadline := now.Add(hostWriteTimeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		o.s.SetWriteDeadline(deadline)
		err := protocol.WriteFrame(o.s, frame)
		if err == nil {
			o.lastUsed = now
			h.stats.framesOut.Add(1)
			return nil
		}
		o.s.Reset()
		o.s = nil
		if ctx.Err() != nil {
			return fmt.Errorf("negotiate: send to %s: %w", to.Short(), hostDeadlineError(ctx, err))
		}
		if fresh || attempt > 0 {
			return fmt.Errorf("negotiate: send to %s: %w: %w", to.Short(), ErrUnreachable, err)
		}
	}
}

// hostMarkSessionPeer protects the connection to pid from the connection
// manager's trimming (Config.MaxConnections, or libp2p's default manager)
// while it carries session frames, in either direction: a trimmed
// connection in the middle of a session costs a dial and, where the
// stream write was under way, the frame. The protection ends once
// hostSessionPeerIdle passes without a frame (checked on later calls,
// at most every quarter of it). Only verified frames mark a sender.
func (h *Host) hostMarkSessionPeer(pid peer.ID) {
	now := h.now()
	cm := h.h.ConnManager()
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.sessionPeers[pid]; !ok {
		if len(h.sessionPeers) >= hostMaxTrackedPeers {
			return
		}
		cm.Protect(pid, hostSessionPeerTag)
	}
	h.sessionPeers[pid] = now
	if now.Sub(h.sessionSweep) < hostSessionPeerIdle/4 {
		return
	}
	h.sessionSweep = now
	for p, at := range h.sessionPeers {
		if now.Sub(at) > hostSessionPeerIdle {
			cm.Unprotect(p, hostSessionPeerTag)
			delete(h.sessionPeers, p)
		}
	}
}

// hostPruneOutLocked forgets outbound streams to peers we are no longer
// connected to; the caller holds h.mu.
func (h *Host) hostPruneOutLocked() {
	for p, o := range h.out {
		if h.h.Network().Connectedness(p) != network.Connected && o.mu.TryLock() {
			if o.s != nil {
				o.s.Reset()
				o.s = nil
			}
			o.mu.Unlock()
			delete(h.out, p)
		}
	}
}

// hostHandleSession serves one inbound session stream: frames in a loop,
// each verified, checked against replay and the sender's record, then
// handed to the session handler.
func (h *Host) hostHandleSession(s network.Stream) {
	remote := s.Conn().RemotePeer()
	if !h.lim.acquireStream(remote, false, time.Now()) {
		h.hostDenyStream()
		h.log.Debug("too many session streams", "peer", remote.String())
		s.Reset()
		return
	}
	defer h.lim.releaseStream(remote, false)
	if err := s.Scope().SetService(hostServiceName); err != nil {
		h.log.Debug("session stream: attach service", "peer", remote.String(), "err", err)
		s.Reset()
		return
	}
	if err := s.Scope().ReserveMemory(protocol.MaxFrameBytes, network.ReservationPriorityAlways); err != nil {
		h.hostDenyStream()
		h.log.Debug("session stream: reserve memory", "peer", remote.String(), "err", err)
		s.Reset()
		return
	}
	defer s.Scope().ReleaseMemory(protocol.MaxFrameBytes)
	for {
		s.SetReadDeadline(time.Now().Add(hostSessionIdleTimeout))
		frame, err := protocol.ReadFrame(s, protocol.MaxFrameBytes)
		if err != nil {
			if errors.Is(err, io.EOF) {
				s.Close()
				return
			}
			if errors.Is(err, protocol.ErrMalformed) || errors.Is(err, protocol.ErrTooLarge) {
				h.hostRefuseFraming(remote, protocol.ProtocolSession, err)
			} else {
				h.log.Debug("session stream closed", "peer", remote.String(), "err", err)
			}
			s.Reset()
			return
		}
		if !h.lim.allowFrame(remote, time.Now()) {
			h.hostRateLimited()
			h.log.Debug("session frame over rate limit dropped", "peer", remote.String())
			// Backpressure: read nothing more of this stream until the
			// peer's bucket refills, so a flood costs its sender the wait
			// (its writes block on the stream's flow control) instead of
			// costing us the reading and decrypting of frames we drop.
			select {
			case <-time.After(h.lim.backoff(remote)):
			case <-h.ctx.Done():
				s.Reset()
				return
			}
			continue
		}
		env, err := h.hostOpenInbound(frame, remote)
		if err != nil {
			h.hostRefuse(remote, protocol.ProtocolSession, err)
			continue
		}
		h.hostMarkSessionPeer(remote)
		h.mu.Lock()
		fn := h.session
		h.mu.Unlock()
		h.stats.framesIn.Add(1)
		if fn != nil {
			fn(env)
		}
	}
}

// hostOpenInbound opens a frame addressed to us, refuses replays, and
// checks that the sender's record names the connection's peer.
func (h *Host) hostOpenInbound(frame []byte, remote peer.ID) (*protocol.Envelope, error) {
	nowMs := h.now().UnixMilli()
	env, err := protocol.OpenFor(frame, h.self, nowMs)
	if err != nil {
		return nil, err
	}
	if err := h.hostAcceptIntro(env.Msg.From, env.Msg.Intro); err != nil {
		return nil, err
	}
	if err := h.hostCheckSender(env.Msg.From, remote); err != nil {
		return nil, err
	}
	if err := h.guard.Load().Check(env, nowMs); err != nil {
		return nil, err
	}
	return env, nil
}
