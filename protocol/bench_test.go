package protocol

import (
	"bytes"
	"testing"

	"github.com/negotiate-dev/negotiate/sign"
)

func BenchmarkSeal(b *testing.B) {
	f := newFixture(b)
	for _, scheme := range sign.SchemeNames() {
		b.Run(scheme, func(b *testing.B) {
			key := testKey(b, scheme, "bench")
			m := f.message(b, TypeAccept, f.bodies()[TypeAccept])
			for b.Loop() {
				if _, err := Seal(key, m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	f := newFixture(b)
	for _, scheme := range sign.SchemeNames() {
		b.Run(scheme, func(b *testing.B) {
			sealed, err := Seal(testKey(b, scheme, "bench"), f.message(b, TypeAccept, f.bodies()[TypeAccept]))
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(sealed)))
			for b.Loop() {
				if _, err := Open(sealed, testNow); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkFrameRoundTrip(b *testing.B) {
	f := newFixture(b)
	sealed := f.sealed(b, TypeCommit)
	var buf bytes.Buffer
	b.SetBytes(int64(len(sealed)))
	for b.Loop() {
		if err := WriteFrame(&buf, sealed); err != nil {
			b.Fatal(err)
		}
		if _, err := ReadFrame(&buf, MaxFrameBytes); err != nil {
			b.Fatal(err)
		}
	}
}
