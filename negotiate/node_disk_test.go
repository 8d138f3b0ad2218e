package negotiate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/internal/smallfs"
	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/sign"
)

// diskTestRecords maps the session of every agreement record on c to its
// record hash.
func diskTestRecords(t *testing.T, c *chain.Chain) map[string]chain.Hash {
	t.Helper()
	es, err := c.Entries(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]chain.Hash{}
	for _, e := range es {
		if e.Kind != engine.KindAgreement {
			continue
		}
		rec, err := engine.DecodeRecord(e.Payload)
		if err != nil {
			t.Fatalf("seq %d: %v", e.Seq, err)
		}
		out[rec.Agreement.Session] = engine.RecordHash(rec)
	}
	return out
}

// TestNodeFullDisk runs real nodes on loopback; agent a's chain file sits
// on a small tmpfs the test fills. Sessions run, initiated by either side,
// until a's chain refuses a write: the write is refused cleanly (the node
// does not stop, it says "no space left on device" and where to free
// space), the session aborts or stays resolvable, nothing on either chain
// is damaged. Once space is freed the node carries on without a restart:
// every session ends with its record on both chains or neither, no lock is
// left, new sessions commit both ways, and after a restart the chain
// replays and verifies.
func TestNodeFullDisk(t *testing.T) {
	dir := smallfs.Mount(t, 3<<20)
	a := nodeTestStart(t, dir, "a", AcceptAll, nil)
	b := nodeTestStart(t, t.TempDir(), "b", AcceptAll, a)
	hostTestResolve(t, a.node.Host(), b.key.AgentID())
	hostTestResolve(t, b.node.Host(), a.key.AgentID())

	type run struct {
		id   string
		from *nodeTestAgent
		err  error
	}
	var mu sync.Mutex
	var runs []*run
	var wg sync.WaitGroup
	propose := func(from, to *nodeTestAgent, i int) (*run, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		p, err := from.node.Propose(ctx, []sign.AgentID{to.key.AgentID()}, nodeTestTerms(t, map[string]any{"n": i, "pad": strings.Repeat("p", 512)}), ProposeOptions{Timeout: 8 * time.Second})
		if err != nil {
			return nil, err
		}
		r := &run{id: p.ID(), from: from}
		mu.Lock()
		runs = append(runs, r)
		mu.Unlock()
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer wcancel()
		o, err := from.node.Wait(wctx, p.ID())
		if r.err = err; err == nil {
			r.err = o.Err()
		}
		return r, nil
	}
	for i := 0; i < 3; i++ {
		if r, err := propose(a, b, i); err != nil || r.err != nil {
			t.Fatalf("session %d before the disk is full: %v %v", i, err, r)
		}
	}
	frees := []func(){smallfs.Fill(t, dir)}
	free := func() {
		for _, f := range frees {
			f()
		}
	}
	// Run until a's chain refuses a write, then a few more sessions
	// either way while the disk stays full (refilled before each: a flush
	// into free bbolt pages can let the journal take writes again).
	refusedAt := -1
	for i := 3; i < 400 && (refusedAt < 0 || i < refusedAt+20); i++ {
		from, to := a, b
		if i%2 == 1 {
			from, to = b, a
		}
		frees = append(frees, smallfs.Fill(t, dir))
		r, err := propose(from, to, i)
		if err != nil {
			if refusedAt < 0 {
				t.Fatalf("propose %d: %v", i, err)
			}
			t.Logf("session %d (%s proposes): %v", i, from.name, err)
			continue
		}
		if f := a.node.WriteFailure(); f != nil && refusedAt < 0 {
			refusedAt = i
			t.Logf("session %d %s (%s proposes): a's chain refused a write for session %s: %s; outcome at %s: %v", i, r.id[24:], from.name, f.Session[24:], f.Err, from.name, r.err)
		} else if refusedAt >= 0 || r.err != nil {
			fs := "none"
			if f != nil {
				fs = f.Session[24:]
			}
			t.Logf("session %d %s (%s proposes): outcome %v (a's last write failure: session %s)", i, r.id[24:], from.name, r.err, fs)
		}
	}
	if refusedAt < 0 {
		t.Fatal("400 sessions fit on a full 3 MiB file system")
	}
	f := a.node.WriteFailure()
	if f == nil {
		// A later write may have found room in the journal again.
		t.Log("the last write at a succeeded")
	} else {
		if f.Stopped {
			t.Fatalf("node stopped on a full disk: %+v", f)
		}
		for _, want := range []string{"no space left on device", "free space in " + dir} {
			if !strings.Contains(f.Err, want) {
				t.Errorf("write failure %q does not say %q", f.Err, want)
			}
		}
	}
	// A session a initiated and could not sign says why.
	mu.Lock()
	for _, r := range runs {
		if r.from == a && r.err != nil && errors.Is(r.err, ErrAborted) {
			if strings.Contains(r.err.Error(), "no space left on device") {
				t.Logf("a's own session %s: %v", r.id[24:], r.err)
			}
		}
	}
	mu.Unlock()
	for _, ag := range []*nodeTestAgent{a, b} {
		if verr := ag.ch.Verify(nodeVerifyOptions()); verr != nil {
			t.Fatalf("%s: chain damaged with the disk full: %v", ag.name, verr)
		}
	}

	free()
	// Every session ends: both chains unlocked, and each record on both
	// chains or neither.
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, la := a.ch.Lock()
		_, lb := b.ch.Lock()
		if !la && !lb {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("locks left after space was freed: a %v b %v; a sessions %+v", la, lb, a.node.Sessions(false))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < 4; i++ {
		from, to := a, b
		if i%2 == 1 {
			from, to = b, a
		}
		r, err := propose(from, to, 1000+i)
		if err != nil || r.err != nil {
			t.Fatalf("session after space was freed (%s proposes): %v %v", from.name, err, r.err)
		}
	}
	wg.Wait()
	if f := a.node.WriteFailure(); f != nil {
		t.Fatalf("write failure still reported after writes succeeded: %+v", f)
	}
	ra, rb := diskTestRecords(t, a.ch), diskTestRecords(t, b.ch)
	if fmt.Sprint(ra) != fmt.Sprint(rb) {
		t.Fatalf("chains hold different records:\na %v\nb %v", ra, rb)
	}
	t.Logf("%d sessions, %d committed on both chains", len(runs), len(ra))

	// Restart a on the same file: the journal replays, the chain verifies,
	// and a session commits.
	a.node.Close()
	if err := a.ch.Close(); err != nil {
		t.Fatalf("close a's chain: %v", err)
	}
	ch, err := chain.Open(a.path, chain.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a.ch = ch
	a.startNode(t, AcceptAll, b)
	if verr := a.ch.Verify(nodeVerifyOptions()); verr != nil {
		t.Fatalf("a after restart: %v", verr)
	}
	hostTestResolve(t, b.node.Host(), a.key.AgentID())
	if r, err := propose(b, a, 2000); err != nil || r.err != nil {
		t.Fatalf("session after restart: %v %v", err, r.err)
	}
	waitFor(t, func() bool { return len(diskTestRecords(t, a.ch)) == len(ra)+1 })
}
