package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricValue reads one sample (name with its labels, as exposed) from a
// Prometheus text body; ok is false when it is absent.
func metricValue(body, series string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// TestMetricsAfterSession: after a real committed session between two
// daemons, the participant's /metrics shows it by outcome, the time spent
// in each phase, a free chain lock, nothing waiting on a peer, no warrants
// and every refusal reason.
func TestMetricsAfterSession(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two libp2p daemons")
	}
	dir := shortTemp(t)
	homeA, _ := initHome(t, filepath.Join(dir, "a"))
	homeB, idB := initHome(t, filepath.Join(dir, "b"))
	pf := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pf, []byte("default: accept\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startDaemon(t, homeA)
	b := startDaemon(t, homeB, "--policy", pf, "--metrics", "127.0.0.1:0", "--bootstrap", a.info.Addrs[0])
	eventually(t, 20*time.Second, "a resolves b", func() (bool, string) {
		r := runCLI(t, nil, "--home", homeA, "ping", idB.String(), "--timeout", "3s")
		return r.code == 0, r.stderr
	})
	start := time.Now()
	if r := runCLI(t, nil, "--home", homeA, "propose", "--with", idB.String(), "--term", "price=12", "--timeout", "20s"); r.code != 0 {
		t.Fatalf("propose: exit %d: %s", r.code, r.stderr)
	}
	elapsed := time.Since(start).Seconds()
	var body string
	eventually(t, 10*time.Second, "b counts the committed session", func() (bool, string) {
		body = httpGet(t, b.info.Metrics)
		v, _ := metricValue(body, `negotiate_sessions_ended_total{outcome="committed"}`)
		return v == 1, body
	})
	want := map[string]func(float64) bool{
		`negotiate_session_phase_seconds_count{phase="negotiating"}`:    func(v float64) bool { return v == 1 },
		`negotiate_session_phase_seconds_count{phase="signing"}`:        func(v float64) bool { return v == 1 },
		`negotiate_session_duration_seconds_count{outcome="committed"}`: func(v float64) bool { return v == 1 },
		`negotiate_session_duration_seconds_sum{outcome="committed"}`:   func(v float64) bool { return v > 0 && v <= elapsed },
		`negotiate_session_phase_seconds_sum{phase="signing"}`:          func(v float64) bool { return v > 0 && v <= elapsed },
		`negotiate_chain_locked`:                                        func(v float64) bool { return v == 0 },
		`negotiate_chain_lock_age_seconds`:                              func(v float64) bool { return v == 0 },
		`negotiate_sessions_waiting_on_peer`:                            func(v float64) bool { return v == 0 },
		`negotiate_sessions`:                                            func(v float64) bool { return v == 0 },
		`negotiate_warrants`:                                            func(v float64) bool { return v == 0 },
		`negotiate_chain_length`:                                        func(v float64) bool { return v == 2 },
		`negotiate_messages_refused_total{reason="rate_limited"}`:       func(v float64) bool { return v == 0 },
		`negotiate_messages_refused_total{reason="bad_signature"}`:      func(v float64) bool { return v == 0 },
		`negotiate_messages_refused_total{reason="unknown_session"}`:    func(v float64) bool { return v >= 0 },
		`negotiate_messages_in_total`:                                   func(v float64) bool { return v >= 3 },
		`negotiate_agent_records_introduced_total`:                      func(v float64) bool { return v >= 1 },
		`negotiate_dht_lookups_total`:                                   func(v float64) bool { return v >= 0 },
		`negotiate_sessions_ended_total{outcome="committed"}`:           func(v float64) bool { return v == 1 },
	}
	for series, ok := range want {
		v, found := metricValue(body, series)
		if !found || !ok(v) {
			t.Errorf("%s = %v (found %v)", series, v, found)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", filterLines(body, "negotiate_"))
	}
}

func filterLines(body, prefix string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
