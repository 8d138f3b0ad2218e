package negotiate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// TestNodeRollbackOffer: a node restarted on an older copy of its chain
// knows nothing yet when it makes a signed offer, which it would sign at
// once at a seq it signed at before; it asks the counterparty first, and
// the offer is refused with ErrBehind naming the missing seqs and the
// holder, changing nothing. A negotiated proposal by the counterparty is
// refused too. Recover puts the chain back exactly as it was, and offers
// commit again.
func TestNodeRollbackOffer(t *testing.T) {
	agents := nodeTestNetwork(t, 2, AcceptAll)
	a, b := agents[0], agents[1]
	offer := func(from, to *nodeTestAgent, opts ProposeOptions) (*Outcome, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		p, err := from.node.Propose(ctx, []sign.AgentID{to.key.AgentID()}, map[string]any{"x": 1}, opts)
		if err != nil {
			return nil, err
		}
		return p.Wait(ctx)
	}
	for i := 0; i < 2; i++ {
		if o, err := offer(a, b, ProposeOptions{Offer: true, Timeout: 10 * time.Second}); err != nil || o.State != StateCommitted {
			t.Fatalf("offer %d: %v %+v", i, err, o)
		}
	}
	backup := filepath.Join(t.TempDir(), "backup.db")
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ch.Backup(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for i := 0; i < 2; i++ {
		if o, err := offer(a, b, ProposeOptions{Offer: true, Timeout: 10 * time.Second}); err != nil || o.State != StateCommitted {
			t.Fatalf("offer %d: %v %+v", i, err, o)
		}
	}
	waitFor(t, func() bool { return b.ch.Length() == 5 && a.ch.Length() == 5 })
	before := a.ch.Head()

	a.node.Close()
	if err := a.ch.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := chain.Restore(backup, a.path, chain.RestoreOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	ch, err := chain.Open(a.path, chain.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a.ch = ch
	a.startNode(t, AcceptAll, b)
	hostTestResolve(t, a.node.Host(), b.key.AgentID())
	hostTestResolve(t, b.node.Host(), a.key.AgentID())

	_, err = offer(a, b, ProposeOptions{Offer: true, Timeout: 10 * time.Second})
	t.Logf("offer on the old copy: %v", err)
	if !errors.Is(err, ErrBehind) {
		t.Fatalf("offer on a chain restored from an older copy: %v, want ErrBehind", err)
	}
	for _, want := range []string{"seqs 3 to 4", string(b.key.AgentID()), "negotiate chain recover --from " + string(b.key.AgentID())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	if _, locked := a.ch.Lock(); locked || a.ch.Length() != 3 {
		t.Fatalf("the refused offer changed a's chain: length %d", a.ch.Length())
	}
	o, err := offer(b, a, ProposeOptions{Timeout: 10 * time.Second})
	if err != nil || o.State == StateCommitted || !strings.Contains(o.Reason, "behind") {
		t.Fatalf("b's proposal to a behind: %v %+v", err, o)
	}
	t.Logf("b's proposal: %s", o.Reason)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := a.node.Recover(ctx, b.key.AgentID())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Appended) != 2 || res.Head != before || res.Behind != "" {
		t.Fatalf("recover: %+v, want the head %+v back", res, before)
	}
	if verr := a.ch.Verify(nodeVerifyOptions()); verr != nil {
		t.Fatal(verr)
	}
	// A second recover finds nothing more.
	if res, err := a.node.Recover(ctx, b.key.AgentID()); err != nil || len(res.Appended) != 0 {
		t.Fatalf("second recover: %+v %v", res, err)
	}
	if o, err := offer(a, b, ProposeOptions{Offer: true, Timeout: 10 * time.Second}); err != nil || o.State != StateCommitted {
		t.Fatalf("offer after recovering: %v %+v", err, o)
	}
	nodeTestCheckChains(t, a, b)
}

// nodeTestCheckChains verifies every agent's chain and that none is locked.
func nodeTestCheckChains(t *testing.T, agents ...*nodeTestAgent) {
	t.Helper()
	for _, ag := range agents {
		if verr := ag.ch.Verify(nodeVerifyOptions()); verr != nil {
			t.Fatalf("%s: %v", ag.name, verr)
		}
		if l, ok := ag.ch.Lock(); ok {
			t.Fatalf("%s: lock left: %+v", ag.name, l)
		}
	}
}
