package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	frames := [][]byte{{0x01}, bytes.Repeat([]byte{0xab}, 1000), make([]byte, MaxFrameBytes)}
	for _, f := range frames {
		if err := WriteFrame(&buf, f); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range frames {
		got, err := ReadFrame(&buf, MaxFrameBytes)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d: read %d bytes, wrote %d", i, len(got), len(want))
		}
	}
	if _, err := ReadFrame(&buf, 0); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestWriteFrameRefuses(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteFrame(&buf, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("empty frame: %v, want ErrMalformed", err)
	}
	if err := WriteFrame(&buf, make([]byte, MaxFrameBytes+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized frame: %v, want ErrTooLarge", err)
	}
	if buf.Len() != 0 {
		t.Errorf("a refused frame wrote %d bytes", buf.Len())
	}
}

func header(n uint32) []byte {
	return binary.BigEndian.AppendUint32(nil, n)
}

func TestReadFrameRejects(t *testing.T) {
	tests := []struct {
		name  string
		input []byte
		max   int
		want  error
	}{
		{"zero length", header(0), 0, ErrMalformed},
		{"over MaxFrameBytes", header(MaxFrameBytes + 1), 0, ErrTooLarge},
		{"claims 4 GiB", header(0xffffffff), 0, ErrTooLarge},
		{"over the caller's max", append(header(11), make([]byte, 11)...), 10, ErrTooLarge},
		{"max above the hard limit is clamped", header(MaxFrameBytes + 1), 1 << 30, ErrTooLarge},
		{"truncated header", []byte{0, 0}, 0, ErrMalformed},
		{"truncated body", append(header(10), 1, 2, 3), 0, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := ReadFrame(bytes.NewReader(tc.input), tc.max)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ReadFrame = %d bytes, %v; want %v", len(b), err, tc.want)
			}
		})
	}
	_, err := ReadFrame(bytes.NewReader(append(header(10), 1, 2, 3)), 0)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated body: %v does not wrap io.ErrUnexpectedEOF", err)
	}
}

// claimReader claims a huge frame and then blocks forever if read further.
type claimReader struct{ hdr []byte }

func (r *claimReader) Read(p []byte) (int, error) {
	if len(r.hdr) == 0 {
		panic("ReadFrame read past the header of an oversized frame")
	}
	n := copy(p, r.hdr)
	r.hdr = r.hdr[n:]
	return n, nil
}

func TestReadFrameDoesNotAllocateClaimedLength(t *testing.T) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		if _, err := ReadFrame(&claimReader{hdr: header(0xffffffff)}, 0); !errors.Is(err, ErrTooLarge) {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("100 oversized claims allocated %d bytes", grew)
	}
}

func TestReadFrameReportsReaderError(t *testing.T) {
	boom := errors.New("connection reset")
	_, err := ReadFrame(io.MultiReader(bytes.NewReader(header(5)), &errReader{boom}), 0)
	if !errors.Is(err, boom) {
		t.Fatalf("ReadFrame = %v, want it to wrap the reader's error", err)
	}
}

type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }
