package main

import (
	"encoding/binary"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// tamper edits the stored entries of a chain file with bbolt directly, as
// an attacker or a disk fault would.
func tamper(t *testing.T, path string, f func(entries *bolt.Bucket) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return f(tx.Bucket([]byte("entries"))) }); err != nil {
		t.Fatal(err)
	}
}

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// rewrite decodes the entry at seq, lets edit change it and stores it back.
func rewrite(seq uint64, edit func(e *chain.Entry)) func(b *bolt.Bucket) error {
	return func(b *bolt.Bucket) error {
		e, err := chain.UnmarshalEntry(b.Get(seqKey(seq)))
		if err != nil {
			return err
		}
		edit(e)
		raw, err := e.Marshal()
		if err != nil {
			return err
		}
		return b.Put(seqKey(seq), raw)
	}
}

func TestChainVerifyDetectsTampering(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(b *bolt.Bucket) error
		wantSeq string
	}{
		{"changed timestamp", rewrite(2, func(e *chain.Entry) { e.Timestamp++ }), "seq 2"},
		{"forged signature", rewrite(3, func(e *chain.Entry) { e.Signature[0] ^= 1 }), "seq 3"},
		{"changed kind", rewrite(1, func(e *chain.Entry) { e.Kind = "agreement" }), "seq 1"},
		{"removed entry", func(b *bolt.Bucket) error { return b.Delete(seqKey(2)) }, "seq 2"},
		{"flipped stored byte", func(b *bolt.Bucket) error {
			raw := append([]byte(nil), b.Get(seqKey(2))...)
			raw[len(raw)-1] ^= 0xff // last byte of the signature
			return b.Put(seqKey(2), raw)
		}, "seq 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home, _ := initHome(t, shortTemp(t))
			appendNotes(t, home, 3)
			if r := runCLI(t, nil, "--home", home, "chain", "verify"); r.code != 0 {
				t.Fatalf("untampered chain: exit %d: %s", r.code, r.stderr)
			}
			tamper(t, filepath.Join(home, "chain.db"), tc.edit)
			r := runCLI(t, nil, "--home", home, "chain", "verify")
			if r.code != 1 || !strings.Contains(r.stderr, tc.wantSeq) {
				t.Fatalf("verify: exit %d, stderr %q; want exit 1 naming %s", r.code, r.stderr, tc.wantSeq)
			}
			r = runCLI(t, nil, "--home", home, "chain", "verify", "--json")
			var res struct {
				OK     bool    `json:"ok"`
				BadSeq *uint64 `json:"bad_seq"`
			}
			decodeJSON(t, r.stdout, &res)
			if r.code != 1 || res.OK || res.BadSeq == nil || "seq "+itoa(*res.BadSeq) != tc.wantSeq {
				t.Fatalf("verify --json: exit %d, %s; want ok=false bad_seq for %s", r.code, r.stdout, tc.wantSeq)
			}
		})
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// TestChainVerifyChecksAgreementRecords: an agent that appends an
// "agreement" entry it signed itself, but whose record lacks the other
// parties' valid signatures, is caught by `chain verify` without a node.
func TestChainVerifyChecksAgreementRecords(t *testing.T) {
	home, _ := initHome(t, shortTemp(t))
	appendNotes(t, home, 1)
	key, err := sign.LoadKeyFile(filepath.Join(home, "key.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := chain.Open(filepath.Join(home, "chain.db"), chain.Options{})
	if err != nil {
		t.Fatal(err)
	}
	forged := map[string]any{"agreement": map[string]any{"session": "x"}, "heads": []any{}, "sigs": []any{}}
	e, err := c.NewEntry(key, "agreement", forged, time.Now().UnixMilli())
	if err == nil {
		err = c.Apply(chain.Write{Append: e})
	}
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, nil, "--home", home, "chain", "verify")
	if r.code != 1 || !strings.Contains(r.stderr, "seq 2") {
		t.Fatalf("verify: exit %d, stderr %q; want exit 1 naming seq 2", r.code, r.stderr)
	}
}
