package protocol

import (
	"bytes"
	"encoding/binary"
	"sort"
	"testing"
)

// Fuzz targets: nothing from the network may panic, and whatever is
// accepted must satisfy what Open promises. `go test` runs the seeds only.

func openSeeds(tb testing.TB) [][]byte {
	fx := newFixture(tb)
	var seeds [][]byte
	for typ := range fx.bodies() {
		sealed := fx.sealed(tb, typ)
		seeds = append(seeds, sealed, sealed[:len(sealed)-1], append(bytes.Clone(sealed), 0))
	}
	var s Signed
	valid := fx.sealed(tb, TypeReject)
	_ = Unmarshal(valid, &s)
	return append(seeds, dupFrameKey(s), indefiniteFrame(s), reversedFrame(s), []byte{}, []byte{0xa0}, []byte{0xbf, 0xff})
}

func FuzzOpen(f *testing.F) {
	for _, seed := range openSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(checkOpen)
}

func checkOpen(t *testing.T, data []byte) {
	{
		env, err := Open(data, testNow)
		if err != nil {
			if env != nil {
				t.Fatal("envelope returned with an error")
			}
			return
		}
		if !bytes.Equal(env.Raw, data) || !KnownType(env.Msg.Type) || env.Body == nil || !env.Msg.From.Matches(env.Key) {
			t.Fatalf("accepted an envelope that breaks Open's promises: %+v", env.Msg)
		}
		again, err := Marshal(Signed{Payload: rawMessage(t, env.Msg), Sig: env.Sig})
		if err != nil || !bytes.Equal(again, data) {
			t.Fatal("accepted bytes are not the canonical encoding of the message")
		}
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(append(binary.BigEndian.AppendUint32(nil, 3), 1, 2, 3))
	f.Add(binary.BigEndian.AppendUint32(nil, 0))
	f.Add(binary.BigEndian.AppendUint32(nil, 0xffffffff))
	f.Add(append(binary.BigEndian.AppendUint32(nil, 5), 1))
	f.Add([]byte{0, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			b, err := ReadFrame(r, 1<<10)
			if err != nil {
				return
			}
			if len(b) == 0 || len(b) > 1<<10 {
				t.Fatalf("ReadFrame returned %d bytes", len(b))
			}
			var buf bytes.Buffer
			if err := WriteFrame(&buf, b); err != nil {
				t.Fatal(err)
			}
			back, err := ReadFrame(&buf, 0)
			if err != nil || !bytes.Equal(back, b) {
				t.Fatalf("frame did not round-trip: %v", err)
			}
		}
	})
}

// FuzzBody fuzzes every body decoder and Validate method; typ selects the
// message type (modulo the number of types).
func FuzzBody(f *testing.F) {
	fx := newFixture(f)
	types := make([]string, 0, len(bodyTypes))
	for typ := range bodyTypes {
		types = append(types, typ)
	}
	sort.Strings(types)
	bodies := fx.bodies()
	for i, typ := range types {
		b, err := Marshal(bodies[typ])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), b)
		f.Add(uint8(i), b[:len(b)/2])
	}
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		m := Message{Type: types[int(typ)%len(types)], Body: data}
		body, err := decodeBody(&m)
		if err == nil && body == nil {
			t.Fatal("no body and no error")
		}
	})
}

func FuzzOpenAgentInfo(f *testing.F) {
	key := testKey(f, "ed25519", "node")
	b, err := SignAgentInfo(key, AgentInfo{PeerID: "12D3KooWexample", Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}, Seq: 1, Expires: testExp})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:len(b)-3])
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := OpenAgentInfo(data, testNow)
		if err == nil && !info.AgentID.Matches(mustKey(t, info)) {
			t.Fatal("accepted a record whose key does not match its ID")
		}
	})
}

var termsSeeds = [][]byte{
	{0xa1, 0x61, 'a', 0x01},
	{0xa2, 0x61, 'b', 1, 0x61, 'a', 2},
	{0xa1, 0x61, 'a', 0xf9, 0x3e, 0x00},
}

func FuzzCheckTerms(f *testing.F) {
	for _, seed := range termsSeeds {
		f.Add(seed)
	}
	f.Fuzz(checkTerms)
}

func checkTerms(t *testing.T, data []byte) {
	{
		if CheckTerms(data) == nil {
			var v any
			if err := Unmarshal(data, &v); err != nil {
				t.Fatalf("accepted terms do not decode: %v", err)
			}
			again, _ := Marshal(v)
			if !bytes.Equal(again, data) {
				t.Fatal("accepted terms that are not canonical")
			}
		}
	}
}
