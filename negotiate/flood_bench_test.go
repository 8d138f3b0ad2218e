package negotiate

import (
	"context"
	"io"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate/transport"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// floodBenchSessions is how many honest sessions each half of the flood
// benchmark measures.
const floodBenchSessions = 60

// BenchmarkFloodSessionLatency measures, in one run, the latency of
// 2-party sessions between an honest peer (bob) and a node (alice): first
// quiet, then while a hostile peer floods alice with valid proposals on
// as many streams as the node takes from one peer, as fast as it can
// write, and a second hostile peer keeps opening session streams. It reports both p50s, their ratio (the target
// is at most 2) and alice's heap after the flood. Run it once:
//
//	go test ./negotiate -run '^$' -bench FloodSessionLatency -benchtime 1x
func BenchmarkFloodSessionLatency(b *testing.B) {
	for range b.N {
		floodBenchOnce(b)
	}
}

func floodBenchOnce(b *testing.B) {
	b.StopTimer()
	agents := nodeTestNetworkWith(b, 2, AcceptAll, AcceptAll)
	alice, bob := agents[0], agents[1]
	flooder := newHostilePeer(b, "bench-flooder", alice)
	streamer := newHostilePeer(b, "bench-streamer", alice)

	measure := func() []time.Duration {
		var ds []time.Duration
		for range floodBenchSessions {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			start := time.Now()
			p, err := bob.node.Propose(ctx, []sign.AgentID{alice.key.AgentID()}, map[string]any{"bench": 1}, ProposeOptions{Timeout: 20 * time.Second})
			if err != nil {
				cancel()
				b.Fatalf("propose: %v", err)
			}
			// Both sides: the next session must not find alice still
			// locked by this one (she commits on bob's Ready).
			o, err := p.Wait(ctx)
			if err == nil && o.State == StateCommitted {
				o, err = alice.node.Wait(ctx, p.ID())
			}
			cancel()
			if err != nil || o.State != StateCommitted {
				b.Fatalf("session: %v, %v", o, err)
			}
			ds = append(ds, time.Since(start))
		}
		return ds
	}
	b.StartTimer()
	quiet := measure()

	// Flood: valid proposals, each freshly sealed (unique nonce), on one
	// stream per connection attempt; and session streams opened in a loop.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sent, streams atomic.Int64
	frames := make([][]byte, 0, 20000)
	for range cap(frames) {
		frames = append(frames, frameOf(flooder.propose(protocol.NewSessionID())))
	}
	// As many proposal streams as the node takes from one peer.
	per := len(frames) / transport.MaxInboundStreamsPerPeer
	for k := range transport.MaxInboundStreamsPerPeer {
		wg.Add(1)
		go floodProposals(flooder, frames[k*per:(k+1)*per], stop, &wg, &sent)
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				s, err := streamer.host.Libp2p().NewStream(ctx, streamer.pid, protocol.ProtocolSession)
				cancel()
				if err != nil {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				streams.Add(1)
				s.SetDeadline(time.Now().Add(200 * time.Millisecond))
				io.ReadAll(s)
				s.Reset()
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // let the flood build up
	flooded := measure()
	close(stop)
	wg.Wait()
	b.StopTimer()

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	pq, pf := p50(quiet), p50(flooded)
	ref := alice.node.Refusals()
	open := 0
	for _, s := range alice.node.Sessions(false) {
		if s.Initiator == flooder.key.AgentID() {
			open++
		}
	}
	b.ReportMetric(float64(pq.Microseconds())/1000, "p50-quiet-ms")
	b.ReportMetric(float64(pf.Microseconds())/1000, "p50-flood-ms")
	b.ReportMetric(float64(pf)/float64(pq), "p50-ratio")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(sent.Load()), "flood-frames")
	b.ReportMetric(float64(streams.Load()), "flood-streams")
	b.Logf("quiet p50 %v p90 %v; flood p50 %v p90 %v; ratio %.2f; heap in use %.1f MiB (process: 2 nodes, 2 hostile hosts); flood: %d proposal frames, %d streams; alice refused %v; flooder sessions held %d",
		pq, p90(quiet), pf, p90(flooded), float64(pf)/float64(pq), float64(ms.HeapInuse)/(1<<20), sent.Load(), streams.Load(), ref, open)
}

func p50(ds []time.Duration) time.Duration { return pct(ds, 50) }
func p90(ds []time.Duration) time.Duration { return pct(ds, 90) }

func pct(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)*p/100]
}

// floodProposals writes frames to the node on one session stream after
// another, as fast as the node reads them, until stop.
func floodProposals(flooder *hostilePeer, frames [][]byte, stop chan struct{}, wg *sync.WaitGroup, sent *atomic.Int64) {
	defer wg.Done()
	i := 0
	for {
		select {
		case <-stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := flooder.host.Libp2p().NewStream(ctx, flooder.pid, protocol.ProtocolSession)
		cancel()
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.SetWriteDeadline(time.Now().Add(5 * time.Second))
		for i < len(frames) {
			if _, err := s.Write(frames[i]); err != nil {
				break
			}
			i++
			sent.Add(1)
			select {
			case <-stop:
				s.Reset()
				return
			default:
			}
		}
		s.Reset()
		if i >= len(frames) {
			i = 0 // the nonces repeat now: replays, refused after verification
		}
	}
}
