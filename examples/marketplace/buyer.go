package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/sign"
)

// cheatsShown is how many times a cheater is caught before it stops trying.
const cheatsShown = 2

// maxAttempts bounds the sessions a buyer opens for one item (a seller
// busy with another buyer, a walk-away: try the next listing).
const maxAttempts = 4

// Buy looks for items in category and buys up to n of them, one trade at
// a time in at most tries sessions, haggling by the buyer's strategy. It
// reports every trade and every refusal.
func (a *Agent) Buy(ctx context.Context, category string, n, tries int) error {
	if a.cfg.Role != RoleBuyer {
		return fmt.Errorf("%s is not a buyer", a.cfg.Name)
	}
	bought := 0
	avoid := map[sign.AgentID]bool{} // sellers that said no this time round
	var offers []Offer
	for attempt := 0; bought < n && attempt < tries; attempt++ {
		if a.cfg.Cheat != "" && a.caught >= cheatsShown {
			break // the point is made
		}
		o, ok := cheapest(offers, avoid, a.cfg.Prefer)
		if !ok {
			// Look (again): every seller found so far said no.
			var err error
			if offers, err = a.findOffers(ctx, category); err != nil {
				return err
			}
			clear(avoid)
			o, _ = cheapest(offers, avoid, a.cfg.Prefer)
		}
		ok, err := a.trade(ctx, o)
		if err != nil {
			return err
		}
		if ok {
			bought++
		} else {
			avoid[o.Seller] = true
		}
	}
	return nil
}

// findOffers finds the offers in category, looking again for a while if
// there are none yet (a seller's provider record may still be on its way).
func (a *Agent) findOffers(ctx context.Context, category string) ([]Offer, error) {
	logf := func(f string, args ...any) { a.log.Info(fmt.Sprintf(f, args...)) }
	for try := 0; ; try++ {
		offers, err := FindOffers(ctx, a.node.Host(), category, logf)
		switch {
		case err == nil && len(offers) > 0:
			return offers, nil
		case try >= findTries:
			if err == nil {
				err = fmt.Errorf("%s: no seller of %s found", a.cfg.Name, category)
			}
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(findRetry):
		}
	}
}

// findTries and findRetry: how often and how far apart a buyer looks again
// for sellers when it found none.
const (
	findTries = 10
	findRetry = 300 * time.Millisecond
)

// pickSpread is how close to the cheapest price (in percent) an offer must
// be for a buyer to consider it as good as the cheapest: buyers then spread
// over those sellers (by Prefer) instead of all queueing at one.
const pickSpread = 20

// cheapest picks an offer from a seller not in avoid among those within
// pickSpread percent of the cheapest such offer (offers come cheapest
// first), the prefer-th of them.
func cheapest(offers []Offer, avoid map[sign.AgentID]bool, prefer int) (Offer, bool) {
	var near []Offer
	for _, o := range offers {
		if avoid[o.Seller] {
			continue
		}
		if len(near) > 0 && o.Listing.Price*100 > near[0].Listing.Price*(100+pickSpread) {
			break
		}
		near = append(near, o)
	}
	if len(near) == 0 {
		return Offer{}, false
	}
	return near[prefer%len(near)], true
}

// trade runs one session with the seller of offer o. It reports true if
// the trade committed.
func (a *Agent) trade(ctx context.Context, o Offer) (bool, error) {
	cheat := ""
	if a.cfg.Cheat == CheatLiar || (a.cfg.Cheat == CheatHider && a.hasTraded()) {
		cheat = a.cfg.Cheat
	}
	a.mu.Lock()
	a.cheating = cheat != ""
	a.mu.Unlock()
	own, err := a.standing()
	if err != nil {
		return false, err
	}
	actx, cancel := context.WithTimeout(ctx, askTimeout)
	seller, err := FetchStanding(actx, a.node.Host(), o.Seller)
	cancel()
	if err != nil {
		a.report(Report{Kind: "refused", With: o.Seller, Reason: "buyer refused the seller: " + err.Error()})
		return false, nil
	}
	l := o.Listing
	bid := a.cfg.Buyer.Opening(l.Price)
	if a.spent+bid > a.cfg.Buyer.Budget {
		a.report(Report{Kind: "no-deal", With: o.Seller, Reason: "budget spent"})
		return false, nil
	}
	t := NewTrade(l, bid, a.ID(), o.Seller, own, seller)
	if cheat == CheatLiar {
		t.BuyerBalance += 200 // claims 200 more credit than its chain gives
	}
	if err := CheckTrade(&t, a.ID(), own, seller); err != nil && cheat != CheatLiar {
		a.report(Report{Kind: "no-deal", With: o.Seller, Reason: err.Error()})
		return false, nil
	}
	a.setDeal(o.Seller, seller)
	defer a.setDeal("", Standing{})
	p, err := a.node.Propose(ctx, []sign.AgentID{o.Seller}, t, negotiate.ProposeOptions{Timeout: sessionTimeout, MaxRounds: MaxRounds})
	if err != nil {
		a.report(Report{Kind: "no-deal", With: o.Seller, Reason: err.Error()})
		return false, nil
	}
	done := make(chan *negotiate.Outcome, 1)
	go func() {
		out, err := p.Wait(ctx)
		if err != nil {
			out = &negotiate.Outcome{State: negotiate.StateAborted, Session: p.ID(), Reason: err.Error()}
		}
		done <- out
	}()
	last := t
	for {
		select {
		case out := <-done:
			return a.finish(out, last, cheat, o), nil
		case ev := <-a.counters:
			if ev.Session != p.ID() {
				continue // a stale event of an earlier session
			}
			next, reason := a.onCounter(ctx, ev, l, last, own, &seller)
			switch {
			case reason != "":
				if err := a.node.Reject(p.ID(), reason); err != nil {
					a.log.Warn("reject", "session", p.ID(), "err", err)
				}
			case next == nil:
				if err := a.node.Accept(p.ID()); err != nil {
					a.log.Warn("accept", "session", p.ID(), "err", err)
				}
			default:
				if cheat == CheatLiar {
					next.BuyerBalance += 200
				}
				last = *next
				if err := a.node.Counter(p.ID(), next); err != nil {
					a.log.Warn("counter", "session", p.ID(), "err", err)
				}
			}
		}
	}
}

// onCounter checks the seller's counter and decides: accept (nil, ""),
// counter (next terms) or walk away (a reason).
func (a *Agent) onCounter(ctx context.Context, ev negotiate.Event, l Listing, last Trade, own Standing, seller *Standing) (*Trade, string) {
	var c Trade
	if err := ev.DecodeTerms(&c); err != nil {
		return nil, "refused: the counter is not a trade"
	}
	if c.Listing != last.Listing || c.Item != last.Item || c.Buyer != a.ID() || c.Seller != last.Seller {
		return nil, "refused: the counter changed what is traded"
	}
	if c.SellerHead != seller.Head {
		// The seller traded since: look at its chain again.
		actx, cancel := context.WithTimeout(ctx, askTimeout)
		st, err := FetchStanding(actx, a.node.Host(), c.Seller)
		cancel()
		if err != nil {
			return nil, "refused: " + err.Error()
		}
		*seller = st
		a.setDeal(c.Seller, st)
	}
	if err := CheckTrade(&c, a.ID(), own, *seller); err != nil {
		if errors.Is(err, ErrCheat) || errors.Is(err, ErrCredit) {
			return nil, "refused: " + err.Error()
		}
		if a.cfg.Cheat != CheatLiar {
			return nil, "no deal: " + err.Error()
		}
	}
	move, bid := a.cfg.Buyer.OnAsk(ev.Round, l.Price, last.Price, c.Price, a.spent)
	switch move {
	case MoveAccept:
		return nil, ""
	case MoveCounter:
		t := NewTrade(l, bid, a.ID(), c.Seller, own, *seller)
		return &t, ""
	default:
		return nil, fmt.Sprintf("no deal: walking away, the ask of %d is above what this buyer pays", c.Price)
	}
}

// finish reports a session's outcome from the buyer's side.
func (a *Agent) finish(out *negotiate.Outcome, t Trade, cheat string, o Offer) bool {
	r := Report{Session: out.Session, With: o.Seller, Rounds: out.Round, Cheat: cheat, Reason: out.Reason}
	if out.State == negotiate.StateCommitted {
		rec, _, err := negotiate.VerifyReceipt(out.Receipt)
		if err == nil {
			var final Trade
			if err := cbor.Unmarshal(rec.Agreement.Terms, &final); err == nil {
				t = final
			}
		}
		a.mu.Lock()
		a.spent += t.Price
		a.mu.Unlock()
		r.Kind, r.Trade, r.Record = "committed", &t, out.RecordHash
		a.report(r)
		return true
	}
	r.Trade = &t
	switch {
	case strings.Contains(out.Reason, "refused: "), strings.Contains(out.Reason, "check before signing failed"):
		r.Kind = "refused"
		if cheat != "" && strings.Contains(out.Reason, ErrCheat.Error()) {
			a.caught++
		}
	default:
		r.Kind = "no-deal"
	}
	a.report(r)
	return false
}

// setDeal records the seller of the buyer's open trade and its verified
// standing, for the checks before signing ("" clears it).
func (a *Agent) setDeal(seller sign.AgentID, st Standing) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if seller == "" {
		a.deal = nil
		return
	}
	a.deal = &deal{seller: seller, standing: st}
}

// hasTraded reports whether this agent has a trade on its chain.
func (a *Agent) hasTraded() bool {
	st, err := OwnStanding(a.chain)
	return err == nil && st.Trades > 0
}
