package bench

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate/transport"
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
	if res.RoundTripMs.N == 0 || res.LookupRoundTripsP50 <= 0 {
		t.Errorf("no round-trip floor: %d samples, lookup p50 %.1f round trips", res.RoundTripMs.N, res.LookupRoundTripsP50)
	}
	if res.ConnectionsMax == 0 || res.MaxConnections != DefaultNetworkConns {
		t.Errorf("connections per node: max %d, watermark %d; want some, and the default %d", res.ConnectionsMax, res.MaxConnections, DefaultNetworkConns)
	}
	if res.ChainsVerified != 60 {
		t.Errorf("%d of 60 chains verified: %v", res.ChainsVerified, res.ChainsBroken)
	}
}

func TestChurnRecordLifetime(t *testing.T) {
	for _, tc := range []struct {
		nodes int
		want  time.Duration
	}{
		{60, DefaultChurnRecordLifetime},
		{250, DefaultChurnRecordLifetime},
		{500, 2 * time.Minute},
		{1000, 4 * time.Minute},
	} {
		if got := ChurnRecordLifetime(tc.nodes); got != tc.want {
			t.Errorf("ChurnRecordLifetime(%d) = %v, want %v", tc.nodes, got, tc.want)
		}
		o := NetworkOptions{Nodes: tc.nodes, Churn: 0.1}
		if err := o.Validate(); err != nil || o.RecordLifetime != tc.want {
			t.Errorf("Validate with churn at %d agents: lifetime %v, %v; want %v", tc.nodes, o.RecordLifetime, err, tc.want)
		}
	}
	o := NetworkOptions{Nodes: 1000}
	if err := o.Validate(); err != nil || o.RecordLifetime != transport.AgentRecordLifetime || o.MaxConnections != DefaultNetworkConns ||
		o.SessionTimeout != DefaultNetworkSessionTimeout {
		t.Errorf("Validate without churn: lifetime %v, max connections %d, session timeout %v, %v", o.RecordLifetime, o.MaxConnections, o.SessionTimeout, err)
	}
	o = NetworkOptions{Nodes: 100, Transport: TransportTCP}
	if err := o.Validate(); err != nil || o.MaxConnections != DefaultTCPNetworkConns {
		t.Errorf("Validate on TCP: max connections %d, %v; want %d", o.MaxConnections, err, DefaultTCPNetworkConns)
	}
	for _, bad := range []int{-1, 2, 5000} {
		o := NetworkOptions{Nodes: 100, MaxConnections: bad}
		if err := o.Validate(); !errors.Is(err, ErrBadOptions) {
			t.Errorf("MaxConnections %d: %v, want ErrBadOptions", bad, err)
		}
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
