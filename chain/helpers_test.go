package chain

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/negotiate-dev/negotiate/sign"
)

// testKey derives a deterministic key so failures reproduce.
func testKey(t testing.TB, seed string) *sign.PrivateKey {
	t.Helper()
	s, err := sign.SchemeByName(sign.DefaultScheme)
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.DeriveKey([]byte(seed))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newTestChain creates a chain in a fresh temp dir with n entries after
// genesis and closes it on cleanup.
func newTestChain(t testing.TB, key *sign.PrivateKey, n int) (*Chain, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "chain.db")
	c, err := Create(path, key, 1_700_000_000_000)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	appendNotes(t, c, key, n)
	return c, path
}

func appendNotes(t testing.TB, c *Chain, key *sign.PrivateKey, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		e, err := c.NewEntry(key, KindNote, map[string]any{"n": i, "text": fmt.Sprintf("note %d", i)}, 1_700_000_000_000+int64(c.Length()))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(Write{Append: e}); err != nil {
			t.Fatal(err)
		}
	}
}

// state is everything a Write can change, for "a failing Write changes nothing".
type state struct {
	Head        Head
	Lock        *Lock
	Checkpoints map[string][]byte
	Entries     int
}

func snapshot(t testing.TB, c *Chain) state {
	t.Helper()
	cps, err := c.Checkpoints()
	if err != nil {
		t.Fatal(err)
	}
	es, err := c.Entries(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := c.Lock()
	return state{Head: c.Head(), Lock: l, Checkpoints: cps, Entries: len(es)}
}

func wantErr(t testing.TB, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("error = %v, want %v", err, want)
	}
}
