package transport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2pprotocol "github.com/libp2p/go-libp2p/core/protocol"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/negotiate-dev/negotiate/protocol"
)

// TestHostOnMockNetwork runs hosts on go-libp2p's in-memory mock network,
// handed in through Config.Libp2p as `negotiate bench --network` does:
// they bootstrap, publish with a short record lifetime, find each other
// (Lookup goes to the DHT every time), answer pings, and the check that a
// sender's connection is the peer its record names still refuses an
// impostor (identify and the peer-ID binding work on mock hosts too).
func TestHostOnMockNetwork(t *testing.T) {
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	const n = 5
	var hosts []*Host
	for i := 0; i < n; i++ {
		lh, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		if err := mn.LinkAll(); err != nil {
			t.Fatal(err)
		}
		var boot []string
		if i > 0 {
			boot = hosts[0].Addrs()[:1]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		h, err := New(ctx, Config{Key: hostTestKey(t, string(rune('a'+i))), Libp2p: lh, Bootstrap: boot,
			RecordLifetime: MinRecordLifetime, Logger: hostTestLogger()})
		cancel()
		if err != nil {
			t.Fatalf("host %d on the mock network: %v", i, err)
		}
		t.Cleanup(func() { h.Close() })
		hosts = append(hosts, h)
	}
	first, last := hosts[0], hosts[n-1]
	hostTestResolve(t, first, last.AgentID())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := first.Lookup(ctx, last.AgentID())
	if err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if info.PeerID != last.PeerID().String() {
		t.Fatalf("record names peer %s, the host is %s", info.PeerID, last.PeerID())
	}
	if left := time.Until(time.UnixMilli(info.Expires)); left > MinRecordLifetime || left <= 0 {
		t.Fatalf("record expires in %v, want within the %v lifetime", left, MinRecordLifetime)
	}
	if _, err := last.Ping(ctx, first.AgentID()); err != nil {
		t.Fatalf("ping over the mock network: %v", err)
	}

	// An impostor: a bare mock host sends a frame signed by first's key.
	// last resolves first's record, which names another peer: refused.
	imp, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	if err := mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	s, err := imp.NewStream(ctx, last.PeerID(), protocol.ProtocolSession)
	if err != nil {
		t.Fatalf("impostor stream: %v", err)
	}
	defer s.Reset()
	frame := hostTestSeal(t, hostTestKey(t, "a"), last.AgentID(), protocol.TypeReject,
		&protocol.Reject{Round: 1, Reason: "impostor"}, time.Now().Add(time.Minute))
	if err := protocol.WriteFrame(s, frame); err != nil {
		t.Fatal(err)
	}
	st := hostTestWaitStat(t, last, "the impostor's frame refused", func(s Stats) bool { return s.Refused > 0 })
	if !strings.Contains(st.LastRefusal, ErrPeerMismatch.Error()) {
		t.Fatalf("refused with %q, want a peer mismatch", st.LastRefusal)
	}

	// A host that leaves: its peers fail fast, not found or unreachable.
	gone := hosts[2]
	gone.Close()
	gone.Libp2p().Close()
	start := time.Now()
	_, err = first.Ping(ctx, gone.AgentID())
	if !errors.Is(err, ErrUnreachable) && !errors.Is(err, ErrAgentNotFound) {
		t.Fatalf("ping of a departed agent: %v, want unreachable or not found", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("ping of a departed agent took %v", took)
	}
}

// TestAgentRecordValidatorCacheExpires checks that a record the
// validator verified once (and remembers) is refused once it expired.
func TestAgentRecordValidatorCacheExpires(t *testing.T) {
	now := time.Now()
	key := hostTestKey(t, "cache")
	info := &protocol.AgentInfo{PeerID: "12D3KooWGzBcnJgUpNfAvh5E1Ak3GxH3cKjmcXZvXLcKMjLmnGKT",
		Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}, Seq: 1, Expires: now.Add(time.Minute).UnixMilli()}
	value, err := SignAgentInfo(key, info)
	if err != nil {
		t.Fatal(err)
	}
	clock := now
	v := AgentRecordValidator{Now: func() time.Time { return clock }, verified: &verifiedRecords{m: map[[32]byte]verifiedRecord{}}}
	k := AgentRecordKey(key.AgentID())
	if err := v.Validate(k, value); err != nil {
		t.Fatalf("fresh record: %v", err)
	}
	if len(v.verified.m) != 1 {
		t.Fatalf("%d records remembered, want 1", len(v.verified.m))
	}
	clock = now.Add(2 * time.Minute)
	if err := v.Validate(k, value); !errors.Is(err, ErrBadAgentRecord) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired record: %v, want expired", err)
	}
	if _, err := v.Select(k, [][]byte{value}); err == nil {
		t.Fatal("Select chose an expired record")
	}
	// Another key (agent) with the same bytes is not a cache hit.
	if err := v.Validate(AgentRecordKey(hostTestKey(t, "other").AgentID()), value); err == nil {
		t.Fatal("a record under another agent's key validated")
	}
}

// TestLookupPastUnresponsivePeers makes the three peers closest to an
// agent's record key stop answering DHT requests (they accept the stream
// and never reply, as an overloaded or hostile node may). A DHT query that
// converges on the closest peers waits for them until its 10 s read
// timeout; a lookup must still return the record the other holders gave,
// well inside a 4 s deadline: the quick lookup once its quorum answered,
// the full one when its deadline ends with the record in hand.
func TestLookupPastUnresponsivePeers(t *testing.T) {
	mn := mocknet.New()
	t.Cleanup(func() { mn.Close() })
	const n = 10
	var hosts []*Host
	newHost := func(name string, boot []string) *Host {
		lh, err := mn.GenPeer()
		if err != nil {
			t.Fatal(err)
		}
		if err := mn.LinkAll(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		h, err := New(ctx, Config{Key: hostTestKey(t, name), Libp2p: lh, Bootstrap: boot, Logger: hostTestLogger()})
		if err != nil {
			t.Fatalf("host %s on the mock network: %v", name, err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	for i := 0; i < n; i++ {
		var boot []string
		if i > 0 {
			boot = hosts[0].Addrs()[:1]
		}
		hosts = append(hosts, newHost(fmt.Sprintf("unresponsive-%d", i), boot))
	}
	target := hosts[n-1]
	for _, h := range hosts[:n-1] {
		hostTestResolve(t, h, target.AgentID())
	}

	// Freeze the three peers (other than the target and the first host)
	// closest to the target's record key.
	var others []peer.ID
	byPeer := map[peer.ID]*Host{}
	for _, h := range hosts[1 : n-1] {
		others = append(others, h.PeerID())
		byPeer[h.PeerID()] = h
	}
	key := AgentRecordKey(target.AgentID())
	closest := kb.SortClosestPeers(others, kb.ConvertKey(key))[:3]
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	for _, p := range closest {
		byPeer[p].Libp2p().SetStreamHandler(libp2pprotocol.ID(protocol.DHTPrefix+"/kad/1.0.0"), func(s network.Stream) {
			<-hold
			s.Reset()
		})
	}

	// A node joining now has no DHT stream open to the frozen peers.
	asker := newHost("unresponsive-asker", hosts[0].Addrs()[:1])
	for _, full := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		info, err := asker.hostLookup(ctx, target.AgentID(), full)
		cancel()
		if err != nil {
			t.Fatalf("lookup (full %v) with the closest peers unresponsive: %v", full, err)
		}
		if info.PeerID != target.PeerID().String() {
			t.Fatalf("lookup (full %v) returned a record naming %s, the target is %s", full, info.PeerID, target.PeerID())
		}
	}
}
