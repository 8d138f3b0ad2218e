package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// hostTestKey derives a deterministic agent key from a name.
func hostTestKey(t testing.TB, name string) *sign.PrivateKey {
	t.Helper()
	s, err := sign.SchemeByName(sign.DefaultScheme)
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.DeriveKey([]byte("host-test/" + name))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// hostTestLogger logs to stderr at debug level when NEGOTIATE_TEST_LOG is
// set, else discards.
func hostTestLogger() *slog.Logger {
	if os.Getenv("NEGOTIATE_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// hostTestNew starts a host for agent name on loopback (mDNS off),
// bootstrapping from the given hosts, closed at the end of the test.
func hostTestNew(t testing.TB, name string, bootstrap ...*Host) *Host {
	t.Helper()
	var boot []string
	for _, b := range bootstrap {
		boot = append(boot, b.Addrs()[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h, err := New(ctx, Config{Key: hostTestKey(t, name), Bootstrap: boot, Logger: hostTestLogger()})
	if err != nil {
		t.Fatalf("start host %s: %v", name, err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// hostTestPair starts two hosts, b bootstrapping from a, and waits until
// each resolves the other.
func hostTestPair(t testing.TB) (a, b *Host) {
	t.Helper()
	a = hostTestNew(t, "a")
	b = hostTestNew(t, "b", a)
	hostTestResolve(t, a, b.AgentID())
	hostTestResolve(t, b, a.AgentID())
	return a, b
}

// hostTestResolve resolves id from h, retrying while the network settles.
func hostTestResolve(t testing.TB, h *Host, id sign.AgentID) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := h.Resolve(ctx, id)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s cannot resolve %s: %v", h.AgentID().Short(), id.Short(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// hostTestSeal seals a message from key to "to" with the given type and body.
func hostTestSeal(t testing.TB, key *sign.PrivateKey, to sign.AgentID, typ string, body any, expires time.Time) []byte {
	t.Helper()
	b, err := protocol.EncodeBody(body)
	if err != nil {
		t.Fatal(err)
	}
	f, err := protocol.Seal(key, protocol.Message{Type: typ, To: to, Expires: expires.UnixMilli(), Body: b})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// hostTestRawStream opens a raw stream from one host to another on a protocol.
func hostTestRawStream(t testing.TB, from, to *Host, proto string) network.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := from.Libp2p().NewStream(ctx, to.PeerID(), p2pproto.ID(proto))
	if err != nil {
		t.Fatalf("open raw %s stream: %v", proto, err)
	}
	s.SetDeadline(time.Now().Add(5 * time.Second))
	return s
}

// hostTestWaitStat waits until cond holds for h's stats.
func hostTestWaitStat(t testing.TB, h *Host, what string, cond func(Stats) bool) Stats {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := h.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: stats %+v", what, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hostTestSink collects session envelopes.
type hostTestSink struct {
	mu   sync.Mutex
	envs []*protocol.Envelope
	ch   chan struct{}
}

func newHostTestSink(h *Host) *hostTestSink {
	s := &hostTestSink{ch: make(chan struct{}, 1024)}
	h.SetSessionHandler(func(env *protocol.Envelope) {
		s.mu.Lock()
		s.envs = append(s.envs, env)
		s.mu.Unlock()
		select {
		case s.ch <- struct{}{}:
		default:
		}
	})
	return s
}

func (s *hostTestSink) wait(t testing.TB, n int) []*protocol.Envelope {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		s.mu.Lock()
		if len(s.envs) >= n {
			out := append([]*protocol.Envelope(nil), s.envs...)
			s.mu.Unlock()
			return out
		}
		s.mu.Unlock()
		select {
		case <-s.ch:
		case <-deadline:
			t.Fatalf("waited for %d session frames, have %d", n, s.count())
		}
	}
}

// waitFrom waits for a frame from agent id.
func (s *hostTestSink) waitFrom(t testing.TB, id sign.AgentID) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		s.mu.Lock()
		for _, env := range s.envs {
			if env.Msg.From == id {
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
		select {
		case <-s.ch:
		case <-deadline:
			t.Fatalf("no session frame from %s", id.Short())
		}
	}
}

func (s *hostTestSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.envs)
}

func TestHostPeerKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "peer.key")
	k1, err := hostLoadPeerKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("peer key file mode %04o, want 0600", st.Mode().Perm())
	}
	k2, err := hostLoadPeerKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equals(k2) {
		t.Fatal("reloaded peer key differs from the created one")
	}

	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		want    string
	}{
		{"readable by others", nil, 0o644, "chmod 600"},
		{"damaged", []byte("not a key"), 0o600, "damaged"},
		{"too large", make([]byte, hostPeerKeyMaxBytes+1), 0o600, "too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "peer.key")
			content := tc.content
			if content == nil {
				raw, _ := os.ReadFile(path)
				content = raw
			}
			if err := os.WriteFile(p, content, tc.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(p, tc.mode)
			_, err := hostLoadPeerKey(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			after, _ := os.ReadFile(p)
			if string(after) != string(content) {
				t.Fatal("a refused peer key file was changed")
			}
		})
	}
}

func TestHostPeerKeyPersistsPeerID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "peer.key")
	key := hostTestKey(t, "persist")
	ctx := context.Background()
	h1, err := New(ctx, Config{Key: key, PeerKeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	id1 := h1.PeerID()
	h1.Close()
	h2, err := New(ctx, Config{Key: key, PeerKeyFile: path})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	if h2.PeerID() != id1 {
		t.Fatalf("peer ID changed across restarts: %s then %s", id1, h2.PeerID())
	}
	if h2.PeerID().String() == string(key.AgentID()) {
		t.Fatal("peer ID equals agent ID")
	}
}

func TestHostConfigErrors(t *testing.T) {
	key := hostTestKey(t, "cfg")
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no key", Config{}, "Key (the agent key) is required"},
		{"bad bootstrap", Config{Key: key, Bootstrap: []string{"/ip4/127.0.0.1/tcp/1"}}, "bootstrap address"},
		{"bad listen", Config{Key: key, Listen: []string{"/nonsense"}}, "start libp2p"},
		{"short record lifetime", Config{Key: key, RecordLifetime: time.Second}, "record lifetime 1s"},
		{"long record lifetime", Config{Key: key, RecordLifetime: 2 * AgentRecordLifetime}, "record lifetime 2h0m0s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(context.Background(), tc.cfg)
			if err == nil {
				h.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestHostAddrsAndClose(t *testing.T) {
	h := hostTestNew(t, "addrs")
	addrs := h.Addrs()
	if len(addrs) < 2 {
		t.Fatalf("want TCP and QUIC addresses, have %v", addrs)
	}
	var tcp, quic bool
	for _, a := range addrs {
		if !strings.HasSuffix(a, "/p2p/"+h.PeerID().String()) {
			t.Errorf("address %s does not end in /p2p/<peer-id>", a)
		}
		tcp = tcp || strings.Contains(a, "/tcp/")
		quic = quic || strings.Contains(a, "/quic-v1")
	}
	if !tcp || !quic {
		t.Errorf("want TCP and QUIC, have %v", addrs)
	}
	own, err := h.Resolve(context.Background(), h.AgentID())
	if err != nil {
		t.Fatal(err)
	}
	if own.PeerID != h.PeerID().String() || own.AgentID != h.AgentID() {
		t.Fatalf("own record %+v", own)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestHostSessionSend(t *testing.T) {
	a, b := hostTestPair(t)
	sink := newHostTestSink(b)
	const n = 20
	for i := 0; i < n; i++ {
		f := hostTestSeal(t, a.key, b.AgentID(), protocol.TypeReject, &protocol.Reject{Round: uint32(i), Reason: "r"}, time.Now().Add(time.Minute))
		if err := a.Send(context.Background(), b.AgentID(), f); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	envs := sink.wait(t, n)
	for i, env := range envs {
		if env.Msg.From != a.AgentID() {
			t.Fatalf("frame %d from %s", i, env.Msg.From.Short())
		}
		if r := env.Body.(*protocol.Reject); r.Round != uint32(i) {
			t.Fatalf("frame %d has round %d: order lost", i, r.Round)
		}
	}
	// One reused stream carried them all.
	streams := 0
	for _, c := range a.Libp2p().Network().ConnsToPeer(b.PeerID()) {
		for _, s := range c.GetStreams() {
			if string(s.Protocol()) == protocol.ProtocolSession {
				streams++
			}
		}
	}
	if streams != 1 {
		t.Fatalf("%d session streams open to the peer, want 1 reused", streams)
	}
	// The peer closing our cached stream is survived by reopening once.
	a.mu.Lock()
	o := a.out[b.PeerID()]
	a.mu.Unlock()
	o.mu.Lock()
	o.s.Reset()
	o.mu.Unlock()
	f := hostTestSeal(t, a.key, b.AgentID(), protocol.TypeReject, &protocol.Reject{Round: n, Reason: "r"}, time.Now().Add(time.Minute))
	if err := a.Send(context.Background(), b.AgentID(), f); err != nil {
		t.Fatalf("send after reset: %v", err)
	}
	sink.wait(t, n+1)
	if err := a.Send(context.Background(), b.AgentID(), make([]byte, protocol.MaxFrameBytes+1)); !errors.Is(err, protocol.ErrTooLarge) {
		t.Fatalf("oversized send: %v", err)
	}
}

// hostTestFrame writes a length-prefixed frame of arbitrary bytes (even
// over the limit, unlike protocol.WriteFrame).
func hostTestFrame(claimed uint32, body []byte) []byte {
	out := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(out, claimed)
	return append(out, body...)
}

func TestHostSessionBadFrames(t *testing.T) {
	a, b := hostTestPair(t)
	c := hostTestNew(t, "c", a)
	hostTestResolve(t, b, c.AgentID())
	sink := newHostTestSink(b)
	good := func(round uint32) []byte {
		return hostTestSeal(t, a.key, b.AgentID(), protocol.TypeReject, &protocol.Reject{Round: round, Reason: "ok"}, time.Now().Add(time.Minute))
	}
	replayed := good(10)
	badSig := good(11)
	badSig[len(badSig)-1] ^= 1 // last byte of the signature
	tests := []struct {
		name     string
		raw      []byte // written as is
		framing  bool   // the stream is reset
		want     string // in LastRefusal
		prefirst []byte // a frame delivered first on the same stream
	}{
		{"malformed CBOR", hostTestFrame(5, []byte{0xff, 0x00, 0x01, 0x02, 0x03}), false, "malformed", nil},
		{"oversized", hostTestFrame(protocol.MaxFrameBytes+1, []byte{1, 2, 3}), true, "too large", nil},
		{"zero length", hostTestFrame(0, nil), true, "zero-length", nil},
		{"badly signed", hostTestFrame(uint32(len(badSig)), badSig), false, "bad signature", nil},
		{"replayed", hostTestFrame(uint32(len(replayed)), replayed), false, "replayed", hostTestFrame(uint32(len(replayed)), replayed)},
		{"expired", nil, false, "expired", nil},
		{"wrong recipient", nil, false, "another agent", nil},
		{"sender from another peer", nil, false, "peer ID does not match", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			from := a
			raw := tc.raw
			switch tc.name {
			case "expired":
				f := hostTestSeal(t, a.key, b.AgentID(), protocol.TypeReject, &protocol.Reject{Round: 1, Reason: "late"}, time.Now().Add(-time.Second))
				raw = hostTestFrame(uint32(len(f)), f)
			case "wrong recipient":
				f := hostTestSeal(t, a.key, c.AgentID(), protocol.TypeReject, &protocol.Reject{Round: 1, Reason: "x"}, time.Now().Add(time.Minute))
				raw = hostTestFrame(uint32(len(f)), f)
			case "sender from another peer":
				// Signed by a's agent key, sent from c's peer.
				from = c
				f := good(12)
				raw = hostTestFrame(uint32(len(f)), f)
			}
			before := b.Stats()
			delivered := sink.count()
			s := hostTestRawStream(t, from, b, protocol.ProtocolSession)
			defer s.Reset()
			if tc.prefirst != nil {
				if _, err := s.Write(tc.prefirst); err != nil {
					t.Fatal(err)
				}
				sink.wait(t, delivered+1)
				delivered++
			}
			if _, err := s.Write(raw); err != nil {
				t.Fatal(err)
			}
			st := hostTestWaitStat(t, b, "refusal", func(s Stats) bool { return s.Refused > before.Refused })
			if !strings.Contains(st.LastRefusal, tc.want) {
				t.Fatalf("refusal %q, want one containing %q", st.LastRefusal, tc.want)
			}
			if tc.framing {
				buf := make([]byte, 1)
				if _, err := s.Read(buf); err == nil {
					t.Fatal("stream still open after a framing error")
				}
			} else {
				// The stream survives a bad frame: a good one still gets through.
				f := good(uint32(30 + len(tc.name)%30))
				if _, err := s.Write(hostTestFrame(uint32(len(f)), f)); err != nil {
					t.Fatal(err)
				}
				if from == a {
					sink.wait(t, delivered+1)
					delivered++
				}
			}
			time.Sleep(20 * time.Millisecond)
			if got := sink.count(); got != delivered {
				t.Fatalf("%d frames reached the handler, want %d", got, delivered)
			}
		})
	}
	// The node keeps serving other peers.
	sinkA := newHostTestSink(a)
	f := hostTestSeal(t, b.key, a.AgentID(), protocol.TypeReject, &protocol.Reject{Round: 1, Reason: "still here"}, time.Now().Add(time.Minute))
	if err := b.Send(context.Background(), a.AgentID(), f); err != nil {
		t.Fatal(err)
	}
	sinkA.wait(t, 1)
	f = hostTestSeal(t, c.key, b.AgentID(), protocol.TypeReject, &protocol.Reject{Round: 1, Reason: "from c"}, time.Now().Add(time.Minute))
	if err := c.Send(context.Background(), b.AgentID(), f); err != nil {
		t.Fatal(err)
	}
	sink.waitFrom(t, c.AgentID())
}

func TestHostInboundLimits(t *testing.T) {
	a, b := hostTestPair(t)
	c := hostTestNew(t, "c", a)
	hostTestResolve(t, b, c.AgentID())
	sink := newHostTestSink(b)

	t.Run("streams per peer", func(t *testing.T) {
		var open []network.Stream
		defer func() {
			for _, s := range open {
				s.Reset()
			}
		}()
		f := hostTestSeal(t, a.key, b.AgentID(), protocol.TypeReject, &protocol.Reject{Round: 1, Reason: "warm"}, time.Now().Add(time.Minute))
		for i := 0; i < MaxInboundStreamsPerPeer; i++ {
			s := hostTestRawStream(t, a, b, protocol.ProtocolSession)
			open = append(open, s)
			// Write a frame so the stream is negotiated and served.
			f := hostTestSeal(t, a.key, b.AgentID(), protocol.TypeReject, &protocol.Reject{Round: uint32(i), Reason: "hold"}, time.Now().Add(time.Minute))
			if _, err := s.Write(hostTestFrame(uint32(len(f)), f)); err != nil {
				t.Fatal(err)
			}
		}
		sink.wait(t, MaxInboundStreamsPerPeer)
		extra := hostTestRawStream(t, a, b, protocol.ProtocolSession)
		defer extra.Reset()
		extra.Write(hostTestFrame(uint32(len(f)), f))
		buf := make([]byte, 1)
		if _, err := extra.Read(buf); err == nil {
			t.Fatal("stream beyond the per-peer limit was served")
		}
		time.Sleep(50 * time.Millisecond)
		if got := sink.count(); got != MaxInboundStreamsPerPeer {
			t.Fatalf("%d frames delivered, want %d", got, MaxInboundStreamsPerPeer)
		}
	})

	t.Run("frames per second", func(t *testing.T) {
		// The burst is the default; the refill is slowed to one frame a
		// second so the flood outruns it however slowly b verifies frames
		// (under -race on a loaded machine b handled fewer than the default
		// 100 frames a second and the bucket never ran dry).
		b.lim.mu.Lock()
		rate := b.lim.rate
		b.lim.rate = 1
		b.lim.mu.Unlock()
		defer func() {
			b.lim.mu.Lock()
			b.lim.rate = rate
			b.lim.mu.Unlock()
		}()
		s := hostTestRawStream(t, c, b, protocol.ProtocolSession)
		defer s.Reset()
		before := b.Stats().RateLimited
		var buf []byte
		for i := 0; i < PeerFrameBurst+20; i++ {
			f := hostTestSeal(t, c.key, b.AgentID(), protocol.TypeReject, &protocol.Reject{Round: uint32(i % protocol.MaxRounds), Reason: "flood"}, time.Now().Add(time.Minute))
			buf = append(buf, hostTestFrame(uint32(len(f)), f)...)
		}
		if _, err := s.Write(buf); err != nil {
			t.Fatal(err)
		}
		hostTestWaitStat(t, b, "rate limiting", func(s Stats) bool { return s.RateLimited > before })
	})
}

// Two nodes on loopback: the second joins through the first, then each
// reaches the other by agent ID alone.
func ExampleHost_Request() {
	ctx := context.Background()
	scheme, _ := sign.SchemeByName(sign.DefaultScheme)
	aliceKey, _ := scheme.GenerateKey()
	bobKey, _ := scheme.GenerateKey()

	alice, err := New(ctx, Config{Key: aliceKey})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer alice.Close()
	bob, err := New(ctx, Config{Key: bobKey, Bootstrap: alice.Addrs()[:1]})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bob.Close()

	reply, err := bob.Request(ctx, alice.AgentID(), "text/plain", []byte("ping me about entry 7"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(reply.Payload) == "ack from "+string(alice.AgentID()))
	for _, m := range alice.Inbox() {
		fmt.Printf("%s: %s\n", m.ContentType, m.Payload)
	}
	// Output:
	// true
	// text/plain: ping me about entry 7
}

// Session frames are sealed by the caller (the engine) and sent one-way;
// the receiver's handler gets them verified.
func ExampleHost_Send() {
	ctx := context.Background()
	scheme, _ := sign.SchemeByName(sign.DefaultScheme)
	aliceKey, _ := scheme.GenerateKey()
	bobKey, _ := scheme.GenerateKey()
	alice, _ := New(ctx, Config{Key: aliceKey})
	defer alice.Close()
	bob, _ := New(ctx, Config{Key: bobKey, Bootstrap: alice.Addrs()[:1]})
	defer bob.Close()

	got := make(chan *protocol.Envelope, 1)
	alice.SetSessionHandler(func(env *protocol.Envelope) { got <- env })

	body, _ := protocol.EncodeBody(&protocol.Reject{Round: 1, Reason: "too expensive"})
	frame, _ := protocol.Seal(bobKey, protocol.Message{
		Type: protocol.TypeReject, To: alice.AgentID(),
		Expires: time.Now().Add(time.Minute).UnixMilli(), Body: body,
	})
	if err := bob.Send(ctx, alice.AgentID(), frame); err != nil {
		fmt.Println(err)
		return
	}
	env := <-got
	fmt.Println(env.Msg.Type, env.Msg.From == bobKey.AgentID(), env.Body.(*protocol.Reject).Reason)
	// Output:
	// reject true too expensive
}

// TestHostProtectsSessionPeers checks that the connection manager may not
// trim a connection that carries session frames: the sender protects the
// peer it sends to, the receiver the peer a verified frame came from (a
// refused frame protects nothing), and the protection ends once the peer
// was idle for hostSessionPeerIdle.
func TestHostProtectsSessionPeers(t *testing.T) {
	a, b := hostTestPair(t)
	sink := newHostTestSink(b)
	protected := func(h, of *Host) bool {
		return h.Libp2p().ConnManager().IsProtected(of.PeerID(), hostSessionPeerTag)
	}
	if protected(a, b) || protected(b, a) {
		t.Fatal("peers protected before any session frame")
	}
	expired := hostTestSeal(t, a.key, b.AgentID(), protocol.TypeReject, &protocol.Reject{Round: 1, Reason: "r"}, time.Now().Add(-time.Minute))
	if err := a.Send(context.Background(), b.AgentID(), expired); err != nil {
		t.Fatalf("send: %v", err)
	}
	hostTestWaitStat(t, b, "the expired frame refused", func(s Stats) bool { return s.Refused > 0 })
	if !protected(a, b) {
		t.Error("the sender did not protect the peer it sent a session frame to")
	}
	if protected(b, a) {
		t.Error("a refused frame protected its sender")
	}
	f := hostTestSeal(t, a.key, b.AgentID(), protocol.TypeReject, &protocol.Reject{Round: 2, Reason: "r"}, time.Now().Add(time.Minute))
	if err := a.Send(context.Background(), b.AgentID(), f); err != nil {
		t.Fatalf("send: %v", err)
	}
	sink.wait(t, 1)
	if !protected(b, a) {
		t.Error("the receiver did not protect the sender of a verified frame")
	}
	// Idle past hostSessionPeerIdle: the next mark (of any peer) sweeps it.
	a.mu.Lock()
	a.sessionPeers[b.PeerID()] = a.now().Add(-hostSessionPeerIdle - time.Second)
	a.sessionSweep = time.Time{}
	a.mu.Unlock()
	a.hostMarkSessionPeer(peer.ID("another peer"))
	if protected(a, b) {
		t.Error("an idle peer is still protected")
	}

	// The set is capped: a peer flooding session frames from many peer
	// IDs cannot make the host protect (and track) without bound.
	cm := a.Libp2p().ConnManager()
	for i := 0; len(a.sessionPeers) < hostMaxTrackedPeers; i++ {
		a.hostMarkSessionPeer(peer.ID(fmt.Sprintf("filler %d", i)))
	}
	over := peer.ID("one too many")
	a.hostMarkSessionPeer(over)
	if n := len(a.sessionPeers); n != hostMaxTrackedPeers {
		t.Errorf("%d session peers tracked, the cap is %d", n, hostMaxTrackedPeers)
	}
	if cm.IsProtected(over, hostSessionPeerTag) {
		t.Error("a peer beyond the cap was protected")
	}
	if !cm.IsProtected(peer.ID("filler 0"), hostSessionPeerTag) {
		t.Error("a tracked peer lost its protection when the cap was reached")
	}
}
