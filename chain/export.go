package chain

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/big"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// MaxExportBytes bounds a CBOR export read into memory by ReadCBORExport;
// a larger chain is verified from its chain file instead.
const MaxExportBytes = 1 << 30

// JSONEntry is the JSON form of an entry, one per line in ExportJSON and
// what `chain show --json` prints.
type JSONEntry struct {
	Seq       uint64 `json:"seq"`
	Hash      Hash   `json:"hash"`
	Prev      Hash   `json:"prev"`
	Time      string `json:"time"` // RFC 3339, UTC
	Timestamp int64  `json:"ts"`   // unix ms
	Kind      string `json:"kind"`
	Payload   any    `json:"payload"`   // CBOR decoded to JSON values (byte strings as base64)
	Signature []byte `json:"signature"` // base64
}

// JSON returns the JSON form of e.
func (e *Entry) JSON() (JSONEntry, error) {
	var v any
	if err := decMode.Unmarshal(e.Payload, &v); err != nil {
		return JSONEntry{}, fmt.Errorf("chain: %w: seq %d: payload: %v", ErrBadEntry, e.Seq, err)
	}
	return JSONEntry{
		Seq: e.Seq, Hash: e.Hash(), Prev: e.Prev,
		Time:      time.UnixMilli(e.Timestamp).UTC().Format(time.RFC3339Nano),
		Timestamp: e.Timestamp, Kind: e.Kind, Payload: jsonable(v), Signature: e.Signature,
	}, nil
}

// jsonable turns a decoded CBOR value into something encoding/json can
// encode: maps get string keys, big integers and non-finite floats become
// strings, tags become {"tag": n, "value": v}.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, val := range x {
			ks, ok := k.(string)
			if !ok {
				ks = fmt.Sprint(jsonable(k))
			}
			m[ks] = jsonable(val)
		}
		return m
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = jsonable(x[i])
		}
		return out
	case big.Int:
		return x.String()
	case *big.Int:
		return x.String()
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Sprint(x)
		}
		return x
	case float32:
		return jsonable(float64(x))
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case cbor.Tag:
		return map[string]any{"tag": x.Number, "value": jsonable(x.Content)}
	case cbor.SimpleValue:
		return uint8(x)
	}
	return v
}

// ExportJSON writes the chain as JSON lines, one JSONEntry per entry.
func (c *Chain) ExportJSON(w io.Writer) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	err := c.forEachEntry(0, func(seq uint64, raw []byte) (bool, error) {
		e, err := UnmarshalEntry(raw)
		if err != nil {
			return false, fmt.Errorf("entry stored at %d: %w (run `negotiate chain verify`)", seq, err)
		}
		je, err := e.JSON()
		if err != nil {
			return false, err
		}
		if err := enc.Encode(je); err != nil {
			return false, fmt.Errorf("write entry %d: %w", e.Seq, err)
		}
		return true, nil
	})
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("chain: export JSON: %w", err)
	}
	return nil
}

// ExportCBOR writes the exact stored bytes of every entry, in order: a
// CBOR sequence (RFC 8742) that ReadCBORExport reads back.
func (c *Chain) ExportCBOR(w io.Writer) error {
	bw := bufio.NewWriter(w)
	err := c.forEachEntry(0, func(seq uint64, raw []byte) (bool, error) {
		if _, err := bw.Write(raw); err != nil {
			return false, fmt.Errorf("write entry %d: %w", seq, err)
		}
		return true, nil
	})
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("chain: export CBOR: %w", err)
	}
	return nil
}

// ReadCBORExport reads a CBOR export (see ExportCBOR). Each entry must be in
// canonical encoding. It does not verify the chain: pass the result to
// VerifyEntries.
func ReadCBORExport(r io.Reader) ([]Entry, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxExportBytes+1))
	if err != nil {
		return nil, fmt.Errorf("chain: read export: %w", err)
	}
	if len(data) > MaxExportBytes {
		return nil, fmt.Errorf("chain: %w: larger than %d bytes: verify the chain file instead", ErrBadExport, MaxExportBytes)
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("chain: %w: empty file", ErrBadExport)
	}
	var out []Entry
	for len(data) > 0 {
		var raw cbor.RawMessage
		rest, err := decMode.UnmarshalFirst(data, &raw)
		if err != nil {
			return nil, fmt.Errorf("chain: %w: item %d: not CBOR: %v", ErrBadExport, len(out), err)
		}
		e, err := UnmarshalEntry(raw)
		if err != nil {
			return nil, fmt.Errorf("chain: %w: item %d: %w", ErrBadExport, len(out), err)
		}
		out = append(out, *e)
		data = rest
	}
	return out, nil
}
