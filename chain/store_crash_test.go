package chain

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/sign"
)

// storeCrashAgents is how many agents of one store the child writes to at
// once, each from its own goroutine, so their writes are group-committed.
const storeCrashAgents = 8

func storeCrashKey(i int) (*sign.PrivateKey, error) {
	return deriveKey(fmt.Sprintf("store-crash-%d", i))
}

// childStoreAppend appends to every agent's chain of the store at path
// until killed, printing "ack <agent> <seq>" after each Apply returns.
func childStoreAppend(path string) error {
	s, err := OpenStore(path, Options{})
	if err != nil {
		return err
	}
	fmt.Println("open")
	deadline := time.Now().Add(childMaxRun)
	var mu sync.Mutex // one stdout line at a time
	errs := make(chan error, storeCrashAgents)
	var wg sync.WaitGroup
	for i := 0; i < storeCrashAgents; i++ {
		key, err := storeCrashKey(i)
		if err != nil {
			return err
		}
		c, err := s.Chain(key.AgentID())
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				seq := c.Head().Seq + 1
				pad := make([]byte, int(seq%5)*1200)
				e, err := c.NewEntry(key, KindNote, crashPayload{Seq: seq, Pad: pad}, time.Now().UnixMilli())
				if err == nil {
					err = c.Apply(Write{Session: crashSession, Append: e, Checkpoint: seqBytes(seq)})
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				fmt.Printf("ack %d %d\n", i, seq)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// TestStoreCrashKill9 kills a child that group-commits appends of several
// agents into one store, at random moments, and checks after each kill
// that every acknowledged append of every agent is there, each chain
// verifies, and each checkpoint agrees with its chain's head (it was
// written in the same transaction).
func TestStoreCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	const runs = 10
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := CreateStore(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []sign.AgentID
	for i := 0; i < storeCrashAgents; i++ {
		key, err := storeCrashKey(i)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Create(key, 1); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, key.AgentID())
	}
	s.Close()

	maxAcked := make([]uint64, storeCrashAgents)
	total, replayed := 0, 0
	for run := 0; run < runs; run++ {
		cmd, lines := startChild(t, childEnv+"=store", childPathEnv+"="+path)
		acked := 0
		read := func(l string) {
			var agent int
			var seq uint64
			if n, _ := fmt.Sscanf(l, "ack %d %d", &agent, &seq); n == 2 && agent >= 0 && agent < storeCrashAgents {
				maxAcked[agent] = max(maxAcked[agent], seq)
				acked++
			}
		}
		// Wait for the first acknowledged append, then kill at a random moment.
		timeout := time.After(15 * time.Second)
	wait:
		for acked == 0 {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("run %d: child exited early", run)
				}
				read(l)
			case <-timeout:
				t.Fatalf("run %d: child did not append", run)
				break wait
			}
		}
		time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for l := range lines {
			read(l)
		}
		cmd.Wait()
		total += acked
		if journalRecords(t, path) > 0 {
			replayed++
		}

		s, err := OpenStore(path, Options{})
		if err != nil {
			t.Fatalf("run %d: reopen after kill: %v", run, err)
		}
		for i, id := range ids {
			c, err := s.Chain(id)
			if err != nil {
				t.Fatal(err)
			}
			if verr := c.Verify(VerifyOptions{}); verr != nil {
				t.Fatalf("run %d agent %d: unsound after kill -9: %v", run, i, verr)
			}
			head := c.Head()
			if head.Seq < maxAcked[i] {
				t.Fatalf("run %d agent %d: head %d, but append %d was acknowledged", run, i, head.Seq, maxAcked[i])
			}
			cp, ok, err := c.Checkpoint(crashSession)
			if err != nil {
				t.Fatal(err)
			}
			if head.Seq > 0 && (!ok || binary.BigEndian.Uint64(cp) != head.Seq) {
				t.Fatalf("run %d agent %d: checkpoint %x (present %v) disagrees with head %d", run, i, cp, ok, head.Seq)
			}
		}
		s.Close()
	}
	t.Logf("%d kills (%d left journal records to replay), %d acknowledged appends over %d agents, max seqs %v", runs, replayed, total, storeCrashAgents, maxAcked)
	if replayed == 0 {
		t.Fatal("no kill left records in the journal: the replay path was not exercised")
	}
	for i, m := range maxAcked {
		if m == 0 {
			t.Fatalf("agent %d never appended", i)
		}
	}
}
