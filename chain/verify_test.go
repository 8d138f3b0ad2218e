package chain

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
	"pgregory.net/rapid"

	"github.com/negotiate-dev/negotiate/sign"
)

// genValue draws a JSON-like value (what payloads hold), nesting at most
// depth levels.
func genValue(t *rapid.T, depth int) any {
	choices := 6
	if depth <= 0 {
		choices = 4
	}
	switch rapid.IntRange(0, choices-1).Draw(t, "type") {
	case 0:
		return rapid.Int64().Draw(t, "int")
	case 1:
		return rapid.String().Draw(t, "string")
	case 2:
		return rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, "bytes")
	case 3:
		return rapid.Bool().Draw(t, "bool")
	case 4:
		n := rapid.IntRange(0, 4).Draw(t, "len")
		out := make([]any, n)
		for i := range out {
			out[i] = genValue(t, depth-1)
		}
		return out
	default:
		n := rapid.IntRange(0, 4).Draw(t, "len")
		out := map[string]any{}
		for i := 0; i < n; i++ {
			out[rapid.StringN(0, 8, -1).Draw(t, "key")] = genValue(t, depth-1)
		}
		return out
	}
}

// genEntries draws a valid chain of 1 to max+1 entries signed by key.
func genEntries(t *rapid.T, key *sign.PrivateKey, max int) []Entry {
	g, err := NewGenesis(key, rapid.Int64().Draw(t, "genesis ts"))
	if err != nil {
		t.Fatal(err)
	}
	out := []Entry{*g}
	n := rapid.IntRange(0, max).Draw(t, "entries")
	for i := 0; i < n; i++ {
		prev := &out[len(out)-1]
		kind := rapid.SampledFrom([]string{KindNote, KindAgreement, "x.y/z-1"}).Draw(t, "kind")
		e, err := NewEntryAt(key, prev.Head(), kind, genValue(t, 3), rapid.Int64().Draw(t, "ts"))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *e)
	}
	return out
}

// resign replaces e's signature by one from another key over the same hash.
func resign(e *Entry, other *sign.PrivateKey) {
	h := e.Hash()
	e.Signature = other.Sign(SignDomain, h[:])
}

// flip changes one byte of b (b must not be empty).
func flip(t *rapid.T, b []byte) {
	i := rapid.IntRange(0, len(b)-1).Draw(t, "byte")
	b[i] ^= rapid.ByteRange(1, 255).Draw(t, "xor")
}

func TestPropertyRandomChainsVerify(t *testing.T) {
	key := testKey(t, "alice")
	bob := testKey(t, "bob").AgentID()
	rapid.Check(t, func(t *rapid.T) {
		es := genEntries(t, key, 10)
		if verr := VerifyEntries(es, VerifyOptions{Agent: key.AgentID()}); verr != nil {
			t.Fatalf("valid chain fails: %v", verr)
		}
		if verr := VerifyEntries(es, VerifyOptions{Agent: bob}); verr == nil || verr.Seq != 0 {
			t.Fatalf("chain of alice verified as bob's: %v", verr)
		}
	})
}

// TestPropertyTamperedEntriesFail changes one entry of a valid list in one
// way and checks VerifyEntries reports exactly the position changed.
func TestPropertyTamperedEntriesFail(t *testing.T) {
	key := testKey(t, "alice")
	other := testKey(t, "mallory")
	rapid.Check(t, func(t *rapid.T) {
		es := genEntries(t, key, 8)
		k := rapid.IntRange(0, len(es)-1).Draw(t, "k")
		want := uint64(k)
		switch op := rapid.SampledFrom([]string{"field", "delete", "swap", "duplicate", "resign"}).Draw(t, "op"); op {
		case "field":
			e := &es[k]
			switch rapid.SampledFrom([]string{"seq", "prev", "ts", "kind", "payload", "sig"}).Draw(t, "field") {
			case "seq":
				e.Seq ^= 1 << rapid.IntRange(0, 63).Draw(t, "bit")
			case "prev":
				flip(t, e.Prev[:])
			case "ts":
				e.Timestamp ^= 1 << rapid.IntRange(0, 63).Draw(t, "bit")
			case "kind":
				kb := []byte(e.Kind)
				flip(t, kb)
				e.Kind = string(kb)
			case "payload":
				e.Payload = bytes.Clone(e.Payload)
				flip(t, e.Payload)
			case "sig":
				e.Signature = bytes.Clone(e.Signature)
				flip(t, e.Signature)
			}
		case "delete":
			if len(es) > 1 && k == len(es)-1 {
				// Dropping the last entry of a bare list leaves a shorter
				// valid chain; the chain file catches it by its head record.
				k--
				want--
			}
			es = append(es[:k], es[k+1:]...)
		case "swap":
			if len(es) < 2 {
				t.Skip("one entry")
			}
			if k == len(es)-1 {
				k--
				want--
			}
			j := rapid.IntRange(k+1, len(es)-1).Draw(t, "j")
			es[k], es[j] = es[j], es[k]
		case "duplicate":
			es = append(es[:k+1], append([]Entry{*es[k].Clone()}, es[k+1:]...)...)
			want = uint64(k + 1)
		case "resign":
			resign(&es[k], other)
		}
		verr := VerifyEntries(es, VerifyOptions{})
		if verr == nil {
			t.Fatalf("tampered chain verifies")
		}
		if verr.Seq != want || verr.Reason == "" {
			t.Fatalf("reported %v, want entry %d", verr, want)
		}
	})
}

// TestPropertyTamperedFileFails builds a random chain in a real file,
// changes the stored entries at the bbolt level, and checks Verify reports
// the first position changed.
func TestPropertyTamperedFileFails(t *testing.T) {
	key := testKey(t, "alice")
	other := testKey(t, "mallory")
	dir := t.TempDir()
	rapid.Check(t, func(t *rapid.T) {
		sub, err := os.MkdirTemp(dir, "")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(sub)
		path := filepath.Join(sub, "chain.db")
		es := genEntries(t, key, 6)
		c, err := Create(path, key, es[0].Timestamp)
		if err != nil {
			t.Fatal(err)
		}
		for i := range es[1:] {
			e, err := c.NewEntry(key, es[i+1].Kind, es[i+1].Payload, es[i+1].Timestamp)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Apply(Write{Append: e}); err != nil {
				t.Fatal(err)
			}
		}
		if verr := c.Verify(VerifyOptions{Agent: key.AgentID()}); verr != nil {
			t.Fatalf("valid chain fails: %v", verr)
		}
		head := c.Head().Seq
		c.Close()

		k := rapid.Uint64Range(0, head).Draw(t, "k")
		want := k
		op := rapid.SampledFrom([]string{"flip", "truncate", "delete", "swap", "duplicate", "resign"}).Draw(t, "op")
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketEntries)
			val := func(seq uint64) []byte { return bytes.Clone(b.Get(seqKey(seq))) }
			switch op {
			case "flip":
				v := val(k)
				flip(t, v)
				return b.Put(seqKey(k), v)
			case "truncate":
				v := val(k)
				return b.Put(seqKey(k), v[:rapid.IntRange(0, len(v)-1).Draw(t, "len")])
			case "delete":
				return b.Delete(seqKey(k))
			case "swap":
				if head == 0 {
					t.Skip("one entry")
				}
				if k == head {
					k--
					want--
				}
				j := rapid.Uint64Range(k+1, head).Draw(t, "j")
				vk, vj := val(k), val(j)
				if err := b.Put(seqKey(k), vj); err != nil {
					return err
				}
				return b.Put(seqKey(j), vk)
			case "duplicate":
				// Copy entry k over a later entry, or past the head.
				j := rapid.Uint64Range(k+1, head+1).Draw(t, "j")
				want = j
				return b.Put(seqKey(j), val(k))
			default: // resign
				e, err := UnmarshalEntry(val(k))
				if err != nil {
					return err
				}
				resign(e, other)
				raw, err := e.Marshal()
				if err != nil {
					return err
				}
				return b.Put(seqKey(k), raw)
			}
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		c, err = Open(path, Options{})
		if err != nil {
			t.Fatalf("open after %s: %v", op, err)
		}
		defer c.Close()
		verr := c.Verify(VerifyOptions{})
		if verr == nil {
			t.Fatalf("%s at %d: tampered chain verifies", op, k)
		}
		if verr.Seq != want {
			t.Fatalf("%s at %d: reported %v, want entry %d", op, k, verr, want)
		}
	})
}

// TestPropertyExportRoundTrip: a CBOR export reads back to the same entries
// and verifies; any changed byte of the export fails reading or verifying.
func TestPropertyExportRoundTrip(t *testing.T) {
	key := testKey(t, "alice")
	var buf bytes.Buffer
	rapid.Check(t, func(t *rapid.T) {
		es := genEntries(t, key, 6)
		buf.Reset()
		for i := range es {
			raw, err := es[i].Marshal()
			if err != nil {
				t.Fatal(err)
			}
			buf.Write(raw)
		}
		got, err := ReadCBORExport(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		if verr := VerifyEntries(got, VerifyOptions{}); verr != nil {
			t.Fatal(verr)
		}
		for i := range es {
			if got[i].Hash() != es[i].Hash() || !bytes.Equal(got[i].Signature, es[i].Signature) {
				t.Fatalf("entry %d changed in the round trip", i)
			}
		}
		data := bytes.Clone(buf.Bytes())
		flip(t, data)
		got, err = ReadCBORExport(bytes.NewReader(data))
		if err == nil && VerifyEntries(got, VerifyOptions{}) == nil {
			t.Fatalf("export with a changed byte verifies")
		}
	})
}

func TestVerifyCheckPayload(t *testing.T) {
	key := testKey(t, "alice")
	c, _ := newTestChain(t, key, 3)
	var seen []uint64
	verr := c.Verify(VerifyOptions{CheckPayload: func(e *Entry, pub sign.PublicKey) error {
		if !pub.Equal(key.Public()) {
			t.Fatalf("CheckPayload got another key")
		}
		seen = append(seen, e.Seq)
		if e.Seq == 2 {
			return errBadTerms
		}
		return nil
	}})
	if verr == nil || verr.Seq != 2 || !bytes.Contains([]byte(verr.Reason), []byte("terms")) {
		t.Fatalf("verify = %v, want failure at 2 naming the check's error", verr)
	}
	if len(seen) != 2 || seen[0] != 1 {
		t.Fatalf("CheckPayload called for %v, want [1 2]", seen)
	}
}

var errBadTerms = errors.New("bad terms")
