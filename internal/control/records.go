package control

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/negotiate-dev/negotiate/chain"
)

// Record page limits.
const (
	// DefaultRecordsPerPage is a page's size when the query names none.
	DefaultRecordsPerPage = 20
	// MaxRecordsPerPage bounds one page (each record carries every signature).
	MaxRecordsPerPage = 200
	// MaxRecordsScanned bounds the entries one search request examines, so
	// a search of a long chain answers in pages instead of holding the chain.
	MaxRecordsScanned = 20000
	// MaxSearchBytes bounds the search text.
	MaxSearchBytes = 256
	// recordReadBatch is how many entries are read from the chain at once.
	recordReadBatch = 256
)

// RecordDescriber decodes the payload of an agreement entry. The engine
// provides it: this package holds no protocol logic.
type RecordDescriber func(payload []byte) (*RecordDetail, error)

// CheckQuery validates q and applies the defaults.
func CheckQuery(q RecordQuery) (RecordQuery, error) {
	if q.Limit < 0 {
		return q, Errorf(KindBadRequest, "limit %d is negative", q.Limit)
	}
	if q.Limit == 0 {
		q.Limit = DefaultRecordsPerPage
	}
	if q.Limit > MaxRecordsPerPage {
		return q, Errorf(KindBadRequest, "limit %d is over the maximum %d", q.Limit, MaxRecordsPerPage)
	}
	q.Search = strings.TrimSpace(q.Search)
	if len(q.Search) > MaxSearchBytes {
		return q, Errorf(KindBadRequest, "search text is %d bytes, the limit is %d", len(q.Search), MaxSearchBytes)
	}
	return q, nil
}

// ChainRecords implements ChainReader: entries newest first from
// q.Before, with agreement records decoded by DescribeRecord and checked
// with VerifyOptions.CheckPayload.
func (l *Local) ChainRecords(ctx context.Context, q RecordQuery) (RecordPage, error) {
	q, err := CheckQuery(q)
	if err != nil {
		return RecordPage{}, err
	}
	length := l.chain.Length()
	page := RecordPage{Records: []RecordView{}, Length: length}
	end := q.Before // exclusive
	if end == 0 || end > length {
		end = length
	}
	needle := strings.ToLower(q.Search)
	for end > 0 && len(page.Records) < q.Limit && page.Scanned < MaxRecordsScanned {
		if err := ctx.Err(); err != nil {
			return RecordPage{}, err
		}
		from := uint64(0)
		if end > recordReadBatch {
			from = end - recordReadBatch
		}
		es, err := l.chain.Entries(from, int(end-from))
		if err != nil {
			return RecordPage{}, fmt.Errorf("control: read entries %d..%d: %w", from, end-1, err)
		}
		i := len(es) - 1
		for ; i >= 0 && len(page.Records) < q.Limit && page.Scanned < MaxRecordsScanned; i-- {
			page.Scanned++
			v := l.describeRecord(&es[i])
			if needle != "" && !recordMatches(v, needle) {
				continue
			}
			page.Records = append(page.Records, v)
		}
		// i+1 is the index of the last entry examined.
		end = from + uint64(i+1)
	}
	page.NextBefore = end
	return page, nil
}

func (l *Local) describeRecord(e *chain.Entry) RecordView {
	v := RecordView{Entry: DescribeEntry(e), Verified: true}
	fail := func(err error) {
		if v.Verified {
			v.Verified, v.VerifyError = false, err.Error()
		}
	}
	h, err := e.ComputeHash()
	if err == nil {
		err = l.chain.PublicKey().Verify(chain.SignDomain, h[:], e.Signature)
	}
	if err != nil {
		fail(fmt.Errorf("entry signature: %w", err))
	}
	if e.Kind != KindAgreement {
		return v
	}
	if l.DescribeRecord != nil {
		d, err := l.DescribeRecord(e.Payload)
		if err != nil {
			fail(fmt.Errorf("record: %w", err))
		} else {
			v.Record = d
		}
	}
	if check := l.VerifyOptions.CheckPayload; check != nil && e.Seq > 0 {
		if err := check(e, l.chain.PublicKey()); err != nil {
			fail(err)
		}
	}
	return v
}

// recordMatches reports whether needle (lower case) is in the record's
// session ID, a party's agent ID or its terms.
func recordMatches(v RecordView, needle string) bool {
	d := v.Record
	if d == nil {
		return false
	}
	if strings.Contains(strings.ToLower(d.Session), needle) || strings.Contains(v.RecordHash, needle) {
		return true
	}
	for _, p := range d.Parties {
		if strings.Contains(strings.ToLower(string(p.AgentID)), needle) {
			return true
		}
	}
	terms, _ := json.Marshal(d.Terms)
	return strings.Contains(strings.ToLower(string(terms)), needle)
}

func (s *Server) registerRecords(c ChainReader) {
	s.Handle("GET", "/v1/chain/records", func(ctx context.Context, r *Request) (any, error) {
		before, err := r.Uint("before", 0)
		if err != nil {
			return nil, err
		}
		limit, err := r.Uint("limit", 0)
		if err != nil {
			return nil, err
		}
		if limit > MaxRecordsPerPage {
			return nil, Errorf(KindBadRequest, "limit %d is over the maximum %d", limit, MaxRecordsPerPage)
		}
		q, err := CheckQuery(RecordQuery{Before: before, Limit: int(limit), Search: r.Query("q")})
		if err != nil {
			return nil, err
		}
		return c.ChainRecords(ctx, q)
	})
}

// ChainRecords implements ChainReader.
func (c *Client) ChainRecords(ctx context.Context, q RecordQuery) (RecordPage, error) {
	v := url.Values{}
	if q.Before > 0 {
		v.Set("before", strconv.FormatUint(q.Before, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Search != "" {
		v.Set("q", q.Search)
	}
	var p RecordPage
	return p, c.Do(ctx, "GET", "/v1/chain/records?"+v.Encode(), nil, &p)
}
