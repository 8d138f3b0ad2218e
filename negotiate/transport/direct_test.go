package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

func TestDirectDefaultInbox(t *testing.T) {
	a, b := hostTestPair(t)
	ctx := context.Background()
	r, err := a.Request(ctx, b.AgentID(), "text/plain", []byte("ping me about entry 7"))
	if err != nil {
		t.Fatal(err)
	}
	if r.From != b.AgentID() || string(r.Payload) != "ack from "+string(b.AgentID()) || r.ReceivedAt.IsZero() || r.RoundTrip <= 0 {
		t.Fatalf("reply %+v", r)
	}
	rtt, err := a.Ping(ctx, b.AgentID())
	if err != nil || rtt <= 0 {
		t.Fatalf("ping: %v, %v", rtt, err)
	}
	inbox := b.Inbox()
	if len(inbox) != 1 {
		t.Fatalf("inbox has %d items, want 1 (pings are not kept)", len(inbox))
	}
	it := inbox[0]
	if it.From != a.AgentID() || it.ContentType != "text/plain" || string(it.Payload) != "ping me about entry 7" || len(it.Nonce) != protocol.NonceSize || it.ReceivedAt.IsZero() {
		t.Fatalf("inbox item %+v", it)
	}
	if len(a.Inbox()) != 0 {
		t.Fatal("sender's inbox changed")
	}
}

func TestDirectHandler(t *testing.T) {
	a, b := hostTestPair(t)
	tests := []struct {
		name    string
		handler DirectHandler
		want    error
		payload string
		reason  string
	}{
		{"answers", func(ctx context.Context, from sign.AgentID, d *protocol.Direct) *protocol.DirectReply {
			return &protocol.DirectReply{Accepted: true, Payload: append([]byte("re: "), d.Payload...)}
		}, nil, "re: question", ""},
		{"refuses", func(ctx context.Context, from sign.AgentID, d *protocol.Direct) *protocol.DirectReply {
			return &protocol.DirectReply{Accepted: false, Reason: "not interested in " + d.ContentType}
		}, ErrRefused, "", "not interested in text/plain"},
		{"no answer", func(ctx context.Context, from sign.AgentID, d *protocol.Direct) *protocol.DirectReply {
			return nil
		}, ErrRefused, "", "no answer"},
		{"panics", func(ctx context.Context, from sign.AgentID, d *protocol.Direct) *protocol.DirectReply {
			panic("handler bug")
		}, ErrRefused, "", "failed to handle"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b.SetDirectHandler(tc.handler)
			defer b.SetDirectHandler(nil)
			r, err := a.Request(context.Background(), b.AgentID(), "text/plain", []byte("question"))
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if tc.want == nil {
				if string(r.Payload) != tc.payload {
					t.Fatalf("payload %q, want %q", r.Payload, tc.payload)
				}
				return
			}
			var re *RefusedError
			if !errors.As(err, &re) || re.Agent != b.AgentID() || !strings.Contains(re.Reason, tc.reason) {
				t.Fatalf("refusal %#v, want reason containing %q", err, tc.reason)
			}
		})
	}
	if len(b.Inbox()) != 0 {
		t.Fatal("messages answered by a handler were kept in the inbox")
	}
}

func TestDirectRequestLimits(t *testing.T) {
	a, b := hostTestPair(t)
	tests := []struct {
		name  string
		to    sign.AgentID
		ctype string
		size  int
		want  string
	}{
		{"payload too large", b.AgentID(), "x", protocol.MaxDirectBytes + 1, "payload is"},
		{"content type too long", b.AgentID(), strings.Repeat("x", MaxContentTypeBytes+1), 1, "content type"},
		{"bad agent ID", "bob", "x", 1, "agent ID"},
		{"self", a.AgentID(), "x", 1, "itself"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Request(context.Background(), tc.to, tc.ctype, make([]byte, tc.size))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if len(b.Inbox()) != 0 {
		t.Fatal("refused requests reached the inbox")
	}
	// The largest payload goes through.
	big := bytes.Repeat([]byte{7}, protocol.MaxDirectBytes)
	if _, err := a.Request(context.Background(), b.AgentID(), "application/octet-stream", big); err != nil {
		t.Fatal(err)
	}
	if in := b.Inbox(); len(in) != 1 || !bytes.Equal(in[0].Payload, big) {
		t.Fatal("largest payload not kept intact")
	}
}

func TestDirectTimeout(t *testing.T) {
	a, b := hostTestPair(t)
	release := make(chan struct{})
	defer close(release)
	b.SetDirectHandler(func(ctx context.Context, from sign.AgentID, d *protocol.Direct) *protocol.DirectReply {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &protocol.DirectReply{Accepted: true}
	})
	const timeout = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	_, err := a.Request(ctx, b.AgentID(), "text/plain", []byte("slow"))
	el := time.Since(start)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want ErrTimeout wrapping context.DeadlineExceeded", err)
	}
	if el > timeout+200*time.Millisecond {
		t.Fatalf("request took %v with a %v timeout", el, timeout)
	}
}

func TestDirectBadFrames(t *testing.T) {
	a, b := hostTestPair(t)
	c := hostTestNew(t, "c", a)
	hostTestResolve(t, b, c.AgentID())
	direct := func(from *sign.PrivateKey, to sign.AgentID, expires time.Time) []byte {
		return hostTestSeal(t, from, to, protocol.TypeDirect, &protocol.Direct{ContentType: "text/plain", Payload: []byte("x")}, expires)
	}
	replayed := direct(a.key, b.AgentID(), time.Now().Add(time.Minute))
	// Deliver it once for real.
	s := hostTestRawStream(t, a, b, protocol.ProtocolMsg)
	if _, err := s.Write(hostTestFrame(uint32(len(replayed)), replayed)); err != nil {
		t.Fatal(err)
	}
	s.CloseWrite()
	if _, err := protocol.ReadFrame(s, 0); err != nil {
		t.Fatalf("first delivery: %v", err)
	}
	s.Close()
	inboxBefore := b.Inbox()
	if len(inboxBefore) != 1 {
		t.Fatalf("inbox %d", len(inboxBefore))
	}
	badSig := direct(a.key, b.AgentID(), time.Now().Add(time.Minute))
	badSig[len(badSig)-1] ^= 1
	tests := []struct {
		name   string
		from   *Host
		raw    []byte
		answer bool   // a signed refusal comes back (else the stream is reset)
		want   string // in the refusal and LastRefusal
	}{
		{"malformed", a, hostTestFrame(3, []byte{0x82, 0x01, 0xff}), false, "malformed"},
		{"truncated", a, hostTestFrame(100, []byte{1, 2}), false, "truncated"},
		{"oversized", a, hostTestFrame(protocol.MaxFrameBytes+1, []byte{1}), false, "too large"},
		{"badly signed", a, hostTestFrame(uint32(len(badSig)), badSig), false, "bad signature"},
		{"expired", a, nil, false, "expired"},
		{"replayed", a, hostTestFrame(uint32(len(replayed)), replayed), true, "replayed"},
		{"session message", a, nil, true, "direct-message protocol"},
		{"sender from another peer", c, nil, true, "peer ID does not match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw
			switch tc.name {
			case "expired":
				f := direct(a.key, b.AgentID(), time.Now().Add(-time.Second))
				raw = hostTestFrame(uint32(len(f)), f)
			case "session message":
				f := hostTestSeal(t, a.key, b.AgentID(), protocol.TypeReject, &protocol.Reject{Round: 1, Reason: "x"}, time.Now().Add(time.Minute))
				raw = hostTestFrame(uint32(len(f)), f)
			case "sender from another peer":
				f := direct(a.key, b.AgentID(), time.Now().Add(time.Minute))
				raw = hostTestFrame(uint32(len(f)), f)
			}
			before := b.Stats().Refused
			s := hostTestRawStream(t, tc.from, b, protocol.ProtocolMsg)
			defer s.Reset()
			if _, err := s.Write(raw); err != nil {
				t.Fatal(err)
			}
			s.CloseWrite()
			ans, err := protocol.ReadFrame(s, 0)
			if tc.answer {
				if err != nil {
					t.Fatalf("no refusal answer: %v", err)
				}
				env, err := protocol.Open(ans, time.Now().UnixMilli())
				if err != nil {
					t.Fatalf("open refusal: %v", err)
				}
				r := env.Body.(*protocol.DirectReply)
				if env.Msg.From != b.AgentID() || r.Accepted || !strings.Contains(r.Reason, tc.want) {
					t.Fatalf("answer %+v from %s, want a refusal by b containing %q", r, env.Msg.From.Short(), tc.want)
				}
			} else if err == nil {
				t.Fatal("got an answer to a frame that cannot be opened")
			}
			st := hostTestWaitStat(t, b, "refusal", func(s Stats) bool { return s.Refused > before })
			if !strings.Contains(st.LastRefusal, tc.want) {
				t.Fatalf("refusal %q, want one containing %q", st.LastRefusal, tc.want)
			}
			if got := b.Inbox(); len(got) != len(inboxBefore) {
				t.Fatalf("inbox changed: %d items", len(got))
			}
		})
	}
	// Still serving everyone.
	for _, from := range []*Host{a, c} {
		if _, err := from.Request(context.Background(), b.AgentID(), "text/plain", []byte("after")); err != nil {
			t.Fatalf("request after bad frames: %v", err)
		}
	}
	if got := len(b.Inbox()); got != len(inboxBefore)+2 {
		t.Fatalf("inbox has %d items, want %d", got, len(inboxBefore)+2)
	}
}

func TestInboxBounds(t *testing.T) {
	in := newHostInbox()
	for i := 0; i < InboxCap+10; i++ {
		in.add(InboxItem{ContentType: fmt.Sprint(i), Payload: []byte{1}})
	}
	items := in.list()
	if len(items) != InboxCap || items[0].ContentType != "10" {
		t.Fatalf("inbox has %d items starting at %q, want %d starting at 10", len(items), items[0].ContentType, InboxCap)
	}
	big := make([]byte, protocol.MaxDirectBytes)
	for i := 0; i < InboxMaxBytes/len(big)+5; i++ {
		in.add(InboxItem{Payload: big})
	}
	total := 0
	for _, it := range in.list() {
		total += len(it.Payload)
	}
	if total > InboxMaxBytes {
		t.Fatalf("inbox holds %d payload bytes, limit %d", total, InboxMaxBytes)
	}
	items = in.list()
	items[len(items)-1].Payload[0] = 9
	if in.list()[len(items)-1].Payload[0] == 9 {
		t.Fatal("Inbox returned the stored payload, not a copy")
	}
}

// BenchmarkDirectRoundTrip measures one direct request and its answer on
// an open connection with both records cached.
func BenchmarkDirectRoundTrip(b *testing.B) {
	x, y := hostTestPair(b)
	ctx := context.Background()
	payload := []byte("benchmark payload")
	if _, err := x.Request(ctx, y.AgentID(), ContentTypePing, payload); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	n := 0
	for b.Loop() {
		if n++; n%(protocol.DefaultReplayPerSender/2) == 0 {
			// The replay guard holds DefaultReplayPerSender unexpired
			// nonces per sender (a real cap of about 34 direct messages a
			// second from one sender); start afresh rather than wait.
			b.StopTimer()
			y.guard.Store(protocol.NewReplayGuard(0, 0))
			b.StartTimer()
		}
		hostTestRefill(y, x)
		if _, err := x.Request(ctx, y.AgentID(), ContentTypePing, payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSendThroughput measures one-way session frames (sealed
// beforehand, about 1.2 KiB each) through Send on one reused stream,
// pipelined in chunks below the receiver's per-peer burst, counting until
// the receiver has verified them all.
func BenchmarkSendThroughput(b *testing.B) {
	x, y := hostTestPair(b)
	got := make(chan struct{}, 4096)
	y.SetSessionHandler(func(env *protocol.Envelope) { got <- struct{}{} })
	seal := func(n int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = hostTestSeal(b, x.key, y.AgentID(), protocol.TypeReject,
				&protocol.Reject{Round: 1, Reason: strings.Repeat("x", 1000)}, time.Now().Add(5*time.Minute))
		}
		return out
	}
	const chunk = PeerFrameBurst / 2
	frames := seal(protocol.DefaultReplayPerSender)
	ctx := context.Background()
	b.SetBytes(int64(len(frames[0])))
	b.ResetTimer()
	outstanding, i := 0, 0
	drain := func() {
		for ; outstanding > 0; outstanding-- {
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				b.Fatal("frames lost")
			}
		}
	}
	for b.Loop() {
		if i == len(frames) {
			drain()
			b.StopTimer()
			// The replay guard holds DefaultReplayPerSender unexpired
			// nonces per sender; start afresh rather than wait minutes.
			y.guard.Store(protocol.NewReplayGuard(0, 0))
			frames, i = seal(len(frames)), 0
			b.StartTimer()
		}
		if outstanding == chunk {
			drain()
		}
		if outstanding == 0 {
			hostTestRefill(y, x)
		}
		if err := x.Send(ctx, y.AgentID(), frames[i]); err != nil {
			b.Fatal(err)
		}
		i++
		outstanding++
	}
	drain()
}

// hostTestRefill refills the receiver's token bucket for a peer, so a
// benchmark measures the path and not the rate limit.
func hostTestRefill(receiver, sender *Host) {
	receiver.lim.mu.Lock()
	receiver.lim.state(sender.PeerID(), time.Now()).tokens = PeerFrameBurst
	receiver.lim.mu.Unlock()
}
