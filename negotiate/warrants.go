package negotiate

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate/transport"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Warrant limits.
const (
	// maxWarrantsPerAgent bounds the warrants kept against one agent: one
	// convicts; a few more show a habit, not a different verdict.
	maxWarrantsPerAgent = 8
	// maxWarrantedAgents bounds the agents with warrants kept in memory.
	maxWarrantedAgents = 4096
	// warrantFileExt names warrant files in NodeConfig.WarrantDir.
	warrantFileExt = ".warrant"
	// warrantLookupTTL is how long a DHT lookup that found no warrant
	// against an agent stands before a proposal to it asks again.
	warrantLookupTTL = 5 * time.Minute
	// warrantLookupTimeout bounds the DHT lookup of warrants a proposal
	// makes (at most a quarter of its timeout): a slow DHT must not eat
	// the session's time.
	warrantLookupTimeout = 2 * time.Second
)

// Warrant is a verified warrant: evidence that Agent equivocated.
type Warrant struct {
	Agent  sign.AgentID `json:"agent"`
	Proves string       `json:"proves"` // what the two signed items prove together
	Hash   string       `json:"hash"`   // hex SHA-256 of Raw; names its file
	Source string       `json:"source"` // "local" (detected or stored here) or "dht"
	Raw    []byte       `json:"warrant"`
}

// ParseWarrant verifies an encoded warrant (protocol.VerifyWarrant) and
// describes it; it needs no node, so `negotiate verify` uses it offline.
func ParseWarrant(raw []byte) (*Warrant, error) {
	w, what, err := protocol.VerifyWarrant(raw)
	if err != nil {
		return nil, err
	}
	h := sign.Hash(raw)
	return &Warrant{Agent: w.Agent, Proves: what, Hash: hex.EncodeToString(h[:]), Raw: raw}, nil
}

// warrantStore keeps the warrants a node knows, in memory and, with a
// directory, as one file per warrant (<agent>-<hash>.warrant). A file per
// warrant rather than a chain bucket: a warrant is evidence about another
// agent, not part of this agent's own signed history, so it stays out of
// the chain (and its journal); it is rare, small and write-once; and the
// file is exactly what `negotiate verify` and other operators take.
type warrantStore struct {
	dir    string
	mu     sync.Mutex
	by     map[sign.AgentID][]*Warrant
	lookup map[sign.AgentID]time.Time // when the DHT last held no warrant against an agent
}

// needLookup reports whether the DHT should be asked about id: not asked
// within warrantLookupTTL (a proposal then costs no DHT lookup).
func (ws *warrantStore) needLookup(id sign.AgentID, now time.Time) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	at, ok := ws.lookup[id]
	return !ok || now.Sub(at) > warrantLookupTTL
}

// looked records that the DHT held no warrant against id at now.
func (ws *warrantStore) looked(id sign.AgentID, now time.Time) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if len(ws.lookup) >= maxWarrantedAgents {
		clear(ws.lookup)
	}
	ws.lookup[id] = now
}

func openWarrantStore(dir string) (*warrantStore, []error) {
	ws := &warrantStore{dir: dir, by: map[sign.AgentID][]*Warrant{}, lookup: map[sign.AgentID]time.Time{}}
	if dir == "" {
		return ws, nil
	}
	var bad []error
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ws, []error{fmt.Errorf("negotiate: warrant directory: %w", err)}
	}
	files, err := filepath.Glob(filepath.Join(dir, "*"+warrantFileExt))
	if err != nil {
		return ws, []error{err}
	}
	sort.Strings(files)
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err == nil {
			var w *Warrant
			if w, err = ParseWarrant(raw); err == nil {
				w.Source = "local"
				ws.add(w)
				continue
			}
		}
		bad = append(bad, fmt.Errorf("negotiate: warrant file %s: %w", f, err))
	}
	return ws, bad
}

// add keeps w in memory; it reports false if it was known or over a limit.
func (ws *warrantStore) add(w *Warrant) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	list := ws.by[w.Agent]
	for _, x := range list {
		if x.Hash == w.Hash {
			return false
		}
	}
	if len(list) >= maxWarrantsPerAgent || (list == nil && len(ws.by) >= maxWarrantedAgents) {
		return false
	}
	ws.by[w.Agent] = append(list, w)
	return true
}

// has reports whether any warrant against id is known.
func (ws *warrantStore) has(id sign.AgentID) bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	return len(ws.by[id]) > 0
}

// list returns the warrants against id, or all with id "".
func (ws *warrantStore) list(id sign.AgentID) []Warrant {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	var out []Warrant
	for a, l := range ws.by {
		if id != "" && a != id {
			continue
		}
		for _, w := range l {
			out = append(out, *w)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Agent != out[j].Agent {
			return out[i].Agent < out[j].Agent
		}
		return out[i].Hash < out[j].Hash
	})
	return out
}

// count is the number of warrants known.
func (ws *warrantStore) count() int {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	n := 0
	for _, l := range ws.by {
		n += len(l)
	}
	return n
}

// save writes w durably: a temporary file, fsync, rename, directory fsync.
func (ws *warrantStore) save(w *Warrant) error {
	if ws.dir == "" {
		return nil
	}
	name := filepath.Join(ws.dir, string(w.Agent)+"-"+w.Hash[:16]+warrantFileExt)
	if _, err := os.Stat(name); err == nil {
		return nil
	}
	tmp, err := os.CreateTemp(ws.dir, ".warrant-*")
	if err != nil {
		return fmt.Errorf("negotiate: save warrant: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(w.Raw); err != nil {
		tmp.Close()
		return fmt.Errorf("negotiate: save warrant: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("negotiate: save warrant: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("negotiate: save warrant: %w", err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("negotiate: save warrant: %w", err)
	}
	if d, err := os.Open(ws.dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// admit is the engine's CoreConfig.Admit: it refuses a new session with an
// agent that has a warrant known here, unless NodeConfig.AllowWarranted.
func (n *Node) admit(parties []protocol.Party) error {
	if n.cfg.AllowWarranted {
		return nil
	}
	for _, p := range parties {
		if p.ID != n.AgentID() && n.warrants.has(p.ID) {
			return fmt.Errorf("%w: %s (see negotiate warrants %s)", ErrWarranted, p.ID.Short(), p.ID)
		}
	}
	return nil
}

// takeWarrant stores and publishes a warrant the engine built (an
// EvViolation with proof). It is called without n.mu held.
func (n *Node) takeWarrant(raw []byte) {
	w, err := ParseWarrant(raw)
	if err != nil {
		n.log.Warn("engine warrant does not verify", "err", err)
		return
	}
	w.Source = "local"
	if !n.warrants.add(w) {
		return
	}
	if err := n.warrants.save(w); err != nil {
		n.log.Error("warrant not stored", "agent", w.Agent.Short(), "err", err)
	}
	n.log.Warn("warrant for equivocation", "agent", w.Agent, "proves", w.Proves, "hash", w.Hash)
	n.publishWarrants(raw)
}

// publishWarrants puts warrants into the DHT in the background (a goroutine
// the node owns): one just taken, or at start every one stored here, since
// DHT records expire and the node that holds the evidence keeps it alive.
func (n *Node) publishWarrants(raws ...[]byte) {
	if len(raws) == 0 {
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for _, raw := range raws {
			ctx, cancel := context.WithTimeout(n.ctx, sendTimeout)
			err := n.host.PublishWarrant(ctx, raw)
			cancel()
			if err != nil && n.ctx.Err() == nil {
				n.log.Warn("publish warrant", "err", err)
			}
		}
	}()
}

// Warrants lists the warrants known against agent (all agents with ""):
// those this node holds and, with lookup and an agent named, the one the
// DHT holds (verified; kept here too, so later sessions with the agent
// are refused without a lookup).
func (n *Node) Warrants(ctx context.Context, agent sign.AgentID, lookup bool) ([]Warrant, error) {
	out := n.warrants.list(agent)
	if !lookup || agent == "" {
		return out, nil
	}
	raw, err := n.host.FindWarrant(ctx, agent)
	if err != nil {
		if errors.Is(err, transport.ErrNoWarrant) {
			return out, nil
		}
		return out, err
	}
	w, err := ParseWarrant(raw)
	if err != nil {
		return out, err
	}
	for _, x := range out {
		if x.Hash == w.Hash {
			return out, nil
		}
	}
	w.Source = "dht"
	if n.warrants.add(w) {
		if err := n.warrants.save(w); err != nil {
			n.log.Warn("warrant from the DHT not stored", "err", err)
		}
	}
	return append(out, *w), nil
}

// checkWarranted refuses a proposal to agents with a warrant, known here
// or found in the DHT, unless NodeConfig.AllowWarranted.
func (n *Node) checkWarranted(ctx context.Context, with []sign.AgentID) error {
	if n.cfg.AllowWarranted {
		return nil
	}
	var bad []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range with {
		if n.warrants.has(id) {
			mu.Lock()
			bad = append(bad, id.Short())
			mu.Unlock()
			continue
		}
		if !n.warrants.needLookup(id, time.Now()) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ws, err := n.Warrants(ctx, id, true); len(ws) > 0 {
				mu.Lock()
				bad = append(bad, id.Short())
				mu.Unlock()
			} else if err == nil {
				n.warrants.looked(id, time.Now())
			} else {
				n.log.Debug("warrant lookup failed; proposing on local warrants only", "agent", id.Short(), "err", err)
			}
		}()
	}
	wg.Wait()
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("negotiate: propose: %w: %s (see negotiate warrants; NodeConfig.AllowWarranted to propose anyway)", ErrWarranted, strings.Join(bad, ", "))
	}
	return nil
}
