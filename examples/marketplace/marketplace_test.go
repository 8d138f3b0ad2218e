package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/sign"
)

// The whole market in one process, with both kinds of cheater: every
// cheater is refused for its cheat, every chain verifies, no lock is left
// and the balances sum to zero.
func TestMarketWithCheaters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts seven libp2p nodes")
	}
	var stdout, stderr bytes.Buffer
	rc := run([]string{"--buyers", "3", "--sellers", "2", "--cheaters", "2", "--json", "--timeout", "50s"}, &stdout, &stderr)
	t.Logf("transcript:\n%s", stderr.String())
	if rc != 0 {
		t.Fatalf("exit %d, want 0", rc)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var s Summary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
		t.Fatalf("last line is not the JSON summary: %v", err)
	}
	switch {
	case !s.OK || len(s.Problems) > 0:
		t.Fatalf("summary not ok: %v", s.Problems)
	case s.Cheaters != 2 || s.CheatersRefused != 2:
		t.Fatalf("cheaters refused %d of %d, want 2 of 2", s.CheatersRefused, s.Cheaters)
	case s.CheatsCaught < 2 || s.CheatsCaught != s.CheatAttempts:
		t.Fatalf("%d of %d cheating attempts refused for the cheat", s.CheatsCaught, s.CheatAttempts)
	case s.BalanceSum != 0:
		t.Fatalf("balances sum to %d", s.BalanceSum)
	case s.Chains != 7 || s.ChainsVerified != 7:
		t.Fatalf("%d of %d chains verified, want 7 of 7", s.ChainsVerified, s.Chains)
	case s.LocksLeft != 0:
		t.Fatalf("%d locks left", s.LocksLeft)
	case s.TradesCommitted < 3 || s.RecordsMatched != s.TradesCommitted:
		t.Fatalf("%d trades committed, %d on both chains", s.TradesCommitted, s.RecordsMatched)
	case s.Balances["cheater-0-liar"] != 0:
		t.Fatalf("the liar traded: balance %d", s.Balances["cheater-0-liar"])
	}
	// Both kinds of cheat were caught where they should be: the lie when
	// the seller replays the chain, the hidden trade by the head check.
	for _, want := range []string{"claims balance", "signed at head"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("no refusal mentioning %q in the transcript", want)
		}
	}
}

func TestCheckTrade(t *testing.T) {
	key := func(name string) sign.AgentID {
		s, _ := sign.SchemeByName("ed25519")
		k, err := s.DeriveKey([]byte(name))
		if err != nil {
			t.Fatal(err)
		}
		return k.AgentID()
	}
	buyer, seller := key("buyer"), key("seller")
	b := Standing{Head: chain.Head{Seq: 3, Hash: chain.Hash{3}}, Balance: -100}
	s := Standing{Head: chain.Head{Seq: 5, Hash: chain.Hash{5}}, Balance: 450}
	l := Listing{ID: "x", Item: "lamp", Price: 40}
	fresh := func(price int64) Trade { return NewTrade(l, price, buyer, seller, b, s) }
	tests := []struct {
		name  string
		edit  func(*Trade)
		self  sign.AgentID
		own   Standing
		other Standing
		want  error
	}{
		{"honest, seen by the seller", nil, seller, s, b, nil},
		{"honest, seen by the buyer", nil, buyer, b, s, nil},
		{"buyer lies about its balance", func(t *Trade) { t.BuyerBalance += 200 }, seller, s, b, ErrCheat},
		{"buyer claims another head", func(t *Trade) { t.BuyerHead.Seq = 2 }, seller, s, b, ErrCheat},
		{"seller moved on", nil, seller, Standing{Head: chain.Head{Seq: 6}, Balance: 480}, b, ErrStale},
		{"seller over its limit", func(t *Trade) { *t = fresh(60) }, seller, s, b, ErrCredit},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := fresh(40)
			if tc.edit != nil {
				tc.edit(&tr)
			}
			err := CheckTrade(&tr, tc.self, tc.own, tc.other)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("CheckTrade = %v, want %v", err, tc.want)
			}
		})
	}
}

// The default strategies meet within MaxRounds on every listing, and the
// buyer walks away from a price above its limit.
func TestStrategiesMeet(t *testing.T) {
	for i := range 4 {
		b := buyerStrategy(i)
		for _, list := range []int64{60, 70, 90, 105, 120} {
			bid := b.Opening(list)
			deal := false
			for round := uint32(1); round <= MaxRounds && !deal; round++ {
				move, ask := defaultSeller.OnBid(round, list, bid)
				if move == MoveAccept {
					deal = true
					break
				}
				if move == MoveWalk {
					break
				}
				move, next := b.OnAsk(round, list, bid, ask, 0)
				switch move {
				case MoveAccept:
					bid, deal = ask, true
				case MoveCounter:
					bid = next
				default:
					round = MaxRounds
				}
			}
			if !deal {
				t.Errorf("buyer %d and the seller found no price for a listing at %d", i, list)
			}
			if bid > b.Limit(list) || bid < defaultSeller.Floor(list) {
				t.Errorf("buyer %d, list %d: deal at %d outside [%d, %d]", i, list, bid, defaultSeller.Floor(list), b.Limit(list))
			}
		}
	}
	stingy := BuyerStrategy{LimitPct: 50, Budget: 400, OpenPct: 40, StepPct: 10}
	if move, _ := stingy.OnAsk(MaxRounds-1, 100, 50, 75, 0); move != MoveWalk {
		t.Fatalf("a buyer at its limit did not walk away from a higher ask (move %d)", move)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--sellers", "0"},
		{"--buyers", "-1"},
		{"--buyers", "0", "--cheaters", "0"},
		{"--role", "auctioneer"},
		{"--role", "buyer", "--home", "/nonexistent"},
		{"--role", "seller"},
		{"--role", "seller", "--home", "x", "--list", "books:a:free"},
		{"--role", "buyer", "--home", "x", "--bootstrap", "/ip4/127.0.0.1/tcp/1", "--cheat", "thief"},
		{"--no-such-flag"},
		{"extra"},
	} {
		var stdout, stderr bytes.Buffer
		if rc := run(args, &stdout, &stderr); rc != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, rc, stderr.String())
		}
		if stderr.Len() == 0 {
			t.Errorf("%v: no error message", args)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The --role modes: a seller serving from its home, an honest buyer that
// gets its item, a hider that is refused; the seller's chain then holds
// the buyers' trades and verifies.
func TestRoles(t *testing.T) {
	if testing.Short() {
		t.Skip("starts libp2p nodes")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var sellerOut, sellerErr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- runContext(ctx, []string{"--role", "seller", "--home", filepath.Join(dir, "seller")}, &sellerOut, &sellerErr)
	}()
	var addr string
	waitUntil(t, func() bool {
		for _, l := range strings.Split(sellerOut.String(), "\n") {
			if a, ok := strings.CutPrefix(l, "addr "); ok {
				addr = a
				return true
			}
		}
		return false
	})
	buy := func(home string, extra ...string) (int, string) {
		var out, errs bytes.Buffer
		args := append([]string{"--role", "buyer", "--home", filepath.Join(dir, home), "--bootstrap", addr, "--timeout", "40s"}, extra...)
		rc := runContext(context.Background(), args, &out, &errs)
		t.Logf("%s: exit %d\n%s%s", home, rc, out.String(), errs.String())
		return rc, out.String()
	}
	if rc, out := buy("carol"); rc != 0 || !strings.Contains(out, "bought 1 of 1") {
		t.Fatalf("honest buyer: exit %d", rc)
	}
	rc, out := buy("mallory", "--items", "2", "--cheat", "hider")
	if rc != 3 || !strings.Contains(out, "bought 1 of 2") || !strings.Contains(out, "signed at head 1 but presented a chain ending at head 0") {
		t.Fatalf("hider: exit %d, want 3 with its honest trade done and the hidden one refused", rc)
	}
	cancel()
	if rc := <-done; rc != 0 {
		t.Fatalf("seller: exit %d\n%s", rc, sellerErr.String())
	}
	if !strings.Contains(sellerOut.String(), "stopping: balance") {
		t.Fatalf("seller did not stop cleanly:\n%s", sellerOut.String())
	}
	key, c, err := openHome(filepath.Join(dir, "seller"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	entries, err := ReadChain(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := negotiate.VerifyChain(key.AgentID(), entries); err != nil {
		t.Fatal(err)
	}
	st, err := Ledger(key.AgentID(), entries)
	if err != nil {
		t.Fatal(err)
	}
	if st.Trades != 2 { // carol's, and the hider's honest first one
		t.Fatalf("seller's chain holds %d trades, want 2", st.Trades)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
