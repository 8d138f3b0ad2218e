package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// frameHeaderBytes is the length prefix of a frame: a 4-byte big-endian
// unsigned length.
const frameHeaderBytes = 4

// WriteFrame writes b as one frame: its length as 4 bytes big-endian, then
// b, in a single Write. An empty b or one over MaxFrameBytes is refused
// before anything is written.
func WriteFrame(w io.Writer, b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: refusing to write a zero-length frame", ErrMalformed)
	}
	if len(b) > MaxFrameBytes {
		return fmt.Errorf("%w: frame of %d bytes exceeds the %d-byte limit", ErrTooLarge, len(b), MaxFrameBytes)
	}
	buf := make([]byte, frameHeaderBytes+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[frameHeaderBytes:], b)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("protocol: write frame of %d bytes: %w", len(b), err)
	}
	return nil
}

// ReadFrame reads one frame of at most max bytes (max <= 0 or above
// MaxFrameBytes means MaxFrameBytes). The claimed length is checked before
// anything is allocated. It returns io.EOF unwrapped when r ends cleanly
// before a frame starts; a zero-length frame is ErrMalformed, an oversized
// one ErrTooLarge, a truncated one ErrMalformed wrapping io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader, max int) ([]byte, error) {
	if max <= 0 || max > MaxFrameBytes {
		max = MaxFrameBytes
	}
	var hdr [frameHeaderBytes]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: stream ended inside a frame header: %w", ErrMalformed, err)
		}
		return nil, fmt.Errorf("protocol: read frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return nil, fmt.Errorf("%w: zero-length frame", ErrMalformed)
	}
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("%w: frame claims %d bytes, the limit is %d", ErrTooLarge, n, max)
	}
	buf := make([]byte, n)
	if got, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: frame truncated after %d of %d bytes: %w", ErrMalformed, got, n, io.ErrUnexpectedEOF)
		}
		return nil, fmt.Errorf("protocol: read frame of %d bytes: %w", n, err)
	}
	return buf, nil
}
