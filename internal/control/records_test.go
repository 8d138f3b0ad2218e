package control

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

func TestChainRecordsPagesNewestFirst(t *testing.T) {
	c, _ := newChain(t, 25) // seqs 0..25
	l := NewLocal(c)
	ctx := context.Background()
	var seqs []uint64
	q := RecordQuery{Limit: 10}
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		p, err := l.ChainRecords(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if p.Length != 26 {
			t.Fatalf("length %d", p.Length)
		}
		for _, r := range p.Records {
			if !r.Verified {
				t.Fatalf("seq %d not verified: %s", r.Seq, r.VerifyError)
			}
			seqs = append(seqs, r.Seq)
		}
		if p.NextBefore == 0 {
			break
		}
		q.Before = p.NextBefore
	}
	if len(seqs) != 26 || seqs[0] != 25 || seqs[25] != 0 {
		t.Fatalf("seqs %v", seqs)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]-1 {
			t.Fatalf("not newest first without gaps: %v", seqs)
		}
	}
}

func TestChainRecordsSearchAndDescribe(t *testing.T) {
	c, key := newChain(t, 3)
	// An "agreement" entry whose payload the describer decodes.
	e, err := c.NewEntry(key, KindAgreement, map[string]string{"session": "feedbeef"}, 1_700_000_100_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(chain.Write{Append: e}); err != nil {
		t.Fatal(err)
	}
	l := NewLocal(c)
	l.DescribeRecord = func(payload []byte) (*RecordDetail, error) {
		return &RecordDetail{Session: "feedbeef", Round: 1, Terms: map[string]any{"item": "Book"}, Parties: []RecordParty{{AgentID: c.AgentID()}}}, nil
	}
	checked := 0
	l.VerifyOptions.CheckPayload = func(e *chain.Entry, _ sign.PublicKey) error { checked++; return nil }
	ctx := context.Background()
	for _, q := range []string{"FEEDBEEF", "book", string(c.AgentID())[:10]} {
		p, err := l.ChainRecords(ctx, RecordQuery{Search: q})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Records) != 1 || p.Records[0].Record == nil || p.Records[0].Record.Session != "feedbeef" || p.Records[0].Kind != KindAgreement {
			t.Fatalf("search %q: %+v", q, p.Records)
		}
	}
	if checked == 0 {
		t.Fatal("the agreement check was not called")
	}
	p, err := l.ChainRecords(ctx, RecordQuery{Search: "nothing-like-this"})
	if err != nil || len(p.Records) != 0 || p.NextBefore != 0 || p.Scanned != 5 {
		t.Fatalf("no match: %v %+v", err, p)
	}
}

func TestChainRecordsReportsFailedCheck(t *testing.T) {
	c, key := newChain(t, 0)
	e, err := c.NewEntry(key, KindAgreement, map[string]string{"x": "y"}, 1_700_000_100_000)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(chain.Write{Append: e}); err != nil {
		t.Fatal(err)
	}
	l := NewLocal(c)
	l.DescribeRecord = func([]byte) (*RecordDetail, error) { return nil, errors.New("not a record") }
	p, err := l.ChainRecords(context.Background(), RecordQuery{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Records[0]; r.Verified || !strings.Contains(r.VerifyError, "not a record") {
		t.Fatalf("record %+v should fail verification", r)
	}
}

func TestChainRecordsBadQueries(t *testing.T) {
	c, _ := newChain(t, 1)
	cl, _ := serve(t, NewServer(&testNode{}, Options{Chain: NewLocal(c)}))
	ctx := context.Background()
	for _, path := range []string{
		"/v1/chain/records?limit=-1",
		"/v1/chain/records?limit=100000",
		"/v1/chain/records?before=x",
		"/v1/chain/records?q=" + strings.Repeat("a", MaxSearchBytes+1),
	} {
		err := cl.Do(ctx, "GET", path, nil, nil)
		var ce *Error
		if !errors.As(err, &ce) || ce.Kind != KindBadRequest || ce.Status != 400 || ce.Message == "" {
			t.Errorf("%s: %v, want a 400 bad_request with a message", path, err)
		}
	}
	p, err := cl.ChainRecords(ctx, RecordQuery{Limit: 1})
	if err != nil || len(p.Records) != 1 || p.Records[0].Seq != 1 || p.NextBefore != 1 {
		t.Fatalf("client page: %v %+v", err, p)
	}
}
