package chain

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/sign"
)

func TestApplyRules(t *testing.T) {
	key := testKey(t, "alice")
	other := testKey(t, "mallory")
	// Each case gets a chain with 2 notes (head seq 2), a checkpoint "s" = "old",
	// and builds its Write from it.
	cases := []struct {
		name  string
		write func(t *testing.T, c *Chain) Write
		want  error
	}{
		{"append next entry", func(t *testing.T, c *Chain) Write {
			return Write{Append: mustEntry(t, c, key, KindNote, "hi")}
		}, nil},
		{"append with session and checkpoint", func(t *testing.T, c *Chain) Write {
			return Write{Session: "s", Append: mustEntry(t, c, key, KindNote, "hi"), Checkpoint: []byte("new")}
		}, nil},
		{"seq beyond head+1", func(t *testing.T, c *Chain) Write {
			e, _ := NewEntryAt(key, Head{Seq: c.Head().Seq + 1, Hash: c.Head().Hash}, KindNote, "x", 1)
			return Write{Session: "s", Append: e, Checkpoint: []byte("new")}
		}, ErrSeqMismatch},
		{"seq equal to head (replay)", func(t *testing.T, c *Chain) Write {
			last, err := c.Entry(c.Head().Seq)
			if err != nil {
				t.Fatal(err)
			}
			return Write{Append: last}
		}, ErrSeqMismatch},
		{"seq 0", func(t *testing.T, c *Chain) Write {
			g, _ := c.Entry(0)
			return Write{Append: g}
		}, ErrSeqMismatch},
		{"wrong prev", func(t *testing.T, c *Chain) Write {
			e, _ := NewEntryAt(key, Head{Seq: c.Head().Seq, Hash: Hash{1}}, KindNote, "x", 1)
			return Write{Session: "s", Append: e, Checkpoint: []byte("new")}
		}, ErrPrevMismatch},
		{"signed by another key", func(t *testing.T, c *Chain) Write {
			e, _ := NewEntryAt(other, c.Head(), KindNote, "x", 1)
			return Write{Session: "s", Append: e, Checkpoint: []byte("new")}
		}, ErrBadSignature},
		{"payload changed after signing", func(t *testing.T, c *Chain) Write {
			e := mustEntry(t, c, key, KindNote, "hello")
			e.Payload = mustCBOR(t, "jello")
			return Write{Append: e}
		}, ErrBadSignature},
		{"timestamp changed after signing", func(t *testing.T, c *Chain) Write {
			e := mustEntry(t, c, key, KindNote, "hello")
			e.Timestamp++
			return Write{Append: e}
		}, ErrBadSignature},
		{"no signature", func(t *testing.T, c *Chain) Write {
			e := mustEntry(t, c, key, KindNote, "hello")
			e.Signature = nil
			return Write{Append: e}
		}, ErrBadSignature},
		{"kind genesis after seq 0", func(t *testing.T, c *Chain) Write {
			return Write{Append: signedRaw(t, key, c.Head(), KindGenesis, mustCBOR(t, 1))}
		}, ErrBadEntry},
		{"kind with upper case", func(t *testing.T, c *Chain) Write {
			return Write{Append: signedRaw(t, key, c.Head(), "Note", mustCBOR(t, 1))}
		}, ErrBadEntry},
		{"empty kind", func(t *testing.T, c *Chain) Write {
			return Write{Append: signedRaw(t, key, c.Head(), "", mustCBOR(t, 1))}
		}, ErrBadEntry},
		{"payload not deterministic (unsorted map)", func(t *testing.T, c *Chain) Write {
			// {"b":1,"a":2}: keys out of order.
			return Write{Append: signedRaw(t, key, c.Head(), KindNote, cbor.RawMessage{0xa2, 0x61, 'b', 0x01, 0x61, 'a', 0x02})}
		}, ErrBadEntry},
		{"payload with duplicate map key", func(t *testing.T, c *Chain) Write {
			return Write{Append: signedRaw(t, key, c.Head(), KindNote, cbor.RawMessage{0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02})}
		}, ErrBadEntry},
		{"payload not CBOR", func(t *testing.T, c *Chain) Write {
			e := mustEntry(t, c, key, KindNote, "x")
			e.Payload = cbor.RawMessage{0xff, 0x00}
			return Write{Append: e}
		}, ErrBadEntry},
		{"payload over the limit", func(t *testing.T, c *Chain) Write {
			return Write{Append: signedRaw(t, key, c.Head(), KindNote, mustCBOR(t, make([]byte, MaxPayloadBytes)))}
		}, ErrBadEntry},
		{"nil entry payload is CBOR null", func(t *testing.T, c *Chain) Write {
			return Write{Append: mustEntry(t, c, key, KindNote, nil)}
		}, nil},
		{"checkpoint without session", func(t *testing.T, c *Chain) Write {
			return Write{Append: mustEntry(t, c, key, KindNote, "x"), Checkpoint: []byte("new")}
		}, ErrBadWrite},
		{"checkpoint and delete", func(t *testing.T, c *Chain) Write {
			return Write{Session: "s", Checkpoint: []byte("new"), DeleteCheckpoint: true}
		}, ErrBadWrite},
		{"checkpoint over the limit", func(t *testing.T, c *Chain) Write {
			return Write{Session: "s", Checkpoint: make([]byte, MaxCheckpointBytes+1)}
		}, ErrBadWrite},
		{"session name over the limit", func(t *testing.T, c *Chain) Write {
			return Write{Session: strings.Repeat("s", MaxSessionBytes+1), Checkpoint: []byte("new")}
		}, ErrBadWrite},
		{"lock for another session than the write's", func(t *testing.T, c *Chain) Write {
			return Write{Session: "s", AcquireLock: &Lock{Session: "t"}, Checkpoint: []byte("new")}
		}, ErrBadWrite},
		{"lock without session", func(t *testing.T, c *Chain) Write {
			return Write{AcquireLock: &Lock{}}
		}, ErrBadWrite},
		{"expect head that moved", func(t *testing.T, c *Chain) Write {
			h := Head{Seq: c.Head().Seq - 1}
			return Write{Session: "s", AcquireLock: &Lock{Session: "s"}, ExpectHead: &h, Checkpoint: []byte("new")}
		}, ErrHeadMoved},
		{"expect head wrong hash", func(t *testing.T, c *Chain) Write {
			h := Head{Seq: c.Head().Seq, Hash: Hash{9}}
			return Write{Session: "s", AcquireLock: &Lock{Session: "s"}, ExpectHead: &h, Checkpoint: []byte("new")}
		}, ErrHeadMoved},
	}
	for _, tc := range cases {
		for _, mode := range []string{"Apply", "ApplyBatch"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				c, _ := newTestChain(t, key, 2)
				if err := c.Apply(Write{Session: "s", Checkpoint: []byte("old")}); err != nil {
					t.Fatal(err)
				}
				before := snapshot(t, c)
				w := tc.write(t, c)
				var err error
				if mode == "Apply" {
					err = c.Apply(w)
				} else {
					err = c.ApplyBatch(w)
				}
				wantErr(t, err, tc.want)
				after := snapshot(t, c)
				if tc.want != nil {
					if !reflect.DeepEqual(before, after) {
						t.Fatalf("failed write changed state:\nbefore %+v\nafter  %+v", before, after)
					}
					return
				}
				if w.Append != nil {
					if after.Head != w.Append.Head() || after.Entries != before.Entries+1 {
						t.Fatalf("head %v entries %d after append of %v", after.Head, after.Entries, w.Append.Head())
					}
					got, err := c.Entry(w.Append.Seq)
					if err != nil || !reflect.DeepEqual(got, w.Append) {
						t.Fatalf("stored entry %+v (%v), want %+v", got, err, w.Append)
					}
				}
				if w.Checkpoint != nil && !bytes.Equal(after.Checkpoints[w.Session], w.Checkpoint) {
					t.Fatalf("checkpoint %q, want %q", after.Checkpoints[w.Session], w.Checkpoint)
				}
				if verr := c.Verify(VerifyOptions{}); verr != nil {
					t.Fatal(verr)
				}
			})
		}
	}
}

func TestApplyBadSignatureWrapsSign(t *testing.T) {
	c, _ := newTestChain(t, testKey(t, "alice"), 0)
	e, _ := NewEntryAt(testKey(t, "mallory"), c.Head(), KindNote, 1, 1)
	err := c.Apply(Write{Append: e})
	if !errors.Is(err, ErrBadSignature) || !errors.Is(err, sign.ErrBadSignature) {
		t.Fatalf("error %v must wrap chain.ErrBadSignature and sign.ErrBadSignature", err)
	}
}

func TestNewEntryWrongKey(t *testing.T) {
	c, _ := newTestChain(t, testKey(t, "alice"), 0)
	_, err := c.NewEntry(testKey(t, "bob"), KindNote, 1, 1)
	wantErr(t, err, ErrWrongKey)
}

func TestEmptyWriteIsNoop(t *testing.T) {
	c, _ := newTestChain(t, testKey(t, "alice"), 1)
	before := snapshot(t, c)
	if err := c.Apply(Write{Session: "s"}); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, c); !reflect.DeepEqual(before, after) {
		t.Fatalf("empty write changed state")
	}
}

func mustEntry(t testing.TB, c *Chain, key *sign.PrivateKey, kind string, payload any) *Entry {
	t.Helper()
	e, err := c.NewEntry(key, kind, payload, 1_700_000_100_000)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func mustCBOR(t testing.TB, v any) cbor.RawMessage {
	t.Helper()
	b, err := EncMode().Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// signedRaw signs an entry without NewEntryAt's shape checks, to test that
// Apply makes them itself.
func signedRaw(t testing.TB, key *sign.PrivateKey, head Head, kind string, payload cbor.RawMessage) *Entry {
	t.Helper()
	e := &Entry{Seq: head.Seq + 1, Prev: head.Hash, Timestamp: 5, Kind: kind, Payload: payload}
	h, err := e.ComputeHash()
	if err != nil {
		t.Fatal(err)
	}
	e.Signature = key.Sign(SignDomain, h[:])
	return e
}
