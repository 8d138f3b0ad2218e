package negotiate

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/internal/hooks"
	"github.com/negotiate-dev/negotiate/protocol"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// TestNodeHeadCheck: over real nodes, a participant's HeadCheck sees the
// head its initiator signed at (which SignCheck's agreement does not
// hold), and its error refuses the session for both, leaving no lock.
func TestNodeHeadCheck(t *testing.T) {
	dir := t.TempDir()
	initiator := nodeTestStart(t, dir, "hc-init", nil, nil)
	var (
		mu     sync.Mutex
		seen   []map[sign.AgentID]chain.Head
		refuse error
	)
	key := hostTestKey(t, "node/hc-part")
	path := filepath.Join(dir, "hc-part.db")
	ch, err := chain.Create(path, key, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	part := &nodeTestAgent{name: "hc-part", key: key, ch: ch, path: path}
	part.configure = func(cfg *NodeConfig, _ *hooks.Hooks) {
		cfg.HeadCheck = func(_ *protocol.Agreement, heads map[sign.AgentID]chain.Head) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, heads)
			return refuse
		}
	}
	part.startNode(t, AcceptAll, initiator)
	hostTestResolve(t, initiator.node.Host(), key.AgentID())
	hostTestResolve(t, part.node.Host(), initiator.key.AgentID())
	agents := []*nodeTestAgent{initiator, part}

	propose := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		p, err := initiator.node.Propose(ctx, []sign.AgentID{key.AgentID()}, map[string]any{"item": "book", "price": 20}, ProposeOptions{Timeout: 15 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return p.ID()
	}

	want := initiator.ch.Head()
	id := propose()
	nodeTestCheck(t, agents, id, StateCommitted)
	mu.Lock()
	if len(seen) != 1 || len(seen[0]) != 1 || seen[0][initiator.key.AgentID()] != want {
		t.Fatalf("HeadCheck saw %v, want one call with the initiator's head %v", seen, want)
	}
	refuse = errors.New("the presented chain ends elsewhere")
	mu.Unlock()

	id = propose()
	nodeTestCheck(t, agents, id, StateAborted)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	o, err := initiator.node.Wait(ctx, id)
	if err != nil || !strings.Contains(o.Reason, "the presented chain ends elsewhere") {
		t.Fatalf("initiator's outcome %+v (%v) does not carry the HeadCheck's reason", o, err)
	}
}
