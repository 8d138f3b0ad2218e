package protocol

import (
	"container/heap"
	"fmt"
	"sync"

	"github.com/negotiate-dev/negotiate/sign"
)

// Replay guard limits.
const (
	// DefaultReplayCapacity is how many (sender, nonce) pairs a guard
	// remembers at most: about 10 MiB, and 100 messages a second for the
	// whole MaxMessageLifetime.
	DefaultReplayCapacity = 1 << 16
	// DefaultReplayPerSender is how many pairs one sender may hold, so one
	// hostile peer cannot fill the guard and lock everyone else out.
	DefaultReplayPerSender = 1 << 12
)

// ReplayGuard remembers the (sender, nonce) of every message it accepted
// until that message expires, and refuses the same pair again. Memory is
// bounded: when full it refuses new messages (ErrReplayFull) rather than
// forget a pair that could still be replayed; expired pairs are dropped
// first. Time is passed in; it is safe for concurrent use.
type ReplayGuard struct {
	mu        sync.Mutex
	capacity  int
	perSender int
	seen      map[replayKey]int64 // pair → expiry (unix ms)
	senders   map[sign.AgentID]int
	byExpiry  expiryHeap
}

type replayKey struct {
	from  sign.AgentID
	nonce string
}

// NewReplayGuard returns a guard remembering at most capacity pairs in all
// and perSender pairs per sender; zero or negative values select
// DefaultReplayCapacity and DefaultReplayPerSender.
func NewReplayGuard(capacity, perSender int) *ReplayGuard {
	if capacity <= 0 {
		capacity = DefaultReplayCapacity
	}
	if perSender <= 0 {
		perSender = DefaultReplayPerSender
	}
	if perSender > capacity {
		perSender = capacity
	}
	return &ReplayGuard{
		capacity:  capacity,
		perSender: perSender,
		seen:      make(map[replayKey]int64),
		senders:   make(map[sign.AgentID]int),
	}
}

// Check records env's (sender, nonce) at nowMillis. It fails with
// ErrReplay if the pair was seen and has not expired, ErrExpired if the
// message is expired or expires beyond the lifetime limit (so it could not
// be remembered long enough), and ErrReplayFull when the guard or the
// sender's share is full. A refused message is not recorded.
func (g *ReplayGuard) Check(env *Envelope, nowMillis int64) error {
	if env == nil {
		return fmt.Errorf("%w: replay check of a nil envelope", ErrMalformed)
	}
	m := &env.Msg
	if err := CheckExpiry(m.Expires, nowMillis); err != nil {
		return fmt.Errorf("protocol: replay check %s from %s: %w", m.Type, m.From.Short(), err)
	}
	key := replayKey{from: m.From, nonce: string(m.Nonce)}

	g.mu.Lock()
	defer g.mu.Unlock()
	g.evictLocked(nowMillis)
	if _, ok := g.seen[key]; ok {
		return fmt.Errorf("%w: %s from %s with nonce %x was already received", ErrReplay, m.Type, m.From.Short(), m.Nonce)
	}
	if len(g.seen) >= g.capacity {
		return fmt.Errorf("%w: replay guard holds %d messages, its limit: retry after some expire", ErrReplayFull, len(g.seen))
	}
	if g.senders[m.From] >= g.perSender {
		return fmt.Errorf("%w: %s has %d unexpired messages, the per-sender limit: retry after some expire", ErrReplayFull, m.From.Short(), g.senders[m.From])
	}
	g.seen[key] = m.Expires
	g.senders[m.From]++
	heap.Push(&g.byExpiry, replayEntry{key: key, expires: m.Expires})
	return nil
}

// Len is the number of pairs currently remembered (expired ones included
// until the next Check drops them).
func (g *ReplayGuard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.seen)
}

// evictLocked drops every pair whose message expired before nowMillis:
// Open refuses those messages anyway.
func (g *ReplayGuard) evictLocked(nowMillis int64) {
	for len(g.byExpiry) > 0 && g.byExpiry[0].expires < nowMillis {
		e := heap.Pop(&g.byExpiry).(replayEntry)
		delete(g.seen, e.key)
		if n := g.senders[e.key.from] - 1; n > 0 {
			g.senders[e.key.from] = n
		} else {
			delete(g.senders, e.key.from)
		}
	}
}

type replayEntry struct {
	key     replayKey
	expires int64
}

// expiryHeap is a min-heap of entries by expiry.
type expiryHeap []replayEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires < h[j].expires }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(replayEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
