package control

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// MaxEntriesPerRequest bounds one ChainEntries answer so a long chain is
// paged instead of built into one huge reply.
const MaxEntriesPerRequest = 10000

// KindAgreement is the chain entry kind whose payload is a countersigned
// Record; its views carry the record hash.
const KindAgreement = "agreement"

// Local serves chain views straight from an open chain. The node uses it
// behind the control API; commands use it when no node runs.
type Local struct {
	chain *chain.Chain
	// VerifyOptions are passed to chain.Verify (the engine plugs its
	// agreement check in here).
	VerifyOptions chain.VerifyOptions
	// DescribeRecord decodes agreement records for ChainRecords; nil
	// leaves RecordView.Record empty.
	DescribeRecord RecordDescriber
	// WriteError, when set, reports the running node's last failed durable
	// write ("" when none) for ChainStatus.
	WriteError func() string
	// Behind, when set, reports what the running node's chain lacks ("" when
	// nothing) for ChainStatus.
	Behind func() string
	close  bool
}

// NewLocal serves views of c; Close does not close c.
func NewLocal(c *chain.Chain) *Local { return &Local{chain: c} }

// OpenLocal opens the chain file at path read-only; Close closes it.
func OpenLocal(path string) (*Local, error) {
	c, err := chain.OpenReadOnly(path)
	if err != nil {
		return nil, err
	}
	return &Local{chain: c, close: true}, nil
}

// Close closes the chain when OpenLocal opened it.
func (l *Local) Close() error {
	if l.close {
		return l.chain.Close()
	}
	return nil
}

// Chain returns the underlying chain.
func (l *Local) Chain() *chain.Chain { return l.chain }

// ChainStatus implements ChainReader.
func (l *Local) ChainStatus(ctx context.Context) (ChainStatus, error) {
	head := l.chain.Head()
	st := ChainStatus{
		AgentID: l.chain.AgentID(),
		Length:  uint64(l.chain.Length()),
		HeadSeq: head.Seq,
		Head:    hex.EncodeToString(head.Hash[:]),
	}
	if lk, ok := l.chain.Lock(); ok && lk != nil {
		parties := append([]sign.AgentID{}, lk.Parties...)
		st.Lock = &LockInfo{Session: lk.Session, Since: lk.Since, Parties: parties}
	}
	if l.WriteError != nil {
		st.WriteError = l.WriteError()
	}
	if l.Behind != nil {
		st.Behind = l.Behind()
	}
	if err := l.chain.FlushError(); err != nil {
		st.FlushError = err.Error()
	}
	return st, nil
}

// ChainEntries implements ChainReader.
func (l *Local) ChainEntries(ctx context.Context, from, limit uint64) ([]Entry, error) {
	if limit == 0 || limit > MaxEntriesPerRequest {
		limit = MaxEntriesPerRequest
	}
	es, err := l.chain.Entries(from, int(limit))
	if err != nil {
		return nil, fmt.Errorf("control: read entries from seq %d: %w", from, err)
	}
	out := make([]Entry, 0, len(es))
	for i := range es {
		out = append(out, DescribeEntry(&es[i]))
	}
	return out, nil
}

// DescribeEntry builds the view of one entry. For an agreement entry the
// record hash is sign.Hash of the payload, which is the CBOR Record.
func DescribeEntry(e *chain.Entry) Entry {
	h := e.Hash()
	v := Entry{
		Seq:          e.Seq,
		Hash:         hex.EncodeToString(h[:]),
		Prev:         hex.EncodeToString(e.Prev[:]),
		Kind:         e.Kind,
		Timestamp:    e.Timestamp,
		Time:         time.UnixMilli(e.Timestamp).UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		PayloadBytes: len(e.Payload),
	}
	if e.Kind == KindAgreement {
		rh := sign.Hash(e.Payload)
		v.RecordHash = hex.EncodeToString(rh[:])
	}
	return v
}

// ChainVerify implements ChainReader.
func (l *Local) ChainVerify(ctx context.Context) (VerifyResult, error) {
	res := VerifyResult{OK: true, Length: uint64(l.chain.Length())}
	if verr := l.chain.Verify(l.VerifyOptions); verr != nil {
		seq := verr.Seq
		res.OK, res.BadSeq, res.Reason = false, &seq, verr.Reason
	}
	return res, nil
}

// ChainBackup implements ChainReader (chain.Chain.Backup).
func (l *Local) ChainBackup(ctx context.Context, w io.Writer) error {
	_, err := l.chain.Backup(w)
	return err
}

// ChainExport implements ChainReader.
func (l *Local) ChainExport(ctx context.Context, format string, w io.Writer) error {
	switch format {
	case FormatJSON:
		return l.chain.ExportJSON(w)
	case FormatCBOR:
		return l.chain.ExportCBOR(w)
	default:
		return Errorf(KindBadRequest, "unknown export format %q: use %s or %s", format, FormatJSON, FormatCBOR)
	}
}
