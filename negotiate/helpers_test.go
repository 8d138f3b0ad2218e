package negotiate

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate/transport"
	"github.com/negotiate-dev/negotiate/sign"
)

// hostTestKey derives a deterministic agent key for a test name.
func hostTestKey(t testing.TB, name string) *sign.PrivateKey {
	t.Helper()
	s, err := sign.SchemeByName(sign.DefaultScheme)
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.DeriveKey([]byte("host-test/" + name))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// hostTestLogger logs to stderr at debug level when NEGOTIATE_TEST_LOG is
// set, else discards.
func hostTestLogger() *slog.Logger {
	if os.Getenv("NEGOTIATE_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// hostTestResolve waits until h resolves agent id through the DHT.
func hostTestResolve(t testing.TB, h *transport.Host, id sign.AgentID) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := h.Resolve(ctx, id)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s cannot resolve %s: %v", h.AgentID().Short(), id.Short(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
