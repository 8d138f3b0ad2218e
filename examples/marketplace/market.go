package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/sign"
)

// MarketConfig is a whole market in one process: real nodes on loopback,
// one chain file per agent.
type MarketConfig struct {
	Buyers, Sellers, Cheaters int
	// Dir holds the agents' homes; empty means a temporary directory,
	// removed afterwards.
	Dir string
	// Out receives the transcript (one line per trade or refusal).
	Out    io.Writer
	Logger *slog.Logger
}

// Summary is the market's end state, as checked from the chains.
type Summary struct {
	TradesCommitted int               `json:"trades_committed"`
	TradesRefused   int               `json:"trades_refused"`
	NoDeal          int               `json:"no_deal"`
	Cheaters        int               `json:"cheaters"`
	CheatAttempts   int               `json:"cheat_attempts"`
	CheatsCaught    int               `json:"cheats_caught"`
	CheatersRefused int               `json:"cheaters_refused"`
	Balances        map[string]int64  `json:"balances"`
	BalanceSum      int64             `json:"balance_sum"`
	Chains          int               `json:"chains"`
	ChainsVerified  int               `json:"chains_verified"`
	RecordsMatched  int               `json:"records_matched"`
	LocksLeft       int               `json:"locks_left"`
	Agents          map[string]string `json:"agents"`
	Dir             string            `json:"dir,omitempty"`
	Problems        []string          `json:"problems,omitempty"`
	OK              bool              `json:"ok"`
}

// categories every seller lists in.
var categories = []string{"books", "lamps"}

// sellerListings gives seller i one listing per category, at prices that
// differ between sellers.
func sellerListings(i int) []Listing {
	return []Listing{
		{ID: fmt.Sprintf("s%d-book", i), Category: "books", Item: fmt.Sprintf("book #%d", i), Price: int64(60 + 5*(i%3))},
		{ID: fmt.Sprintf("s%d-lamp", i), Category: "lamps", Item: fmt.Sprintf("lamp #%d", i), Price: int64(90 + 8*(i%3))},
	}
}

// buyerStrategy varies the buyers: limits and opening bids differ.
func buyerStrategy(i int) BuyerStrategy {
	return BuyerStrategy{LimitPct: int64(85 + 5*(i%4)), Budget: 400, OpenPct: int64(55 + 5*(i%3)), StepPct: 10}
}

var defaultSeller = SellerStrategy{FloorPct: 75, ConcedePct: 6}

// eagerBuyer is a cheater's strategy: it wants the deal and pays list.
var eagerBuyer = BuyerStrategy{LimitPct: 150, Budget: 400, OpenPct: 100, StepPct: 10}

// RunMarket runs the market to the end and checks every chain.
func RunMarket(ctx context.Context, cfg MarketConfig) (*Summary, error) {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	dir := cfg.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "marketplace-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	m := &market{out: cfg.Out, names: map[sign.AgentID]string{}, start: time.Now()}

	var agents []*Agent
	defer func() {
		for _, a := range agents {
			a.Close()
		}
	}()
	// The agents: seller 0 first, then everyone else at once,
	// bootstrapping from it.
	var cfgs []AgentConfig
	for i := range cfg.Sellers {
		cfgs = append(cfgs, AgentConfig{Name: fmt.Sprintf("seller-%d", i), Role: RoleSeller, Listings: sellerListings(i), Seller: defaultSeller})
	}
	for i := range cfg.Buyers + cfg.Cheaters {
		c := AgentConfig{Name: fmt.Sprintf("buyer-%d", i), Role: RoleBuyer, Buyer: buyerStrategy(i), Prefer: i}
		if i >= cfg.Buyers {
			k := i - cfg.Buyers
			c.Cheat = []string{CheatLiar, CheatHider}[k%2]
			c.Name = fmt.Sprintf("cheater-%d-%s", k, c.Cheat)
			c.Buyer = eagerBuyer
		}
		cfgs = append(cfgs, c)
	}
	agents = make([]*Agent, len(cfgs))
	startErrs := make([]error, len(cfgs))
	start := func(i int, bootstrap []string) {
		c := cfgs[i]
		c.Dir, c.Logger, c.Report, c.Bootstrap = filepath.Join(dir, c.Name), cfg.Logger, m.report, bootstrap
		agents[i], startErrs[i] = StartAgent(ctx, c)
	}
	start(0, nil)
	if startErrs[0] != nil {
		return nil, startErrs[0]
	}
	var wg sync.WaitGroup
	for i := 1; i < len(cfgs); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start(i, agents[0].Addrs())
		}()
	}
	wg.Wait()
	started := agents[:0:0]
	for _, a := range agents {
		if a != nil {
			started = append(started, a)
		}
	}
	agents = started // closed by the deferred function, whatever happens next
	if err := errors.Join(startErrs...); err != nil {
		return nil, err
	}
	for _, a := range agents {
		m.names[a.ID()] = a.Name()
	}
	sellers, buyers := agents[:cfg.Sellers], agents[cfg.Sellers:]
	fmt.Fprintf(m.out, "market: %d sellers, %d buyers, %d cheaters on 127.0.0.1, chains in %s (started in %.1fs)\n",
		cfg.Sellers, cfg.Buyers, cfg.Cheaters, dir, time.Since(m.start).Seconds())
	pubErrs := make([]error, len(sellers))
	for i, s := range sellers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pubErrs[i] = publish(ctx, s)
		}()
	}
	wg.Wait()
	if err := errors.Join(pubErrs...); err != nil {
		return nil, err
	}
	fmt.Fprintf(m.out, "%6.2fs sellers published their categories\n", time.Since(m.start).Seconds())

	// Sellers only sell, so the market holds at most CreditMax credits per
	// seller; honest buyers want 2 items each while that fits (about 100
	// credits an item, with room to spare), else 1, so the cheaters still
	// find sellers with room to test them on.
	wants := 2
	if cfg.Buyers*2*100 > cfg.Sellers*CreditMax*7/10 {
		wants = 1
	}
	errs := make([]error, len(buyers))
	for i, b := range buyers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cat := categories[i%len(categories)]
			switch b.cfg.Cheat {
			case CheatLiar: // every try is a lie
				errs[i] = b.Buy(ctx, cat, 2, 2)
			case CheatHider: // one honest trade, then hide it, twice
				errs[i] = b.Buy(ctx, cat, 3, 6)
			default:
				errs[i] = b.Buy(ctx, cat, wants, wants*maxAttempts)
			}
		}()
	}
	wg.Wait()
	// Stop every node, so nothing moves while the chains are checked.
	for _, a := range agents {
		if err := a.node.Close(); err != nil {
			slog.Debug("close node", "agent", a.Name(), "err", err)
		}
	}
	s := m.summarize(agents)
	for i, err := range errs {
		if err != nil {
			s.Problems = append(s.Problems, fmt.Sprintf("%s: %v", buyers[i].Name(), err))
			s.OK = false
		}
	}
	if cfg.Dir != "" {
		s.Dir = cfg.Dir
	}
	return s, nil
}

// publish announces a seller's categories, retrying while the DHT fills.
func publish(ctx context.Context, s *Agent) error {
	var err error
	for try := 0; try < 10; try++ {
		if err = s.Publish(ctx); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return err
}

// market collects the agents' reports and prints the transcript.
type market struct {
	mu      sync.Mutex
	out     io.Writer
	names   map[sign.AgentID]string
	reports []Report
	start   time.Time
}

func (m *market) name(id sign.AgentID) string {
	if n, ok := m.names[id]; ok {
		return n
	}
	return id.Short()
}

func (m *market) report(r Report) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reports = append(m.reports, r)
	at := time.Since(m.start).Seconds()
	with := m.name(r.With)
	cheat := ""
	if r.Cheat != "" {
		cheat = " [cheat: " + r.Cheat + "]"
	}
	switch r.Kind {
	case "committed":
		t := r.Trade
		fmt.Fprintf(m.out, "%6.2fs TRADE    %-16s bought %-8s from %-10s for %3d in %d round(s); balances %s %+d, %s %+d; record %.16s%s\n",
			at, r.Agent, t.Item, with, t.Price, r.Rounds, r.Agent, t.BuyerBalance, with, t.SellerBalance, r.Record, cheat)
	case "refused":
		fmt.Fprintf(m.out, "%6.2fs REFUSED  %-16s by %-10s%s: %s\n", at, r.Agent, with, cheat, r.Reason)
	default:
		fmt.Fprintf(m.out, "%6.2fs NO DEAL  %-16s with %-10s%s: %s\n", at, r.Agent, with, cheat, r.Reason)
	}
}

// summarize checks every chain and tallies the reports.
func (m *market) summarize(agents []*Agent) *Summary {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &Summary{Balances: map[string]int64{}, Agents: map[string]string{}}
	problem := func(f string, args ...any) { s.Problems = append(s.Problems, fmt.Sprintf(f, args...)) }
	records := map[sign.AgentID]map[chain.Hash]Trade{}
	for _, a := range agents {
		s.Chains++
		s.Agents[a.Name()] = string(a.ID())
		if l, locked := a.chain.Lock(); locked {
			s.LocksLeft++
			problem("%s: chain still locked by session %s", a.Name(), l.Session)
		}
		entries, err := ReadChain(a.chain)
		if err != nil {
			problem("%s: %v", a.Name(), err)
			continue
		}
		if err := negotiate.VerifyChain(a.ID(), entries); err != nil {
			problem("%s: chain does not verify: %v", a.Name(), err)
			continue
		}
		st, err := Ledger(a.ID(), entries)
		if err != nil {
			problem("%s: %v", a.Name(), err)
			continue
		}
		s.ChainsVerified++
		s.Balances[a.Name()] = st.Balance
		s.BalanceSum += st.Balance
		records[a.ID()] = tradeRecords(entries)
	}
	// Every trade is the identical record on both parties' chains.
	for id, recs := range records {
		for h, t := range recs {
			other := t.Seller
			if other == id {
				continue // counted once, from the buyer's side
			}
			if _, ok := records[other][h]; !ok {
				problem("record %.16s on %s's chain is missing from %s's", h, m.name(id), m.name(other))
				continue
			}
			s.RecordsMatched++
		}
	}
	s.TradesCommitted = s.RecordsMatched
	cheaters := map[string][2]int{} // name → attempts, refused for the cheat
	cheated := map[string]bool{}    // a cheating trade committed
	for _, r := range m.reports {
		switch r.Kind {
		case "refused":
			s.TradesRefused++
		case "no-deal":
			s.NoDeal++
		}
		if r.Cheat != "" {
			c := cheaters[r.Agent]
			c[0]++
			if r.Kind == "refused" && strings.Contains(r.Reason, ErrCheat.Error()) {
				c[1]++ // refused, and for the cheat
			} else if r.Kind == "committed" {
				problem("%s: a cheating trade committed (session %s)", r.Agent, r.Session)
				cheated[r.Agent] = true
			}
			cheaters[r.Agent] = c
		}
	}
	for _, a := range agents {
		if a.cfg.Cheat == "" {
			continue
		}
		s.Cheaters++
		c := cheaters[a.Name()]
		s.CheatAttempts += c[0]
		s.CheatsCaught += c[1]
		// An attempt that ended for another reason (the seller's credit
		// limit, a busy seller) tested nothing; a committed one is a
		// problem above.
		switch {
		case c[1] == 0:
			problem("%s was never refused for cheating (%d attempts)", a.Name(), c[0])
		case !cheated[a.Name()]:
			s.CheatersRefused++
		}
	}
	if s.BalanceSum != 0 {
		problem("balances sum to %d, not 0", s.BalanceSum)
	}
	if s.ChainsVerified != s.Chains {
		problem("%d of %d chains verified", s.ChainsVerified, s.Chains)
	}
	sort.Strings(s.Problems)
	s.OK = len(s.Problems) == 0
	return s
}

// tradeRecords maps the hash of every trade record on a chain to its trade.
func tradeRecords(entries []chain.Entry) map[chain.Hash]Trade {
	out := map[chain.Hash]Trade{}
	for i := range entries {
		if entries[i].Kind != kindAgreement {
			continue
		}
		rec, h, err := negotiate.VerifyReceipt(entries[i].Payload)
		if err != nil {
			continue
		}
		var t Trade
		if err := cbor.Unmarshal(rec.Agreement.Terms, &t); err == nil && t.Kind == TradeKind {
			out[h] = t
		}
	}
	return out
}

// PrintSummary writes the summary for people.
func PrintSummary(w io.Writer, s *Summary) {
	fmt.Fprintf(w, "\nsummary\n")
	fmt.Fprintf(w, "  trades committed   %d (each the identical record on both chains: %d)\n", s.TradesCommitted, s.RecordsMatched)
	fmt.Fprintf(w, "  trades refused     %d\n", s.TradesRefused)
	fmt.Fprintf(w, "  no deal            %d\n", s.NoDeal)
	fmt.Fprintf(w, "  cheaters refused   %d of %d (%d cheating attempts, %d refused for the cheat, none committed: %v)\n",
		s.CheatersRefused, s.Cheaters, s.CheatAttempts, s.CheatsCaught, s.CheatersRefused == s.Cheaters)
	fmt.Fprintf(w, "  chains verified    %d of %d\n", s.ChainsVerified, s.Chains)
	fmt.Fprintf(w, "  locks left         %d\n", s.LocksLeft)
	names := make([]string, 0, len(s.Balances))
	for n := range s.Balances {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "  balances           ")
	for i, n := range names {
		if i > 0 {
			fmt.Fprintf(w, ", ")
		}
		fmt.Fprintf(w, "%s %+d", n, s.Balances[n])
	}
	fmt.Fprintf(w, "\n  balance sum        %d\n", s.BalanceSum)
	for _, p := range s.Problems {
		fmt.Fprintf(w, "  PROBLEM: %s\n", p)
	}
	if s.OK {
		fmt.Fprintf(w, "  ok\n")
	}
}
