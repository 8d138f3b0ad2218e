package bench

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// TestNetworkChurn runs a 60-agent network on the mock network with 10 %
// churn: every live agent is found, departed agents fail fast, their
// records expire, every session commits and every chain verifies.
func TestNetworkChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 60 nodes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := RunNetwork(ctx, NetworkOptions{
		Nodes: 60, Churn: 0.1, Lookups: 200, FirstContacts: 10, Sessions: 20,
		RecordLifetime: 15 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.MarshalIndent(res, "", "  ")
	t.Logf("%s", js)
	if err := res.Err(); err != nil {
		t.Fatal(err)
	}
	if !res.Settled {
		t.Errorf("the DHT did not settle")
	}
	if res.LookupSuccessRate < 0.99 {
		t.Errorf("lookup success %.3f of %d live lookups, want >= 0.99: %v", res.LookupSuccessRate, res.Lookups, res.LookupFailures)
	}
	if res.ChurnDeparted != 6 || res.ChurnReturned != 3 {
		t.Errorf("churn: %d departed, %d returned; want 6 and 3", res.ChurnDeparted, res.ChurnReturned)
	}
	if res.DepartedProbes == 0 || res.ExpiredLookups != 3 {
		t.Errorf("%d probes of departed agents, %d expiry lookups; want some and 3", res.DepartedProbes, res.ExpiredLookups)
	}
	if res.SessionsCommitted != 20 || res.FirstContactCommitted != 10 {
		t.Errorf("committed %d sessions and %d first contacts, want 20 and 10", res.SessionsCommitted, res.FirstContactCommitted)
	}
	if b := res.NoChurn; b == nil {
		t.Error("no measurement before the churn")
	} else if b.LookupSuccessRate < 0.99 || b.SessionsCommitted != 20 || b.SessionsFailed != 0 {
		t.Errorf("before the churn: lookup success %.3f, %d committed and %d failed sessions; want >= 0.99, 20 and 0",
			b.LookupSuccessRate, b.SessionsCommitted, b.SessionsFailed)
	}
	if res.ChainsVerified != 60 {
		t.Errorf("%d of 60 chains verified: %v", res.ChainsVerified, res.ChainsBroken)
	}
}

func TestParseSizesAndChurn(t *testing.T) {
	sizes, err := ParseSizes("50, 100,1000")
	if err != nil || len(sizes) != 3 || sizes[0] != 50 || sizes[2] != 1000 {
		t.Fatalf("ParseSizes: %v, %v", sizes, err)
	}
	for _, bad := range []string{"", "0", "-5", "50,,100", "ten"} {
		if _, err := ParseSizes(bad); !errors.Is(err, ErrBadOptions) {
			t.Errorf("ParseSizes(%q): %v, want ErrBadOptions", bad, err)
		}
	}
	for in, want := range map[string]float64{"10%": 0.1, "0.1": 0.1, "0": 0, "50%": 0.5} {
		if got, err := ParseChurn(in); err != nil || got != want {
			t.Errorf("ParseChurn(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"51%", "-1%", "0.9", "x"} {
		if _, err := ParseChurn(bad); !errors.Is(err, ErrBadOptions) {
			t.Errorf("ParseChurn(%q): %v, want ErrBadOptions", bad, err)
		}
	}
}
