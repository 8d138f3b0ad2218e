package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	p2pproto "github.com/libp2p/go-libp2p/core/protocol"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// measureFloor measures the floor unit: a durable chain write on a chain
// of its own in dir, a round trip on an open stream between the first two
// hosts of g, and one signature and verification with scheme.
func measureFloor(ctx context.Context, dir string, scheme *sign.Scheme, g *group) (Floor, error) {
	var f Floor
	w, err := floorChainWrite(dir, scheme)
	if err != nil {
		return f, err
	}
	rt, err := floorRoundTrip(ctx, g.agents[0], g.agents[1])
	if err != nil {
		return f, err
	}
	s, v, err := floorCrypto(g.agents[0].key)
	if err != nil {
		return f, err
	}
	f.ChainWriteUs, f.RoundTripUs, f.SignUs, f.VerifyUs = us(w), us(rt), us(s), us(v)
	f.SumUs = round3(f.ChainWriteUs + f.RoundTripUs + f.SignUs + f.VerifyUs)
	return f, nil
}

func us(d time.Duration) float64 { return round3(float64(d) / float64(time.Microsecond)) }

func median(ds []time.Duration) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

// floorChainWrite is the median of durable appends to a fresh chain.
func floorChainWrite(dir string, scheme *sign.Scheme) (time.Duration, error) {
	key, err := scheme.GenerateKey()
	if err != nil {
		return 0, fmt.Errorf("bench: floor: key: %w", err)
	}
	ch, err := chain.Create(filepath.Join(dir, "floor.db"), key, time.Now().UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("bench: floor: %w", err)
	}
	defer ch.Close()
	payload := map[string]any{"note": "floor unit", "pad": make([]byte, floorMessageBytes)}
	ds := make([]time.Duration, 0, floorWriteSamples)
	for i := 0; i < floorWriteSamples; i++ {
		e, err := ch.NewEntry(key, chain.KindNote, payload, time.Now().UnixMilli())
		if err != nil {
			return 0, fmt.Errorf("bench: floor: entry: %w", err)
		}
		start := time.Now()
		if err := ch.Apply(chain.Write{Session: "floor", Append: e, Checkpoint: []byte("checkpoint")}); err != nil {
			return 0, fmt.Errorf("bench: floor: chain write: %w", err)
		}
		ds = append(ds, time.Since(start))
	}
	return median(ds), nil
}

// floorRoundTrip is the median round trip of floorMessageBytes on one open
// stream between the hosts of a and b (an echo protocol registered for the
// measurement on b's host only).
func floorRoundTrip(ctx context.Context, a, b *agent) (time.Duration, error) {
	hb := b.node.Host().Libp2p()
	pid := p2pproto.ID(echoProtocol)
	hb.SetStreamHandler(pid, func(s network.Stream) {
		defer s.Close()
		buf := make([]byte, floorMessageBytes)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				return
			}
			if _, err := s.Write(buf); err != nil {
				s.Reset()
				return
			}
		}
	})
	defer hb.RemoveStreamHandler(pid)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := a.node.Host().Libp2p().NewStream(sctx, b.node.Host().PeerID(), pid)
	if err != nil {
		return 0, fmt.Errorf("bench: floor: open echo stream: %w", err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(30 * time.Second))
	msg := make([]byte, floorMessageBytes)
	rand.Read(msg)
	in := make([]byte, floorMessageBytes)
	ds := make([]time.Duration, 0, floorRoundTrips)
	for i := 0; i < floorRoundTrips+1; i++ {
		start := time.Now()
		if _, err := s.Write(msg); err != nil {
			return 0, fmt.Errorf("bench: floor: echo write: %w", err)
		}
		if _, err := io.ReadFull(s, in); err != nil {
			return 0, fmt.Errorf("bench: floor: echo read: %w", err)
		}
		if i > 0 { // the first one also negotiates the protocol
			ds = append(ds, time.Since(start))
		}
	}
	return median(ds), nil
}

// floorCrypto is the median signature and verification time of key's scheme.
func floorCrypto(key *sign.PrivateKey) (signT, verifyT time.Duration, err error) {
	msg := make([]byte, floorMessageBytes)
	rand.Read(msg)
	pub := key.Public()
	ss := make([]time.Duration, 0, floorCryptoSamples)
	vs := make([]time.Duration, 0, floorCryptoSamples)
	for i := 0; i < floorCryptoSamples; i++ {
		msg[0] = byte(i)
		start := time.Now()
		sig := key.Sign("negotiate-bench", msg)
		mid := time.Now()
		if err := pub.Verify("negotiate-bench", msg, sig); err != nil {
			return 0, 0, fmt.Errorf("bench: floor: verify: %w", err)
		}
		ss = append(ss, mid.Sub(start))
		vs = append(vs, time.Since(mid))
	}
	return median(ss), median(vs), nil
}
