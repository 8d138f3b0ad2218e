package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/negotiate/transport"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Roles and cheats.
const (
	RoleSeller = "seller"
	RoleBuyer  = "buyer"

	// CheatLiar claims a balance its chain does not support.
	CheatLiar = "liar"
	// CheatHider presents its chain with its last trade cut off, and
	// claims the balance and head of that shorter chain.
	CheatHider = "hider"
)

const (
	// sessionTimeout is a trade's deadline: negotiation and signing.
	sessionTimeout = 30 * time.Second
	// deskWait is how long a seller lets a buyer queue behind the
	// negotiation it is in before it turns the buyer away.
	deskWait = 20 * time.Second
	// askTimeout bounds a direct request (catalogue, chain).
	askTimeout = 10 * time.Second
)

// AgentConfig describes one agent of the market.
type AgentConfig struct {
	Name      string
	Role      string
	Cheat     string // "", CheatLiar or CheatHider (buyers only)
	Dir       string // home: key.json and chain.db, created if missing
	Listen    []string
	Bootstrap []string
	Listings  []Listing // sellers
	Seller    SellerStrategy
	Buyer     BuyerStrategy
	// Prefer spreads buyers over sellers with similar prices: a buyer
	// takes the Prefer-th (modulo) of the offers near the cheapest.
	Prefer int
	Logger *slog.Logger
	// Report receives what happens, for the market's transcript and summary.
	Report func(Report)
	// OnOutcome, when set, is told how each of the agent's sessions ended.
	OnOutcome func(*Agent, *negotiate.Outcome)
}

// Report is one thing that happened to a trade, from one agent's side.
type Report struct {
	Agent   string
	Kind    string // "committed", "refused", "no-deal", "info"
	Session string
	With    sign.AgentID
	Trade   *Trade
	Rounds  uint32
	Reason  string
	Cheat   string // the cheat the buyer tried, if any
	Record  chain.Hash
}

// Agent is one marketplace agent: a negotiate node with its chain, its
// listings or wants, its strategy and its checks before signing.
type Agent struct {
	cfg   AgentConfig
	key   *sign.PrivateKey
	chain *chain.Chain
	node  *negotiate.Node
	log   *slog.Logger

	mu       sync.Mutex
	verified map[string]Standing // session → the counterpart's verified standing
	desk     chan struct{}       // seller: one negotiation at a time
	deskBy   string              // seller: session at the desk
	counters chan negotiate.Event
	spent    int64
	caught   int           // cheater: attempts refused for the cheat
	cheating bool          // hider: present the cut-off chain
	deal     *deal         // buyer: the trade it is negotiating
	started  chan struct{} // closed once node is set: events may come before
}

// deal is a buyer's one open trade: the seller and its verified standing.
type deal struct {
	seller   sign.AgentID
	standing Standing
}

// StartAgent opens (or creates) the agent's key and chain in cfg.Dir and
// starts its node.
func StartAgent(ctx context.Context, cfg AgentConfig) (*Agent, error) {
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent %s: %w", cfg.Name, err)
	}
	key, c, err := openHome(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", cfg.Name, err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{
		cfg: cfg, key: key, chain: c, log: log.With("agent", cfg.Name),
		verified: map[string]Standing{}, desk: make(chan struct{}, 1),
		counters: make(chan negotiate.Event, 16), started: make(chan struct{}),
	}
	listen := cfg.Listen
	if len(listen) == 0 {
		listen = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	a.node, err = negotiate.StartNode(ctx, negotiate.NodeConfig{
		Key: key, Chain: c,
		Host: transport.Config{
			Listen: listen, Bootstrap: cfg.Bootstrap, PeerKeyFile: filepath.Join(cfg.Dir, "peer.key"), Logger: log,
			Providers: true, // listings are DHT provider records: every agent of the market keeps them
		},
		SignCheck: a.signCheck,
		HeadCheck: a.headCheck,
		OnEvent:   a.onEvent,
		Logger:    log.With("agent", cfg.Name),
	})
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("agent %s: start node: %w", cfg.Name, err)
	}
	a.node.Host().SetDirectHandler(a.onDirect)
	close(a.started)
	return a, nil
}

// openHome loads key.json and chain.db from dir, creating them (the same
// layout as `negotiate init`) when missing.
func openHome(dir string) (*sign.PrivateKey, *chain.Chain, error) {
	keyPath, chainPath := filepath.Join(dir, "key.json"), filepath.Join(dir, "chain.db")
	if _, err := os.Stat(keyPath); errors.Is(err, os.ErrNotExist) {
		scheme, err := sign.SchemeByName(sign.DefaultScheme)
		if err != nil {
			return nil, nil, err
		}
		key, err := scheme.GenerateKey()
		if err != nil {
			return nil, nil, err
		}
		if err := sign.SaveKeyFile(keyPath, key); err != nil {
			return nil, nil, err
		}
		c, err := chain.Create(chainPath, key, time.Now().UnixMilli())
		if err != nil {
			return nil, nil, err
		}
		return key, c, nil
	}
	key, err := sign.LoadKeyFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	c, err := chain.Open(chainPath, chain.Options{})
	if err != nil {
		return nil, nil, err
	}
	return key, c, nil
}

// ID is the agent's ID.
func (a *Agent) ID() sign.AgentID { return a.key.AgentID() }

// Name is the agent's name in the market.
func (a *Agent) Name() string { return a.cfg.Name }

// Addrs are the agent's listen multiaddrs (bootstrap addresses for others).
func (a *Agent) Addrs() []string { return a.node.Host().Addrs() }

// Chain is the agent's source chain.
func (a *Agent) Chain() *chain.Chain { return a.chain }

// Close stops the node and closes the chain.
func (a *Agent) Close() error {
	return errors.Join(a.node.Close(), a.chain.Close())
}

// Publish announces the seller's categories in the DHT.
func (a *Agent) Publish(ctx context.Context) error {
	done := map[string]bool{}
	for _, l := range a.cfg.Listings {
		if done[l.Category] {
			continue
		}
		done[l.Category] = true
		if err := a.node.Host().Provide(ctx, CategoryKey(l.Category)); err != nil {
			return fmt.Errorf("%s: publish %s: %w", a.cfg.Name, l.Category, err)
		}
	}
	return nil
}

func (a *Agent) report(r Report) {
	r.Agent = a.cfg.Name
	if a.cfg.Report != nil {
		a.cfg.Report(r)
	}
}

// ---- direct messages: catalogue and chain ----

func (a *Agent) onDirect(_ context.Context, from sign.AgentID, d *protocol.Direct) *protocol.DirectReply {
	switch d.ContentType {
	case ContentTypeCatalogue:
		if a.cfg.Role != RoleSeller {
			return &protocol.DirectReply{Reason: "not a seller"}
		}
		b, err := SignCatalogue(a.key, a.cfg.Listings, time.Now())
		if err != nil {
			return &protocol.DirectReply{Reason: err.Error()}
		}
		return &protocol.DirectReply{Accepted: true, Payload: b}
	case ContentTypeChain:
		entries, err := a.presentedChain()
		if err != nil {
			return &protocol.DirectReply{Reason: err.Error()}
		}
		b, err := detCBOR.Marshal(entries)
		if err != nil {
			return &protocol.DirectReply{Reason: err.Error()}
		}
		if len(b) > protocol.MaxDirectBytes {
			return &protocol.DirectReply{Reason: fmt.Sprintf("chain of %d bytes is over the direct message limit", len(b))}
		}
		return &protocol.DirectReply{Accepted: true, Payload: b}
	}
	return &protocol.DirectReply{Reason: "unknown content type " + d.ContentType}
}

// presentedChain is the chain this agent shows its counterparts: all of
// it, except for a hider that is cheating.
func (a *Agent) presentedChain() ([]chain.Entry, error) {
	entries, err := ReadChain(a.chain)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	cut := a.cheating && a.cfg.Cheat == CheatHider
	a.mu.Unlock()
	if cut {
		entries = cutLastTrade(entries)
	}
	return entries, nil
}

// cutLastTrade drops the last agreement and everything after it.
func cutLastTrade(entries []chain.Entry) []chain.Entry {
	for i := len(entries) - 1; i > 0; i-- {
		if entries[i].Kind == kindAgreement {
			return entries[:i]
		}
	}
	return entries
}

// standing is what this agent claims about itself: the truth, or the
// hider's shorter chain.
func (a *Agent) standing() (Standing, error) {
	entries, err := a.presentedChain()
	if err != nil {
		return Standing{}, err
	}
	return Ledger(a.ID(), entries)
}

// ---- checks before signing (run inside the engine: no network) ----

// tradeOf decodes the trade of an agreement and finds the counterpart's
// standing as this agent verified it: the seller's by session, the
// buyer's in its one current deal (its session ID is not known before
// Propose returns, and the engine may ask before that).
func (a *Agent) tradeOf(ag *protocol.Agreement) (*Trade, Standing, error) {
	var t Trade
	if err := cbor.Unmarshal(ag.Terms, &t); err != nil {
		return nil, Standing{}, fmt.Errorf("terms are not a trade: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	other, ok := a.verified[ag.Session]
	if t.Buyer == a.ID() && a.deal != nil && a.deal.seller == t.Seller {
		other, ok = a.deal.standing, true
	}
	if !ok {
		return nil, Standing{}, errors.New("no verified chain of the counterpart for this session")
	}
	return &t, other, nil
}

// signCheck re-checks the final terms against this agent's chain now and
// the counterpart's chain as verified during the negotiation. The engine
// asks it before this agent signs, as initiator (the buyer) or participant
// (the seller).
func (a *Agent) signCheck(ag *protocol.Agreement) error {
	if a.cfg.Cheat != "" {
		return nil // a cheater does not check its own lies
	}
	t, other, err := a.tradeOf(ag)
	if err != nil {
		return err
	}
	own, err := OwnStanding(a.chain)
	if err != nil {
		return err
	}
	return CheckTrade(t, a.ID(), own, other)
}

// headCheck: the counterpart signed at the head of the chain it presented,
// so nothing was left out of it.
func (a *Agent) headCheck(ag *protocol.Agreement, heads map[sign.AgentID]chain.Head) error {
	t, other, err := a.tradeOf(ag)
	if err != nil {
		return err
	}
	cp := t.Buyer
	if cp == a.ID() {
		cp = t.Seller
	}
	h, ok := heads[cp]
	if !ok {
		return fmt.Errorf("counterpart %s has not signed yet", cp.Short())
	}
	if h != other.Head {
		return fmt.Errorf("counterpart %s signed at head %d but presented a chain ending at head %d: %d entries left out: %w",
			cp.Short(), h.Seq, other.Head.Seq, int64(h.Seq)-int64(other.Head.Seq), ErrCheat)
	}
	return nil
}

// ---- events ----

func (a *Agent) onEvent(ev negotiate.Event) {
	switch {
	case ev.Kind == negotiate.EvProposal && a.cfg.Role == RoleSeller:
		go a.onProposal(ev)
	case ev.Kind == negotiate.EvCounter && a.cfg.Role == RoleBuyer:
		select {
		case a.counters <- ev:
		default:
			a.log.Warn("counter dropped: buyer is not keeping up", "session", ev.Session)
		}
	case ev.Outcome != nil:
		a.ended(ev)
	}
}

// ended forgets a session's verified standing, frees the seller's desk
// and tells OnOutcome.
func (a *Agent) ended(ev negotiate.Event) {
	a.mu.Lock()
	delete(a.verified, ev.Session)
	atDesk := a.deskBy == ev.Session
	if atDesk {
		a.deskBy = ""
	}
	a.mu.Unlock()
	if atDesk {
		<-a.desk
	}
	if a.cfg.OnOutcome != nil {
		a.cfg.OnOutcome(a, ev.Outcome)
	}
}

// sitAtDesk makes session the seller's one negotiation; later buyers wait.
func (a *Agent) sitAtDesk(session string) bool {
	a.mu.Lock()
	if a.deskBy == session {
		a.mu.Unlock()
		return true
	}
	a.mu.Unlock()
	select {
	case a.desk <- struct{}{}:
	case <-time.After(deskWait):
		return false
	}
	a.mu.Lock()
	a.deskBy = session
	a.mu.Unlock()
	// The session may have ended while this buyer waited (then ended may
	// already have freed the desk for it).
	if info, err := a.node.Session(session); err != nil || info.State != "" {
		a.mu.Lock()
		held := a.deskBy == session
		if held {
			a.deskBy = ""
		}
		a.mu.Unlock()
		if held {
			<-a.desk
		}
		return false
	}
	return true
}

// onProposal is the seller's answer to a buyer's round: verify the buyer's
// chain and claims, then haggle by SellerStrategy.
func (a *Agent) onProposal(ev negotiate.Event) {
	<-a.started
	reject := func(reason string) {
		if err := a.node.Reject(ev.Session, reason); err != nil && !errors.Is(err, negotiate.ErrNotYourTurn) {
			a.log.Warn("reject", "session", ev.Session, "err", err)
		}
	}
	if !a.sitAtDesk(ev.Session) {
		reject("no deal: the seller is busy, try again later")
		return
	}
	var t Trade
	if err := ev.DecodeTerms(&t); err != nil || t.Kind != TradeKind {
		reject("refused: the terms are not a marketplace trade")
		return
	}
	listing, ok := a.listing(t.Listing)
	switch {
	case !ok || listing.Item != t.Item:
		reject(fmt.Sprintf("refused: no listing %q for %q here", t.Listing, t.Item))
		return
	case t.Seller != a.ID() || t.Buyer != ev.From:
		reject("refused: the trade names other parties")
		return
	}
	// The buyer's chain, verified once per session (again if the buyer
	// now claims another head).
	a.mu.Lock()
	other, ok := a.verified[ev.Session]
	a.mu.Unlock()
	if !ok || other.Head != t.BuyerHead {
		ctx, cancel := context.WithTimeout(context.Background(), askTimeout)
		st, err := FetchStanding(ctx, a.node.Host(), ev.From)
		cancel()
		if err != nil {
			reject("refused: " + err.Error())
			return
		}
		other = st
	}
	own, err := OwnStanding(a.chain)
	if err != nil {
		reject("no deal: " + err.Error())
		return
	}
	a.mu.Lock()
	a.verified[ev.Session] = other
	a.mu.Unlock()
	if err := CheckTrade(&t, a.ID(), own, other); err != nil && !errors.Is(err, ErrStale) {
		reject("refused: " + err.Error())
		return
	} else if err != nil {
		// This seller traded since the buyer looked: ask again with fresh terms.
		a.log.Info("stale terms: countering with fresh ones", "session", ev.Session, "err", err)
		ask := max(t.Price, a.cfg.Seller.Ask(ev.Round, listing.Price))
		a.counter(ev.Session, NewTrade(listing, ask, ev.From, a.ID(), other, own), reject)
		return
	}
	move, ask := a.cfg.Seller.OnBid(ev.Round, listing.Price, t.Price)
	switch move {
	case MoveAccept:
		if err := a.node.Accept(ev.Session); err != nil {
			a.log.Warn("accept", "session", ev.Session, "err", err)
		}
	case MoveCounter:
		a.counter(ev.Session, NewTrade(listing, ask, ev.From, a.ID(), other, own), reject)
	default:
		reject(fmt.Sprintf("no deal: %d is below the seller's floor of %d", t.Price, a.cfg.Seller.Floor(listing.Price)))
	}
}

// counter answers with terms t, unless they would break a credit limit.
func (a *Agent) counter(session string, t Trade, reject func(string)) {
	if err := CheckLimits(&t); err != nil {
		reject("refused: " + err.Error())
		return
	}
	if err := a.node.Counter(session, t); err != nil {
		a.log.Warn("counter", "session", session, "err", err)
	}
}

func (a *Agent) listing(id string) (Listing, bool) {
	for _, l := range a.cfg.Listings {
		if l.ID == id {
			return l, true
		}
	}
	return Listing{}, false
}
