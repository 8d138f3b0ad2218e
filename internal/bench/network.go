package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/internal/heap"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/negotiate/transport"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// TransportMock runs the network bench on go-libp2p's in-memory mock
// network (p2p/net/mock): each node gets a mock libp2p host, handed in
// through transport.Config.Libp2p as an embedder hands in its own host.
const TransportMock = "mock"

// Defaults and limits of NetworkOptions.
const (
	// DefaultNetworkLookups is how many agent lookups a run measures.
	DefaultNetworkLookups = 1000
	// DefaultFirstContacts is how many first contacts a run measures.
	DefaultFirstContacts = 50
	// DefaultNetworkSessions is how many countersigned sessions a run
	// measures (half between pairs, half in groups of 3 to 5).
	DefaultNetworkSessions = 100
	// DefaultNetworkConcurrency is how many lookups, and how many
	// sessions, run at once.
	DefaultNetworkConcurrency = 8
	// DefaultLookupTimeout bounds one lookup or one probe of a departed
	// agent, as a user's resolve would be bounded.
	DefaultLookupTimeout = 10 * time.Second
	// DefaultNetworkSessionTimeout is each session's deadline in a
	// network run: the deadline `negotiate propose` gives a user's session
	// by default. The 20 s of DefaultSessionTimeout is far above a session
	// among a few nodes, but not among 1,000 sharing two cores: before
	// quick lookups and introductions the p99 session took 12 to 17 s
	// there and 7 of 100 failed one run at 20 s (4 to 8 s since).
	DefaultNetworkSessionTimeout = 60 * time.Second
	// DefaultSettleTimeout bounds the wait for the DHT to settle; a run
	// that hits it goes on and reports settled=false.
	DefaultSettleTimeout = 10 * time.Minute
	// DefaultNetworkGCPercent is the Go GC percent of a network run: the
	// collector took 25-30 % of the CPU of a 200-agent run at Go's 100,
	// with 1.3 MiB of live heap per agent; 200 halves its work for about
	// 1.5x the heap.
	DefaultNetworkGCPercent = 200
	// DefaultChurnRecordLifetime is the shortest agent record lifetime
	// of a run with churn (transport.Config.RecordLifetime): short, so
	// that the run can show that a departed agent's record stops being
	// served without waiting the real hour. ChurnRecordLifetime scales it
	// with the network.
	DefaultChurnRecordLifetime = time.Minute
	// churnLifetimePerNode scales the churn runs' record lifetime with
	// the network size (ChurnRecordLifetime).
	churnLifetimePerNode = 240 * time.Millisecond
	// MaxNetworkNodes bounds one run: 1,000 mock nodes peaked at 8.3 GiB
	// RSS here (with churn); twice that still fits the 24 GiB machine the
	// bench was written on, though the start-up grows faster than N (132 s
	// at 500 nodes, 361 s at 1,000 on two cores).
	MaxNetworkNodes = 2000
	// MaxChurn bounds the share of agents that go down.
	MaxChurn = 0.5
	// networkStartParallel is how many nodes start at once.
	networkStartParallel = 8
	// DefaultNetworkConns is the connection manager's high watermark of a
	// network node (NetworkOptions.MaxConnections). A real node keeps
	// libp2p's 160 to 192; here every node's connections share one
	// process: on TCP each costs a file descriptor at both ends, on the
	// mock network goroutines and buffers at both ends. At 500 agents with
	// no manager: 401 goroutines and 1.9 MiB of heap per node (5.9 GiB
	// RSS); with a high watermark of 32: 105 and 1.1 MiB (3.2 GiB), but
	// lookups re-dial more (p99 1.9 s against 0.2 s).
	DefaultNetworkConns = 64
	// DefaultTCPNetworkConns is the default high watermark on TCP: about
	// two file descriptors per connection and node, and the descriptors
	// of 250 nodes must fit the process's hard limit.
	DefaultTCPNetworkConns = 32
	// settlePoll is how often the settle check samples the network;
	// settleQuiet is how many samples in a row must show routing tables
	// that stopped growing (it spans the transport's republish check).
	settlePoll  = 2 * time.Second
	settleQuiet = 4
	// settleGrowth is the growth of the summed routing-table sizes below
	// which a sample counts as quiet (relative).
	settleGrowth = 0.005
	// roundTripEvery is how many successful lookups go by between two
	// round-trip samples (NetworkResult.RoundTripMs).
	roundTripEvery = 4
	// churnStep is the pause between two agents going down.
	churnStep = 20 * time.Millisecond
	// churnLookupPause spaces a worker's lookups once --lookups are done
	// while the churn goes on.
	churnLookupPause = 250 * time.Millisecond
	// expiryMargin is waited on top of the record lifetime before the
	// records of departed agents are checked.
	expiryMargin = 2 * time.Second
)

// NetworkOptions configures RunNetwork. Zero values get the documented
// defaults.
type NetworkOptions struct {
	// Nodes is the network size: agents, each a negotiate.Node with its
	// own key, chain and DHT participation (required, 4..MaxNetworkNodes).
	Nodes int
	// Transport is TransportMock (default) or TransportTCP (real libp2p
	// hosts on 127.0.0.1, each with its own TCP port).
	Transport string
	// Lookups is how many lookups of random agents by random agents to
	// measure (default DefaultNetworkLookups). With churn, lookups go on
	// until the churn is over, so a run may make more.
	Lookups int
	// FirstContacts is how many first contacts to measure (default
	// DefaultFirstContacts).
	FirstContacts int
	// Sessions is how many countersigned sessions to run (default
	// DefaultNetworkSessions).
	Sessions int
	// Concurrency is how many lookups and how many sessions run at once
	// (default DefaultNetworkConcurrency).
	Concurrency int
	// MaxConnections is every node's connection manager high watermark
	// (transport.Config.MaxConnections; on the mock network a
	// connection manager of the same watermarks wraps the mock host,
	// which has none of its own); above it a node closes its least useful
	// connections down to half. Default DefaultNetworkConns on the mock
	// network, DefaultTCPNetworkConns on TCP.
	MaxConnections int
	// Churn is the share of agents (0 to MaxChurn) that go down during the
	// measured lookups; half of them come back on a new libp2p host (new
	// peer ID and addresses) with the same key and chain.
	Churn float64
	// RecordLifetime is every node's agent record lifetime
	// (transport.Config.RecordLifetime). Zero: transport.AgentRecordLifetime
	// without churn, ChurnRecordLifetime(Nodes) with churn.
	RecordLifetime time.Duration
	// LookupTimeout bounds each lookup and probe (default
	// DefaultLookupTimeout); SessionTimeout each session (default
	// DefaultNetworkSessionTimeout); SettleTimeout the wait for the DHT to settle
	// (default DefaultSettleTimeout).
	LookupTimeout, SessionTimeout, SettleTimeout time.Duration
	// Scheme names the agents' signature scheme (default ed25519).
	Scheme string
	// Seed seeds the random choices (agents, pairs, groups, churn); zero
	// means 1.
	Seed uint64
	// GCPercent, if > 0, is the Go GC percent for the run (default
	// DefaultNetworkGCPercent); -1 keeps the process's own (GOGC).
	GCPercent int
	// Dir holds the shared chain store; empty means a temporary directory.
	Dir string
	// Logger receives the nodes' logs; nil discards them.
	Logger *slog.Logger
	// CPUProfile, if set, receives a CPU profile (pprof format) of the
	// whole run: start-up, settling and the measurements.
	CPUProfile io.Writer
	// Progress, if set, is told how each stage advances: "nodes",
	// "settle" (done = nodes whose record was published after half the
	// nodes had started), "lookups",
	// "churn", "first contacts", "sessions", "expiry", "chains". Calls are
	// serialized.
	Progress func(stage string, done, total int)
}

// Validate fills in the defaults of o and checks every option; the error
// wraps ErrBadOptions.
func (o *NetworkOptions) Validate() error {
	if o.Transport == "" {
		o.Transport = TransportMock
	}
	if o.Lookups == 0 {
		o.Lookups = DefaultNetworkLookups
	}
	if o.FirstContacts == 0 {
		o.FirstContacts = DefaultFirstContacts
	}
	if o.Sessions == 0 {
		o.Sessions = DefaultNetworkSessions
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultNetworkConcurrency
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = DefaultNetworkConns
		if o.Transport == TransportTCP {
			o.MaxConnections = DefaultTCPNetworkConns
		}
	}
	if o.RecordLifetime == 0 {
		o.RecordLifetime = transport.AgentRecordLifetime
		if o.Churn > 0 {
			o.RecordLifetime = ChurnRecordLifetime(o.Nodes)
		}
	}
	if o.LookupTimeout <= 0 {
		o.LookupTimeout = DefaultLookupTimeout
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = DefaultNetworkSessionTimeout
	}
	if o.SettleTimeout <= 0 {
		o.SettleTimeout = DefaultSettleTimeout
	}
	if o.Scheme == "" {
		o.Scheme = sign.DefaultScheme
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.GCPercent == 0 {
		o.GCPercent = DefaultNetworkGCPercent
	}
	switch {
	case o.Nodes < bootNodes+1 || o.Nodes > MaxNetworkNodes:
		return fmt.Errorf("%w: network of %d nodes: use %d to %d", ErrBadOptions, o.Nodes, bootNodes+1, MaxNetworkNodes)
	case o.Transport != TransportMock && o.Transport != TransportTCP:
		return fmt.Errorf("%w: network transport %q: use %q (in-memory mock network) or %q (loopback TCP)", ErrBadOptions, o.Transport, TransportMock, TransportTCP)
	case o.Lookups < 1 || o.FirstContacts < 0 || o.Sessions < 0:
		return fmt.Errorf("%w: lookups %d, first contacts %d, sessions %d: lookups must be positive, the others not negative", ErrBadOptions, o.Lookups, o.FirstContacts, o.Sessions)
	case o.Concurrency < 1 || o.Concurrency > MaxConcurrency:
		return fmt.Errorf("%w: concurrency %d: use 1 to %d", ErrBadOptions, o.Concurrency, MaxConcurrency)
	case o.MaxConnections < minNetworkConns || o.MaxConnections > maxNetworkConns:
		return fmt.Errorf("%w: max connections %d: use %d to %d", ErrBadOptions, o.MaxConnections, minNetworkConns, maxNetworkConns)
	case o.Churn < 0 || o.Churn > MaxChurn:
		return fmt.Errorf("%w: churn %.3g: use 0 to %.0f%%", ErrBadOptions, o.Churn, MaxChurn*100)
	case o.RecordLifetime < transport.MinRecordLifetime || o.RecordLifetime > transport.AgentRecordLifetime:
		return fmt.Errorf("%w: record lifetime %v: use %v to %v", ErrBadOptions, o.RecordLifetime, transport.MinRecordLifetime, transport.AgentRecordLifetime)
	case o.GCPercent < -1:
		return fmt.Errorf("%w: GC percent %d: use a positive value, or -1 to keep the process's GOGC", ErrBadOptions, o.GCPercent)
	}
	if _, err := sign.SchemeByName(o.Scheme); err != nil {
		return fmt.Errorf("%w: %v", ErrBadOptions, err)
	}
	return nil
}

// ChurnRecordLifetime is the default record lifetime of a run with churn
// of n agents: DefaultChurnRecordLifetime, or 240 ms per agent when that
// is longer (4 minutes at 1,000). A node republishes its record every
// third of its lifetime, so n nodes make 3n/lifetime publishes a second,
// each a DHT lookup and 20 stores, all on this one machine's cores: at
// 1,000 agents and 1 minute that is 50 a second, and the republishing
// alone saturated two cores (lookups past their 10 s deadline, 13 of 100
// sessions failed). Scaling the lifetime keeps the rate at the 12.5 a
// second of a 250-agent run with a 1-minute lifetime. A real node, alone
// on its machine with the real hour, republishes every 20 minutes.
func ChurnRecordLifetime(n int) time.Duration {
	return max(DefaultChurnRecordLifetime, time.Duration(n)*churnLifetimePerNode)
}

// NetworkResult is what RunNetwork measured. The JSON field names are
// stable (docs/performance.md, "Network size"); times are milliseconds
// unless the name says otherwise.
type NetworkResult struct {
	Nodes     int    `json:"nodes"`
	Transport string `json:"transport"`
	Store     string `json:"store"`
	Scheme    string `json:"scheme"`
	CPUs      int    `json:"cpus"`
	Seed      uint64 `json:"seed"`
	BootNodes int    `json:"boot_nodes"`
	// MaxConnections is every node's connection manager high watermark.
	MaxConnections int     `json:"max_connections"`
	Churn          float64 `json:"churn"`
	// RecordLifetimeSec is the agents' record lifetime.
	RecordLifetimeSec float64 `json:"record_lifetime_sec"`

	// SetupSec is the time to start every node; SettleSec the wait after
	// it until the DHT settled (Settled false: SettleTimeout ran out).
	SetupSec  float64 `json:"setup_sec"`
	SettleSec float64 `json:"settle_sec"`
	Settled   bool    `json:"settled"`
	// SettleUnpublished counts the nodes whose record was not yet
	// published after half the network had started when the wait ended,
	// SettleGrowth the last relative growth of the summed routing tables
	// (the two conditions of a settled DHT, for a run that did not settle).
	SettleUnpublished int     `json:"settle_unpublished"`
	SettleGrowth      float64 `json:"settle_growth"`
	// RoutingTableMean and RoutingTableMin are the DHT routing-table
	// sizes (peers) once settled.
	RoutingTableMean float64 `json:"routing_table_mean"`
	RoutingTableMin  int     `json:"routing_table_min"`
	// ConnectionsMean and ConnectionsMax are the libp2p connections per
	// node once settled. They are not bounded by MaxConnections: the
	// manager trims above it only connections that are unprotected (the
	// DHT protects its two closest buckets, the transport its session
	// peers) and past their grace period.
	ConnectionsMean float64 `json:"connections_mean"`
	ConnectionsMax  int     `json:"connections_max"`

	// Lookups counts the measured lookups of live agents; LookupSucceeded
	// those that returned the agent's current record (its current peer
	// ID) within LookupTimeout.
	Lookups           int     `json:"lookups"`
	LookupSucceeded   int     `json:"lookup_succeeded"`
	LookupSuccessRate float64 `json:"lookup_success_rate"`
	// LookupHopsP50/P90: hops of the successful lookups. A lookup's hops
	// are the query-path depth of the peer closest to the record's key
	// that answered: a peer from the asking node's own routing table is
	// hop 1, a peer first named in the answer of a hop-k peer is hop k+1
	// (from the DHT's routing.QueryEvent stream).
	LookupHopsP50 float64 `json:"lookup_hops_p50"`
	LookupHopsP90 float64 `json:"lookup_hops_p90"`
	// LookupPeersP50 is the median number of peers a lookup queried.
	LookupPeersP50 float64   `json:"lookup_peers_queried_p50"`
	LookupMsP50    float64   `json:"lookup_ms_p50"`
	LookupMsP99    float64   `json:"lookup_ms_p99"`
	LookupMs       Quantiles `json:"lookup_ms"`
	LookupFailures []string  `json:"lookup_failures,omitempty"`
	// RoundTripMs is the floor a lookup is measured against, taken in the
	// same phase under the same load: after every roundTripEvery-th
	// successful lookup the asking agent pings the agent it found twice
	// (transport.Host.Ping: a signed direct message and its signed
	// answer), and the second ping, on the connection and the cached
	// record the first left, is one sample. LookupRoundTripsP50 is
	// LookupMsP50 over RoundTripMs.P50: a lookup's cost in round trips,
	// which the load of N nodes on one machine's cores does not inflate.
	RoundTripMs         Quantiles `json:"round_trip_ms"`
	LookupRoundTripsP50 float64   `json:"lookup_round_trips_p50"`

	// FirstContacts counts first contacts (lookup, dial and a 2-party
	// signed offer to an agent neither side looked up or talked to
	// before), FirstContactCommitted those committed; times are propose to
	// committed at the initiator.
	FirstContacts         int       `json:"first_contacts"`
	FirstContactCommitted int       `json:"first_contact_committed"`
	FirstContactMsP50     float64   `json:"first_contact_ms_p50"`
	FirstContactMsP99     float64   `json:"first_contact_ms_p99"`
	FirstContactMs        Quantiles `json:"first_contact_ms"`

	// Sessions between random pairs and random groups of 3 to 5
	// (negotiated, every party accepts).
	SessionsPairs     int       `json:"sessions_pairs"`
	SessionsGroups    int       `json:"sessions_groups"`
	SessionsCommitted int       `json:"sessions_committed"`
	SessionsFailed    int       `json:"sessions_failed"`
	SessionMs         Quantiles `json:"session_ms"`
	FailReasons       []string  `json:"fail_reasons,omitempty"`
	// ChainsVerified counts chains that verified, hold no lock and hold
	// one record per committed session of their agent (first contacts
	// included).
	ChainsVerified int      `json:"chains_verified"`
	ChainsBroken   []string `json:"chains_broken,omitempty"`
	LocksLeft      int      `json:"locks_left"`

	// HeapMiBPerNode and GoroutinesPerNode: the process's live heap (after
	// a GC) and goroutines once settled, less what it had before the
	// first node, divided by Nodes.
	HeapMiBPerNode    float64 `json:"heap_mib_per_node"`
	GoroutinesPerNode float64 `json:"goroutines_per_node"`
	// MockLinksMiB is the heap of the mock network's links (one per pair
	// of hosts, a simulation artefact), left out of HeapMiBPerNode.
	MockLinksMiB float64 `json:"mock_links_mib,omitempty"`

	// Churn: agents that went down, and came back with a new host.
	ChurnDeparted int `json:"churn_departed"`
	ChurnReturned int `json:"churn_returned"`
	// DepartedProbes counts pings of departed agents during the churn;
	// DepartedProbesOK those that failed as they must: with
	// transport.ErrAgentNotFound or ErrUnreachable within LookupTimeout.
	DepartedProbes   int       `json:"departed_probes"`
	DepartedProbesOK int       `json:"departed_probes_ok"`
	DepartedProbeMs  Quantiles `json:"departed_probe_ms"`
	// DepartedFailures are the first probes that did not fail as they
	// must, with their error.
	DepartedFailures []string `json:"departed_failures,omitempty"`
	// ExpiredLookups counts lookups, one record lifetime after the last
	// departure, of agents that stayed away; ExpiredServed those that
	// still returned a record (must be 0).
	ExpiredLookups int `json:"expired_lookups"`
	ExpiredServed  int `json:"expired_records_served"`
	// ExpiredLookupErrors counts those lookups that failed otherwise than
	// "not found" (a timeout): no record served, but not a clean answer.
	ExpiredLookupErrors int `json:"expired_lookup_errors"`
	// LookupsInTransition counts lookups whose target went down or came
	// back while they ran (counted neither way).
	LookupsInTransition int `json:"lookups_in_transition"`

	ElapsedSec float64 `json:"elapsed_sec"`

	// NoChurn, in a run with churn, holds the figures of the same network
	// measured first without churn (same field names; its chain figures
	// are those of the one check after both phases).
	NoChurn *NetworkResult `json:"no_churn,omitempty"`
}

// Err is nil when every session committed (in both phases of a run with
// churn), every chain is sound, and departed agents failed as they must; else it wraps ErrSessionsFailed or
// ErrChainsBroken, or says what went wrong with the departed agents.
func (r *NetworkResult) Err() error {
	var errs []error
	if r.NoChurn != nil {
		if err := r.NoChurn.Err(); err != nil {
			errs = append(errs, fmt.Errorf("before the churn: %w", err))
		}
	}
	if r.SessionsFailed > 0 || r.FirstContactCommitted < r.FirstContacts {
		errs = append(errs, fmt.Errorf("%w: %d of %d sessions and %d of %d first contacts (%v)", ErrSessionsFailed,
			r.SessionsFailed, r.SessionsCommitted+r.SessionsFailed, r.FirstContacts-r.FirstContactCommitted, r.FirstContacts, r.FailReasons))
	}
	if len(r.ChainsBroken) > 0 || r.LocksLeft > 0 {
		errs = append(errs, fmt.Errorf("%w: %d broken, %d locks left: %v", ErrChainsBroken, len(r.ChainsBroken), r.LocksLeft, r.ChainsBroken))
	}
	if r.DepartedProbesOK < r.DepartedProbes {
		errs = append(errs, fmt.Errorf("bench: %d of %d probes of departed agents did not fail with not found or unreachable in time", r.DepartedProbes-r.DepartedProbesOK, r.DepartedProbes))
	}
	if r.ExpiredServed > 0 {
		errs = append(errs, fmt.Errorf("bench: %d of %d records of agents gone longer than the record lifetime were still served", r.ExpiredServed, r.ExpiredLookups))
	}
	return errors.Join(errs...)
}

// Agent states during a network run.
const (
	stateUp       int32 = iota // serving, its current record published
	stateDown                  // departed
	stateStarting              // stopping, or coming back with its new record not yet published
)

// netAgent is one agent of the network.
type netAgent struct {
	idx    int
	key    *sign.PrivateKey
	id     sign.AgentID
	ch     *chain.Chain
	stable bool // never goes down: sessions and first contacts use it

	state atomic.Int32
	// epoch counts state changes, so a lookup can tell that its target
	// changed state while it ran.
	epoch atomic.Int64

	mu     sync.Mutex
	node   *negotiate.Node
	lh     host.Host // its mock host (TransportMock)
	peerID string
	downAt time.Time
	// records counts the sessions it committed (expected chain length).
	records int
}

func (a *netAgent) current() (*negotiate.Node, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.node, a.peerID
}

// netRun is one run's agents and the shared pieces.
type netRun struct {
	opts   NetworkOptions
	agents []*netAgent
	store  *chain.Store
	mn     mocknet.Mocknet
	boot   []string
	terms  []byte
	prog   *setupReporter

	setupEnd   time.Time // the last node started
	linksBytes int64     // heap of the mock network's links
	// halfAt is when half the nodes had started: a record published
	// after it is held by peers that are still among the closest to its
	// key once the network is whole.
	halfAt  time.Time
	started atomic.Int64

	mu   sync.Mutex
	rng  *rand.Rand
	used map[[2]int]bool // ordered pairs that looked up or contacted each other
}

func (nw *netRun) randIntn(n int) int {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.rng.IntN(n)
}

// RunNetwork starts opts.Nodes agents in this process, bootstrapped
// through bootNodes well-known nodes, waits until the DHT settles,
// measures lookups, first contacts and sessions (with churn if asked),
// verifies every chain and returns the figures. An error means the run
// could not be set up; failed sessions are in the result (Err).
func RunNetwork(ctx context.Context, opts NetworkOptions) (*NetworkResult, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	begin := time.Now()
	scheme, _ := sign.SchemeByName(opts.Scheme)
	if opts.CPUProfile != nil {
		if err := pprof.StartCPUProfile(opts.CPUProfile); err != nil {
			return nil, fmt.Errorf("bench: cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if opts.GCPercent > 0 {
		defer debug.SetGCPercent(debug.SetGCPercent(opts.GCPercent))
	}
	if opts.Transport == TransportTCP {
		if err := ensureFDsFor(opts.Nodes, opts.MaxConnections); err != nil {
			return nil, err
		}
	}
	dir, cleanup, err := runDir(opts.Dir, "negotiate-network-")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	res := &NetworkResult{
		Nodes: opts.Nodes, Transport: opts.Transport, Store: StoreShared, Scheme: scheme.Name(), CPUs: runtime.NumCPU(),
		Seed: opts.Seed, BootNodes: bootNodes, MaxConnections: opts.MaxConnections, Churn: opts.Churn, RecordLifetimeSec: opts.RecordLifetime.Seconds(),
	}
	terms, err := protocol.EncodeTerms(map[string]any{"item": "network widget", "price": 990, "currency": "EUR"})
	if err != nil {
		return nil, fmt.Errorf("bench: encode terms: %w", err)
	}
	nw := &netRun{
		opts: opts, terms: terms, prog: newSetupReporter(opts.Progress),
		rng: rand.New(rand.NewPCG(opts.Seed, 0x6e65676f)), used: map[[2]int]bool{},
	}
	heap0 := int64(heap.Live())
	g0 := runtime.NumGoroutine()

	st, err := chain.CreateStore(filepath.Join(dir, "agents.db"))
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	nw.store = st
	defer nw.close()
	if err := nw.createAgents(scheme); err != nil {
		return nil, err
	}
	setup := time.Now()
	if err := nw.startAll(ctx); err != nil {
		return nil, err
	}
	nw.setupEnd = time.Now()
	res.SetupSec = round3(time.Since(setup).Seconds())
	settle := time.Now()
	res.Settled = nw.settle(ctx, res)
	res.SettleSec = round3(time.Since(settle).Seconds())
	heap1 := int64(heap.Live())
	res.MockLinksMiB = round3(float64(nw.linksBytes) / (1 << 20))
	res.HeapMiBPerNode = round3(float64(heap1-heap0-nw.linksBytes) / (1 << 20) / float64(opts.Nodes))
	res.GoroutinesPerNode = round3(float64(runtime.NumGoroutine()-g0) / float64(opts.Nodes))
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	if opts.Churn > 0 {
		// The same settled network is first measured without churn.
		base := *res
		base.Churn = 0
		nw.measureLookups(ctx, &base, false)
		nw.firstContacts(ctx, &base)
		nw.sessions(ctx, &base)
		res.NoChurn = &base
		nw.prog.reset("lookups", "first contacts", "sessions")
	}
	nw.measureLookups(ctx, res, opts.Churn > 0)
	nw.firstContacts(ctx, res)
	nw.sessions(ctx, res)
	nw.checkExpiry(ctx, res)
	nw.checkChains(ctx, res)
	res.ElapsedSec = round3(time.Since(begin).Seconds())
	if b := res.NoChurn; b != nil {
		// One chain check after both phases covers both.
		b.ChainsVerified, b.ChainsBroken, b.LocksLeft, b.ElapsedSec = res.ChainsVerified, res.ChainsBroken, res.LocksLeft, res.ElapsedSec
	}
	return res, ctx.Err()
}

// createAgents makes every agent's key and chain, and marks the churn
// victims: never a boot node.
func (nw *netRun) createAgents(scheme *sign.Scheme) error {
	n := nw.opts.Nodes
	nw.agents = make([]*netAgent, n)
	for i := range nw.agents {
		key, err := scheme.GenerateKey()
		if err != nil {
			return fmt.Errorf("bench: generate %s key: %w", scheme.Name(), err)
		}
		ch, err := nw.store.Create(key, time.Now().UnixMilli())
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		nw.agents[i] = &netAgent{idx: i, key: key, id: key.AgentID(), ch: ch, stable: true}
	}
	victims := int(nw.opts.Churn*float64(n) + 0.5)
	perm := nw.rng.Perm(n - bootNodes)
	for _, j := range perm[:min(victims, len(perm))] {
		nw.agents[bootNodes+j].stable = false
	}
	return nil
}

// startAll starts the boot nodes one by one, then every other node from
// all of them, networkStartParallel at a time.
func (nw *netRun) startAll(ctx context.Context) error {
	if nw.opts.Transport == TransportMock {
		nw.mn = mocknet.New()
		for _, a := range nw.agents {
			h, err := nw.newMockHost()
			if err != nil {
				return err
			}
			a.lh = h
		}
		before := int64(heap.Live())
		if err := nw.mn.LinkAll(); err != nil {
			return fmt.Errorf("bench: link mock hosts: %w", err)
		}
		// Hosts' background work can free more than the links take:
		// never report less than nothing.
		nw.linksBytes = max(int64(heap.Live())-before, 0)
	}
	total := len(nw.agents)
	if err := nw.startNode(ctx, nw.agents[0], nil); err != nil {
		return err
	}
	nw.prog.step("nodes", total)
	first, _ := nw.agents[0].current()
	boot := first.Host().Addrs()[:1]
	for i := 1; i < bootNodes; i++ {
		if err := nw.startNode(ctx, nw.agents[i], boot); err != nil {
			return err
		}
		nw.prog.step("nodes", total)
	}
	for i := 1; i < bootNodes; i++ {
		n, _ := nw.agents[i].current()
		boot = append(boot, n.Host().Addrs()[:1]...)
	}
	nw.boot = boot
	sem := make(chan struct{}, networkStartParallel)
	errs := make([]error, total)
	var wg sync.WaitGroup
	for i := bootNodes; i < total; i++ {
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = nw.startNode(ctx, nw.agents[i], boot)
			if nw.started.Add(1) == int64(total/2-bootNodes) {
				nw.mu.Lock()
				nw.halfAt = time.Now()
				nw.mu.Unlock()
			}
			nw.prog.step("nodes", total)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// startNode starts a's node, on a.lh if set (mock), else on a new mock
// host linked to every live one (mock) or on a new TCP port.
func (nw *netRun) startNode(ctx context.Context, a *netAgent, boot []string) error {
	hc := transport.Config{Bootstrap: boot, Logger: nw.opts.Logger, RecordLifetime: nw.opts.RecordLifetime}
	if nw.opts.Transport == TransportMock {
		a.mu.Lock()
		lh := a.lh
		a.mu.Unlock()
		if lh == nil {
			h, err := nw.newMockHost()
			if err != nil {
				return err
			}
			for _, b := range nw.agents {
				b.mu.Lock()
				if b != a && b.lh != nil {
					if _, err := nw.mn.LinkPeers(h.ID(), b.lh.ID()); err != nil {
						b.mu.Unlock()
						return fmt.Errorf("bench: link mock hosts: %w", err)
					}
				}
				b.mu.Unlock()
			}
			lh = h
		}
		hc.Libp2p = lh
		a.mu.Lock()
		a.lh = lh
		a.mu.Unlock()
	} else {
		hc.Listen = listenAddrs(TransportTCP)
		hc.MaxConnections = nw.opts.MaxConnections
	}
	cfg := negotiate.NodeConfig{
		Key: a.key, Chain: a.ch, Policy: negotiate.AcceptAll, Logger: nw.opts.Logger, Host: hc,
		ResolveInitial: 500 * time.Millisecond, ResolveMax: 2 * time.Second,
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	n, err := negotiate.StartNode(sctx, cfg)
	if err != nil {
		return fmt.Errorf("bench: start node %d: %w", a.idx, err)
	}
	a.mu.Lock()
	a.node = n
	a.peerID = n.Host().PeerID().String()
	a.mu.Unlock()
	return nil
}

// stopNode takes a down: its node stops, its libp2p host closes, and (mock)
// its links go, so that dials to it fail at once as dials to a closed
// port do.
func (nw *netRun) stopNode(a *netAgent) {
	// In transition while it closes: a probe must not take it for
	// departed while its node still answers.
	a.state.Store(stateStarting)
	a.epoch.Add(1)
	defer func() {
		a.state.Store(stateDown)
		a.epoch.Add(1)
	}()
	a.mu.Lock()
	n, lh := a.node, a.lh
	a.node, a.lh = nil, nil
	a.downAt = time.Now()
	a.mu.Unlock()
	if n != nil {
		n.Close()
	}
	if lh != nil {
		for _, b := range nw.agents {
			b.mu.Lock()
			if b.lh != nil {
				nw.mn.UnlinkPeers(lh.ID(), b.lh.ID())
			}
			b.mu.Unlock()
		}
		lh.Close()
	}
}

// close stops every node and the store.
func (nw *netRun) close() {
	for _, a := range nw.agents {
		if a == nil {
			continue
		}
		a.mu.Lock()
		n := a.node
		a.node = nil
		a.mu.Unlock()
		if n != nil {
			n.Close()
		}
	}
	if nw.mn != nil {
		nw.mn.Close()
	}
	if nw.store != nil {
		nw.store.Close()
	}
}

// settle waits until the DHT settled: every node published its record
// after half the nodes had started (so the peers closest to its key in
// the whole network hold it; the nodes that had not are asked to), and
// the summed routing-table sizes grew by less than settleGrowth over
// settleQuiet samples settlePoll apart. It reports false if
// SettleTimeout ran out first.
func (nw *netRun) settle(ctx context.Context, res *NetworkResult) bool {
	deadline := time.Now().Add(nw.opts.SettleTimeout)
	quiet, prev := 0, -1
	reported := 0
	nw.mu.Lock()
	half := nw.halfAt
	nw.mu.Unlock()
	// A node that published last before half the network had started
	// republishes on its own schedule, which doubles its interval (30 s,
	// 1 min, 2 min, 4 min…): it would get there within minutes. Ask it
	// now instead of waiting for it.
	for _, a := range nw.agents {
		if n, _ := a.current(); n != nil {
			if at, _ := n.Host().Published(); at.Before(half) {
				n.Host().Republish()
			}
		}
	}
	for {
		published, total, minRT := 0, 0, -1
		conns, maxConns := 0, 0
		for _, a := range nw.agents {
			n, _ := a.current()
			c := len(n.Host().Libp2p().Network().Conns())
			conns += c
			maxConns = max(maxConns, c)
			if at, err := n.Host().Published(); !at.IsZero() && err == nil && !at.Before(half) {
				published++
			}
			rt := n.Host().RoutingTableSize()
			total += rt
			if minRT < 0 || rt < minRT {
				minRT = rt
			}
		}
		for ; reported < published; reported++ {
			nw.prog.step("settle", len(nw.agents))
		}
		res.RoutingTableMean = round3(float64(total) / float64(len(nw.agents)))
		res.RoutingTableMin = minRT
		res.ConnectionsMean = round3(float64(conns) / float64(len(nw.agents)))
		res.ConnectionsMax = maxConns
		res.SettleUnpublished = len(nw.agents) - published
		if prev > 0 {
			res.SettleGrowth = round3(float64(total-prev) / float64(prev))
		}
		if published == len(nw.agents) && prev >= 0 && float64(total-prev) <= settleGrowth*float64(prev) {
			quiet++
		} else {
			quiet = 0
		}
		prev = total
		if quiet >= settleQuiet {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(settlePoll):
		}
	}
}

// lookupSample is one measured lookup of a live agent.
type lookupSample struct {
	ok      bool
	took    time.Duration
	hops    int
	queried int
	err     error
}

// liveSource picks a random agent that is up.
func (nw *netRun) liveSource(stableOnly bool) *netAgent {
	for {
		a := nw.agents[nw.randIntn(len(nw.agents))]
		if a.state.Load() == stateUp && (a.stable || !stableOnly) {
			return a
		}
	}
}

// measureLookups runs the lookups (and the churn, if any, meanwhile).
func (nw *netRun) measureLookups(ctx context.Context, res *NetworkResult, churn bool) {
	var churnDone atomic.Bool
	churnDone.Store(!churn)
	var wg sync.WaitGroup
	if churn {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer churnDone.Store(true)
			nw.churn(ctx, res)
		}()
	}
	var mu sync.Mutex
	var samples []lookupSample
	var probes, rtts []time.Duration
	issued := 0
	next := func() bool {
		mu.Lock()
		if ctx.Err() != nil || (issued >= nw.opts.Lookups && churnDone.Load()) {
			mu.Unlock()
			return false
		}
		issued++
		extra := issued > nw.opts.Lookups
		mu.Unlock()
		if extra {
			// Lookups are done, the churn is not: keep looking, slowly.
			time.Sleep(churnLookupPause)
		}
		return true
	}
	for w := 0; w < nw.opts.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next() {
				from := nw.liveSource(false)
				to := nw.agents[nw.randIntn(len(nw.agents))]
				if to == from {
					continue
				}
				state, epoch := to.state.Load(), to.epoch.Load()
				fromNode, _ := from.current()
				if fromNode == nil || state == stateStarting {
					mu.Lock()
					res.LookupsInTransition++
					mu.Unlock()
					continue
				}
				nw.mu.Lock()
				nw.used[[2]int{from.idx, to.idx}] = true
				nw.mu.Unlock()
				if state == stateDown {
					ok, took, perr := nw.probeDeparted(ctx, fromNode, to)
					mu.Lock()
					if to.epoch.Load() != epoch {
						res.LookupsInTransition++
					} else {
						res.DepartedProbes++
						if ok {
							res.DepartedProbesOK++
						} else if len(res.DepartedFailures) < maxFailReasons {
							res.DepartedFailures = append(res.DepartedFailures, perr.Error())
						}
						probes = append(probes, took)
					}
					mu.Unlock()
					continue
				}
				s := nw.lookupOnce(ctx, fromNode, to)
				mu.Lock()
				if to.epoch.Load() != epoch || from.state.Load() != stateUp {
					res.LookupsInTransition++
				} else {
					samples = append(samples, s)
					nw.prog.step("lookups", nw.opts.Lookups)
				}
				floor := s.ok && len(samples)%roundTripEvery == 0
				mu.Unlock()
				if floor {
					if d, ok := nw.roundTrip(ctx, fromNode, to); ok {
						mu.Lock()
						rtts = append(rtts, d)
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	var took []time.Duration
	var hops, queried []float64
	for _, s := range samples {
		res.Lookups++
		if !s.ok {
			if len(res.LookupFailures) < 3*maxFailReasons {
				res.LookupFailures = append(res.LookupFailures, s.err.Error())
			}
			continue
		}
		res.LookupSucceeded++
		took = append(took, s.took)
		hops = append(hops, float64(s.hops))
		queried = append(queried, float64(s.queried))
	}
	if res.Lookups > 0 {
		res.LookupSuccessRate = round3(float64(res.LookupSucceeded) / float64(res.Lookups))
	}
	res.LookupMs = quantiles(took)
	res.LookupMsP50, res.LookupMsP99 = res.LookupMs.P50, res.LookupMs.P99
	res.LookupHopsP50, res.LookupHopsP90 = rankF(hops, 0.5), rankF(hops, 0.9)
	res.LookupPeersP50 = rankF(queried, 0.5)
	res.DepartedProbeMs = quantiles(probes)
	res.RoundTripMs = quantiles(rtts)
	if res.RoundTripMs.P50 > 0 {
		res.LookupRoundTripsP50 = round3(res.LookupMsP50 / res.RoundTripMs.P50)
	}
}

// lookupOnce looks to up from node (DHT only, no cache) and follows the
// DHT's query events to count hops.
func (nw *netRun) lookupOnce(ctx context.Context, from *negotiate.Node, to *netAgent) lookupSample {
	lctx, cancel := context.WithTimeout(ctx, nw.opts.LookupTimeout)
	defer cancel()
	ectx, events := routing.RegisterForQueryEvents(lctx)
	depth := map[peer.ID]int{}
	var answered []peer.ID
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range events {
			switch ev.Type {
			case routing.SendingQuery:
				if _, ok := depth[ev.ID]; !ok {
					depth[ev.ID] = 1 // from the asking node's own table
				}
			case routing.PeerResponse:
				d, ok := depth[ev.ID]
				if !ok {
					d = 1
					depth[ev.ID] = d
				}
				answered = append(answered, ev.ID)
				for _, ai := range ev.Responses {
					if ai == nil {
						continue
					}
					if old, ok := depth[ai.ID]; !ok || old > d+1 {
						depth[ai.ID] = d + 1
					}
				}
			}
		}
	}()
	start := time.Now()
	info, err := from.Host().Lookup(ectx, to.id)
	took := time.Since(start)
	cancel()
	<-done
	s := lookupSample{took: took, queried: len(answered), err: err}
	if err == nil {
		_, pid := to.current()
		if info.PeerID != pid {
			s.err = fmt.Errorf("lookup of %s returned a stale record (peer %s, now %s)", to.id.Short(), info.PeerID, pid)
			return s
		}
		s.ok = true
	} else {
		s.err = fmt.Errorf("lookup of agent %d (%s) from %s, %d peers asked: %w", to.idx, to.id.Short(), from.AgentID().Short(), len(answered), err)
		if n, _ := to.current(); n != nil {
			at, _ := n.Host().Published()
			s.err = fmt.Errorf("%w (it published %d times, last %.0f s ago, the last node started %.0f s ago; its routing table holds %d)", s.err,
				n.Host().Stats().Publishes, time.Since(at).Seconds(), time.Since(nw.setupEnd).Seconds(), n.Host().RoutingTableSize())
		}
		return s
	}
	if len(answered) > 0 {
		closest := kb.SortClosestPeers(answered, kb.ConvertKey(transport.AgentRecordKey(to.id)))
		s.hops = depth[closest[0]]
	}
	return s
}

// roundTrip pings to from twice and returns the second ping's round
// trip (connected, record cached); ok is false if either failed, as a
// departing agent's may.
func (nw *netRun) roundTrip(ctx context.Context, from *negotiate.Node, to *netAgent) (time.Duration, bool) {
	pctx, cancel := context.WithTimeout(ctx, nw.opts.LookupTimeout)
	defer cancel()
	if _, err := from.Host().Ping(pctx, to.id); err != nil {
		return 0, false
	}
	d, err := from.Host().Ping(pctx, to.id)
	return d, err == nil
}

// probeDeparted pings a departed agent: it must fail with "agent not
// found" or "unreachable" within the lookup timeout.
func (nw *netRun) probeDeparted(ctx context.Context, from *negotiate.Node, to *netAgent) (bool, time.Duration, error) {
	pctx, cancel := context.WithTimeout(ctx, nw.opts.LookupTimeout)
	defer cancel()
	start := time.Now()
	_, err := from.Host().Ping(pctx, to.id)
	took := time.Since(start)
	ok := err != nil && (errors.Is(err, transport.ErrAgentNotFound) || errors.Is(err, transport.ErrUnreachable)) &&
		took <= nw.opts.LookupTimeout+time.Second
	if !ok {
		if err == nil {
			err = errors.New("the ping was answered")
		}
		err = fmt.Errorf("ping of departed agent %d (%s) from %s after %v: %w", to.idx, to.id.Short(), from.AgentID().Short(), took.Round(time.Millisecond), err)
	}
	return ok, took, err
}

// churn takes the victims down one by one, then brings half of them back
// on new hosts.
func (nw *netRun) churn(ctx context.Context, res *NetworkResult) {
	var victims []*netAgent
	for _, a := range nw.agents {
		if !a.stable {
			victims = append(victims, a)
		}
	}
	total := len(victims) + len(victims)/2
	for _, a := range victims {
		if ctx.Err() != nil {
			return
		}
		nw.stopNode(a)
		res.ChurnDeparted++
		nw.prog.step("churn", total)
		time.Sleep(churnStep)
	}
	for _, a := range victims[:len(victims)/2] {
		if ctx.Err() != nil {
			return
		}
		a.state.Store(stateStarting)
		a.epoch.Add(1)
		if err := nw.startNode(ctx, a, nw.boot); err != nil {
			if nw.opts.Logger != nil {
				nw.opts.Logger.Warn("churn: restart", "agent", a.id.Short(), "err", err)
			}
			a.state.Store(stateDown)
			a.epoch.Add(1)
			continue
		}
		n, _ := a.current()
		for {
			if at, err := n.Host().Published(); !at.IsZero() && err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		a.state.Store(stateUp)
		a.epoch.Add(1)
		res.ChurnReturned++
		nw.prog.step("churn", total)
	}
}

// pickFree picks k distinct stable agents that are not in busy and marks
// them busy; the caller holds nw.mu.
func (nw *netRun) pickFree(k int, busy map[int]bool, fresh bool) []*netAgent {
	var free []*netAgent
	for _, a := range nw.agents {
		if a.stable && !busy[a.idx] {
			free = append(free, a)
		}
	}
	if len(free) < k {
		return nil
	}
	for tries := 0; tries < 1000; tries++ {
		nw.rng.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
		pick := free[:k]
		if fresh && (nw.used[[2]int{pick[0].idx, pick[1].idx}] || nw.used[[2]int{pick[1].idx, pick[0].idx}]) {
			continue
		}
		for _, a := range pick {
			busy[a.idx] = true
		}
		return append([]*netAgent(nil), pick...)
	}
	return nil
}

// firstContacts measures signed offers between pairs of stable agents
// that never looked each other up nor talked, two at a time.
func (nw *netRun) firstContacts(ctx context.Context, res *NetworkResult) {
	var took []time.Duration
	var mu sync.Mutex
	busy := map[int]bool{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 2)
	for i := 0; i < nw.opts.FirstContacts && ctx.Err() == nil; i++ {
		nw.mu.Lock()
		pair := nw.pickFree(2, busy, true)
		if pair != nil {
			nw.used[[2]int{pair[0].idx, pair[1].idx}] = true
			nw.used[[2]int{pair[1].idx, pair[0].idx}] = true
		}
		nw.mu.Unlock()
		if pair == nil {
			break
		}
		res.FirstContacts++
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, err := nw.runSession(ctx, pair, true)
			mu.Lock()
			if err != nil {
				if len(res.FailReasons) < maxFailReasons {
					res.FailReasons = append(res.FailReasons, "first contact: "+err.Error())
				}
			} else {
				res.FirstContactCommitted++
				took = append(took, d)
			}
			nw.prog.step("first contacts", nw.opts.FirstContacts)
			mu.Unlock()
			nw.mu.Lock()
			delete(busy, pair[0].idx)
			delete(busy, pair[1].idx)
			nw.mu.Unlock()
		}()
	}
	wg.Wait()
	res.FirstContactMs = quantiles(took)
	res.FirstContactMsP50, res.FirstContactMsP99 = res.FirstContactMs.P50, res.FirstContactMs.P99
}

// sessions runs the countersigned sessions: even ones between a random
// pair, odd ones in a random group of 3 to 5, Concurrency at once, no
// agent in two at a time (its chain lock admits one).
func (nw *netRun) sessions(ctx context.Context, res *NetworkResult) {
	var took []time.Duration
	var mu sync.Mutex
	busy := map[int]bool{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, nw.opts.Concurrency)
	for i := 0; i < nw.opts.Sessions && ctx.Err() == nil; i++ {
		k := 2
		if i%2 == 1 {
			k = 3 + nw.randIntn(3)
		}
		sem <- struct{}{}
		var group []*netAgent
		for group == nil && ctx.Err() == nil {
			nw.mu.Lock()
			group = nw.pickFree(k, busy, false)
			nw.mu.Unlock()
			if group == nil {
				time.Sleep(10 * time.Millisecond) // wait for a session to end
			}
		}
		if group == nil {
			<-sem
			break
		}
		if k == 2 {
			res.SessionsPairs++
		} else {
			res.SessionsGroups++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, err := nw.runSession(ctx, group, false)
			mu.Lock()
			if err != nil {
				res.SessionsFailed++
				if len(res.FailReasons) < maxFailReasons {
					res.FailReasons = append(res.FailReasons, err.Error())
				}
			} else {
				res.SessionsCommitted++
				took = append(took, d)
			}
			nw.prog.step("sessions", nw.opts.Sessions)
			mu.Unlock()
			nw.mu.Lock()
			for _, a := range group {
				delete(busy, a.idx)
			}
			nw.mu.Unlock()
		}()
	}
	wg.Wait()
	res.SessionMs = quantiles(took)
}

// runSession runs one session of group (the first proposes) and waits
// until it committed at every party; it returns the time from propose to
// committed at the initiator.
func (nw *netRun) runSession(ctx context.Context, group []*netAgent, offer bool) (time.Duration, error) {
	init, _ := group[0].current()
	var others []sign.AgentID
	for _, a := range group[1:] {
		others = append(others, a.id)
	}
	start := time.Now()
	p, err := init.Propose(ctx, others, nw.terms, negotiate.ProposeOptions{Timeout: nw.opts.SessionTimeout, Offer: offer})
	if err != nil {
		return 0, fmt.Errorf("propose to %d parties: %w", len(others), err)
	}
	wctx, cancel := context.WithTimeout(ctx, nw.opts.SessionTimeout+5*time.Second)
	defer cancel()
	o, err := p.Wait(wctx)
	took := time.Since(start)
	if err == nil {
		err = o.Err()
	}
	if err != nil {
		return 0, fmt.Errorf("session %s of %d parties: %w", p.ID(), len(group), err)
	}
	for _, a := range group[1:] {
		n, _ := a.current()
		po, err := n.Wait(wctx, p.ID())
		if err == nil {
			err = po.Err()
		}
		if err == nil && po.RecordHash != o.RecordHash {
			err = fmt.Errorf("record %x, the initiator's %x", po.RecordHash, o.RecordHash)
		}
		if err != nil {
			return 0, fmt.Errorf("session %s: party %s: %w", p.ID(), a.id.Short(), err)
		}
	}
	for _, a := range group {
		a.mu.Lock()
		a.records++
		a.mu.Unlock()
	}
	return took, nil
}

// checkExpiry waits until a record lifetime passed since the last
// departure of an agent that stayed away, then looks each such agent up
// from a random live agent: none may be found.
func (nw *netRun) checkExpiry(ctx context.Context, res *NetworkResult) {
	var gone []*netAgent
	var last time.Time
	for _, a := range nw.agents {
		if a.state.Load() == stateDown {
			gone = append(gone, a)
			a.mu.Lock()
			if a.downAt.After(last) {
				last = a.downAt
			}
			a.mu.Unlock()
		}
	}
	if len(gone) == 0 {
		return
	}
	wait := time.Until(last.Add(nw.opts.RecordLifetime + expiryMargin))
	for wait > 0 && ctx.Err() == nil {
		nw.prog.step("expiry", int(nw.opts.RecordLifetime/time.Second)+1)
		step := min(wait, time.Second)
		time.Sleep(step)
		wait -= step
	}
	for _, a := range gone {
		if ctx.Err() != nil {
			return
		}
		from, _ := nw.liveSource(true).current()
		lctx, cancel := context.WithTimeout(ctx, nw.opts.LookupTimeout)
		info, err := from.Host().Lookup(lctx, a.id)
		cancel()
		res.ExpiredLookups++
		switch {
		case err == nil:
			res.ExpiredServed++
			if len(res.DepartedFailures) < 2*maxFailReasons {
				res.DepartedFailures = append(res.DepartedFailures, fmt.Sprintf("record of agent %d (%s), gone for a record lifetime, served: expires %s",
					a.idx, a.id.Short(), time.UnixMilli(info.Expires).UTC().Format(time.RFC3339Nano)))
			}
		case !errors.Is(err, transport.ErrAgentNotFound):
			res.ExpiredLookupErrors++
			if len(res.DepartedFailures) < 2*maxFailReasons {
				res.DepartedFailures = append(res.DepartedFailures, fmt.Sprintf("lookup of agent %d (%s), gone for a record lifetime: %v", a.idx, a.id.Short(), err))
			}
		}
	}
}

// checkChains stops every node and verifies every chain: it verifies,
// holds no lock and holds one record per committed session of its agent.
func (nw *netRun) checkChains(ctx context.Context, res *NetworkResult) {
	for _, a := range nw.agents {
		a.mu.Lock()
		n := a.node
		a.node = nil
		a.mu.Unlock()
		if n != nil {
			n.Close()
		}
	}
	for i, a := range nw.agents {
		if ctx.Err() != nil {
			return
		}
		name := fmt.Sprintf("agent %d (%s)", i, a.id.Short())
		verr := a.ch.Verify(chain.VerifyOptions{CheckPayload: engine.CheckAgreementEntry, Agent: a.id})
		l, locked := a.ch.Lock()
		switch {
		case verr != nil:
			res.ChainsBroken = append(res.ChainsBroken, fmt.Sprintf("%s: verify: %v", name, verr))
		case locked:
			res.LocksLeft++
			res.ChainsBroken = append(res.ChainsBroken, fmt.Sprintf("%s: lock left by session %s", name, l.Session))
		case a.ch.Head().Seq != uint64(a.records):
			res.ChainsBroken = append(res.ChainsBroken, fmt.Sprintf("%s: %d records, %d sessions committed", name, a.ch.Head().Seq, a.records))
		default:
			res.ChainsVerified++
		}
		nw.prog.step("chains", len(nw.agents))
	}
}

// rankF is the nearest-rank quantile of xs (0 if empty).
func rankF(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// ParseSizes parses a network size or a comma-separated sweep of sizes
// ("1000", "50,100,250").
func ParseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &n); err != nil || n <= 0 {
			return nil, fmt.Errorf("%w: network size %q: want a positive number of agents, or a list like 50,100,250", ErrBadOptions, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// ParseChurn parses a churn share: "10%" or "0.1".
func ParseChurn(s string) (float64, error) {
	t := strings.TrimSpace(s)
	pct := strings.HasSuffix(t, "%")
	t = strings.TrimSuffix(t, "%")
	var x float64
	if _, err := fmt.Sscan(t, &x); err != nil {
		return 0, fmt.Errorf("%w: churn %q: want a share such as 10%% or 0.1", ErrBadOptions, s)
	}
	if pct {
		x /= 100
	}
	if x < 0 || x > MaxChurn {
		return 0, fmt.Errorf("%w: churn %q: use 0 to %.0f%%", ErrBadOptions, s, MaxChurn*100)
	}
	return x, nil
}
