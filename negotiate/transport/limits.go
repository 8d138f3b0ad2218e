package transport

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

	"github.com/negotiate-dev/negotiate/protocol"
)

// Limits of the transport layer. Each is a named constant with the reason
// it exists; hitting one is logged and counted, never a crash.
const (
	// MaxInboundStreamsPerPeer bounds the concurrent inbound streams one
	// peer may hold on each of our protocols: every stream owns a goroutine
	// and up to one frame of buffer, so a hostile peer gets at most this
	// many of each.
	MaxInboundStreamsPerPeer = 8

	// PeerFramesPerSecond is the sustained rate of inbound frames (session
	// and direct) accepted from one peer; a negotiation sends a handful of
	// frames per round, so this only throttles floods.
	PeerFramesPerSecond = 100
	// PeerFrameBurst is how many frames a peer may send at once above the
	// sustained rate: a fan-out of a full session (MaxParties) fits.
	PeerFrameBurst = 2 * protocol.MaxParties

	// InboxCap bounds the number of direct messages kept in the inbox; the
	// oldest is dropped first.
	InboxCap = 256
	// InboxMaxBytes bounds the payload bytes kept in the inbox, so that
	// InboxCap full-size payloads cannot pin InboxCap*MaxDirectBytes of memory.
	InboxMaxBytes = 8 << 20

	// MaxContentTypeBytes bounds a direct message's content type: it is a
	// short media-type-like label, not data.
	MaxContentTypeBytes = 128

	// DefaultRequestTimeout bounds a direct request (resolve, dial, send,
	// answer) when the caller's context has no deadline.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultResolveTimeout bounds one DHT lookup of an agent record when
	// the caller's context has no deadline.
	DefaultResolveTimeout = 10 * time.Second

	// AgentRecordLifetime is how long a published agent record is valid:
	// long enough to ride out a republish failure, short enough that a
	// moved agent is found again within the hour.
	AgentRecordLifetime = time.Hour
	// AgentRecordRepublish is how often a node republishes its record; a
	// third of the lifetime leaves two retries before it expires. A node
	// with a shorter Config.RecordLifetime republishes every third of that.
	AgentRecordRepublish = AgentRecordLifetime / 3
	// MinRecordLifetime is the shortest Config.RecordLifetime: every
	// publish is a DHT lookup plus a store at the closest peers, and a
	// record must outlive the lookups that find it.
	MinRecordLifetime = 10 * time.Second
	// MaxAgentRecordBytes bounds an encoded agent record in the DHT: a
	// post-quantum key (about 2 KiB), a signature (about 3.3 KiB) and
	// MaxAddrs addresses fit with room to spare.
	MaxAgentRecordBytes = 16 << 10
	// MaxKnownAgents bounds the cache of resolved agent records; the
	// oldest fetch is evicted first.
	MaxKnownAgents = 4096
)

// Unexported limits and timings of the host.
const (
	// hostConnGracePeriod protects a new connection from the connection
	// manager (Config.MaxConnections) while it is set up and used.
	hostConnGracePeriod = 10 * time.Second
	// hostSessionIdleTimeout closes an inbound session stream on which no
	// frame arrived for this long, so idle peers do not pin goroutines.
	hostSessionIdleTimeout = 2 * time.Minute
	// hostOutStreamIdle is how long Send reuses an outbound session stream;
	// it is below hostSessionIdleTimeout so the sender closes it first.
	hostOutStreamIdle = time.Minute
	// hostSessionPeerIdle is how long a peer's connection stays
	// protected from the connection manager after its last session frame
	// (hostMarkSessionPeer); hostSessionPeerTag is the protection's tag.
	hostSessionPeerIdle = 2 * time.Minute
	hostSessionPeerTag  = "negotiate-session"
	// hostDirectStreamTimeout bounds a whole inbound direct exchange: read
	// the request, run the handler, write the answer.
	hostDirectStreamTimeout = 30 * time.Second
	// hostDirectHandlerTimeout bounds the application's DirectHandler.
	hostDirectHandlerTimeout = 20 * time.Second
	// hostWriteTimeout bounds one frame write when the caller gave no deadline.
	hostWriteTimeout = 10 * time.Second
	// hostSenderCheckTimeout bounds the lookup of an unknown sender's agent
	// record while an inbound frame waits.
	hostSenderCheckTimeout = 5 * time.Second
	// hostRecordRecheck is the minimum time between two fresh lookups of
	// the same agent after its cached record did not match a connection.
	hostRecordRecheck = 5 * time.Second
	// hostMessageLifetime is the expiry given to the direct messages we
	// send: long enough for any sane clock skew, far below
	// protocol.MaxMessageLifetime so the replay guard stays small.
	hostMessageLifetime = 2 * time.Minute
	// hostMaxTrackedPeers bounds the per-peer limiter state; idle entries
	// are dropped beyond it.
	hostMaxTrackedPeers = 4096
	// hostPublishRetryMin and hostPublishRetryMax bound the backoff of a
	// failed publish (for example while the node has no DHT peers yet).
	hostPublishRetryMin = 500 * time.Millisecond
	hostPublishRetryMax = 30 * time.Second
	// hostBootstrapTimeout bounds the initial connection to bootstrap peers
	// and the first routing-table refresh, so New returns promptly.
	hostBootstrapTimeout = 10 * time.Second
	// hostRoutingTableWait bounds how long a lookup waits for a just
	// connected peer to enter the DHT routing table.
	hostRoutingTableWait = 2 * time.Second
	// hostRoutingTablePoll is how often that wait checks the table.
	hostRoutingTablePoll = 20 * time.Millisecond
	// hostResolveRetries is how many more lookups Resolve makes after
	// "not found": the DHT is eventually consistent right after a node
	// joins. The delay grows by hostResolveRetryDelay per attempt.
	hostResolveRetries    = 2
	hostResolveRetryDelay = 250 * time.Millisecond
	// hostLookupQuorum is the DHT quorum (dht.Quorum) of a quick lookup:
	// it ends once this many holders of the record answered (beyond the
	// first), instead of asking until the query converges on the closest
	// peers, which waits on the slowest of them. A record is stored at the
	// 20 peers closest to its key and overwritten there by its successor,
	// so five answers that all hold an older copy are rare, and callers
	// that meet one (a dead address, another peer) look again in full.
	hostLookupQuorum = 4
	// hostLookupGrace bounds how long a quick lookup waits for that quorum
	// once it holds a valid record.
	hostLookupGrace = time.Second
	// hostRepublishFirst is the first interval between a node's publishes;
	// each publish doubles it, up to a third of the record lifetime (five
	// extra publishes in a node's first 16 minutes with the default
	// lifetime).
	hostRepublishFirst = 30 * time.Second
	// hostRepublishCheck is how often the publish loop compares the DHT
	// routing table's size with its size at the last publish.
	hostRepublishCheck = 5 * time.Second
	// hostRepublishGrowth: when the routing table holds this many more
	// peers than at the last publish, the record is published again at
	// once. A Kademlia table gains about one k-bucket (20 peers) each time
	// the network doubles, so half a bucket means the network grew by
	// about 40 %: enough new peers may now be closer to the record's key
	// than the ones that hold it that a lookup would miss it. A node that
	// joins a young, growing network (or a whole network started at once)
	// would otherwise wait AgentRecordRepublish for that.
	hostRepublishGrowth = 10
	// hostServiceName is the resource-manager service our stream handlers
	// attach to.
	hostServiceName = "negotiate"
	// hostMDNSService is the mDNS service name nodes announce on the LAN.
	hostMDNSService = "_negotiate._udp"
)

// Resource-manager limits (libp2p rcmgr). Everything not set here keeps
// libp2p's scaled defaults.
const (
	// rcmSystemConns bounds all connections of the node.
	rcmSystemConns = 512
	// rcmSystemStreams bounds all streams of the node.
	rcmSystemStreams = 4096
	// rcmSystemMemory bounds the memory libp2p may reserve overall.
	rcmSystemMemory = 512 << 20
	// rcmPeerConns bounds connections per peer: one TCP, one QUIC and a
	// few in transition.
	rcmPeerConns = 8
	// rcmPeerStreams bounds all streams of one peer (DHT, identify, ours).
	rcmPeerStreams = 256
	// rcmPeerMemory bounds what one peer may make us reserve.
	rcmPeerMemory = 32 << 20
	// rcmServiceMemory bounds the buffers of our handlers over all peers:
	// each inbound stream reserves one MaxFrameBytes frame.
	rcmServiceMemory = 128 << 20
	// rcmServicePeerMemory is the per-peer share of our handlers' buffers:
	// MaxInboundStreamsPerPeer frames of each of our two protocols.
	rcmServicePeerMemory = 2 * MaxInboundStreamsPerPeer * protocol.MaxFrameBytes
)

var (
	hostLimitsOnce sync.Once
	hostLimits     rcmgr.ConcreteLimitConfig
)

// hostResourceLimits builds the resource-manager limits once: rcmgr's
// default config is a global with maps, so it must not be mutated twice.
func hostResourceLimits() rcmgr.ConcreteLimitConfig {
	hostLimitsOnce.Do(func() {
		scaling := rcmgr.DefaultLimits
		libp2p.SetDefaultServiceLimits(&scaling)
		perProto := rcmgr.ResourceLimits{
			StreamsInbound: rcmgr.LimitVal(MaxInboundStreamsPerPeer),
			Memory:         rcmgr.LimitVal64(MaxInboundStreamsPerPeer * protocol.MaxFrameBytes),
		}
		partial := rcmgr.PartialLimitConfig{
			System: rcmgr.ResourceLimits{
				Conns: rcmSystemConns, Streams: rcmSystemStreams, Memory: rcmSystemMemory,
			},
			PeerDefault: rcmgr.ResourceLimits{
				Conns: rcmPeerConns, Streams: rcmPeerStreams, Memory: rcmPeerMemory,
			},
			Service: map[string]rcmgr.ResourceLimits{
				hostServiceName: {Memory: rcmServiceMemory},
			},
			ServicePeer: map[string]rcmgr.ResourceLimits{
				hostServiceName: {
					StreamsInbound: 2 * MaxInboundStreamsPerPeer,
					Memory:         rcmServicePeerMemory,
				},
			},
			ProtocolPeer: map[p2pproto.ID]rcmgr.ResourceLimits{
				protocol.ProtocolSession: perProto,
				protocol.ProtocolMsg:     perProto,
			},
		}
		hostLimits = partial.Build(scaling.AutoScale())
	})
	return hostLimits
}

// hostPeerState is the per-peer limiter state: a token bucket of inbound
// frames and counters of inbound streams per protocol.
type hostPeerState struct {
	tokens   float64
	last     time.Time
	session  int // open inbound session streams
	direct   int // open inbound direct streams
	lastSeen time.Time
}

// hostLimiter holds the per-peer state of all peers.
type hostLimiter struct {
	mu    sync.Mutex
	peers map[peer.ID]*hostPeerState
	rate  float64 // frames per second per peer
	burst float64
}

func newHostLimiter(rate, burst float64) *hostLimiter {
	if rate <= 0 {
		rate = PeerFramesPerSecond
	}
	if burst <= 0 {
		burst = PeerFrameBurst
	}
	return &hostLimiter{peers: make(map[peer.ID]*hostPeerState), rate: rate, burst: burst}
}

// state returns p's state; the caller holds l.mu.
func (l *hostLimiter) state(p peer.ID, now time.Time) *hostPeerState {
	st, ok := l.peers[p]
	if !ok {
		if len(l.peers) >= hostMaxTrackedPeers {
			l.evictIdle(now)
		}
		st = &hostPeerState{tokens: l.burst, last: now}
		l.peers[p] = st
	}
	st.lastSeen = now
	return st
}

// evictIdle drops the state of peers without open streams whose bucket
// has refilled (they gain nothing by being forgotten).
func (l *hostLimiter) evictIdle(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for p, st := range l.peers {
		if st.session == 0 && st.direct == 0 && now.Sub(st.last) >= full {
			delete(l.peers, p)
		}
	}
}

// acquireStream counts an inbound stream of p on a protocol; false means
// p already holds MaxInboundStreamsPerPeer of them.
func (l *hostLimiter) acquireStream(p peer.ID, direct bool, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(p, now)
	n := &st.session
	if direct {
		n = &st.direct
	}
	if *n >= MaxInboundStreamsPerPeer {
		return false
	}
	*n++
	return true
}

// releaseStream undoes acquireStream.
func (l *hostLimiter) releaseStream(p peer.ID, direct bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.peers[p]
	if !ok {
		return
	}
	if direct {
		st.direct--
	} else {
		st.session--
	}
}

// allowFrame takes one token from p's bucket; false means p is over
// PeerFramesPerSecond and the frame must be dropped.
func (l *hostLimiter) allowFrame(p peer.ID, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.state(p, now)
	if el := now.Sub(st.last); el > 0 {
		st.tokens += el.Seconds() * l.rate
		if st.tokens > l.burst {
			st.tokens = l.burst
		}
	}
	st.last = now
	if st.tokens < 1 {
		return false
	}
	st.tokens--
	return true
}

// backoff is how long p's streams should wait before reading another
// frame: until its bucket holds a token again (at least a millisecond).
func (l *hostLimiter) backoff(p peer.ID) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.peers[p]
	if !ok || st.tokens >= 1 {
		return time.Millisecond
	}
	d := time.Duration((1 - st.tokens) / l.rate * float64(time.Second))
	return max(d, time.Millisecond)
}
