package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/negotiate/transport"
	"github.com/negotiate-dev/negotiate/sign"
)

// Mutual credit with attested state.
//
// There is no money: every agent starts at balance 0, a trade moves Price
// credits from the buyer's balance to the seller's, and every balance must
// stay within [CreditMin, CreditMax]. The balances sum to zero at all
// times, by construction.
//
// Nobody keeps the ledger but the agents' own source chains. Every trade
// is a countersigned record whose terms (Trade) state both parties'
// balances after the trade and the chain heads they trade at. Before an
// agent signs, it asks its counterpart for its chain since genesis
// (ContentTypeChain), verifies it (negotiate.VerifyChain: hash links, entry
// signatures, every record's countersignatures), replays the trades on it
// (Ledger) and checks the counterpart's claims against what the chain
// says. The last check happens inside the engine, right before signing
// (Checker.HeadCheck): the head the counterpart actually signed at must be
// the head of the chain it presented, so no trade was left out.

const (
	// CreditMin and CreditMax bound every agent's balance.
	CreditMin = -500
	CreditMax = 500

	// TradeKind marks the terms of a marketplace trade; agreements with
	// other terms do not move credit.
	TradeKind = "marketplace/trade/v1"

	// ContentTypeChain asks an agent for its source chain since genesis;
	// the answer is the CBOR of []chain.Entry.
	ContentTypeChain = "marketplace/chain/v1"

	// kindAgreement is the chain entry kind of a countersigned record.
	kindAgreement = "agreement"
)

// Trade is the terms of one trade, signed by both parties. Balances are
// after the trade; heads are the parties' chain heads before it (the
// record sits right after them).
type Trade struct {
	Kind          string       `cbor:"kind" json:"kind"`
	Listing       string       `cbor:"listing" json:"listing"`
	Item          string       `cbor:"item" json:"item"`
	Price         int64        `cbor:"price" json:"price"`
	Buyer         sign.AgentID `cbor:"buyer" json:"buyer"`
	Seller        sign.AgentID `cbor:"seller" json:"seller"`
	BuyerBalance  int64        `cbor:"buyer_balance" json:"buyer_balance"`
	SellerBalance int64        `cbor:"seller_balance" json:"seller_balance"`
	BuyerHead     chain.Head   `cbor:"buyer_head" json:"buyer_head"`
	SellerHead    chain.Head   `cbor:"seller_head" json:"seller_head"`
}

// Standing is what an agent's verified chain says about it: its head and
// its balance there.
type Standing struct {
	Head    chain.Head
	Balance int64
	Trades  int
}

// ErrCheat marks a refusal because a counterpart's claims do not match
// its chain (as opposed to an honest refusal such as the credit limit).
var ErrCheat = errors.New("claims do not match the chain")

// ErrStale marks terms that state this agent at a head or balance it is
// no longer at (it traded since): ask again with fresh terms.
var ErrStale = errors.New("stale terms")

// ErrCredit marks a refusal because a trade would leave a party outside
// the credit limits.
var ErrCredit = errors.New("credit limit")

// Ledger replays owner's chain (already verified with negotiate.VerifyChain)
// and returns its standing at the last entry. Every trade record must be
// consistent with the replay: owner is a party, the balance the record
// states for owner is the running balance, the head it states for owner is
// where the record sits, and the balance stays within the credit limits.
func Ledger(owner sign.AgentID, entries []chain.Entry) (Standing, error) {
	if len(entries) == 0 {
		return Standing{}, errors.New("ledger: empty chain")
	}
	var st Standing
	for i := range entries {
		e := &entries[i]
		if e.Kind != kindAgreement {
			continue
		}
		rec, _, err := negotiate.VerifyReceipt(e.Payload)
		if err != nil {
			return Standing{}, fmt.Errorf("ledger: entry %d: %w", e.Seq, err)
		}
		var t Trade
		if err := cbor.Unmarshal(rec.Agreement.Terms, &t); err != nil || t.Kind != TradeKind {
			continue // an agreement that is not a trade moves no credit
		}
		prev := chain.Head{Seq: e.Seq - 1, Hash: e.Prev}
		switch owner {
		case t.Buyer:
			st.Balance -= t.Price
			if t.BuyerBalance != st.Balance || t.BuyerHead != prev {
				return Standing{}, fmt.Errorf("ledger: entry %d: trade states buyer balance %d at head %d, the chain gives %d at head %d: %w",
					e.Seq, t.BuyerBalance, t.BuyerHead.Seq, st.Balance, prev.Seq, ErrCheat)
			}
		case t.Seller:
			st.Balance += t.Price
			if t.SellerBalance != st.Balance || t.SellerHead != prev {
				return Standing{}, fmt.Errorf("ledger: entry %d: trade states seller balance %d at head %d, the chain gives %d at head %d: %w",
					e.Seq, t.SellerBalance, t.SellerHead.Seq, st.Balance, prev.Seq, ErrCheat)
			}
		default:
			return Standing{}, fmt.Errorf("ledger: entry %d: a trade between two other agents: %w", e.Seq, ErrCheat)
		}
		if t.Price <= 0 || st.Balance < CreditMin || st.Balance > CreditMax {
			return Standing{}, fmt.Errorf("ledger: entry %d: price %d, balance %d outside [%d, %d]: %w", e.Seq, t.Price, st.Balance, CreditMin, CreditMax, ErrCredit)
		}
		st.Trades++
	}
	last := &entries[len(entries)-1]
	st.Head = chain.Head{Seq: last.Seq, Hash: last.Hash()}
	return st, nil
}

// ReadChain reads a whole chain since genesis.
func ReadChain(c *chain.Chain) ([]chain.Entry, error) {
	var all []chain.Entry
	for {
		page, err := c.Entries(uint64(len(all)), 0)
		if err != nil {
			return nil, fmt.Errorf("read chain %s: %w", c.AgentID().Short(), err)
		}
		all = append(all, page...)
		if len(page) < chain.MaxEntriesPerRead {
			return all, nil
		}
	}
}

// OwnStanding is an agent's standing on its own chain.
func OwnStanding(c *chain.Chain) (Standing, error) {
	entries, err := ReadChain(c)
	if err != nil {
		return Standing{}, err
	}
	return Ledger(c.AgentID(), entries)
}

// FetchStanding asks agent id for its chain since genesis, verifies it
// and replays it. The standing is what that chain says; whether the agent
// presented all of it is checked when it signs (Checker.HeadCheck).
func FetchStanding(ctx context.Context, h *transport.Host, id sign.AgentID) (Standing, error) {
	r, err := h.Request(ctx, id, ContentTypeChain, nil)
	if err != nil {
		return Standing{}, fmt.Errorf("ask %s for its chain: %w", id.Short(), err)
	}
	var entries []chain.Entry
	if err := cbor.Unmarshal(r.Payload, &entries); err != nil {
		return Standing{}, fmt.Errorf("chain of %s: decode: %w", id.Short(), err)
	}
	if err := negotiate.VerifyChain(id, entries); err != nil {
		return Standing{}, fmt.Errorf("chain of %s does not verify: %w: %w", id.Short(), err, ErrCheat)
	}
	st, err := Ledger(id, entries)
	if err != nil {
		return Standing{}, fmt.Errorf("chain of %s: %w", id.Short(), err)
	}
	return st, nil
}

// CheckTrade checks trade t as one side sees it: own is this agent's
// standing now, other the counterpart's verified standing. It returns nil
// or an error wrapping ErrCheat (a claim does not match a chain) or
// ErrCredit (a balance would leave the limits).
func CheckTrade(t *Trade, self sign.AgentID, own, other Standing) error {
	if t.Kind != TradeKind {
		return fmt.Errorf("terms are not a marketplace trade (%q)", t.Kind)
	}
	if t.Price <= 0 {
		return fmt.Errorf("price %d is not positive", t.Price)
	}
	var ownBal, otherBal int64
	var ownHead, otherHead chain.Head
	var ownDelta int64
	switch self {
	case t.Seller:
		ownBal, otherBal, ownHead, otherHead, ownDelta = t.SellerBalance, t.BuyerBalance, t.SellerHead, t.BuyerHead, t.Price
	case t.Buyer:
		ownBal, otherBal, ownHead, otherHead, ownDelta = t.BuyerBalance, t.SellerBalance, t.BuyerHead, t.SellerHead, -t.Price
	default:
		return fmt.Errorf("this agent is not a party of the trade")
	}
	// The counterpart's claims first: a false claim is refused even when
	// the terms are stale for other reasons.
	if otherHead != other.Head {
		return fmt.Errorf("counterpart claims head %d, its presented chain ends at head %d: %w", otherHead.Seq, other.Head.Seq, ErrCheat)
	}
	if otherBal != other.Balance-ownDelta {
		return fmt.Errorf("counterpart claims balance %d after the trade, its chain gives %d: %w", otherBal, other.Balance-ownDelta, ErrCheat)
	}
	if ownHead != own.Head || ownBal != own.Balance+ownDelta {
		return fmt.Errorf("%w: they state this agent at head %d with balance %d after, its chain is at head %d with balance %d before",
			ErrStale, ownHead.Seq, ownBal, own.Head.Seq, own.Balance)
	}
	return CheckLimits(t)
}

// CheckLimits checks that both balances after trade t are within the
// credit limits (an error wrapping ErrCredit if not).
func CheckLimits(t *Trade) error {
	for _, b := range []int64{t.BuyerBalance, t.SellerBalance} {
		if b < CreditMin || b > CreditMax {
			return fmt.Errorf("balance %d after the trade is outside [%d, %d]: %w", b, CreditMin, CreditMax, ErrCredit)
		}
	}
	return nil
}

// NewTrade builds the terms of a trade at price from both standings.
func NewTrade(l Listing, price int64, buyer, seller sign.AgentID, b, s Standing) Trade {
	return Trade{
		Kind: TradeKind, Listing: l.ID, Item: l.Item, Price: price,
		Buyer: buyer, Seller: seller,
		BuyerBalance: b.Balance - price, SellerBalance: s.Balance + price,
		BuyerHead: b.Head, SellerHead: s.Head,
	}
}
