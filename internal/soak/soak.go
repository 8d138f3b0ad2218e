package soak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/negotiate-dev/negotiate/internal/control"
)

// Defaults and limits of a soak run.
const (
	// DefaultNodes is the number of daemons.
	DefaultNodes = 5
	// MinNodes is the fewest daemons a soak runs: 4 parties need 4.
	MinNodes = 4
	// MaxNodes bounds the daemons started on one machine.
	MaxNodes = 16
	// DefaultWorkers is how many sessions are started concurrently.
	DefaultWorkers = 3
	// DefaultSessionTimeout is each session's deadline (propose --timeout).
	DefaultSessionTimeout = 15 * time.Second
	// DefaultKillMin and DefaultKillMax bound the pause between kills.
	DefaultKillMin = 2 * time.Second
	DefaultKillMax = 8 * time.Second
	// DefaultDownMax bounds how long a killed daemon stays down.
	DefaultDownMax = 3 * time.Second
	// DefaultSettleTimeout bounds the wait, after the last session was
	// started, for every session to end on every node. A signed party
	// retries every 30 s at most, so two minutes is several retries.
	DefaultSettleTimeout = 3 * time.Minute
	// DefaultProgressEvery is the interval of progress lines.
	DefaultProgressEvery = 30 * time.Second
	// pollInterval is how often open sessions are polled at their
	// initiator.
	pollInterval = 250 * time.Millisecond
	// maxViolations bounds the violations kept in a report.
	maxViolations = 200
)

// policyYAML is every node's policy. A participant accepts a price of 20
// or more, counters 10 to 19 toward 20 in steps of 5 and rejects the
// rest; an initiator accepts every counter (proposes it as the next
// round). A signed offer takes no counter, so offers at 10 to 19 are
// rejected as well.
const policyYAML = `# written by the negotiate soak
rules:
  - name: initiator takes counters
    role: initiator
    action: accept
  - name: fair price
    role: participant
    when: {price: {min: 20}}
    action: accept
  - name: haggle
    role: participant
    when: {price: {min: 10}}
    action: counter
    counter: {price: {toward: 20, step: 5}}
default: reject
`

// Options configure a soak run. Zero values take the defaults above.
type Options struct {
	// Bin is the negotiate binary (required).
	Bin string
	// Dir holds the homes, the policy and the daemons' logs (required; it
	// is created if missing and must not hold other agents).
	Dir string
	// Nodes is the number of daemons (default DefaultNodes).
	Nodes int
	// Duration is how long sessions are started and daemons killed
	// (required, > 0). Settling comes on top.
	Duration time.Duration
	// Workers is the number of sessions in flight (default DefaultWorkers).
	Workers int
	// SessionTimeout is each session's deadline (default DefaultSessionTimeout).
	SessionTimeout time.Duration
	// KillMin and KillMax bound the pause between two kills (defaults
	// DefaultKillMin, DefaultKillMax). NoKill runs without kills.
	KillMin, KillMax time.Duration
	NoKill           bool
	// DownMax bounds how long a killed daemon stays down (default DefaultDownMax).
	DownMax time.Duration
	// OfferPercent is the share of signed offers (default 40; negative: none).
	OfferPercent int
	// SettleTimeout bounds the wait for every session to end (default DefaultSettleTimeout).
	SettleTimeout time.Duration
	// Seed seeds the choices (parties, terms, kill times); 0 picks one.
	// The daemons' timing is not reproducible, so a seed reproduces the
	// driver's choices only.
	Seed uint64
	// Progress receives a line every ProgressEvery (nil: none).
	Progress      io.Writer
	ProgressEvery time.Duration
	// Logger logs the driver's actions (nil: discard).
	Logger *slog.Logger
}

// Counts are session counts by outcome.
type Counts struct {
	// Started counts sessions the initiator's node accepted (it returned a
	// session ID).
	Started int `json:"started"`
	// Committed, Rejected and Aborted count started sessions by their
	// final state at the initiator; Lost counts those the initiator no
	// longer knew after it was killed (nothing of them was durable; the
	// chains are checked to hold none of them).
	Committed int `json:"committed"`
	Rejected  int `json:"rejected"`
	Aborted   int `json:"aborted"`
	Lost      int `json:"lost"`
	// Unresolved counts started sessions without a final state when the
	// soak gave up waiting (each is also a violation).
	Unresolved int `json:"unresolved"`
}

// Report is the outcome of a soak run.
type Report struct {
	Seed     uint64  `json:"seed"`
	Nodes    int     `json:"nodes"`
	Seconds  float64 `json:"seconds"`        // whole run, settling included
	Settle   float64 `json:"settle_seconds"` // time to let sessions end
	Sessions Counts  `json:"sessions"`
	// ByParties counts started sessions by number of parties.
	ByParties map[int]int `json:"by_parties"`
	// Offers counts started signed offers.
	Offers int `json:"offers"`
	// NotStarted counts propose calls the initiator's node refused or did
	// not answer (it was down or, for an offer, its chain was locked), by
	// reason.
	NotStarted map[string]int `json:"not_started"`
	// AfterCrash counts sessions in flight when one of their parties was
	// killed, by the outcome they resolved to.
	AfterCrash Counts `json:"resolved_after_crash"`
	Kills      int    `json:"kills"`
	// Check is the final invariant check over every chain.
	Check *CheckReport `json:"check"`
	// Violations lists every broken invariant (empty on success).
	Violations []string `json:"violations"`
}

// OK reports whether the run held every invariant.
func (r *Report) OK() bool { return len(r.Violations) == 0 }

// tracked is one started session.
type tracked struct {
	id        string
	initiator int
	parties   []int
	offer     bool
	price     int
	started   time.Time

	// guarded by soak.mu
	final      string // committed, rejected, aborted, lost; "" while open
	recordHash string
	crashed    bool // a party was killed while it was open
	done       chan struct{}
}

// soak is one run.
type soak struct {
	opts  Options
	log   *slog.Logger
	cli   cli
	nodes []*node
	start time.Time

	mu         sync.Mutex
	rng        *rand.Rand
	sessions   map[string]*tracked
	order      []*tracked
	notStarted map[string]int
	kills      int
	violations []string
	down       map[int]bool
}

// Run runs a soak and returns its report. An error means the soak could
// not run (no binary, a daemon that will not start); broken invariants
// are in Report.Violations.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	s := &soak{
		opts:       opts,
		log:        opts.Logger,
		cli:        cli{bin: opts.Bin},
		rng:        rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x5eed)),
		sessions:   make(map[string]*tracked),
		notStarted: make(map[string]int),
		down:       make(map[int]bool),
	}
	s.start = time.Now()
	if err := s.setup(ctx); err != nil {
		s.stopAll()
		return nil, err
	}
	rep, err := s.run(ctx)
	if err != nil {
		s.stopAll()
		return nil, err
	}
	return rep, nil
}

func (o *Options) fill() error {
	if o.Bin == "" {
		return errors.New("soak: Options.Bin (the negotiate binary) is required")
	}
	if _, err := os.Stat(o.Bin); err != nil {
		return fmt.Errorf("soak: binary: %w", err)
	}
	if o.Dir == "" {
		return errors.New("soak: Options.Dir is required")
	}
	if o.Duration <= 0 {
		return fmt.Errorf("soak: Options.Duration must be positive, not %s", o.Duration)
	}
	if o.Nodes == 0 {
		o.Nodes = DefaultNodes
	}
	if o.Nodes < MinNodes || o.Nodes > MaxNodes {
		return fmt.Errorf("soak: %d nodes: want %d to %d", o.Nodes, MinNodes, MaxNodes)
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.SessionTimeout <= 0 {
		o.SessionTimeout = DefaultSessionTimeout
	}
	if o.KillMin <= 0 {
		o.KillMin = DefaultKillMin
	}
	if o.KillMax <= 0 {
		o.KillMax = DefaultKillMax
	}
	if o.KillMax < o.KillMin {
		return fmt.Errorf("soak: kill interval %s..%s: the maximum is below the minimum", o.KillMin, o.KillMax)
	}
	if o.DownMax <= 0 {
		o.DownMax = DefaultDownMax
	}
	if o.OfferPercent == 0 {
		o.OfferPercent = 40
	}
	if o.OfferPercent > 100 {
		return fmt.Errorf("soak: OfferPercent %d is above 100", o.OfferPercent)
	}
	if o.SettleTimeout <= 0 {
		o.SettleTimeout = DefaultSettleTimeout
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = DefaultProgressEvery
	}
	if o.Seed == 0 {
		o.Seed = rand.Uint64()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// setup creates the homes and starts every daemon, then waits until each
// node reaches every other agent by agent ID (the DHT has their records).
func (s *soak) setup(ctx context.Context) error {
	if err := os.MkdirAll(s.opts.Dir, 0o700); err != nil {
		return fmt.Errorf("soak: %w", err)
	}
	policy := filepath.Join(s.opts.Dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte(policyYAML), 0o600); err != nil {
		return fmt.Errorf("soak: write policy: %w", err)
	}
	for i := range s.opts.Nodes {
		home := filepath.Join(s.opts.Dir, "n"+strconv.Itoa(i))
		if _, err := os.Stat(home); err == nil {
			return fmt.Errorf("soak: %s exists: give an empty directory", home)
		}
		if _, err := s.cli.run(ctx, "--home", home, "init"); err != nil {
			return fmt.Errorf("soak: %w", err)
		}
		out, err := s.cli.run(ctx, "--home", home, "id", "--json")
		if err != nil {
			return fmt.Errorf("soak: %w", err)
		}
		var id struct {
			AgentID string `json:"agent_id"`
		}
		if err := json.Unmarshal(out, &id); err != nil || id.AgentID == "" {
			return fmt.Errorf("soak: id of %s: %q: %v", home, out, err)
		}
		s.nodes = append(s.nodes, &node{index: i, home: home, agent: id.AgentID, policy: policy,
			logPath: filepath.Join(s.opts.Dir, fmt.Sprintf("n%d.log", i))})
	}
	for _, n := range s.nodes {
		var err error
		for range startAttempts {
			var port int
			if port, err = freePort(); err != nil {
				return fmt.Errorf("soak: %w", err)
			}
			n.tcpPort, n.udpPort = port, port
			if err = n.start(ctx, s.opts.Bin, s.bootstrapFor(n)); err == nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("soak: %w", err)
		}
		s.log.Info("node started", "node", n.index, "agent", n.agent, "port", n.tcpPort)
	}
	return s.waitMesh(ctx)
}

// bootstrapFor lists the addresses of every other node that has started
// once (peer IDs and ports survive restarts).
func (s *soak) bootstrapFor(me *node) []string {
	var out []string
	for _, n := range s.nodes {
		if n == me {
			continue
		}
		n.mu.Lock()
		out = append(out, n.addrs...)
		n.mu.Unlock()
	}
	return out
}

// waitMesh pings every agent from every node until each answers, so the
// first sessions do not fail on records not yet in the DHT.
func (s *soak) waitMesh(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for _, a := range s.nodes {
		for _, b := range s.nodes {
			if a == b {
				continue
			}
			for {
				_, err := s.cli.run(ctx, "--home", a.home, "ping", "--count", "1", "--timeout", "3s", b.agent)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("soak: node %d cannot reach node %d after 60s: %w", a.index, b.index, err)
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(500 * time.Millisecond):
				}
			}
		}
	}
	return nil
}

// run is the soak proper: workers, killer, tracker, then settle and check.
func (s *soak) run(ctx context.Context) (*Report, error) {
	runCtx, stopRun := context.WithTimeout(ctx, s.opts.Duration)
	defer stopRun()
	trackCtx, stopTrack := context.WithCancel(ctx)
	defer stopTrack()

	var wg sync.WaitGroup
	trackDone := make(chan struct{})
	go func() { defer close(trackDone); s.track(trackCtx) }()
	progDone := make(chan struct{})
	go func() { defer close(progDone); s.progress(trackCtx) }()
	for w := range s.opts.Workers {
		wg.Add(1)
		go func() { defer wg.Done(); s.worker(runCtx, w) }()
	}
	killErr := make(chan error, 1)
	if s.opts.NoKill {
		killErr <- nil
	} else {
		go func() { killErr <- s.killer(runCtx) }()
	}
	err := <-killErr
	if err != nil {
		stopRun() // a node that will not restart ends the run now
	}
	wg.Wait()
	if err != nil {
		stopTrack()
		<-trackDone
		<-progDone
		return nil, err
	}
	if ctx.Err() != nil {
		stopTrack()
		<-trackDone
		<-progDone
		return nil, fmt.Errorf("soak: interrupted: %w", ctx.Err())
	}
	// Every node is up again (the killer restarts before it returns).
	settleStart := time.Now()
	s.settle(ctx)
	settle := time.Since(settleStart)
	stopTrack()
	<-trackDone
	<-progDone

	// Stop every daemon cleanly, then check the files.
	for _, n := range s.nodes {
		if err := n.stop(); err != nil {
			s.violate("clean stop: %v", err)
		}
	}
	homes := make([]string, len(s.nodes))
	for i, n := range s.nodes {
		homes[i] = n.home
	}
	check, err := CheckHomes(ctx, s.opts.Bin, homes, s.expectations())
	if err != nil {
		return nil, err
	}
	rep := s.report(check, settle)
	return rep, nil
}

// expectations lists the outcome each started session reached.
func (s *soak) expectations() []Expectation {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Expectation, 0, len(s.order))
	for _, t := range s.order {
		e := Expectation{Session: t.id, Outcome: t.final, RecordHash: t.recordHash}
		for _, p := range t.parties {
			e.Parties = append(e.Parties, s.nodes[p].agent)
		}
		out = append(out, e)
	}
	return out
}

func (s *soak) violate(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.violations) < maxViolations {
		s.violations = append(s.violations, fmt.Sprintf(format, args...))
	}
}

// intn is a locked s.rng.IntN.
func (s *soak) intn(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.IntN(n)
}

// durationIn picks a duration in [lo, hi].
func (s *soak) durationIn(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))
}

// worker starts sessions one after another until ctx ends.
func (s *soak) worker(ctx context.Context, w int) {
	for ctx.Err() == nil {
		t := s.propose(ctx)
		if t == nil {
			sleep(ctx, s.durationIn(100*time.Millisecond, 500*time.Millisecond))
			continue
		}
		// Wait for it to end at its initiator, or its deadline and a
		// little: a session stuck on a killed party is the tracker's
		// business, the worker moves on.
		select {
		case <-t.done:
		case <-time.After(s.opts.SessionTimeout + 5*time.Second):
		case <-ctx.Done():
		}
		sleep(ctx, s.durationIn(0, 200*time.Millisecond))
	}
}

// propose picks parties and terms and starts one session through the
// CLI. It returns nil when the initiator's node did not start it.
func (s *soak) propose(ctx context.Context) *tracked {
	s.mu.Lock()
	var up []int
	for i := range s.nodes {
		if !s.down[i] {
			up = append(up, i)
		}
	}
	if len(up) == 0 {
		s.mu.Unlock()
		return nil
	}
	init := up[s.rng.IntN(len(up))]
	others := make([]int, 0, len(s.nodes)-1)
	for i := range s.nodes {
		if i != init {
			others = append(others, i)
		}
	}
	s.rng.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	nOthers := 1 + s.rng.IntN(3) // 2 to 4 parties
	parties := append([]int{init}, others[:nOthers]...)
	offer := s.rng.IntN(100) < s.opts.OfferPercent
	price := s.rng.IntN(40) // <10 rejected, 10-19 countered (offers: rejected), >=20 accepted
	s.mu.Unlock()

	args := []string{"--home", s.nodes[init].home, "propose", "--json", "--wait=false",
		"--timeout", s.opts.SessionTimeout.String(), "--term", "item=soak", "--term", "price=" + strconv.Itoa(price)}
	for _, p := range parties[1:] {
		args = append(args, "--with", s.nodes[p].agent)
	}
	if offer {
		args = append(args, "--offer")
	}
	out, err := s.cli.run(ctx, args...)
	if err != nil {
		reason := "initiator's node did not answer"
		if msg := err.Error(); strings.Contains(msg, "busy") || strings.Contains(msg, "locked") {
			reason = "initiator's chain locked (offer)"
		} else if ctx.Err() != nil {
			return nil
		}
		s.mu.Lock()
		s.notStarted[reason]++
		s.mu.Unlock()
		s.log.Debug("propose not started", "node", init, "err", err)
		return nil
	}
	var started struct {
		Session string `json:"session"`
	}
	if err := json.Unmarshal(out, &started); err != nil || started.Session == "" {
		s.violate("propose --json printed %q, not a session ID", out)
		return nil
	}
	t := &tracked{id: started.Session, initiator: init, parties: parties, offer: offer, price: price,
		started: time.Now(), done: make(chan struct{})}
	s.mu.Lock()
	s.sessions[t.id] = t
	s.order = append(s.order, t)
	// A party down right now makes the session crash-affected too.
	for _, p := range parties {
		if s.down[p] {
			t.crashed = true
		}
	}
	s.mu.Unlock()
	return t
}

// sessionView is the part of GET /v1/sessions/{id} the soak reads.
type sessionView struct {
	ID         string   `json:"session"`
	Phase      string   `json:"phase"`
	State      string   `json:"state"`
	RecordHash string   `json:"record_hash"`
	Reason     string   `json:"reason"`
	WaitingOn  []string `json:"waiting_on"`
}

// track polls every open session at its initiator until ctx ends.
func (s *soak) track(ctx context.Context) {
	for {
		s.mu.Lock()
		var open []*tracked
		for _, t := range s.order {
			if t.final == "" {
				open = append(open, t)
			}
		}
		s.mu.Unlock()
		for _, t := range open {
			if ctx.Err() != nil {
				return
			}
			s.poll(ctx, t)
		}
		if !sleep(ctx, pollInterval) {
			return
		}
	}
}

// poll asks a session's initiator about it once.
func (s *soak) poll(ctx context.Context, t *tracked) {
	n := s.nodes[t.initiator]
	if !n.running() {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cl := n.client()
	defer cl.Close()
	var v sessionView
	err := cl.Do(pctx, "GET", "/v1/sessions/"+t.id, nil, &v)
	final, hash := "", ""
	switch {
	case errors.Is(err, control.ErrNotFound):
		// The initiator restarted and never made it durable: lost.
		final = "lost"
	case err != nil:
		return // node down or restarting: ask again later
	case v.State != "":
		final, hash = v.State, v.RecordHash
	default:
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.final != "" {
		return
	}
	t.final, t.recordHash = final, hash
	close(t.done)
	s.log.Debug("session ended", "session", t.id, "outcome", final, "crashed", t.crashed)
}

// killer SIGKILLs a random node at random moments and restarts it on the
// same home after a random pause, until ctx ends; it returns with every
// node running.
func (s *soak) killer(ctx context.Context) error {
	for {
		if !sleep(ctx, s.durationIn(s.opts.KillMin, s.opts.KillMax)) {
			return nil
		}
		i := s.intn(len(s.nodes))
		n := s.nodes[i]
		s.mu.Lock()
		s.down[i] = true
		s.mu.Unlock()
		if err := n.kill(); err != nil {
			return fmt.Errorf("soak: %w", err)
		}
		s.mu.Lock()
		s.kills++
		for _, t := range s.order {
			if t.final == "" && containsInt(t.parties, i) {
				t.crashed = true
			}
		}
		s.mu.Unlock()
		s.log.Info("killed", "node", i)
		// Down for a while, but restart even if the run ends meanwhile.
		sleep(ctx, s.durationIn(0, s.opts.DownMax))
		if err := s.restart(n); err != nil {
			return err
		}
		s.mu.Lock()
		s.down[i] = false
		s.mu.Unlock()
	}
}

// restart starts a killed node again on its home and ports.
func (s *soak) restart(n *node) error {
	var err error
	for a := range startAttempts {
		if err = n.start(context.Background(), s.opts.Bin, s.bootstrapFor(n)); err == nil {
			s.log.Info("restarted", "node", n.index)
			return nil
		}
		s.log.Warn("restart failed", "node", n.index, "attempt", a+1, "err", err)
		time.Sleep(time.Second)
	}
	return fmt.Errorf("soak: restart node %d on %s: %w", n.index, n.home, err)
}

// settle waits until every tracked session ended at its initiator and no
// node has an open session, or SettleTimeout passed (each leftover is then
// a violation).
func (s *soak) settle(ctx context.Context) {
	deadline := time.Now().Add(s.opts.SettleTimeout)
	for {
		open := s.openEverywhere(ctx)
		s.mu.Lock()
		unresolved := 0
		for _, t := range s.order {
			if t.final == "" {
				unresolved++
			}
		}
		s.mu.Unlock()
		if unresolved == 0 && len(open) == 0 {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.mu.Lock()
			for _, t := range s.order {
				if t.final == "" {
					t.final = "unresolved"
					if len(s.violations) < maxViolations {
						s.violations = append(s.violations, fmt.Sprintf("session %s (initiator n%d) did not end within %s of the last start",
							t.id, t.initiator, s.opts.SettleTimeout))
					}
				}
			}
			s.mu.Unlock()
			for _, o := range open {
				s.violate("session still open after %s: %s", s.opts.SettleTimeout, o)
			}
			return
		}
		sleep(ctx, time.Second)
	}
}

// openEverywhere lists "node n<i>: session <id> phase <p> waiting on ..."
// for every open session on every node.
func (s *soak) openEverywhere(ctx context.Context) []string {
	var out []string
	for _, n := range s.nodes {
		cl := n.client()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var list []sessionView
		err := cl.Do(pctx, "GET", "/v1/sessions", nil, &list)
		cancel()
		cl.Close()
		if err != nil {
			out = append(out, fmt.Sprintf("node n%d: sessions: %v", n.index, err))
			continue
		}
		for _, v := range list {
			out = append(out, fmt.Sprintf("node n%d: session %s phase %s waiting on %s", n.index, v.ID, v.Phase, strings.Join(v.WaitingOn, ",")))
		}
	}
	return out
}

// progress prints a line every ProgressEvery until ctx ends.
func (s *soak) progress(ctx context.Context) {
	if s.opts.Progress == nil {
		return
	}
	t := time.NewTicker(s.opts.ProgressEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c, crashed := s.counts()
		s.mu.Lock()
		kills := s.kills
		s.mu.Unlock()
		fmt.Fprintf(s.opts.Progress, "soak %s: %d started, %d committed, %d rejected, %d aborted, %d lost, %d open; %d kills, %d sessions hit by a kill\n",
			time.Since(s.start).Round(time.Second), c.Started, c.Committed, c.Rejected, c.Aborted, c.Lost,
			c.Started-c.Committed-c.Rejected-c.Aborted-c.Lost-c.Unresolved, kills, crashed.Started)
	}
}

// counts tallies all sessions and those a kill hit.
func (s *soak) counts() (all, crashed Counts) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.order {
		add(&all, t.final)
		if t.crashed {
			add(&crashed, t.final)
		}
	}
	return all, crashed
}

func add(c *Counts, final string) {
	c.Started++
	switch final {
	case "committed":
		c.Committed++
	case "rejected":
		c.Rejected++
	case "aborted":
		c.Aborted++
	case "lost":
		c.Lost++
	case "unresolved":
		c.Unresolved++
	}
}

// report builds the final report.
func (s *soak) report(check *CheckReport, settle time.Duration) *Report {
	all, crashed := s.counts()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &Report{Seed: s.opts.Seed, Nodes: len(s.nodes), Seconds: time.Since(s.start).Seconds(), Settle: settle.Seconds(),
		Sessions: all, AfterCrash: crashed, Kills: s.kills, Check: check, ByParties: map[int]int{},
		NotStarted: s.notStarted}
	for _, t := range s.order {
		r.ByParties[len(t.parties)]++
		if t.offer {
			r.Offers++
		}
	}
	r.Violations = append(r.Violations, s.violations...)
	r.Violations = append(r.Violations, check.Violations...)
	if r.Violations == nil {
		r.Violations = []string{}
	}
	return r
}

// stopAll kills every daemon (after a setup or run error).
func (s *soak) stopAll() {
	for _, n := range s.nodes {
		if err := n.stop(); err != nil {
			s.log.Warn("stop", "err", err)
		}
	}
}

// WriteText prints the report for people.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "soak: %d nodes, %.0f s (settling %.0f s), seed %d, %d kills\n", r.Nodes, r.Seconds, r.Settle, r.Seed, r.Kills)
	c := r.Sessions
	fmt.Fprintf(w, "sessions: %d started: %d committed, %d rejected, %d aborted, %d lost at a crash, %d unresolved; %d signed offers\n",
		c.Started, c.Committed, c.Rejected, c.Aborted, c.Lost, c.Unresolved, r.Offers)
	keys := make([]int, 0, len(r.ByParties))
	for k := range r.ByParties {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d parties: %d", k, r.ByParties[k]))
	}
	fmt.Fprintf(w, "by size: %s\n", strings.Join(parts, ", "))
	a := r.AfterCrash
	fmt.Fprintf(w, "resolved after a crash (a party killed while open): %d: %d committed, %d rejected, %d aborted, %d lost, %d unresolved\n",
		a.Started, a.Committed, a.Rejected, a.Aborted, a.Lost, a.Unresolved)
	if len(r.NotStarted) > 0 {
		reasons := make([]string, 0, len(r.NotStarted))
		for k, v := range r.NotStarted {
			reasons = append(reasons, fmt.Sprintf("%s: %d", k, v))
		}
		sort.Strings(reasons)
		fmt.Fprintf(w, "not started: %s\n", strings.Join(reasons, ", "))
	}
	if r.Check != nil {
		r.Check.WriteText(w)
	}
	if r.OK() {
		fmt.Fprintln(w, "result: ok, 0 invariant violations")
		return
	}
	fmt.Fprintf(w, "result: %d invariant violation(s):\n", len(r.Violations))
	for _, v := range r.Violations {
		fmt.Fprintf(w, "  - %s\n", v)
	}
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
