package chain

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/negotiate-dev/negotiate/sign"
)

// lockStep is one Write in a lock scenario. build gets the chain so it can
// sign the next entry; wantHolder is the lock holder after the step ("" =
// free).
type lockStep struct {
	name       string
	build      func(t *testing.T, c *Chain) Write
	want       error
	wantHolder string
	reopen     bool // close and reopen the chain before this step
}

func TestLockSemantics(t *testing.T) {
	key := testKey(t, "alice")
	bob := testKey(t, "bob").AgentID()
	lockS := &Lock{Session: "S", Since: 100, Parties: []sign.AgentID{key.AgentID(), bob}}
	note := func(session string) func(t *testing.T, c *Chain) Write {
		return func(t *testing.T, c *Chain) Write {
			return Write{Session: session, Append: mustEntry(t, c, key, KindNote, session)}
		}
	}
	acquire := func(session string, since int64) func(t *testing.T, c *Chain) Write {
		return func(t *testing.T, c *Chain) Write {
			return Write{Session: session, AcquireLock: &Lock{Session: session, Since: since}}
		}
	}
	release := func(session string) func(t *testing.T, c *Chain) Write {
		return func(t *testing.T, c *Chain) Write { return Write{Session: session, ReleaseLock: true} }
	}
	scenarios := []struct {
		name  string
		steps []lockStep
	}{
		{"only the holder appends, only release frees", []lockStep{
			{name: "S locks", build: func(t *testing.T, c *Chain) Write {
				return Write{Session: "S", AcquireLock: lockS}
			}, wantHolder: "S"},
			{name: "S appends", build: note("S"), wantHolder: "S"},
			{name: "T append refused", build: note("T"), want: ErrLocked, wantHolder: "S"},
			{name: "sessionless append refused", build: note(""), want: ErrLocked, wantHolder: "S"},
			{name: "T lock refused", build: acquire("T", 5), want: ErrLocked, wantHolder: "S"},
			{name: "S relock idempotent", build: acquire("S", 999), wantHolder: "S"},
			{name: "T release is a no-op", build: release("T"), wantHolder: "S"},
			{name: "survives reopen", build: note("T"), want: ErrLocked, wantHolder: "S", reopen: true},
			{name: "S releases", build: release("S"), wantHolder: ""},
			{name: "T appends after release", build: note("T"), wantHolder: ""},
			{name: "T locks", build: acquire("T", 7), wantHolder: "T"},
		}},
		{"lock, append and release in one write (commit)", []lockStep{
			{name: "S lock+append+release", build: func(t *testing.T, c *Chain) Write {
				return Write{Session: "S", AcquireLock: lockS, Append: mustEntry(t, c, key, KindAgreement, "terms"), ReleaseLock: true}
			}, wantHolder: ""},
		}},
		{"lock refused leaves the append undone", []lockStep{
			{name: "S locks", build: acquire("S", 1), wantHolder: "S"},
			{name: "T lock+append refused", build: func(t *testing.T, c *Chain) Write {
				return Write{Session: "T", AcquireLock: &Lock{Session: "T"}, Append: mustEntry(t, c, key, KindNote, "t")}
			}, want: ErrLocked, wantHolder: "S"},
		}},
		{"head moved: no lock taken", []lockStep{
			{name: "S locks at a stale head", build: func(t *testing.T, c *Chain) Write {
				h := Head{Seq: c.Head().Seq + 1}
				return Write{Session: "S", AcquireLock: lockS, ExpectHead: &h, Checkpoint: []byte("voted")}
			}, want: ErrHeadMoved, wantHolder: ""},
			{name: "S locks at the head", build: func(t *testing.T, c *Chain) Write {
				h := c.Head()
				return Write{Session: "S", AcquireLock: lockS, ExpectHead: &h, Checkpoint: []byte("voted")}
			}, wantHolder: "S"},
			{name: "abort: release and drop checkpoint", build: func(t *testing.T, c *Chain) Write {
				return Write{Session: "S", ReleaseLock: true, DeleteCheckpoint: true}
			}, wantHolder: "", reopen: true},
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			c, path := newTestChain(t, key, 1)
			for _, st := range sc.steps {
				if st.reopen {
					if err := c.Close(); err != nil {
						t.Fatal(err)
					}
					var err error
					if c, err = Open(path, Options{}); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { c.Close() })
				}
				before := snapshot(t, c)
				err := c.Apply(st.build(t, c))
				if err != nil && st.want == nil || st.want != nil && err == nil {
					t.Fatalf("%s: error %v, want %v", st.name, err, st.want)
				}
				wantErr(t, err, st.want)
				if st.want != nil && !reflect.DeepEqual(before, snapshot(t, c)) {
					t.Fatalf("%s: refused write changed state", st.name)
				}
				l, held := c.Lock()
				switch {
				case st.wantHolder == "" && held:
					t.Fatalf("%s: lock held by %s, want free", st.name, l.Session)
				case st.wantHolder != "" && (!held || l.Session != st.wantHolder):
					t.Fatalf("%s: lock %+v (held %v), want held by %s", st.name, l, held, st.wantHolder)
				}
			}
			if verr := c.Verify(VerifyOptions{}); verr != nil {
				t.Fatal(verr)
			}
		})
	}
}

func TestLockDetails(t *testing.T) {
	key := testKey(t, "alice")
	c, path := newTestChain(t, key, 0)
	parties := []sign.AgentID{key.AgentID(), testKey(t, "bob").AgentID()}
	if err := c.Apply(Write{Session: "S1", AcquireLock: &Lock{Session: "S1", Since: 42, Parties: parties}}); err != nil {
		t.Fatal(err)
	}
	// Re-acquiring keeps the original lock.
	if err := c.Apply(Write{Session: "S1", AcquireLock: &Lock{Session: "S1", Since: 99}}); err != nil {
		t.Fatal(err)
	}
	// The refusal names the holder.
	err := c.Apply(Write{Session: "S2", AcquireLock: &Lock{Session: "S2"}})
	wantErr(t, err, ErrLocked)
	if !strings.Contains(err.Error(), "S1") {
		t.Fatalf("error %q does not name the holding session", err)
	}
	// Lock() returns a copy.
	l, _ := c.Lock()
	l.Parties[0] = "x"
	c.Close()
	// The lock is durable and visible to a reader.
	ro, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	got, held := ro.Lock()
	want := &Lock{Session: "S1", Since: 42, Parties: parties}
	if !held || !reflect.DeepEqual(got, want) {
		t.Fatalf("lock after reopen %+v, want %+v", got, want)
	}
}

func TestCheckpointsSameTransaction(t *testing.T) {
	key := testKey(t, "alice")
	cases := []struct {
		name     string
		write    func(t *testing.T, c *Chain) Write
		want     error
		wantCP   []byte // checkpoint of "S" afterwards; nil = none
		wantHead uint64
	}{
		{"append and checkpoint", func(t *testing.T, c *Chain) Write {
			return Write{Session: "S", Append: mustEntry(t, c, key, KindNote, 1), Checkpoint: []byte("v2")}
		}, nil, []byte("v2"), 2},
		{"failing append keeps checkpoint", func(t *testing.T, c *Chain) Write {
			e, err := NewEntryAt(key, Head{Seq: c.Head().Seq + 1, Hash: c.Head().Hash}, KindNote, 1, 1)
			if err != nil {
				t.Fatal(err)
			}
			return Write{Session: "S", Append: e, Checkpoint: []byte("v2")}
		}, ErrSeqMismatch, []byte("v1"), 1},
		{"refused lock keeps checkpoint", func(t *testing.T, c *Chain) Write {
			if err := c.Apply(Write{Session: "T", AcquireLock: &Lock{Session: "T"}}); err != nil {
				t.Fatal(err)
			}
			return Write{Session: "S", AcquireLock: &Lock{Session: "S"}, Checkpoint: []byte("v2")}
		}, ErrLocked, []byte("v1"), 1},
		{"delete checkpoint", func(t *testing.T, c *Chain) Write {
			return Write{Session: "S", DeleteCheckpoint: true}
		}, nil, nil, 1},
		{"empty checkpoint is kept as empty", func(t *testing.T, c *Chain) Write {
			return Write{Session: "S", Checkpoint: []byte{}}
		}, nil, []byte{}, 1},
		{"nil checkpoint leaves it unchanged", func(t *testing.T, c *Chain) Write {
			return Write{Session: "S", Append: mustEntry(t, c, key, KindNote, 1)}
		}, nil, []byte("v1"), 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, path := newTestChain(t, key, 1)
			if err := c.Apply(Write{Session: "S", Checkpoint: []byte("v1")}); err != nil {
				t.Fatal(err)
			}
			if err := c.Apply(Write{Session: "other", Checkpoint: []byte("o")}); err != nil {
				t.Fatal(err)
			}
			wantErr(t, c.Apply(tc.write(t, c)), tc.want)
			c.Close()
			c2, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			cp, ok, err := c2.Checkpoint("S")
			if err != nil {
				t.Fatal(err)
			}
			if ok != (tc.wantCP != nil) || !bytes.Equal(cp, tc.wantCP) {
				t.Fatalf("checkpoint %q (present %v), want %q", cp, ok, tc.wantCP)
			}
			all, err := c2.Checkpoints()
			if err != nil {
				t.Fatal(err)
			}
			if string(all["other"]) != "o" {
				t.Fatalf("other session's checkpoint %q, want %q", all["other"], "o")
			}
			if _, ok := all["S"]; ok != (tc.wantCP != nil) {
				t.Fatalf("Checkpoints lists S: %v, want %v", ok, tc.wantCP != nil)
			}
			// ForEachCheckpoint walks them in session order and stops at
			// its callback's error.
			var walked []string
			stop := errors.New("stop")
			err = c2.ForEachCheckpoint(func(session string, _ []byte) error {
				walked = append(walked, session)
				return stop
			})
			first := "other"
			if tc.wantCP != nil {
				first = "S" // "S" sorts before "other"
			}
			if !errors.Is(err, stop) || len(walked) != 1 || walked[0] != first {
				t.Fatalf("ForEachCheckpoint: walked %v, err %v", walked, err)
			}
			if c2.Head().Seq != tc.wantHead {
				t.Fatalf("head %d, want %d", c2.Head().Seq, tc.wantHead)
			}
		})
	}
}
