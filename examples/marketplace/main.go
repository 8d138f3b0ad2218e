// Command marketplace is a marketplace built on negotiate's public API:
// sellers publish listings in the DHT, buyers find them, haggle over
// several rounds and countersign each trade, and every agent keeps its
// balance of mutual credit on its own source chain, which its
// counterparts verify before they sign. See README.md.
//
// One process, a whole market on loopback:
//
//	go run ./examples/marketplace --buyers 5 --sellers 3 --cheaters 2 [--json] [--dir DIR]
//
// Separate processes, one agent each:
//
//	go run ./examples/marketplace --role seller --home DIR [--bootstrap ADDR]
//	go run ./examples/marketplace --role buyer --home DIR --bootstrap ADDR [--category books] [--items 1] [--cheat liar|hider]
//
// Exit status: 0 when the run (or the agent's task) succeeded, 1 when it
// failed (a chain that does not verify, a lock left, balances that do not
// sum to zero, a cheater not refused, an error), 2 on bad flags, 3 when a
// buyer got fewer items than it wanted.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/sign"
)

// errUsage marks a bad command line (exit 2).
var errUsage = errors.New("usage")

type options struct {
	buyers, sellers, cheaters int
	jsonOut                   bool
	dir                       string
	role, home, listen        string
	bootstrap                 string
	category                  string
	items                     int
	cheat                     string
	list                      string
	logLevel                  string
	timeout                   time.Duration
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runContext(ctx, args, stdout, stderr)
}

// runContext runs the command line args until done or ctx ends (a seller
// serves until then) and returns the exit status.
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "marketplace: %v\n", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintf(stderr, "marketplace: --log-level %q: use debug, info, warn or error\n", o.logLevel)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	switch o.role {
	case "":
		return runMarket(ctx, o, logger, stdout, stderr)
	case RoleSeller:
		return runSeller(ctx, o, logger, stdout, stderr)
	default:
		return runBuyer(ctx, o, logger, stdout, stderr)
	}
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("marketplace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.buyers, "buyers", 5, "honest buyers (one-process run)")
	fs.IntVar(&o.sellers, "sellers", 3, "sellers (one-process run)")
	fs.IntVar(&o.cheaters, "cheaters", 0, "cheating buyers: the first lies about its balance, the second hides a trade, and so on (one-process run)")
	fs.BoolVar(&o.jsonOut, "json", false, "print the summary as one JSON object on the last line of stdout (the transcript goes to stderr)")
	fs.StringVar(&o.dir, "dir", "", "keep the agents' homes (keys, chains) in this directory instead of a temporary one")
	fs.StringVar(&o.role, "role", "", "run one agent: seller or buyer (needs --home)")
	fs.StringVar(&o.home, "home", "", "the agent's home: key.json and chain.db, created if missing")
	fs.StringVar(&o.listen, "listen", "/ip4/127.0.0.1/tcp/0", "multiaddr to listen on (--role)")
	fs.StringVar(&o.bootstrap, "bootstrap", "", "comma-separated multiaddrs of agents to join the DHT through (--role; required for a buyer)")
	fs.StringVar(&o.category, "category", "books", "what the buyer looks for (--role buyer)")
	fs.IntVar(&o.items, "items", 1, "how many items the buyer buys (--role buyer)")
	fs.StringVar(&o.cheat, "cheat", "", "make the buyer cheat: liar or hider (--role buyer)")
	fs.StringVar(&o.list, "list", "books:a book:60,lamps:a lamp:90", "the seller's listings, comma-separated category:item:price (--role seller)")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level on stderr: debug, info, warn, error")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up on the run (or the buyer's task) after this long")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	bad := func(f string, a ...any) (*options, error) {
		return nil, fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(f, a...))
	}
	if fs.NArg() > 0 {
		return bad("unexpected argument %q", fs.Arg(0))
	}
	switch o.role {
	case "":
		switch {
		case o.sellers < 1 || o.sellers > 32:
			return bad("--sellers %d: between 1 and 32", o.sellers)
		case o.buyers < 0 || o.buyers > 64:
			return bad("--buyers %d: between 0 and 64", o.buyers)
		case o.cheaters < 0 || o.cheaters > 16:
			return bad("--cheaters %d: between 0 and 16", o.cheaters)
		case o.buyers+o.cheaters < 1:
			return bad("no buyers: give --buyers or --cheaters")
		}
	case RoleSeller, RoleBuyer:
		if o.home == "" {
			return bad("--role %s needs --home DIR", o.role)
		}
		if o.role == RoleBuyer && o.bootstrap == "" {
			return bad("--role buyer needs --bootstrap ADDR (a seller's address)")
		}
		if o.items < 1 {
			return bad("--items %d: at least 1", o.items)
		}
		if o.cheat != "" && o.cheat != CheatLiar && o.cheat != CheatHider {
			return bad("--cheat %q: liar or hider", o.cheat)
		}
		if _, err := parseListings(o.list); err != nil {
			return bad("--list: %v", err)
		}
	default:
		return bad("--role %q: seller or buyer", o.role)
	}
	if o.timeout <= 0 {
		return bad("--timeout must be positive")
	}
	return o, nil
}

func runMarket(ctx context.Context, o *options, logger *slog.Logger, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	out := stdout
	if o.jsonOut {
		out = stderr
	}
	s, err := RunMarket(ctx, MarketConfig{Buyers: o.buyers, Sellers: o.sellers, Cheaters: o.cheaters, Dir: o.dir, Out: out, Logger: logger})
	if err != nil {
		fmt.Fprintf(stderr, "marketplace: %v\n", err)
		return 1
	}
	PrintSummary(out, s)
	if o.jsonOut {
		b, err := json.Marshal(s)
		if err != nil {
			fmt.Fprintf(stderr, "marketplace: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, string(b))
	}
	if !s.OK {
		return 1
	}
	return 0
}

// parseListings reads category:item:price,...
func parseListings(s string) ([]Listing, error) {
	var out []Listing
	for i, part := range strings.Split(s, ",") {
		f := strings.Split(part, ":")
		if len(f) != 3 || f[0] == "" || f[1] == "" {
			return nil, fmt.Errorf("%q is not category:item:price", part)
		}
		price, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil || price <= 0 || price > CreditMax {
			return nil, fmt.Errorf("%q: price must be a whole number in 1..%d", part, CreditMax)
		}
		out = append(out, Listing{ID: fmt.Sprintf("l%d", i), Category: f[0], Item: f[1], Price: price})
	}
	return out, nil
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// runSeller serves as a seller until interrupted.
func runSeller(ctx context.Context, o *options, logger *slog.Logger, stdout, stderr io.Writer) int {
	listings, _ := parseListings(o.list)
	m := &market{out: stdout, names: map[sign.AgentID]string{}, start: time.Now()}
	a, err := StartAgent(ctx, AgentConfig{
		Name: "seller", Role: RoleSeller, Dir: o.home, Listen: []string{o.listen}, Bootstrap: splitAddrs(o.bootstrap),
		Listings: listings, Seller: defaultSeller, Logger: logger, Report: m.report,
		OnOutcome: func(a *Agent, o *negotiate.Outcome) {
			id := o.Session[max(0, len(o.Session)-12):] // the random end of the ID
			if o.State != negotiate.StateCommitted {
				fmt.Fprintf(stdout, "session …%s %s: %s\n", id, o.State, o.Reason)
				return
			}
			balance := "?"
			if st, err := OwnStanding(a.Chain()); err == nil {
				balance = fmt.Sprintf("%+d", st.Balance)
			}
			fmt.Fprintf(stdout, "session …%s committed: record %.16s, balance now %s\n", id, o.RecordHash, balance)
		},
	})
	if err != nil {
		fmt.Fprintf(stderr, "marketplace: %v\n", err)
		return 1
	}
	defer a.Close()
	fmt.Fprintf(stdout, "seller %s\n", a.ID())
	for _, addr := range a.Addrs() {
		fmt.Fprintf(stdout, "addr %s\n", addr)
	}
	for _, l := range listings {
		fmt.Fprintf(stdout, "listing %s %q in %s at %d\n", l.ID, l.Item, l.Category, l.Price)
	}
	// Announce the categories, again while nobody could take the record
	// (no DHT peers yet), then every hour: provider records expire.
	published := false
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	last := time.Time{}
	for {
		if !published || time.Since(last) > time.Hour {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := a.Publish(pctx)
			cancel()
			if err == nil {
				if !published {
					fmt.Fprintf(stdout, "published %s in the DHT\n", strings.Join(categoriesOf(listings), ", "))
				}
				published, last = true, time.Now()
			} else {
				logger.Debug("publish", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			st, err := OwnStanding(a.chain)
			if err == nil {
				fmt.Fprintf(stdout, "stopping: balance %+d after %d trades, chain head %d\n", st.Balance, st.Trades, st.Head.Seq)
			}
			return 0
		case <-tick.C:
		}
	}
}

func categoriesOf(ls []Listing) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range ls {
		if !seen[l.Category] {
			seen[l.Category] = true
			out = append(out, l.Category)
		}
	}
	return out
}

// runBuyer buys --items items in --category, then verifies its own chain.
func runBuyer(ctx context.Context, o *options, logger *slog.Logger, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	m := &market{out: stdout, names: map[sign.AgentID]string{}, start: time.Now()}
	strategy := buyerStrategy(0)
	if o.cheat != "" {
		strategy = eagerBuyer
	}
	a, err := StartAgent(ctx, AgentConfig{
		Name: "buyer", Role: RoleBuyer, Cheat: o.cheat, Dir: o.home, Listen: []string{o.listen}, Bootstrap: splitAddrs(o.bootstrap),
		Buyer: strategy, Logger: logger, Report: m.report,
	})
	if err != nil {
		fmt.Fprintf(stderr, "marketplace: %v\n", err)
		return 1
	}
	defer a.Close()
	fmt.Fprintf(stdout, "buyer %s looking for %d in %s\n", a.ID(), o.items, o.category)
	// Right after start our DHT may not hold the sellers' records yet.
	var buyErr error
	tries := o.items * maxAttempts
	if o.cheat != "" {
		tries = o.items + 1 // enough to show the cheat refused (a hider trades honestly first)
	}
	for try := 0; try < 5; try++ {
		if buyErr = a.Buy(ctx, o.category, o.items, tries); buyErr == nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	if buyErr != nil {
		fmt.Fprintf(stderr, "marketplace: %v\n", buyErr)
		return 1
	}
	entries, err := ReadChain(a.chain)
	if err != nil {
		fmt.Fprintf(stderr, "marketplace: %v\n", err)
		return 1
	}
	st, err := Ledger(a.ID(), entries)
	if err != nil {
		fmt.Fprintf(stderr, "marketplace: own chain: %v\n", err)
		return 1
	}
	bought := 0
	for _, r := range m.reports {
		if r.Kind == "committed" {
			bought++
		}
	}
	fmt.Fprintf(stdout, "bought %d of %d; balance %+d after %d trades; chain of %d entries verified\n", bought, o.items, st.Balance, st.Trades, len(entries))
	if bought < o.items {
		return 3
	}
	return 0
}
