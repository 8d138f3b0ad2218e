package transport

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// introTestSeal seals a Reject from a's key to to carrying intro.
func introTestSeal(t *testing.T, a *Host, to *Host, intro [][]byte) []byte {
	t.Helper()
	body, err := protocol.EncodeBody(&protocol.Reject{Round: 1, Reason: "intro test"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := protocol.Seal(a.key, protocol.Message{Type: protocol.TypeReject, To: to.AgentID(),
		Expires: time.Now().Add(time.Minute).UnixMilli(), Body: body, Intro: intro})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestIntroducedRecordsSpareLookups: a frame carrying the sender's record
// and a third agent's (what a proposal carries) lets the recipient check
// the sender and reach the third agent without a DHT lookup.
func TestIntroducedRecordsSpareLookups(t *testing.T) {
	a := hostTestNew(t, "intro-a")
	b := hostTestNew(t, "intro-b", a)
	c := hostTestNew(t, "intro-c", a)
	hostTestResolve(t, a, b.AgentID())
	hostTestResolve(t, a, c.AgentID())
	if b.hostCached(a.AgentID()) != nil || b.hostCached(c.AgentID()) != nil {
		t.Fatal("b knows a or c before the test")
	}
	intro := a.IntroRecords(nil)
	if len(intro) != 1 {
		t.Fatalf("own intro: %d records, want 1", len(intro))
	}
	intro = a.IntroRecords([]sign.AgentID{c.AgentID(), b.AgentID(), c.AgentID(), a.AgentID()})
	if len(intro) != 3 {
		t.Fatalf("intro of c and b: %d records, want 3 (a's own, c's, b's; no duplicate)", len(intro))
	}
	sink := newHostTestSink(b)
	before := b.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Send(ctx, b.AgentID(), introTestSeal(t, a, b, intro)); err != nil {
		t.Fatal(err)
	}
	sink.wait(t, 1)
	after := b.Stats()
	if after.Lookups != before.Lookups {
		t.Fatalf("b made %d DHT lookups to check a's frame, want 0", after.Lookups-before.Lookups)
	}
	if got := after.Introduced - before.Introduced; got != 2 {
		t.Fatalf("b took %d introduced records, want 2 (a's and c's; its own is skipped)", got)
	}
	if info := b.hostCached(c.AgentID()); info == nil || info.PeerID != c.PeerID().String() {
		t.Fatalf("b's cached record of c: %+v", info)
	}
	// b reaches c from the introduced record alone.
	if _, err := b.Ping(ctx, c.AgentID()); err != nil {
		t.Fatalf("b pings c: %v", err)
	}
	if n := b.Stats().Lookups - before.Lookups; n != 0 {
		t.Fatalf("b made %d DHT lookups to reach c, want 0", n)
	}
}

// TestIntroducedRecordsChecked: introduced records are checked like DHT
// records. A forged or malformed one refuses the whole frame and caches
// nothing; an expired one is skipped; an older one never replaces a newer
// cached record.
func TestIntroducedRecordsChecked(t *testing.T) {
	a, b := hostTestPair(t)
	sink := newHostTestSink(b)
	now := time.Now()
	d := hostTestKey(t, "intro-d")
	var info protocol.AgentInfo
	if err := protocol.Unmarshal(hostTestRecord(t, d, now, nil), &info); err != nil {
		t.Fatal(err)
	}
	info.Signature[0] ^= 0xff
	forged, err := protocol.Marshal(&info)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		intro  [][]byte
		refuse string // "" when the frame must be delivered
	}{
		{"forged signature", [][]byte{forged}, "signature"},
		{"not a record", [][]byte{[]byte("not cbor")}, "agent record 0 introduced by"},
		{"bad peer ID", [][]byte{hostTestRecord(t, d, now, func(i *protocol.AgentInfo) { i.PeerID = "not-a-peer-id" })}, "peer ID"},
		{"expired", [][]byte{hostTestRecord(t, d, now, func(i *protocol.AgentInfo) { i.Expires = now.Add(-time.Second).UnixMilli() })}, ""},
	}
	delivered := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := b.Stats()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := a.Send(ctx, b.AgentID(), introTestSeal(t, a, b, tc.intro)); err != nil {
				t.Fatal(err)
			}
			if tc.refuse == "" {
				delivered++
				sink.wait(t, delivered)
			} else {
				st := hostTestWaitStat(t, b, "the frame refused", func(s Stats) bool { return s.Refused > before.Refused })
				if !strings.Contains(st.LastRefusal, tc.refuse) {
					t.Fatalf("refused with %q, want %q", st.LastRefusal, tc.refuse)
				}
			}
			if b.hostCached(d.AgentID()) != nil {
				t.Fatal("the bad record was cached")
			}
			if got := b.Stats().Introduced; got != before.Introduced {
				t.Fatalf("%d records introduced, want none", got-before.Introduced)
			}
		})
	}

	// An older record of a (lower seq) leaves b's cached one in place.
	cached := b.hostCached(a.AgentID())
	if cached == nil {
		t.Fatal("b has no record of a")
	}
	old := *cached
	old.Seq--
	old.Addrs = []string{"/ip4/127.0.0.1/tcp/9"}
	value, err := SignAgentInfo(a.key, &old)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Send(ctx, b.AgentID(), introTestSeal(t, a, b, [][]byte{value})); err != nil {
		t.Fatal(err)
	}
	sink.wait(t, delivered+1)
	if now := b.hostCached(a.AgentID()); now == nil || now.Seq != cached.Seq || len(now.Addrs) == 0 || now.Addrs[0] == "/ip4/127.0.0.1/tcp/9" {
		t.Fatalf("an older introduced record replaced the cached one: %+v", now)
	}
}
