package negotiate

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/internal/hooks"
	"github.com/negotiate-dev/negotiate/negotiate/transport"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// hostilePeer is a real libp2p host with its own valid agent record
// (published in the DHT) that speaks the negotiate protocols directly,
// byte by byte, to a target node.
type hostilePeer struct {
	t      testing.TB
	key    *sign.PrivateKey
	host   *transport.Host
	target *nodeTestAgent
	pid    peer.ID
}

func newHostilePeer(t testing.TB, name string, target *nodeTestAgent) *hostilePeer {
	t.Helper()
	key := hostTestKey(t, "hostile/"+name)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h, err := transport.New(ctx, transport.Config{Key: key, Bootstrap: target.node.Host().Addrs()[:1], Logger: hostTestLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	// Both directions: the target checks the sender's record, and the
	// peer finds the target's.
	hostTestResolve(t, target.node.Host(), key.AgentID())
	hostTestResolve(t, h, target.key.AgentID())
	return &hostilePeer{t: t, key: key, host: h, target: target, pid: target.node.Host().PeerID()}
}

func (m *hostilePeer) party() protocol.Party {
	return protocol.Party{ID: m.key.AgentID(), Scheme: m.key.Scheme().Name(), Key: m.key.Public().Bytes()}
}

// seal signs a message of typ from key (default m's) to the target.
func (m *hostilePeer) seal(key *sign.PrivateKey, typ, session string, to sign.AgentID, body any) []byte {
	m.t.Helper()
	if key == nil {
		key = m.key
	}
	b, err := protocol.EncodeBody(body)
	if err != nil {
		m.t.Fatal(err)
	}
	f, err := protocol.Seal(key, protocol.Message{Type: typ, Session: session, To: to, Nonce: protocol.NewNonce(),
		Expires: time.Now().Add(time.Minute).UnixMilli(), Body: b})
	if err != nil {
		m.t.Fatal(err)
	}
	return f
}

// propose is a valid proposal of a new session from m to the target.
func (m *hostilePeer) propose(session string) []byte {
	terms, _ := protocol.EncodeTerms(map[string]any{"x": 1})
	target := protocol.Party{ID: m.target.key.AgentID(), Scheme: m.target.key.Scheme().Name(), Key: m.target.key.Public().Bytes()}
	return m.seal(nil, protocol.TypePropose, session, m.target.key.AgentID(), &protocol.Propose{
		Round: 1, Parties: []protocol.Party{m.party(), target}, Terms: terms,
		Deadline: time.Now().Add(2 * time.Minute).UnixMilli(), MaxRounds: 8,
	})
}

func frameOf(b []byte) []byte {
	out := make([]byte, 4, 4+len(b))
	binary.BigEndian.PutUint32(out, uint32(len(b)))
	return append(out, b...)
}

// write opens a stream on proto, writes data, closes its write side and
// waits (briefly) for the node to answer or close; it returns what the
// node wrote back.
func (m *hostilePeer) write(proto string, data []byte) []byte {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := m.host.Libp2p().NewStream(ctx, m.pid, p2pproto.ID(proto))
	if err != nil {
		m.t.Fatalf("open %s stream: %v", proto, err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Write(data); err != nil {
		return nil // the node reset the stream: a refusal
	}
	s.CloseWrite()
	back, _ := io.ReadAll(s)
	return back
}

// unchanged fails the test if the target's chain moved or is locked.
func unchanged(t *testing.T, a *nodeTestAgent, seq uint64) {
	t.Helper()
	if got := a.ch.Head().Seq; got != seq {
		t.Fatalf("%s: chain head moved to seq %d (want %d)", a.name, got, seq)
	}
	if l, ok := a.ch.Lock(); ok {
		t.Fatalf("%s: chain locked by %+v", a.name, l)
	}
}

// honestCommit runs a 2-party session from bob to alice and wants it
// committed: the node keeps serving others.
func honestCommit(t *testing.T, bob, alice *nodeTestAgent) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := bob.node.Propose(ctx, []sign.AgentID{alice.key.AgentID()}, map[string]any{"honest": true}, ProposeOptions{Timeout: 20 * time.Second})
	if err != nil {
		t.Fatalf("honest propose: %v", err)
	}
	if o, err := p.Wait(ctx); err != nil || o.State != StateCommitted {
		t.Fatalf("honest session: %+v, %v", o, err)
	}
	nodeTestCheck(t, []*nodeTestAgent{bob, alice}, p.ID(), StateCommitted)
}

// TestHostilePeerFrames: a real peer with a valid agent record sends the
// honest node bad input on both protocols. Each is refused (dropped or
// answered with a refusal) and counted under its reason, changes no chain,
// lock or session, and the node then commits an honest session.
func TestHostilePeerFrames(t *testing.T) {
	agents := nodeTestNetworkWith(t, 2, AcceptAll, AcceptAll)
	alice, bob := agents[0], agents[1]
	m := newHostilePeer(t, "mallory", alice)
	eve := newHostilePeer(t, "eve", alice) // another agent with its own record and peer
	aliceID, bobID := alice.key.AgentID(), bob.key.AgentID()

	// A session mallory really proposed (alice accepted it), for the
	// out-of-turn, replay and splice cases.
	open := protocol.NewSessionID()
	m.write(protocol.ProtocolSession, frameOf(m.propose(open)))
	waitFor(t, func() bool { _, err := alice.node.Session(open); return err == nil })

	terms, _ := protocol.EncodeTerms(map[string]any{"x": 1})
	offerWith := func(session, agreementSession string, badSig bool) []byte {
		a := protocol.Agreement{Session: agreementSession, Round: 1, Terms: terms, TermsHash: protocol.TermsHash(terms),
			Parties:  []protocol.Party{m.party(), {ID: aliceID, Scheme: alice.key.Scheme().Name(), Key: alice.key.Public().Bytes()}},
			Deadline: time.Now().Add(20 * time.Second).UnixMilli(), Timestamp: time.Now().UnixMilli()}
		ah, err := protocol.AgreementHash(&a)
		if err != nil {
			t.Fatal(err)
		}
		st, err := protocol.StatementFor(&a, m.key.AgentID(), m.headZero())
		if err != nil {
			t.Fatal(err)
		}
		sig, _ := protocol.SignStatement(m.key, &st)
		if badSig {
			sig[0] ^= 1
		}
		return m.seal(nil, protocol.TypeOffer, session, aliceID, &protocol.Offer{
			Preflight: protocol.Preflight{Agreement: a, AgreementHash: ah},
			Ready:     protocol.Ready{AgreementHash: ah, Head: m.headZero(), Signature: sig},
		})
	}
	replayed := m.seal(nil, protocol.TypeCounter, open, aliceID, &protocol.Counter{Round: 1, Terms: terms})
	spliced := m.seal(nil, protocol.TypeReject, open, aliceID, &protocol.Reject{Round: 1, Reason: "x"})
	spliced = bytes.Replace(spliced, []byte(open), []byte(protocol.NewSessionID()), 1) // payload edited, signature kept

	tests := []struct {
		name    string
		proto   string
		data    []byte
		reason  string
		session string // a session ID that must stay unknown to alice
	}{
		{"garbage bytes (session)", protocol.ProtocolSession, frameOf(bytes.Repeat([]byte{0xde, 0xad}, 40)), transport.RefusedMalformed, ""},
		{"garbage bytes (direct)", protocol.ProtocolMsg, frameOf(bytes.Repeat([]byte{0xbe, 0xef}, 40)), transport.RefusedMalformed, ""},
		{"oversized frame", protocol.ProtocolSession, []byte{0x00, 0x20, 0x00, 0x00, 1, 2, 3}, transport.RefusedTooLarge, ""},
		{"oversized direct frame", protocol.ProtocolMsg, []byte{0xff, 0xff, 0xff, 0xff}, transport.RefusedTooLarge, ""},
		{"truncated frame", protocol.ProtocolSession, append([]byte{0, 0, 1, 0}, make([]byte, 10)...), transport.RefusedTruncated, ""},
		{"zero-length frame", protocol.ProtocolSession, []byte{0, 0, 0, 0}, transport.RefusedFraming, ""},
		{"bad envelope signature", protocol.ProtocolSession, frameOf(flipLast(m.propose("0a" + protocol.NewSessionID()[2:]))), transport.RefusedBadSignature, ""},
		{"bad statement signature in an offer", protocol.ProtocolSession, frameOf(offerWith("0b"+open[2:], "0b"+open[2:], true)), RefusedProtocol, "0b" + open[2:]},
		{"frame naming another recipient", protocol.ProtocolSession, frameOf(m.seal(nil, protocol.TypeQuery, open, bobID, &protocol.Query{AgreementHash: protocol.TermsHash(terms)})), transport.RefusedWrongRecipient, ""},
		{"direct message for another recipient", protocol.ProtocolMsg, frameOf(m.seal(nil, protocol.TypeDirect, "", bobID, &protocol.Direct{ContentType: "text/plain", Payload: []byte("hi")})), transport.RefusedWrongRecipient, ""},
		{"unknown session", protocol.ProtocolSession, frameOf(m.seal(nil, protocol.TypeReady, "0c"+open[2:], aliceID, &protocol.Ready{AgreementHash: protocol.TermsHash(terms), Head: m.headZero(), Signature: []byte{1}})), RefusedUnknownSession, "0c" + open[2:]},
		{"malformed session ID", protocol.ProtocolSession, frameOf(m.sealRaw(protocol.TypeQuery, "not-a-session")), transport.RefusedMalformed, ""},
		{"out of turn: an accept to a participant", protocol.ProtocolSession, frameOf(m.seal(nil, protocol.TypeAccept, open, aliceID, &protocol.Accept{Round: 1, TermsHash: protocol.TermsHash(terms)})), RefusedProtocol, ""},
		{"out of turn: a counter to a participant", protocol.ProtocolSession, frameOf(m.seal(nil, protocol.TypeCounter, open, aliceID, &protocol.Counter{Round: 1, Terms: terms})), RefusedProtocol, ""},
		{"replay of an old frame", protocol.ProtocolSession, append(frameOf(replayed), frameOf(replayed)...), transport.RefusedReplay, ""},
		{"frame spliced into another session", protocol.ProtocolSession, frameOf(spliced), transport.RefusedBadSignature, ""},
		{"offer whose agreement is another session's", protocol.ProtocolSession, frameOf(offerWith("0d"+open[2:], open, false)), RefusedProtocol, "0d" + open[2:]},
		{"peer ID not the sender's record", protocol.ProtocolSession, frameOf(m.seal(eve.key, protocol.TypeQuery, open, aliceID, &protocol.Query{AgreementHash: protocol.TermsHash(terms)})), transport.RefusedPeerMismatch, ""},
		{"unknown message type on the direct protocol", protocol.ProtocolMsg, frameOf(m.seal(nil, protocol.TypeQuery, open, aliceID, &protocol.Query{AgreementHash: protocol.TermsHash(terms)})), transport.RefusedMalformed, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := alice.node.Refusals()
			sessions := len(alice.node.Sessions(true))
			m.write(tc.proto, tc.data)
			waitFor(t, func() bool { return alice.node.Refusals()[tc.reason] > before[tc.reason] })
			unchanged(t, alice, 0)
			if tc.session != "" {
				if _, err := alice.node.Session(tc.session); err == nil {
					t.Fatalf("alice took session %s", tc.session)
				}
			}
			if got := len(alice.node.Sessions(true)); got != sessions {
				t.Fatalf("alice has %d sessions, had %d", got, sessions)
			}
			if info, err := alice.node.Session(open); err != nil || info.State != "" || info.Vote != "" {
				t.Fatalf("mallory's open session changed: %+v, %v", info, err)
			}
		})
	}
	honestCommit(t, bob, alice)
	unchanged(t, alice, 1)
}

// headZero is the head of a fresh chain as the hostile peer claims it.
func (m *hostilePeer) headZero() chain.Head { return chain.Head{} }

// sealRaw seals a message whose header breaks the protocol (a bad session
// ID), which Seal itself would refuse: the payload is built by hand.
func (m *hostilePeer) sealRaw(typ, session string) []byte {
	m.t.Helper()
	body, _ := protocol.EncodeBody(&protocol.Query{AgreementHash: chain.Hash{1}})
	msg := protocol.Message{Type: typ, Session: session, From: m.key.AgentID(), Scheme: m.key.Scheme().Name(),
		FromKey: m.key.Public().Bytes(), To: m.target.key.AgentID(), Nonce: protocol.NewNonce(),
		Expires: time.Now().Add(time.Minute).UnixMilli(), Body: body}
	payload, err := protocol.Marshal(&msg)
	if err != nil {
		m.t.Fatal(err)
	}
	out, err := protocol.Marshal(&protocol.Signed{Payload: payload, Sig: m.key.Sign(protocol.Domain(typ), payload)})
	if err != nil {
		m.t.Fatal(err)
	}
	return out
}

func flipLast(b []byte) []byte {
	c := bytes.Clone(b)
	c[len(c)-1] ^= 1
	return c
}

// TestHostilePeerFloods: while one real peer floods the node with 10,000
// valid proposals on one stream, another opens hundreds of concurrent
// streams and many fresh peers send garbage on many connections, an honest 2-party session with the node
// commits; the flood is dropped and counted (rate limit, stream limit),
// the node holds at most the per-peer session limit, and no chain or lock
// changes but the honest session's record.
func TestHostilePeerFloods(t *testing.T) {
	// alice's frame rate limit is lowered so that the flood exceeds it
	// however slowly this machine (or the race detector) seals and reads.
	dir := t.TempDir()
	alice := &nodeTestAgent{name: "alice", key: hostTestKey(t, "flood/alice"), path: filepath.Join(dir, "alice.db")}
	ch, err := chain.Create(alice.path, alice.key, time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	alice.ch = ch
	alice.configure = func(cfg *NodeConfig, _ *hooks.Hooks) {
		cfg.Host.PeerFramesPerSecond, cfg.Host.PeerFrameBurst = 20, 10
	}
	alice.startNode(t, AcceptAll, nil)
	bob := nodeTestStart(t, dir, "bob", AcceptAll, alice)
	hostTestResolve(t, alice.node.Host(), bob.key.AgentID())
	hostTestResolve(t, bob.node.Host(), alice.key.AgentID())
	m := newHostilePeer(t, "flooder", alice)
	streamer := newHostilePeer(t, "streamer", alice) // its own peer, so its streams do not cut the flooder's connection
	before := alice.node.Refusals()

	var wg sync.WaitGroup
	var written, denied atomic.Int64
	// 10,000 proposals on one stream, as fast as the peer can write.
	proposals := make([]byte, 0, 10000*700)
	for range 10000 {
		proposals = append(proposals, frameOf(m.propose(protocol.NewSessionID()))...)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	ps, err := m.host.Libp2p().NewStream(sctx, m.pid, protocol.ProtocolSession)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer ps.Close()
		// The node reads an over-limit peer no faster than its rate
		// (backpressure), so the write blocks: give up after a while.
		ps.SetDeadline(time.Now().Add(5 * time.Second))
		n, err := ps.Write(proposals)
		written.Store(int64(n))
		if err == nil {
			ps.CloseWrite()
			io.ReadAll(ps)
		}
	}()
	// Hundreds of streams at once.
	for range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := streamer.host.Libp2p().NewStream(ctx, streamer.pid, protocol.ProtocolSession)
			if err != nil {
				denied.Add(1) // refused by a resource manager: also a limit
				return
			}
			s.SetDeadline(time.Now().Add(3 * time.Second))
			// Hold it open until the node resets it (a limit) or the deadline.
			if _, err := io.ReadAll(s); err != nil && strings.Contains(err.Error(), "reset") {
				denied.Add(1)
			}
			s.Reset()
		}()
	}
	// Many connections: fresh peers with no agent record, each sending garbage.
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			floodConn(t, alice, i)
		}()
	}
	// Meanwhile an honest session commits.
	honestCommit(t, bob, alice)
	wg.Wait()

	after := alice.node.Refusals()
	// Stream limits act in the node (counted as streams) or, before it,
	// in libp2p's resource manager (the stream is refused at once).
	if held := 300 - denied.Load(); held > transport.MaxInboundStreamsPerPeer {
		t.Errorf("%d of 300 streams of one peer were held open, the limit is %d", held, transport.MaxInboundStreamsPerPeer)
	}
	for _, r := range []string{transport.RefusedRateLimited, transport.RefusedMalformed} {
		if after[r] <= before[r] {
			t.Errorf("no %s refusals counted (before %d, after %d)", r, before[r], after[r])
		}
	}
	open := 0
	for _, s := range alice.node.Sessions(false) {
		if s.Initiator == m.key.AgentID() {
			open++
		}
	}
	if open == 0 || open > 1024 {
		t.Errorf("alice holds %d sessions from the flooder, want 1..%d (the per-peer limit)", open, 1024)
	}
	if written.Load() >= int64(len(proposals)) {
		t.Errorf("the flooder wrote all %d bytes of 10,000 proposals in 5 s: no backpressure", len(proposals))
	}
	t.Logf("refusals: %v; flooder sessions held: %d; flood bytes written %d of %d; streams denied %d of 300", after, open, written.Load(), len(proposals), denied.Load())
	unchanged(t, alice, 1) // the honest record only
	honestCommit(t, bob, alice)
}

// floodConn makes a fresh libp2p host (a new peer ID, no agent record)
// that connects to a and sends a garbage frame.
func floodConn(t *testing.T, a *nodeTestAgent, i int) {
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Errorf("flood host %d: %v", i, err)
		return
	}
	defer h.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var addrs []ma.Multiaddr
	for _, s := range a.node.Host().Addrs() {
		if x, err := ma.NewMultiaddr(s); err == nil {
			addrs = append(addrs, x)
		}
	}
	info, err := peer.AddrInfosFromP2pAddrs(addrs...)
	if err != nil || len(info) == 0 {
		t.Errorf("flood host %d: %v", i, err)
		return
	}
	if err := h.Connect(ctx, info[0]); err != nil {
		return // the node refused the connection: a limit
	}
	s, err := h.NewStream(ctx, info[0].ID, protocol.ProtocolSession)
	if err != nil {
		return
	}
	s.SetDeadline(time.Now().Add(3 * time.Second))
	s.Write(frameOf([]byte(fmt.Sprintf("garbage from peer %d", i))))
	s.CloseWrite()
	io.ReadAll(s)
	s.Close()
}
