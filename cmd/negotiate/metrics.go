package main

import (
	"net/http"
	"time"

	"github.com/negotiate-dev/negotiate/chain"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsSource is what the metrics read from a running node.
type metricsSource interface {
	messagesIn() uint64
	messagesOut() uint64
	lookups() uint64             // DHT searches for agent records
	introduced() uint64          // agent records taken from peers' messages
	refusals() map[string]uint64 // by reason (Node.Refusals)
	lockAge() (time.Duration, bool)
	sessionsWaitingOnPeer() int
	warrantCount() int
	peerCount() int
	sessionCount() int
	chainLength() uint64
	chainStats() chain.CommitStats
}

// newMetricsHandler serves the node's counters in the Prometheus text
// format. Values are read at scrape time, so there is nothing to update.
// sm, if set, adds the session series it collects from the node's events.
func newMetricsHandler(src metricsSource, sm *sessionMetrics) http.Handler {
	reg := prometheus.NewRegistry()
	if sm != nil {
		reg.MustRegister(sm.collectors()...)
	}
	reg.MustRegister(refusalCollector{src})
	reg.MustRegister( // fixed, distinct names: cannot collide
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "negotiate_messages_in_total", Help: "Inbound frames (session and direct) accepted.",
		}, func() float64 { return float64(src.messagesIn()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "negotiate_messages_out_total", Help: "Frames sent.",
		}, func() float64 { return float64(src.messagesOut()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "negotiate_dht_lookups_total", Help: "DHT searches for agent records (to reach an agent not cached, or to check an unknown sender).",
		}, func() float64 { return float64(src.lookups()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "negotiate_agent_records_introduced_total", Help: "Agent records taken from peers' messages (a proposal introduces its parties) instead of the DHT.",
		}, func() float64 { return float64(src.introduced()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "negotiate_chain_locked", Help: "1 while this agent's chain is locked by a session (it signed and waits for a certificate), else 0.",
		}, func() float64 {
			if _, ok := src.lockAge(); ok {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "negotiate_chain_lock_age_seconds", Help: "How long the chain lock has been held (0 when free); alert when it grows past the sessions' deadlines.",
		}, func() float64 {
			age, _ := src.lockAge()
			return age.Seconds()
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "negotiate_sessions_waiting_on_peer", Help: "Open sessions waiting on another agent (its answer, its signature or a certificate).",
		}, func() float64 { return float64(src.sessionsWaitingOnPeer()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "negotiate_warrants", Help: "Warrants (evidence of equivocation) this node holds.",
		}, func() float64 { return float64(src.warrantCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "negotiate_peers", Help: "Connected libp2p peers.",
		}, func() float64 { return float64(src.peerCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "negotiate_sessions", Help: "Negotiation sessions in progress.",
		}, func() float64 { return float64(src.sessionCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "negotiate_chain_length", Help: "Entries on this agent's source chain.",
		}, func() float64 { return float64(src.chainLength()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "negotiate_chain_writes_total", Help: "Durable chain writes (lock, vote, append, checkpoint) since the node started.",
		}, func() float64 { return float64(src.chainStats().Writes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "negotiate_chain_journal_syncs_total", Help: "Write-ahead journal writes, one fdatasync each; writes per sync is the group-commit factor.",
		}, func() float64 { return float64(src.chainStats().Transactions) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "negotiate_chain_flushes_total", Help: "Times the journal was applied to the chain's bbolt file (one synced transaction each).",
		}, func() float64 { return float64(src.chainStats().Flushes) }),
	)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}

// refusalDesc is negotiate_messages_refused_total{reason}.
var refusalDesc = prometheus.NewDesc("negotiate_messages_refused_total",
	"Inbound messages refused, by reason: the transport's (framing, too_large, truncated, malformed, bad_signature, wrong_recipient, expired, replay, peer_mismatch, rate_limited, streams) and the engine's (unknown_session, warranted, protocol).",
	[]string{"reason"}, nil)

// refusalCollector reads the refusal counters at scrape time; the set of
// reasons is fixed, so every one is always exported.
type refusalCollector struct{ src metricsSource }

func (refusalCollector) Describe(ch chan<- *prometheus.Desc) { ch <- refusalDesc }

func (c refusalCollector) Collect(ch chan<- prometheus.Metric) {
	for reason, n := range c.src.refusals() {
		ch <- prometheus.MustNewConstMetric(refusalDesc, prometheus.CounterValue, float64(n), reason)
	}
}
