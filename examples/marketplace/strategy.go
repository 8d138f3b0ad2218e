package main

// Haggling strategies. They are pure functions of the round and the
// prices on the table, so a run is easy to follow and to test; the agents
// (agent.go) carry out what they decide.

// MaxRounds caps a negotiation: the buyer walks away when it is reached.
const MaxRounds = 8

// Move is what a strategy does next.
type Move int

const (
	MoveAccept  Move = iota // take the price on the table
	MoveCounter             // answer with Price
	MoveWalk                // walk away
)

// BuyerStrategy haggles up from an opening bid toward a limit price.
type BuyerStrategy struct {
	// LimitPct is the most the buyer pays for one item, as a percentage
	// of its list price.
	LimitPct int64
	// Budget is the most the buyer spends in all (its credit floor
	// still applies).
	Budget int64
	// OpenPct is the opening bid as a percentage of the list price; each
	// round the bid rises by StepPct of the list price, up to Limit.
	OpenPct, StepPct int64
}

// Limit is the most the buyer pays for an item listed at list.
func (b BuyerStrategy) Limit(list int64) int64 { return max(1, list*b.LimitPct/100) }

// Opening is the first bid on a listing.
func (b BuyerStrategy) Opening(list int64) int64 {
	return min(max(1, list*b.OpenPct/100), b.Limit(list))
}

// OnAsk decides on the seller's ask after the buyer bid lastBid in round.
// spent is what the buyer already spent.
func (b BuyerStrategy) OnAsk(round uint32, list, lastBid, ask, spent int64) (Move, int64) {
	affordable := min(b.Limit(list), b.Budget-spent)
	switch {
	case ask <= affordable && ask <= lastBid+list*b.StepPct/100:
		return MoveAccept, ask // close enough: take it
	case round+1 >= MaxRounds:
		if ask <= affordable {
			return MoveAccept, ask
		}
		return MoveWalk, 0
	}
	bid := min(lastBid+list*b.StepPct/100, affordable, ask)
	if bid <= lastBid {
		if ask <= affordable {
			return MoveAccept, ask
		}
		return MoveWalk, 0 // cannot go higher and the seller will not come down
	}
	if bid == ask {
		return MoveAccept, ask
	}
	return MoveCounter, bid
}

// SellerStrategy concedes from the list price toward a floor.
type SellerStrategy struct {
	// FloorPct is the lowest price as a percentage of the list price.
	FloorPct int64
	// ConcedePct is how much the ask drops each round, as a percentage of
	// the list price.
	ConcedePct int64
}

// Ask is the seller's asking price in round (1-based).
func (s SellerStrategy) Ask(round uint32, list int64) int64 {
	ask := list - int64(round-1)*list*s.ConcedePct/100
	return max(ask, s.Floor(list))
}

// Floor is the lowest price the seller takes.
func (s SellerStrategy) Floor(list int64) int64 { return max(1, list*s.FloorPct/100) }

// OnBid decides on a buyer's bid in round.
func (s SellerStrategy) OnBid(round uint32, list, bid int64) (Move, int64) {
	ask := s.Ask(round, list)
	switch {
	case bid >= ask:
		return MoveAccept, bid
	case round >= MaxRounds:
		return MoveWalk, 0
	}
	return MoveCounter, ask
}
