package main

import (
	"net/http"

	"github.com/negotiate-dev/negotiate/chain"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsSource is what the metrics read from a running node.
type metricsSource interface {
	messagesIn() uint64
	messagesOut() uint64
	messagesRefused() uint64
	peerCount() int
	sessionCount() int
	chainLength() uint64
	chainStats() chain.CommitStats
}

// newMetricsHandler serves the node's counters in the Prometheus text
// format. Values are read at scrape time, so there is nothing to update.
func newMetricsHandler(src metricsSource) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister( // fixed, distinct names: cannot collide
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "negotiate_messages_in_total", Help: "Inbound frames (session and direct) accepted.",
		}, func() float64 { return float64(src.messagesIn()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "negotiate_messages_out_total", Help: "Frames sent.",
		}, func() float64 { return float64(src.messagesOut()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "negotiate_messages_refused_total", Help: "Inbound frames refused (malformed, badly signed, expired, replayed, rate-limited).",
		}, func() float64 { return float64(src.messagesRefused()) }),
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
