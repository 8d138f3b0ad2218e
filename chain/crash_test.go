package chain

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/sign"
)

// The crash test re-executes the test binary as a child process that
// appends in a loop; TestMain runs the child when childEnv is set.
const (
	childEnv     = "CHAIN_TEST_CHILD"
	childPathEnv = "CHAIN_TEST_PATH"
	childModeEnv = "CHAIN_TEST_MODE"
	// crashLockAt is the seq whose append also takes the chain lock for
	// crashSession, in the same Write.
	crashLockAt = 10
	// crashSession is the session of every child write.
	crashSession = "S-crash"
	// childMaxRun stops an orphaned child if the test dies.
	childMaxRun = 30 * time.Second
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "store" {
		if err := childStoreAppend(os.Getenv(childPathEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if os.Getenv(childEnv) == "append" {
		if err := childAppend(os.Getenv(childPathEnv), os.Getenv(childModeEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startChild re-executes the test binary as a child with env added, and
// returns it with its stdout lines (the channel closes when it exits).
func startChild(t *testing.T, env ...string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 4096)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return cmd, lines
}

func deriveKey(seed string) (*sign.PrivateKey, error) {
	s, err := sign.SchemeByName(sign.DefaultScheme)
	if err != nil {
		return nil, err
	}
	return s.DeriveKey([]byte(seed))
}

type crashPayload struct {
	Seq uint64 `cbor:"seq"`
	Pad []byte `cbor:"pad"`
}

func seqBytes(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// childAppend appends until killed, printing "ack <seq>" after each Apply
// returns. Mode "batch" runs two writers racing through ApplyBatch.
func childAppend(path, mode string) error {
	key, err := deriveKey("crash")
	if err != nil {
		return err
	}
	c, err := Open(path, Options{})
	if err != nil {
		return err
	}
	fmt.Println("open")
	deadline := time.Now().Add(childMaxRun)
	writers := 1
	apply := c.Apply
	if mode == "batch" {
		writers, apply = 2, c.ApplyBatch
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				head := c.Head()
				seq := head.Seq + 1
				// Entries of varying size so some span several pages.
				pad := make([]byte, int(seq%7)*1500)
				e, err := c.NewEntry(key, KindNote, crashPayload{Seq: seq, Pad: pad}, time.Now().UnixMilli())
				if err != nil {
					errs <- err
					return
				}
				w := Write{Session: crashSession, Append: e, Checkpoint: seqBytes(seq)}
				if seq == crashLockAt {
					w.AcquireLock = &Lock{Session: crashSession, Since: time.Now().UnixMilli(), Parties: []sign.AgentID{key.AgentID()}}
				}
				err = apply(w)
				if errors.Is(err, ErrSeqMismatch) || errors.Is(err, ErrPrevMismatch) {
					continue // the other writer took this seq
				}
				if err != nil {
					errs <- err
					return
				}
				fmt.Printf("ack %d\n", seq)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// TestCrashKill9 kills an appending child process with SIGKILL at random
// moments, then reopens the chain and checks that every acknowledged append
// is there, nothing is torn, the checkpoint written with each append agrees
// with the head, and the lock taken with entry crashLockAt survived.
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	const runs = 24
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	key := testKey(t, "crash")
	path := filepath.Join(t.TempDir(), "chain.db")
	c, err := Create(path, key, 1)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	var maxAcked uint64
	acks, killedAfterAck, heldChecked, replayed := 0, 0, false, 0
	start := time.Now()
	for run := 0; run < runs; run++ {
		mode := "apply"
		if run%3 == 2 {
			mode = "batch"
		}
		cmd, lines := startChild(t, childEnv+"=append", childPathEnv+"="+path, childModeEnv+"="+mode)
		var acked []uint64
		read := func(l string) {
			if s, ok := strings.CutPrefix(l, "ack "); ok {
				n, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					t.Fatalf("run %d: bad child line %q", run, l)
				}
				acked = append(acked, n)
			}
		}
		if run%2 == 0 {
			// Kill at a random moment from start: maybe while opening.
			time.Sleep(time.Duration(rng.IntN(80)) * time.Millisecond)
		} else {
			// Kill at a random moment once appends are under way.
			timeout := time.After(15 * time.Second)
		wait:
			for {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("run %d: child exited early", run)
					}
					read(l)
					if len(acked) > 0 {
						break wait
					}
				case <-timeout:
					t.Fatalf("run %d: child did not append", run)
				}
			}
			if !heldChecked {
				// Another process has the file: Open fails fast and says so.
				heldChecked = true
				t0 := time.Now()
				_, err := Open(path, Options{Timeout: 300 * time.Millisecond})
				if !errors.Is(err, ErrHeldByOther) || !strings.Contains(err.Error(), "negotiate node") {
					t.Fatalf("open while the child holds the file: %v", err)
				}
				if d := time.Since(t0); d > 2*time.Second {
					t.Fatalf("open while held took %v", d)
				}
			}
			time.Sleep(time.Duration(rng.IntN(120)) * time.Millisecond)
			killedAfterAck++
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for l := range lines {
			read(l)
		}
		if err := cmd.Wait(); err == nil {
			t.Fatalf("run %d: child exited normally", run)
		}
		acks += len(acked)
		for _, s := range acked {
			maxAcked = max(maxAcked, s)
		}

		if journalRecords(t, path) > 0 {
			replayed++
		}
		c, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("run %d: reopen after kill: %v", run, err)
		}
		if verr := c.Verify(VerifyOptions{}); verr != nil {
			t.Fatalf("run %d (%s): chain unsound after kill -9: %v", run, mode, verr)
		}
		head := c.Head()
		if head.Seq < maxAcked {
			t.Fatalf("run %d: head %d, but append %d was acknowledged", run, head.Seq, maxAcked)
		}
		for _, s := range acked {
			e, err := c.Entry(s)
			if err != nil {
				t.Fatalf("run %d: acknowledged entry %d: %v", run, s, err)
			}
			var p crashPayload
			if err := DecMode().Unmarshal(e.Payload, &p); err != nil || p.Seq != s {
				t.Fatalf("run %d: entry %d holds %+v (%v)", run, s, p, err)
			}
		}
		cp, ok, err := c.Checkpoint(crashSession)
		if err != nil {
			t.Fatal(err)
		}
		if head.Seq > 0 && (!ok || binary.BigEndian.Uint64(cp) != head.Seq) || head.Seq == 0 && ok {
			t.Fatalf("run %d: checkpoint %x (present %v) disagrees with head %d: not written in the same transaction", run, cp, ok, head.Seq)
		}
		l, held := c.Lock()
		if held != (head.Seq >= crashLockAt) || held && l.Session != crashSession {
			t.Fatalf("run %d: lock %+v held=%v at head %d (taken with entry %d)", run, l, held, head.Seq, crashLockAt)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d runs (%d killed mid-append, %d left journal records to replay) in %v: %d acknowledged appends, max seq %d", runs, killedAfterAck, replayed, time.Since(start).Round(time.Millisecond), acks, maxAcked)
	if replayed == 0 {
		t.Fatal("no kill left records in the journal: the replay path was not exercised")
	}
	if maxAcked < crashLockAt {
		t.Fatalf("only %d appends acknowledged: the lock was never taken", maxAcked)
	}

	// The lock survived every kill: only its session can append or release it.
	c, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e, err := c.NewEntry(key, KindNote, "other", 1)
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, c.Apply(Write{Session: "other", Append: e}), ErrLocked)
	if err := c.Apply(Write{Session: crashSession, ReleaseLock: true, DeleteCheckpoint: true}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, c.Apply(Write{Session: "other", Append: e}), nil)
	if verr := c.Verify(VerifyOptions{}); verr != nil {
		t.Fatal(verr)
	}
}
