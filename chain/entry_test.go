package chain

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"testing"
)

// TestWireForm pins the CBOR form hashes are computed over: string keys in
// core deterministic order, hashes as 32-byte byte strings, and the
// signature left out of the hashed form.
func TestWireForm(t *testing.T) {
	h := Head{Seq: 1, Hash: Hash{0xab}}
	got, err := EncMode().Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0xa2, 0x63, 's', 'e', 'q', 0x01, 0x64, 'h', 'a', 's', 'h', 0x58, 0x20, 0xab}, make([]byte, 31)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("Head encodes as %x, want %x", got, want)
	}
	e := &Entry{Seq: 1, Kind: KindNote, Payload: []byte{0x01}, Signature: []byte{1, 2, 3}}
	h1 := e.Hash()
	e.Signature = []byte{4}
	if e.Hash() != h1 {
		t.Fatal("the signature changes the entry hash")
	}
	e.Timestamp = 1
	if e.Hash() == h1 {
		t.Fatal("the timestamp does not change the entry hash")
	}
	raw, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// Keys sorted by encoded bytes: ts, seq, sig, kind, prev, payload.
	for i, k := range []string{"ts", "seq", "sig", "kind", "prev", "payload"} {
		at := bytes.Index(raw, append([]byte{byte(0x60 + len(k))}, k...))
		if at < 0 {
			t.Fatalf("key %q missing from %x", k, raw)
		}
		if i > 0 {
			prev := []string{"ts", "seq", "sig", "kind", "prev", "payload"}[i-1]
			if at < bytes.Index(raw, append([]byte{byte(0x60 + len(prev))}, prev...)) {
				t.Fatalf("key %q before %q in %x", k, prev, raw)
			}
		}
	}
}

func TestHashText(t *testing.T) {
	h := Hash{0x01, 0xff}
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `"`+hex.EncodeToString(h[:])+`"` {
		t.Fatalf("JSON %s", b)
	}
	var back Hash
	if err := json.Unmarshal(b, &back); err != nil || back != h {
		t.Fatalf("round trip %v (%v)", back, err)
	}
	for _, bad := range []string{"", "zz", hex.EncodeToString(h[:]) + "00", "g" + hex.EncodeToString(h[:])[1:]} {
		if _, err := ParseHash(bad); err == nil {
			t.Fatalf("ParseHash(%q) accepted", bad)
		}
	}
}

func TestCheckDeterministic(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"small int", []byte{0x01}, true},
		{"map sorted", []byte{0xa2, 0x61, 'a', 0x01, 0x61, 'b', 0x02}, true},
		{"map unsorted", []byte{0xa2, 0x61, 'b', 0x01, 0x61, 'a', 0x02}, false},
		{"duplicate key", []byte{0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02}, false},
		{"int not shortest", []byte{0x18, 0x01}, false},
		{"float not shortest", []byte{0xfb, 0, 0, 0, 0, 0, 0, 0, 0}, false},
		{"indefinite array", []byte{0x9f, 0x01, 0xff}, false},
		{"two items", []byte{0x01, 0x02}, false},
		{"truncated", []byte{0x62, 'a'}, false},
		{"empty", nil, false},
		{"too deep", append(bytes.Repeat([]byte{0x81}, MaxNestedLevels+1), 0x01), false},
		{"deep but within the limit", append(bytes.Repeat([]byte{0x81}, MaxNestedLevels-1), 0x01), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckDeterministic(tc.in); (err == nil) != tc.ok {
				t.Fatalf("CheckDeterministic(%x) = %v, want ok=%v", tc.in, err, tc.ok)
			}
		})
	}
}
