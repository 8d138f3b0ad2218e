package protocol

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/negotiate-dev/negotiate/sign"
)

func TestSealOpenEveryType(t *testing.T) {
	f := newFixture(t)
	bodies := f.bodies()
	for typ := range bodyTypes {
		if _, ok := bodies[typ]; !ok {
			t.Errorf("type %q has no fixture body: add one to fixture.bodies", typ)
		}
	}
	for typ, body := range bodies {
		t.Run(typ, func(t *testing.T) {
			sealed := f.sealed(t, typ)
			env, err := Open(sealed, testNow)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			m := env.Msg
			if m.Type != typ || m.Session != f.session || m.From != f.keys[0].AgentID() ||
				m.Scheme != "ed25519" || m.To != f.keys[1].AgentID() || m.Expires != testExp ||
				!bytes.Equal(m.Nonce, fixedNonce(typ)) {
				t.Fatalf("header changed in transit: %+v", m)
			}
			if !env.Key.Equal(f.keys[0].Public()) {
				t.Fatal("envelope key is not the sender's")
			}
			if !bytes.Equal(env.Raw, sealed) {
				t.Fatal("Raw is not the exact bytes received")
			}
			want, _ := Marshal(body)
			got, err := Marshal(env.Body)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("body %T changed in transit: %x != %x (%v)", env.Body, got, want, err)
			}
			if _, err := OpenFor(sealed, f.keys[1].AgentID(), testNow); err != nil {
				t.Fatalf("OpenFor the recipient: %v", err)
			}
		})
	}
}

func TestSealOpenEveryScheme(t *testing.T) {
	f := newFixture(t)
	for _, scheme := range sign.SchemeNames() {
		t.Run(scheme, func(t *testing.T) {
			key := testKey(t, scheme, "sender")
			sealed, err := Seal(key, f.message(t, TypeReject, f.bodies()[TypeReject]))
			if err != nil {
				t.Fatal(err)
			}
			env, err := Open(sealed, testNow)
			if err != nil {
				t.Fatal(err)
			}
			if env.Msg.From != key.AgentID() || env.Msg.Scheme != scheme {
				t.Fatalf("sender %s/%s, want %s/%s", env.Msg.From, env.Msg.Scheme, key.AgentID(), scheme)
			}
		})
	}
}

func TestSealFillsNonce(t *testing.T) {
	f := newFixture(t)
	m := f.message(t, TypeQuery, f.bodies()[TypeQuery])
	m.Nonce = nil
	a, err := Seal(f.keys[0], m)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Seal(f.keys[0], m)
	if err != nil {
		t.Fatal(err)
	}
	ea, _ := Open(a, testNow)
	eb, _ := Open(b, testNow)
	if len(ea.Msg.Nonce) != NonceSize || bytes.Equal(ea.Msg.Nonce, eb.Msg.Nonce) {
		t.Fatalf("nonces %x and %x: want two different random %d-byte nonces", ea.Msg.Nonce, eb.Msg.Nonce, NonceSize)
	}
}

// doctor decodes the payload of a valid sealed message, applies change and
// re-signs it with key.
func doctor(t *testing.T, f *fixture, typ string, key *sign.PrivateKey, change func(m *Message)) []byte {
	t.Helper()
	m := f.message(t, typ, f.bodies()[typ])
	m.From, m.Scheme, m.FromKey = f.keys[0].AgentID(), "ed25519", f.keys[0].Public().Bytes()
	change(&m)
	return resign(t, key, m.Type, rawMessage(t, m))
}

func TestOpenRejects(t *testing.T) {
	f := newFixture(t)
	alice, bob := f.keys[0], f.keys[1]
	valid := f.sealed(t, TypeReject)
	var s Signed
	if err := Unmarshal(valid, &s); err != nil {
		t.Fatal(err)
	}
	flip := func(b []byte, i int) []byte {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		return c
	}
	bodyWith := func(v any) cbor.RawMessage {
		b, err := Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	deep := any("leaf")
	for range MaxNestedLevels + 2 {
		deep = map[string]any{"a": deep}
	}
	reasonAt := bytes.Index(valid, []byte("price too high"))

	tests := []struct {
		name  string
		input []byte
		want  error
		text  string // a part of the error text
	}{
		{"empty", nil, ErrMalformed, "empty"},
		{"not CBOR", []byte{0xff}, ErrMalformed, "signed frame"},
		{"truncated", valid[:len(valid)/2], ErrMalformed, "truncated"},
		{"oversized", make([]byte, MaxFrameBytes+1), ErrTooLarge, "limit"},
		{"trailing bytes after frame", append(bytes.Clone(valid), 0x00), ErrTrailing, "1 bytes after the signed frame"},
		{"trailing bytes after payload", resign(t, alice, TypeReject, append(bytes.Clone(s.Payload), 0x00)), ErrTrailing, "after the message payload"},
		{"payload byte flipped", flip(valid, reasonAt), ErrBadSignature, "altered or forged"},
		{"signature byte flipped", flip(valid, len(valid)-1), ErrBadSignature, "altered or forged"},
		{"signature empty", rawMessage(t, Signed{Payload: s.Payload, Sig: []byte{}}), ErrBadSignature, "0 bytes"},
		{"signed by another key", resign(t, bob, TypeReject, s.Payload), ErrBadSignature, "altered or forged"},
		{"signed for another type", resign(t, alice, TypeAccept, s.Payload), ErrBadSignature, "msg/reject"},
		{"From not derived from key", doctor(t, f, TypeReject, alice, func(m *Message) { m.From = bob.AgentID() }), ErrBadSignature, "does not belong"},
		{"key of another scheme", doctor(t, f, TypeReject, alice, func(m *Message) { m.Scheme = "ed448" }), ErrBadSignature, "ed448 public key"},
		{"expired", doctor(t, f, TypeReject, alice, func(m *Message) { m.Expires = testNow - 1 }), ErrExpired, "expired at"},
		{"expiry too far ahead", doctor(t, f, TypeReject, alice, func(m *Message) { m.Expires = testNow + maxExpiryAheadMillis + 1 }), ErrExpired, "lifetime limit"},
		{"no expiry", doctor(t, f, TypeReject, alice, func(m *Message) { m.Expires = 0 }), ErrMalformed, "no expiry"},
		{"unknown type", doctor(t, f, TypeReject, alice, func(m *Message) { m.Type = "bogus" }), ErrUnknownType, `"bogus"`},
		{"short nonce", doctor(t, f, TypeReject, alice, func(m *Message) { m.Nonce = m.Nonce[:8] }), ErrMalformed, "nonce is 8 bytes"},
		{"bad session", doctor(t, f, TypeReject, alice, func(m *Message) { m.Session = "ABC" }), ErrMalformed, "session ID"},
		{"bad recipient", doctor(t, f, TypeReject, alice, func(m *Message) { m.To = "bob" }), ErrMalformed, "recipient"},
		{"body not a map", doctor(t, f, TypeReject, alice, func(m *Message) { m.Body = cbor.RawMessage{0x01} }), ErrMalformed, "not a CBOR map"},
		{"body of another type", doctor(t, f, TypeReject, alice, func(m *Message) { m.Body = bodyWith(f.bodies()[TypeAccept]) }), ErrMalformed, "unknown field"},
		{"body fails Validate", doctor(t, f, TypeReject, alice, func(m *Message) {
			m.Body = bodyWith(&Reject{Round: 1, Reason: strings.Repeat("x", MaxReasonBytes+1)})
		}), ErrTooLarge, "reason is 1025 bytes"},
		{"body nested too deep", doctor(t, f, TypeCounter, alice, func(m *Message) {
			m.Body = bodyWith(map[string]any{"round": 1, "terms": deep})
		}), ErrTooLarge, "nested level"},
		{"body array too long", doctor(t, f, TypeCounter, alice, func(m *Message) {
			m.Body = bodyWith(map[string]any{"round": 1, "terms": map[string]any{"x": make([]int, MaxArrayElements+1)}})
		}), ErrTooLarge, "array"},
		{"body with a tag", doctor(t, f, TypeCounter, alice, func(m *Message) {
			m.Body = bodyWith(map[string]any{"round": 1, "terms": map[string]any{"x": cbor.Tag{Number: 1, Content: 0}}})
		}), ErrMalformed, "tag"},
		{"duplicate key in frame", dupFrameKey(s), ErrMalformed, "duplicate map key"},
		{"duplicate key in payload", resign(t, alice, TypeReject, dupPayloadKey(t, s.Payload)), ErrMalformed, "duplicate map key"},
		{"indefinite-length frame", indefiniteFrame(s), ErrMalformed, "indefinite"},
		{"frame keys out of order", reversedFrame(s), ErrMalformed, "core deterministic"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Open(tc.input, testNow)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open = %v, %v; want an error wrapping %v", env, err, tc.want)
			}
			if env != nil {
				t.Fatal("Open returned an envelope with an error")
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q does not say %q", err, tc.text)
			}
			if errors.Is(tc.want, ErrBadSignature) && !errors.Is(err, sign.ErrBadSignature) {
				t.Errorf("error %q does not wrap sign.ErrBadSignature", err)
			}
		})
	}
}

// dupFrameKey encodes {"p": payload, "p": payload, "s": sig}.
func dupFrameKey(s Signed) []byte {
	p, _ := Marshal(s.Payload)
	sig, _ := Marshal(s.Sig)
	out := []byte{0xa3, 0x61, 'p'}
	out = append(out, p...)
	out = append(out, 0x61, 'p')
	out = append(out, p...)
	out = append(out, 0x61, 's')
	return append(out, sig...)
}

// dupPayloadKey appends a second "t" entry to the payload map.
func dupPayloadKey(t *testing.T, payload []byte) []byte {
	if payload[0] != 0xa9 {
		t.Fatalf("payload starts with %#x, want a 9-entry map", payload[0])
	}
	out := append([]byte{0xaa}, payload[1:]...)
	return append(out, 0x61, 't', 0x66, 'r', 'e', 'j', 'e', 'c', 't')
}

func indefiniteFrame(s Signed) []byte {
	p, _ := Marshal(s.Payload)
	sig, _ := Marshal(s.Sig)
	out := []byte{0xbf, 0x61, 'p'}
	out = append(out, p...)
	out = append(out, 0x61, 's')
	out = append(out, sig...)
	return append(out, 0xff)
}

func reversedFrame(s Signed) []byte {
	p, _ := Marshal(s.Payload)
	sig, _ := Marshal(s.Sig)
	out := []byte{0xa2, 0x61, 's'}
	out = append(out, sig...)
	out = append(out, 0x61, 'p')
	return append(out, p...)
}

func TestOpenForRecipient(t *testing.T) {
	f := newFixture(t)
	sealed := f.sealed(t, TypeAccept) // To: party 1
	if _, err := OpenFor(sealed, f.keys[1].AgentID(), testNow); err != nil {
		t.Fatalf("recipient: %v", err)
	}
	_, err := OpenFor(sealed, f.keys[2].AgentID(), testNow)
	if !errors.Is(err, ErrWrongRecipient) {
		t.Fatalf("other agent: %v, want ErrWrongRecipient", err)
	}
	if !strings.Contains(err.Error(), "addressed to") {
		t.Errorf("error %q does not say who it was addressed to", err)
	}
	m := f.message(t, TypeAccept, f.bodies()[TypeAccept])
	m.To = ""
	anyone, err := Seal(f.keys[0], m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenFor(anyone, f.keys[2].AgentID(), testNow); err != nil {
		t.Fatalf("message without recipient: %v", err)
	}
	if _, err := OpenFor(sealed, "", testNow); err == nil {
		t.Fatal("OpenFor without an agent ID succeeded")
	}
}

func TestOpenCertificateIgnoresExpiryOnly(t *testing.T) {
	f := newFixture(t)
	sealed := f.sealed(t, TypeRefuse)
	later := testExp + 3_600_000
	if _, err := Open(sealed, later); !errors.Is(err, ErrExpired) {
		t.Fatalf("Open after expiry: %v, want ErrExpired", err)
	}
	env, err := OpenCertificate(sealed)
	if err != nil {
		t.Fatalf("OpenCertificate: %v", err)
	}
	if _, ok := env.Body.(*Refuse); !ok {
		t.Fatalf("body is %T, want *Refuse", env.Body)
	}
	bad := bytes.Clone(sealed)
	bad[len(bad)-1] ^= 1
	if _, err := OpenCertificate(bad); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("OpenCertificate of a forged frame: %v, want ErrBadSignature", err)
	}
}

func TestSealRefuses(t *testing.T) {
	f := newFixture(t)
	base := func() Message { return f.message(t, TypeReject, f.bodies()[TypeReject]) }
	tests := []struct {
		name   string
		key    *sign.PrivateKey
		change func(m *Message)
		want   error
	}{
		{"unknown type", f.keys[0], func(m *Message) { m.Type = "bogus" }, ErrUnknownType},
		{"no expiry", f.keys[0], func(m *Message) { m.Expires = 0 }, ErrMalformed},
		{"short nonce", f.keys[0], func(m *Message) { m.Nonce = []byte{1} }, ErrMalformed},
		{"bad session", f.keys[0], func(m *Message) { m.Session = "nope" }, ErrMalformed},
		{"empty body", f.keys[0], func(m *Message) { m.Body = nil }, ErrMalformed},
		{"body too large", f.keys[0], func(m *Message) { m.Body = make(cbor.RawMessage, MaxBodyBytes+1) }, ErrTooLarge},
		{"invalid body", f.keys[0], func(m *Message) { m.Body, _ = EncodeBody(&Reject{Reason: strings.Repeat("x", MaxReasonBytes+1)}) }, ErrTooLarge},
		{"too many agent records", f.keys[0], func(m *Message) { m.Intro = make([][]byte, MaxIntroRecords+1) }, ErrTooLarge},
		{"agent records too large", f.keys[0], func(m *Message) { m.Intro = [][]byte{make([]byte, MaxIntroBytes/2+1), make([]byte, MaxIntroBytes/2)} }, ErrTooLarge},
		{"empty agent record", f.keys[0], func(m *Message) { m.Intro = [][]byte{{1}, {}} }, ErrMalformed},
		{"no key", nil, func(m *Message) {}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			tc.change(&m)
			out, err := Seal(tc.key, m)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("Seal = %d bytes, %v; want an error wrapping %v", len(out), err, tc.want)
			}
		})
	}
}

func TestSealedMessageFitsFrameForEveryScheme(t *testing.T) {
	// The largest body Seal accepts must still give a frame within the limit,
	// whatever the sender's scheme.
	f := newFixture(t)
	payload := make([]byte, MaxDirectBytes)
	for _, scheme := range sign.SchemeNames() {
		m := f.message(t, TypeDirect, &Direct{ContentType: strings.Repeat("t", MaxContentTypeBytes), Payload: payload})
		m.Intro = [][]byte{make([]byte, MaxIntroBytes-1), {1}}
		out, err := Seal(testKey(t, scheme, "big"), m)
		if err != nil {
			t.Fatalf("%s: %v", scheme, err)
		}
		if len(out)-len(m.Body) > maxEnvelopeOverhead {
			t.Fatalf("%s: envelope overhead is %d bytes, maxEnvelopeOverhead is %d", scheme, len(out)-len(m.Body), maxEnvelopeOverhead)
		}
	}
}

func TestCheckExpiry(t *testing.T) {
	tests := []struct {
		exp  int64
		want error
	}{
		{testNow, nil},
		{testNow + maxExpiryAheadMillis, nil},
		{testNow - 1, ErrExpired},
		{testNow + maxExpiryAheadMillis + 1, ErrExpired},
		{0, ErrMalformed},
		{-5, ErrMalformed},
	}
	for _, tc := range tests {
		err := CheckExpiry(tc.exp, testNow)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("CheckExpiry(%d) = %v, want %v", tc.exp, err, tc.want)
		}
	}
}
