package sign_test

import (
	"testing"

	"github.com/negotiate-dev/negotiate/sign"
)

// benchMsgBytes is the message size benchmarked: about one CBOR wire message.
const benchMsgBytes = 256

func BenchmarkGenerateKey(b *testing.B) {
	for _, name := range allSchemes {
		b.Run(name, func(b *testing.B) {
			s := mustScheme(b, name)
			for b.Loop() {
				if _, err := s.GenerateKey(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSign(b *testing.B) {
	msg := make([]byte, benchMsgBytes)
	for _, name := range allSchemes {
		b.Run(name, func(b *testing.B) {
			k := mustDerive(b, name, "bench")
			b.SetBytes(benchMsgBytes)
			for b.Loop() {
				k.Sign("msg/propose", msg)
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	msg := make([]byte, benchMsgBytes)
	for _, name := range allSchemes {
		b.Run(name, func(b *testing.B) {
			k := mustDerive(b, name, "bench")
			pub := k.Public()
			sig := k.Sign("msg/propose", msg)
			b.SetBytes(benchMsgBytes)
			for b.Loop() {
				if err := pub.Verify("msg/propose", msg, sig); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAgentID(b *testing.B) {
	for _, name := range allSchemes {
		b.Run(name, func(b *testing.B) {
			pub := mustDerive(b, name, "bench").Public()
			for b.Loop() {
				_ = pub.AgentID()
			}
		})
	}
}

func BenchmarkParseAgentID(b *testing.B) {
	id := string(goldenIDs["ed25519"])
	for b.Loop() {
		if _, err := sign.ParseAgentID(id); err != nil {
			b.Fatal(err)
		}
	}
}
