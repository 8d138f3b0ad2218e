package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"sync"
	"time"

	"github.com/negotiate-dev/negotiate/internal/hooks"
	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/negotiate/transport"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Defaults of Options.
const (
	// DefaultParties is a two-party session, the common case.
	DefaultParties = 2
	// DefaultSessions keeps a default run to a few seconds.
	DefaultSessions = 50
	// DefaultConcurrency runs one group at a time: pure latency.
	DefaultConcurrency = 1
	// DefaultSessionTimeout is each session's deadline: far above any
	// healthy loopback session, so a timeout means something is stuck.
	DefaultSessionTimeout = 20 * time.Second
	// DefaultGCPercent is the Go GC percent `negotiate bench` and
	// scripts/plot run with (Options.GCPercent): with 200 nodes in one
	// process, 400 against Go's 100 gave 1,239-1,297 against 935-1,042
	// signed offers/s in alternating runs.
	DefaultGCPercent = 400
)

// Limits of Options, each with its reason.
const (
	// MaxParties is the protocol's own cap on parties per session.
	MaxParties = protocol.MaxParties
	// MaxNodes bounds the nodes one run starts (Parties x Pairs): each is a
	// libp2p host with a DHT, dozens of goroutines and sockets.
	MaxNodes = 256
	// MaxSessions bounds one run, so a typo cannot run for hours.
	MaxSessions = 1_000_000
	// MaxConcurrency bounds the groups busy at once (it cannot usefully
	// exceed the number of groups, which MaxNodes bounds).
	MaxConcurrency = MaxNodes / 2
)

// Internal constants of the measurement.
const (
	// framesPerSessionPerPeer is the most session frames one agent sends
	// another in an accepted one-round session (propose, preflight, ready,
	// commit: initiator to each participant). Pacing budgets with it.
	framesPerSessionPerPeer = 4
	// paceSafety keeps the paced rate under the receiver's limit so timer
	// jitter never empties its bucket.
	paceSafety = 0.9
	// benchFramesPerSecond is the per-peer inbound frame limit of bench
	// nodes: agents that trade with each other all day are trusted peers,
	// so the bench raises the default (transport.PeerFramesPerSecond), which
	// is sized for strangers.
	benchFramesPerSecond = 2000
	// floorWriteSamples, floorRoundTrips and floorCryptoSamples are the
	// samples the floor unit's medians are taken over.
	floorWriteSamples  = 40
	floorRoundTrips    = 200
	floorCryptoSamples = 200
	// floorMessageBytes is the size of the round-trip and signed messages:
	// about one session frame.
	floorMessageBytes = 512
	// resolveTimeout bounds the wait until every agent of a group resolves
	// every other one through the DHT.
	resolveTimeout = 60 * time.Second
	// bootNodes is how many nodes the others bootstrap from.
	bootNodes = 3
	// startParallel is how many nodes start at once.
	startParallel = 4
	// maxFailReasons bounds the failure reasons kept in a Result.
	maxFailReasons = 5
	// echoProtocol is the stream protocol of the round-trip floor; it is
	// registered on the bench's own hosts only.
	echoProtocol = "/negotiate-bench/echo/1.0.0"
)

// Errors callers branch on.
var (
	// ErrBadOptions: an option is out of range; nothing was started.
	ErrBadOptions = errors.New("bench: bad options")
	// ErrSessionsFailed: at least one measured session did not commit.
	ErrSessionsFailed = errors.New("bench: sessions failed")
	// ErrChainsBroken: a chain failed verification, kept a lock, or does
	// not hold the records of the sessions it committed.
	ErrChainsBroken = errors.New("bench: chains broken after the run")
)

// Options configures Run. Zero values get the documented defaults.
type Options struct {
	// Parties per session, initiator included (default 2, 2..MaxParties).
	Parties int
	// Sessions to measure (default 50); one warm-up session per group runs
	// before them and is not counted.
	Sessions int
	// Concurrency is how many groups run a session at once (default 1).
	Concurrency int
	// Pairs is the number of groups of Parties agents (default
	// Concurrency). Sessions are spread round-robin over the groups; within
	// a group they run one after another, since an agent's chain lock
	// admits one signing session at a time.
	Pairs int
	// Scheme names the signature scheme of every agent (default ed25519).
	Scheme string
	// Progress, if set, is called after each measured session.
	Progress func(done, total int)
	// SetupProgress, if set, is called as the run gets ready: stage "nodes"
	// as each node starts, "peers" as each group has resolved its agents
	// through the DHT, "warm-up" after each group's warm-up session. Calls
	// are serialized.
	SetupProgress func(stage string, done, total int)
	// Dir holds the chain files; empty means a temporary directory that is
	// removed afterwards.
	Dir string
	// SessionTimeout is each session's deadline (default 20 s).
	SessionTimeout time.Duration
	// NoPace turns off pacing. By default each group starts sessions no
	// faster than the receivers' per-peer frame limit
	// (transport.PeerFramesPerSecond) admits; without pacing, frames over
	// the limit are dropped and sessions stall or abort.
	NoPace bool
	// Logger receives the nodes' logs; nil discards them.
	Logger *slog.Logger
	// Store is where the agents' chains live: StoreShared (default) puts
	// every agent's chain in one durable bbolt file, so the writes of all
	// agents share transactions (group commit), as a process hosting many
	// agents would; StorePerAgent gives each agent its own file, as
	// separate `negotiate node` processes on one disk would.
	Store string
	// CPUProfile, if set, receives a CPU profile (pprof format) of the
	// measured sessions only: node start-up, warm-up and the checks after
	// the run are left out.
	CPUProfile io.Writer
	// MemProfile and MemProfileStart, if set, receive the allocation
	// profile (pprof "allocs") after and before the measured sessions; `go
	// tool pprof -sample_index=alloc_space -diff_base START AFTER` then shows
	// what the measured sessions allocated.
	MemProfile, MemProfileStart io.Writer
	// Transport is the libp2p transport the nodes listen on: TransportTCP
	// (default: TCP with Noise/TLS and yamux), TransportQUIC, or
	// TransportBoth (libp2p then prefers QUIC).
	Transport string
	// Offer runs every session as a signed offer (negotiate.ProposeOptions
	// Offer): the initiator signs first and a 2-party session commits in
	// one round trip; the default is the negotiated flow (propose, accept,
	// preflight, Readys).
	Offer bool
	// GCPercent, if > 0, is the Go GC percent for the run (runtime/debug
	// SetGCPercent; the old value is restored after); 0 leaves the
	// process's own (GOGC, default 100). `negotiate bench` and scripts/plot
	// use DefaultGCPercent: a process hosting many agents has a large heap,
	// and collecting it less often trades memory for CPU.
	GCPercent int
	// Trace records when each node passed each hooks.TracePoint of
	// every measured session, and Result.Timeline gives the median
	// timeline of the sessions that passed them in the most common order.
	Trace bool
}

// Store and transport choices of Options.
const (
	StoreShared   = "shared"
	StorePerAgent = "per-agent"
	TransportTCP  = "tcp"
	TransportQUIC = "quic"
	TransportBoth = "both"
)

// listenAddrs are the loopback listen addresses of a transport choice.
func listenAddrs(choice string) []string {
	switch choice {
	case TransportQUIC:
		return []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	case TransportBoth:
		return transport.DefaultListenAddrs
	}
	return []string{"/ip4/127.0.0.1/tcp/0"}
}

// Quantiles summarises durations in milliseconds.
type Quantiles struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

// Floor is the floor unit: the cost of the primitive steps a session
// cannot avoid, measured on the same machine in the same run (medians).
type Floor struct {
	// ChainWriteUs is one durable chain.Apply of an append (one bbolt
	// transaction with its fsyncs).
	ChainWriteUs float64 `json:"chain_write_us"`
	// RoundTripUs is one request and answer of floorMessageBytes on an
	// open libp2p stream between two of the run's hosts.
	RoundTripUs float64 `json:"round_trip_us"`
	// SignUs and VerifyUs are one signature and one verification of a
	// floorMessageBytes message with the run's scheme.
	SignUs   float64 `json:"sign_us"`
	VerifyUs float64 `json:"verify_us"`
	// SumUs is the floor unit: the sum of the four parts.
	SumUs float64 `json:"sum_us"`
}

// Result is what a run measured. Durations are in milliseconds unless the
// field name says otherwise.
type Result struct {
	Parties     int    `json:"parties"`
	Sessions    int    `json:"sessions"`
	Concurrency int    `json:"concurrency"`
	Pairs       int    `json:"pairs"`
	Scheme      string `json:"scheme"`
	Store       string `json:"store"`
	Transport   string `json:"transport"`
	// Offer: the sessions were signed offers, not negotiated.
	Offer bool `json:"offer"`
	Nodes int  `json:"nodes"`
	CPUs  int  `json:"cpus"`
	// WritesPerCommit is, with the shared store, the durable writes of the
	// measured sessions divided by the journal writes (each one fdatasync)
	// they took: the group-commit factor. Zero with one file per agent.
	WritesPerCommit float64 `json:"writes_per_commit,omitempty"`
	// WritesPerFlush is, with the shared store, the durable writes divided
	// by the times the journal was applied to the bbolt file (one synced
	// bbolt transaction each). Zero when no flush ran during the sessions.
	WritesPerFlush float64 `json:"writes_per_flush,omitempty"`
	// GCPercent is the Go GC percent the run used; HeapSysMiB the heap
	// memory the process had from the OS at the end of the measured
	// sessions (what a higher GC percent costs).
	GCPercent  int     `json:"gc_percent"`
	HeapSysMiB float64 `json:"heap_sys_mib"`
	// Timeline (Options.Trace) is the median timeline of the measured
	// sessions that passed the nodes' trace points in the most common
	// order; TimelineSessions is how many did.
	Timeline         []TimelineStep `json:"timeline,omitempty"`
	TimelineSessions int            `json:"timeline_sessions,omitempty"`

	Committed   int      `json:"committed"`
	Failed      int      `json:"failed"`
	FailReasons []string `json:"fail_reasons,omitempty"`

	SetupSec       float64 `json:"setup_sec"`
	ElapsedSec     float64 `json:"elapsed_sec"`
	SessionsPerSec float64 `json:"sessions_per_sec"`
	// Paced tells whether sessions were paced to the per-peer frame limit;
	// PaceCapPerPair is the sessions/s one group could then reach at most.
	Paced          bool    `json:"paced"`
	PaceCapPerPair float64 `json:"pace_cap_per_pair"`

	// Latency is propose to committed durably on every party's chain
	// (the last party's commit event).
	Latency Quantiles `json:"latency_ms"`
	// Initiator is propose to committed at the initiator (Wait returned).
	Initiator Quantiles `json:"initiator_ms"`
	// Negotiation is propose to the initiator's signing phase (every party
	// accepted and the initiator's lock and vote are durable).
	Negotiation Quantiles `json:"negotiation_ms"`
	// Signing is the initiator's signing phase to its commit event.
	Signing Quantiles `json:"signing_ms"`

	Floor         Floor   `json:"floor"`
	P50FloorRatio float64 `json:"p50_floor_ratio"`

	// ChainsVerified counts agent chains that verified after the run.
	ChainsVerified int      `json:"chains_verified"`
	ChainsBroken   []string `json:"chains_broken,omitempty"`
	LocksLeft      int      `json:"locks_left"`
	// RateLimitedFrames counts inbound frames the hosts dropped for being
	// over transport.PeerFramesPerSecond.
	RateLimitedFrames uint64 `json:"rate_limited_frames"`
}

// Err is nil when every session committed and every chain is sound, else
// an error wrapping ErrSessionsFailed or ErrChainsBroken.
func (r *Result) Err() error {
	var errs []error
	if r.Failed > 0 {
		errs = append(errs, fmt.Errorf("%w: %d of %d (%v)", ErrSessionsFailed, r.Failed, r.Sessions, r.FailReasons))
	}
	if len(r.ChainsBroken) > 0 || r.LocksLeft > 0 {
		errs = append(errs, fmt.Errorf("%w: %d broken, %d locks left: %v", ErrChainsBroken, len(r.ChainsBroken), r.LocksLeft, r.ChainsBroken))
	}
	return errors.Join(errs...)
}

// Validate fills in the defaults of o and checks every option; the error
// wraps ErrBadOptions. Run calls it first.
func (o *Options) Validate() error {
	if o.Parties == 0 {
		o.Parties = DefaultParties
	}
	if o.Sessions == 0 {
		o.Sessions = DefaultSessions
	}
	if o.Concurrency == 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Pairs == 0 {
		o.Pairs = o.Concurrency
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = DefaultSessionTimeout
	}
	if o.Scheme == "" {
		o.Scheme = sign.DefaultScheme
	}
	if o.Store == "" {
		o.Store = StoreShared
	}
	if o.Transport == "" {
		o.Transport = TransportTCP
	}
	switch {
	case o.Store != StoreShared && o.Store != StorePerAgent:
		return fmt.Errorf("%w: store %q: use %q or %q", ErrBadOptions, o.Store, StoreShared, StorePerAgent)
	case o.Transport != TransportTCP && o.Transport != TransportQUIC && o.Transport != TransportBoth:
		return fmt.Errorf("%w: transport %q: use %q, %q or %q", ErrBadOptions, o.Transport, TransportTCP, TransportQUIC, TransportBoth)
	case o.Parties < 2 || o.Parties > MaxParties:
		return fmt.Errorf("%w: parties %d: use 2 to %d", ErrBadOptions, o.Parties, MaxParties)
	case o.Sessions < 1 || o.Sessions > MaxSessions:
		return fmt.Errorf("%w: sessions %d: use 1 to %d", ErrBadOptions, o.Sessions, MaxSessions)
	case o.Concurrency < 1 || o.Concurrency > MaxConcurrency:
		return fmt.Errorf("%w: concurrency %d: use 1 to %d", ErrBadOptions, o.Concurrency, MaxConcurrency)
	case o.Pairs < 1 || o.Parties*o.Pairs > MaxNodes:
		return fmt.Errorf("%w: pairs %d of %d parties make %d nodes: at most %d nodes", ErrBadOptions, o.Pairs, o.Parties, o.Pairs*o.Parties, MaxNodes)
	case o.GCPercent < 0:
		return fmt.Errorf("%w: GC percent %d: use a positive value, or 0 to keep the process's GOGC", ErrBadOptions, o.GCPercent)
	case o.Concurrency > o.Pairs:
		return fmt.Errorf("%w: concurrency %d exceeds pairs %d: a group runs one session at a time, so raise --pairs", ErrBadOptions, o.Concurrency, o.Pairs)
	}
	if _, err := sign.SchemeByName(o.Scheme); err != nil {
		return fmt.Errorf("%w: %v", ErrBadOptions, err)
	}
	return nil
}

type agent struct {
	key  *sign.PrivateKey
	ch   *chain.Chain
	node *negotiate.Node
	role string // "initiator" or "participant N" in its group
}

type group struct {
	agents []*agent
	others []sign.AgentID // the participants' IDs, for Propose
	ids    []string       // sessions this group ran (warm-up included)
	pace   pacer
}

type sample struct {
	total, initiator, negotiation, signing time.Duration
	phases                                 bool
	err                                    error
}

// recorder keeps the initiators' phase times by session.
type recorder struct {
	mu        sync.Mutex
	signing   map[string]time.Time // initiator entered signing
	committed map[string]time.Time // initiator committed
	// everyone counts the parties that committed each session and keeps
	// the time of the last; allDone is closed when every party has.
	everyone map[string]*allCommitted
	parties  int
	// tracer, with Options.Trace, keeps the nodes' trace events.
	tracer *tracer
}

type allCommitted struct {
	n       int
	last    time.Time
	allDone chan struct{}
}

func (r *recorder) all(session string) *allCommitted {
	a := r.everyone[session]
	if a == nil {
		a = &allCommitted{allDone: make(chan struct{})}
		r.everyone[session] = a
	}
	return a
}

// onEvent records the events of one agent; initiator tells whose.
func (r *recorder) onEvent(ev negotiate.Event, initiator bool) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case initiator && ev.Kind == negotiate.EvPhase && ev.Phase == negotiate.PhaseSigning:
		r.signing[ev.Session] = now
	case ev.Kind == negotiate.EvCommitted:
		if initiator {
			r.committed[ev.Session] = now
		}
		a := r.all(ev.Session)
		a.n++
		a.last = now
		if a.n == r.parties {
			close(a.allDone)
		}
	}
}

// Run starts Parties x Pairs nodes, runs the sessions, measures the floor
// unit, verifies every chain and returns the figures. Failed sessions are
// counted in the Result (see Result.Err); an error means the run itself
// could not be set up.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	scheme, _ := sign.SchemeByName(opts.Scheme)
	gcPercent := debug.SetGCPercent(-1)
	debug.SetGCPercent(gcPercent)
	if opts.GCPercent > 0 {
		old := debug.SetGCPercent(opts.GCPercent)
		defer debug.SetGCPercent(old)
		gcPercent = opts.GCPercent
	}
	if err := ensureFDs(opts.Parties * opts.Pairs); err != nil {
		return nil, err
	}
	dir, cleanup, err := runDir(opts.Dir, "negotiate-bench-")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	res := &Result{
		Parties: opts.Parties, Sessions: opts.Sessions, Concurrency: opts.Concurrency, Pairs: opts.Pairs,
		Scheme: scheme.Name(), Store: opts.Store, Transport: opts.Transport, Offer: opts.Offer, Nodes: opts.Parties * opts.Pairs, CPUs: runtime.NumCPU(), Paced: !opts.NoPace,
		PaceCapPerPair: paceSafety * benchFramesPerSecond / framesPerSessionPerPeer,
		GCPercent:      gcPercent,
	}
	rec := &recorder{signing: map[string]time.Time{}, committed: map[string]time.Time{}, everyone: map[string]*allCommitted{}, parties: opts.Parties}
	if opts.Trace {
		rec.tracer = newTracer()
	}
	setup := time.Now()
	setupRep := newSetupReporter(opts.SetupProgress)
	groups, store, closeAll, err := startGroups(ctx, opts, scheme, dir, rec, setupRep)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	terms, err := protocol.EncodeTerms(map[string]any{"item": "benchmark widget", "price": 1250, "currency": "EUR", "qty": 3})
	if err != nil {
		return nil, fmt.Errorf("bench: encode terms: %w", err)
	}
	// One warm-up session per group opens the streams and fills the caches.
	for _, g := range groups {
		g.pace = newPacer(!opts.NoPace)
		if s := runSession(ctx, g, terms, opts.SessionTimeout, opts.Offer, rec); s.err != nil {
			return nil, fmt.Errorf("bench: warm-up session: %w", s.err)
		}
		setupRep.step("warm-up", len(groups))
	}
	res.SetupSec = time.Since(setup).Seconds()
	floor, err := measureFloor(ctx, dir, scheme, groups[0])
	if err != nil {
		return nil, err
	}
	res.Floor = floor
	if rec.tracer != nil {
		rec.tracer.reset()
	}

	var before chain.CommitStats
	if store != nil {
		before = store.CommitStats()
	}
	if opts.MemProfileStart != nil {
		if err := pprof.Lookup("allocs").WriteTo(opts.MemProfileStart, 0); err != nil {
			return nil, fmt.Errorf("bench: allocation profile: %w", err)
		}
	}
	if opts.CPUProfile != nil {
		if err := pprof.StartCPUProfile(opts.CPUProfile); err != nil {
			return nil, fmt.Errorf("bench: cpu profile: %w", err)
		}
	}
	samples := runAll(ctx, opts, groups, terms, rec, res)
	if opts.CPUProfile != nil {
		pprof.StopCPUProfile()
	}
	if opts.MemProfile != nil {
		if err := pprof.Lookup("allocs").WriteTo(opts.MemProfile, 0); err != nil {
			return nil, fmt.Errorf("bench: allocation profile: %w", err)
		}
	}
	summarize(res, samples)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapSysMiB = round3(float64(ms.HeapSys) / (1 << 20))
	if rec.tracer != nil {
		res.Timeline, res.TimelineSessions = rec.tracer.timeline()
	}
	if store != nil {
		after := store.CommitStats()
		if txs := after.Transactions - before.Transactions; txs > 0 {
			res.WritesPerCommit = round3(float64(after.Writes-before.Writes) / float64(txs))
		}
		if flushes := after.Flushes - before.Flushes; flushes > 0 {
			res.WritesPerFlush = round3(float64(after.Writes-before.Writes) / float64(flushes))
		}
	}

	for _, g := range groups {
		for _, a := range g.agents {
			res.RateLimitedFrames += a.node.Host().Stats().RateLimited
		}
	}
	checkChains(ctx, groups, res)
	return res, nil
}

// startGroups creates the chains and starts the nodes; every agent of a
// group resolves every other one before it returns.
func startGroups(ctx context.Context, opts Options, scheme *sign.Scheme, dir string, rec *recorder, rep *setupReporter) ([]*group, *chain.Store, func(), error) {
	var mu sync.Mutex
	var all []*agent
	var store *chain.Store
	if opts.Store == StoreShared {
		st, err := chain.CreateStore(filepath.Join(dir, "agents.db"))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("bench: %w", err)
		}
		store = st
	}
	closeAll := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range all {
			if a.node != nil {
				a.node.Close()
			}
			a.ch.Close()
		}
		all = nil
		if store != nil {
			store.Close()
			store = nil
		}
	}
	groups := make([]*group, opts.Pairs)
	var flat []*agent
	for gi := range groups {
		g := &group{}
		for pi := 0; pi < opts.Parties; pi++ {
			key, err := scheme.GenerateKey()
			if err != nil {
				closeAll()
				return nil, nil, nil, fmt.Errorf("bench: generate %s key: %w", scheme.Name(), err)
			}
			var ch *chain.Chain
			if store != nil {
				ch, err = store.Create(key, time.Now().UnixMilli())
			} else {
				ch, err = chain.Create(filepath.Join(dir, fmt.Sprintf("g%03d-p%02d.db", gi, pi)), key, time.Now().UnixMilli())
			}
			if err != nil {
				closeAll()
				return nil, nil, nil, fmt.Errorf("bench: %w", err)
			}
			a := &agent{key: key, ch: ch, role: "initiator"}
			if pi > 0 {
				a.role = fmt.Sprintf("participant %d", pi)
			}
			mu.Lock()
			all = append(all, a)
			mu.Unlock()
			g.agents = append(g.agents, a)
			flat = append(flat, a)
			if pi > 0 {
				g.others = append(g.others, key.AgentID())
			}
		}
		groups[gi] = g
	}
	start := func(a *agent, initiator bool, boot []string) error {
		cfg := negotiate.NodeConfig{
			Key: a.key, Chain: a.ch, Policy: negotiate.AcceptAll, Logger: opts.Logger,
			Host: transport.Config{Listen: listenAddrs(opts.Transport), Bootstrap: boot, Logger: opts.Logger,
				PeerFramesPerSecond: benchFramesPerSecond, PeerFrameBurst: benchFramesPerSecond / 10,
				MaxConnections: connsPerNode},
			ResolveInitial: 500 * time.Millisecond, ResolveMax: 2 * time.Second,
		}
		cfg.OnEvent = func(ev negotiate.Event) { rec.onEvent(ev, initiator) }
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if tr := rec.tracer; tr != nil {
			role := a.role
			sctx = hooks.With(sctx, &hooks.Hooks{Trace: func(ev hooks.TraceEvent) { tr.add(ev, role) }})
		}
		n, err := negotiate.StartNode(sctx, cfg)
		if err != nil {
			return fmt.Errorf("bench: start node: %w", err)
		}
		mu.Lock()
		a.node = n
		mu.Unlock()
		rep.step("nodes", opts.Parties*opts.Pairs)
		return nil
	}
	if err := start(flat[0], true, nil); err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	// The first bootNodes nodes start one by one; the others bootstrap from
	// all of them, so the DHT does not hang on one node's routing table.
	boot := flat[0].node.Host().Addrs()[:1]
	for i := 1; i < min(bootNodes, len(flat)); i++ {
		if err := start(flat[i], i%opts.Parties == 0, boot); err != nil {
			closeAll()
			return nil, nil, nil, err
		}
	}
	for i := 1; i < min(bootNodes, len(flat)); i++ {
		boot = append(boot, flat[i].node.Host().Addrs()[:1]...)
	}
	sem := make(chan struct{}, startParallel)
	errs := make([]error, len(flat))
	var wg sync.WaitGroup
	for i := min(bootNodes, len(flat)); i < len(flat); i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = start(flat[i], i%opts.Parties == 0, boot)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	if err := resolveAll(ctx, groups, rep); err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	return groups, store, closeAll, nil
}

// resolveAll waits until every agent resolves every other agent of its
// group, and protects its connections to them from the connection
// manager: they carry the sessions, while DHT connections may be trimmed.
func resolveAll(ctx context.Context, groups []*group, rep *setupReporter) error {
	sem := make(chan struct{}, 8)
	var mu sync.Mutex
	var errs []error
	left := make([]int, len(groups)) // lookups still running, by group
	var wg sync.WaitGroup
	for gi, g := range groups {
		left[gi] = len(g.agents) * (len(g.agents) - 1)
		for _, a := range g.agents {
			for _, b := range g.agents {
				if a == b {
					continue
				}
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					info, err := resolveOne(ctx, a.node.Host(), b.node.Host())
					if err == nil {
						if pid, perr := peer.Decode(info.PeerID); perr == nil {
							a.node.Host().Libp2p().ConnManager().Protect(pid, "negotiate-bench-group")
						}
					}
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					}
					left[gi]--
					groupDone := left[gi] == 0
					mu.Unlock()
					if groupDone {
						rep.step("peers", len(groups))
					}
				}()
			}
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

// setupReporter serializes SetupProgress calls from concurrent work.
type setupReporter struct {
	mu   sync.Mutex
	fn   func(stage string, done, total int)
	done map[string]int
}

func newSetupReporter(fn func(stage string, done, total int)) *setupReporter {
	return &setupReporter{fn: fn, done: map[string]int{}}
}

// step counts one more unit of stage done, out of total.
func (r *setupReporter) step(stage string, total int) {
	if r == nil || r.fn == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done[stage]++
	r.fn(stage, r.done[stage], total)
}

// runDir returns dir, or a new temporary directory named after prefix when
// dir is empty; cleanup removes what runDir made (nothing for a given dir).
func runDir(dir, prefix string) (_ string, cleanup func(), _ error) {
	if dir != "" {
		return dir, func() {}, nil
	}
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, fmt.Errorf("bench: temporary directory: %w", err)
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// reset starts the counts of stages again, for a second phase.
func (r *setupReporter) reset(stages ...string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range stages {
		delete(r.done, s)
	}
}

// resolveOne waits until h resolves the agent of host target through the
// DHT. After each failed lookup the target publishes its record again: with
// many nodes starting at once, its first publish may have reached only the
// peers it knew then.
func resolveOne(ctx context.Context, h, target *transport.Host) (*protocol.AgentInfo, error) {
	id := target.AgentID()
	deadline := time.Now().Add(resolveTimeout)
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := h.Resolve(rctx, id)
		cancel()
		if err == nil {
			return info, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return nil, fmt.Errorf("bench: %s cannot resolve %s: %w", h.AgentID().Short(), id.Short(), err)
		}
		target.Republish()
		time.Sleep(500 * time.Millisecond)
	}
}

// runSession runs one session of group g and times it.
func runSession(ctx context.Context, g *group, terms []byte, timeout time.Duration, offer bool, rec *recorder) sample {
	g.pace.wait(ctx)
	init := g.agents[0]
	start := time.Now()
	p, err := init.node.Propose(ctx, g.others, terms, negotiate.ProposeOptions{Timeout: timeout, Offer: offer})
	if err != nil {
		return sample{err: err}
	}
	g.ids = append(g.ids, p.ID())
	if rec.tracer != nil {
		rec.tracer.started(p.ID(), start)
	}
	wctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	o, err := p.Wait(wctx)
	end := time.Now()
	if err == nil {
		err = o.Err()
	}
	if err != nil {
		return sample{err: fmt.Errorf("session %s: %w", p.ID(), err)}
	}
	// The session counts once it is durable on every party's chain; the
	// next session of this group starts only then.
	rec.mu.Lock()
	all := rec.all(p.ID())
	rec.mu.Unlock()
	select {
	case <-all.allDone:
	case <-wctx.Done():
		return sample{err: fmt.Errorf("session %s: committed at the initiator, but not on every chain within %v", p.ID(), timeout)}
	}
	rec.mu.Lock()
	s := sample{total: all.last.Sub(start), initiator: end.Sub(start)}
	ts, okS := rec.signing[p.ID()]
	tc, okC := rec.committed[p.ID()]
	delete(rec.signing, p.ID())
	delete(rec.committed, p.ID())
	delete(rec.everyone, p.ID())
	rec.mu.Unlock()
	if okS && okC {
		s.phases = true
		s.negotiation, s.signing = ts.Sub(start), tc.Sub(ts)
	}
	return s
}

// runAll runs opts.Sessions sessions with opts.Concurrency groups busy at once.
func runAll(ctx context.Context, opts Options, groups []*group, terms []byte, rec *recorder, res *Result) []sample {
	left := make([]int, len(groups))
	for i := 0; i < opts.Sessions; i++ {
		left[i%len(groups)]++
	}
	free := make(chan int, len(groups))
	for i := range groups {
		if left[i] > 0 {
			free <- i
		}
	}
	var mu sync.Mutex
	var samples []sample
	done := 0
	allDone := make(chan struct{})
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < opts.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var gi int
				select {
				case gi = <-free:
				case <-allDone:
					return
				case <-ctx.Done():
					return
				}
				s := runSession(ctx, groups[gi], terms, opts.SessionTimeout, opts.Offer, rec)
				mu.Lock()
				samples = append(samples, s)
				left[gi]--
				if left[gi] > 0 {
					free <- gi
				}
				done++
				if opts.Progress != nil {
					opts.Progress(done, opts.Sessions)
				}
				if done == opts.Sessions {
					close(allDone)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.ElapsedSec = time.Since(start).Seconds()
	return samples
}

func summarize(res *Result, samples []sample) {
	var total, ini, neg, sig []time.Duration
	for _, s := range samples {
		if s.err != nil {
			res.Failed++
			if len(res.FailReasons) < maxFailReasons {
				res.FailReasons = append(res.FailReasons, s.err.Error())
			}
			continue
		}
		res.Committed++
		total, ini = append(total, s.total), append(ini, s.initiator)
		if s.phases {
			neg = append(neg, s.negotiation)
			sig = append(sig, s.signing)
		}
	}
	res.Failed += res.Sessions - len(samples) // never started (context ended)
	res.Latency, res.Initiator = quantiles(total), quantiles(ini)
	res.Negotiation, res.Signing = quantiles(neg), quantiles(sig)
	if res.ElapsedSec > 0 {
		res.SessionsPerSec = round3(float64(res.Committed) / res.ElapsedSec)
	}
	if res.Floor.SumUs > 0 && res.Latency.N > 0 {
		res.P50FloorRatio = round3(res.Latency.P50 * 1000 / res.Floor.SumUs)
	}
}

// quantiles uses the nearest-rank method.
func quantiles(ds []time.Duration) Quantiles {
	if len(ds) == 0 {
		return Quantiles{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(ds)))) - 1
		return ds[max(0, min(i, len(ds)-1))]
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return Quantiles{
		N: len(ds), P50: ms(rank(0.50)), P90: ms(rank(0.90)), P99: ms(rank(0.99)),
		Mean: ms(sum / time.Duration(len(ds))), Max: ms(ds[len(ds)-1]),
	}
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// checkChains waits for every participant to end every session, stops the
// nodes, then verifies every chain: it verifies, holds no lock and holds
// one record per session its group committed.
func checkChains(ctx context.Context, groups []*group, res *Result) {
	for gi, g := range groups {
		init := g.agents[0]
		committed := 0
		for _, id := range g.ids {
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			o, err := init.node.Wait(wctx, id)
			cancel()
			if err == nil && o.State == negotiate.StateCommitted {
				committed++
			}
			for pi, a := range g.agents[1:] {
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				po, err := a.node.Wait(wctx, id)
				cancel()
				if err != nil || (o != nil && (po.State != o.State || po.RecordHash != o.RecordHash)) {
					res.ChainsBroken = append(res.ChainsBroken, fmt.Sprintf("group %d party %d: session %s outcome differs from the initiator's (%v)", gi, pi+1, id, err))
				}
			}
		}
		for pi, a := range g.agents {
			a.node.Close()
			name := fmt.Sprintf("group %d party %d (%s)", gi, pi, a.key.AgentID().Short())
			if verr := a.ch.Verify(chain.VerifyOptions{CheckPayload: engine.CheckAgreementEntry, Agent: a.key.AgentID()}); verr != nil {
				res.ChainsBroken = append(res.ChainsBroken, fmt.Sprintf("%s: verify: %v", name, verr))
				continue
			}
			if l, ok := a.ch.Lock(); ok {
				res.LocksLeft++
				res.ChainsBroken = append(res.ChainsBroken, fmt.Sprintf("%s: lock left by session %s", name, l.Session))
				continue
			}
			if got := a.ch.Head().Seq; got != uint64(committed) {
				res.ChainsBroken = append(res.ChainsBroken, fmt.Sprintf("%s: %d records, %d sessions committed", name, got, committed))
				continue
			}
			res.ChainsVerified++
		}
	}
}

// pacer keeps one group's session starts under the receivers' per-peer
// frame limit: a token bucket mirroring transport.PeerFramesPerSecond.
type pacer struct {
	on     bool
	tokens float64
	last   time.Time
}

func newPacer(on bool) pacer {
	return pacer{on: on, tokens: transport.PeerFrameBurst - framesPerSessionPerPeer, last: time.Now()}
}

func (p *pacer) wait(ctx context.Context) {
	if !p.on {
		return
	}
	rate := paceSafety * benchFramesPerSecond
	now := time.Now()
	p.tokens = min(p.tokens+now.Sub(p.last).Seconds()*rate, benchFramesPerSecond/10-framesPerSessionPerPeer)
	p.last = now
	if p.tokens < framesPerSessionPerPeer {
		d := time.Duration((framesPerSessionPerPeer - p.tokens) / rate * float64(time.Second))
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
		p.tokens = framesPerSessionPerPeer
		p.last = time.Now()
	}
	p.tokens -= framesPerSessionPerPeer
}
