package chain

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// goldenChain builds the same chain on every run: derived key, fixed
// timestamps, payloads of every CBOR shape the JSON export converts.
func goldenChain(t *testing.T) *Chain {
	key := testKey(t, "golden")
	c, _ := newTestChain(t, key, 0)
	payloads := []any{
		map[string]any{"terms": "100 widgets", "price": 350, "parties": []string{"a", "b"}},
		[]byte{0xde, 0xad, 0xbe, 0xef},
		map[int]any{-3: 1.5, 7: nil, 8: true},
		cbor.Tag{Number: 32, Content: "https://example.com"},
		nil,
	}
	for i, p := range payloads {
		e, err := c.NewEntry(key, KindNote, p, 1_700_000_000_000+int64(i)*1500)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(Write{Append: e}); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func TestExportJSONGolden(t *testing.T) {
	c := goldenChain(t)
	var buf bytes.Buffer
	if err := c.ExportJSON(&buf); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "export.jsonl")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run `go test ./chain -run TestExportJSONGolden -update`)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Fatalf("JSON export differs from %s (if intended, rerun with -update):\n%s", golden, buf.String())
	}
	// Every line is one entry whose hash and seq match the chain.
	sc := bufio.NewScanner(&buf)
	sc.Buffer(nil, MaxEntryBytes*2)
	n := uint64(0)
	for ; sc.Scan(); n++ {
		var je struct {
			Seq  uint64 `json:"seq"`
			Hash Hash   `json:"hash"`
			Prev Hash   `json:"prev"`
			Time string `json:"time"`
			TS   int64  `json:"ts"`
		}
		if err := json.Unmarshal(sc.Bytes(), &je); err != nil {
			t.Fatalf("line %d: %v", n, err)
		}
		e, err := c.Entry(n)
		if err != nil {
			t.Fatal(err)
		}
		if je.Seq != n || je.Hash != e.Hash() || je.Prev != e.Prev || je.TS != e.Timestamp || je.Time == "" {
			t.Fatalf("line %d: %+v does not match entry %+v", n, je, e)
		}
	}
	if n != c.Length() {
		t.Fatalf("%d lines, chain has %d entries", n, c.Length())
	}
}

func TestExportCBORExactBytes(t *testing.T) {
	c := goldenChain(t)
	var buf bytes.Buffer
	if err := c.ExportCBOR(&buf); err != nil {
		t.Fatal(err)
	}
	es, err := ReadCBORExport(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	for i := range es {
		raw, err := es[i].Marshal()
		if err != nil {
			t.Fatal(err)
		}
		again.Write(raw)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Fatal("export is not the exact stored bytes")
	}
	if verr := VerifyEntries(es, VerifyOptions{Agent: c.AgentID()}); verr != nil {
		t.Fatal(verr)
	}
}

func TestReadCBORExportErrors(t *testing.T) {
	c := goldenChain(t)
	var buf bytes.Buffer
	if err := c.ExportCBOR(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	// A re-encoding with an extra field: same entry, not canonical.
	var m map[string]any
	if _, err := DecMode().UnmarshalFirst(good, &m); err != nil {
		t.Fatal(err)
	}
	m["extra"] = 1
	extra, _ := EncMode().Marshal(m)
	cases := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"not CBOR", []byte("{\"seq\":0}")},
		{"truncated", good[:len(good)-3]},
		{"a CBOR integer", []byte{0x01}},
		{"entry with an unknown field", extra},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadCBORExport(bytes.NewReader(tc.data))
			wantErr(t, err, ErrBadExport)
		})
	}
}
