package protocol

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/negotiate-dev/negotiate/sign"
)

// guardEnv is an envelope with only what the guard reads.
func guardEnv(from sign.AgentID, nonce string, exp int64) *Envelope {
	return &Envelope{Msg: Message{Type: TypeQuery, From: from, Nonce: fixedNonce(nonce), Expires: exp}}
}

func TestReplayGuard(t *testing.T) {
	f := newFixture(t)
	a, b := f.keys[0].AgentID(), f.keys[1].AgentID()
	g := NewReplayGuard(0, 0)
	steps := []struct {
		name string
		env  *Envelope
		now  int64
		want error
	}{
		{"first", guardEnv(a, "n1", testNow+1000), testNow, nil},
		{"replay", guardEnv(a, "n1", testNow+1000), testNow + 10, ErrReplay},
		{"same nonce, other sender", guardEnv(b, "n1", testNow+1000), testNow, nil},
		{"other nonce", guardEnv(a, "n2", testNow+1000), testNow, nil},
		{"replay at its expiry", guardEnv(a, "n1", testNow+1000), testNow + 1000, ErrReplay},
		{"replay after expiry", guardEnv(a, "n1", testNow+1000), testNow + 1001, ErrExpired},
		{"expiry beyond the horizon", guardEnv(a, "n3", testNow+maxExpiryAheadMillis+1), testNow, ErrExpired},
		{"nil", nil, testNow, ErrMalformed},
	}
	for _, s := range steps {
		err := g.Check(s.env, s.now)
		if s.want == nil && err != nil || s.want != nil && !errors.Is(err, s.want) {
			t.Fatalf("%s: Check = %v, want %v", s.name, err, s.want)
		}
	}
}

func TestReplayGuardWithOpenedMessages(t *testing.T) {
	f := newFixture(t)
	sealed := f.sealed(t, TypeAccept)
	g := NewReplayGuard(0, 0)
	for i, want := range []error{nil, ErrReplay, ErrReplay} {
		env, err := Open(sealed, testNow)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Check(env, testNow); !errors.Is(err, want) || (want == nil && err != nil) {
			t.Fatalf("delivery %d: %v, want %v", i, err, want)
		}
	}
}

func TestReplayGuardFullRefusesThenEvictsExpired(t *testing.T) {
	f := newFixture(t)
	a, b := f.keys[0].AgentID(), f.keys[1].AgentID()
	g := NewReplayGuard(4, 3)
	for i := range 3 {
		if err := g.Check(guardEnv(a, fmt.Sprint("a", i), testNow+100), testNow); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Check(guardEnv(a, "a3", testNow+100), testNow); !errors.Is(err, ErrReplayFull) {
		t.Fatalf("sender over its share: %v, want ErrReplayFull", err)
	}
	if err := g.Check(guardEnv(b, "b0", testNow+5000), testNow); err != nil {
		t.Fatalf("other sender: %v", err)
	}
	if err := g.Check(guardEnv(b, "b1", testNow+5000), testNow); !errors.Is(err, ErrReplayFull) {
		t.Fatalf("guard full: %v, want ErrReplayFull", err)
	}
	if g.Len() != 4 {
		t.Fatalf("Len = %d after refusals, want 4 (refused messages are not recorded)", g.Len())
	}
	// a's three messages expire: room again, and b's still-live nonce is kept.
	later := testNow + 101
	if err := g.Check(guardEnv(b, "b1", testNow+5000), later); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if g.Len() != 2 {
		t.Fatalf("Len = %d, want 2 after evicting the expired", g.Len())
	}
	if err := g.Check(guardEnv(b, "b0", testNow+5000), later); !errors.Is(err, ErrReplay) {
		t.Fatalf("live nonce forgotten: %v, want ErrReplay", err)
	}
}

func TestReplayGuardConcurrent(t *testing.T) {
	f := newFixture(t)
	g := NewReplayGuard(0, 0)
	var accepted atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				// every worker offers the same 200 nonces: each is accepted once.
				err := g.Check(guardEnv(f.keys[w%3].AgentID(), fmt.Sprint(i), testNow+1000), testNow)
				if err == nil {
					accepted.Add(1)
				} else if !errors.Is(err, ErrReplay) {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if got := accepted.Load(); got != 3*200 {
		t.Fatalf("accepted %d messages, want %d (200 nonces from each of 3 senders)", got, 3*200)
	}
}
