package main

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/negotiate-dev/negotiate/negotiate"
)

// maxTrackedSessions bounds the sessions whose phase timing the metrics
// follow; beyond it new sessions are not timed (a flood of proposals must
// not grow the daemon's memory through its metrics).
const maxTrackedSessions = 100_000

// sessionMetrics turns the node's events into Prometheus series: sessions
// ended by outcome, and how long sessions spent in each phase and in all.
// It is fed by NodeConfig.OnEvent and safe for concurrent use.
type sessionMetrics struct {
	ended    *prometheus.CounterVec   // outcome
	phase    *prometheus.HistogramVec // phase
	duration *prometheus.HistogramVec // outcome

	mu   sync.Mutex
	open map[string]*sessionTiming
	now  func() time.Time
}

type sessionTiming struct {
	started, since time.Time
	phase          negotiate.Phase
}

// sessionBuckets cover a loopback session (ms) to a person deciding at the
// CLI (minutes).
var sessionBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

func newSessionMetrics() *sessionMetrics {
	return &sessionMetrics{
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "negotiate_sessions_ended_total", Help: "Sessions this node took part in that ended, by outcome (committed, rejected, aborted).",
		}, []string{"outcome"}),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "negotiate_session_phase_seconds", Help: "Time a session spent in a phase (negotiating, signing) at this node.", Buckets: sessionBuckets,
		}, []string{"phase"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "negotiate_session_duration_seconds", Help: "Time from a session's first event at this node to its outcome, by outcome.", Buckets: sessionBuckets,
		}, []string{"outcome"}),
		open: map[string]*sessionTiming{},
		now:  time.Now,
	}
}

func (m *sessionMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.ended, m.phase, m.duration}
}

// onEvent records one engine event.
func (m *sessionMetrics) onEvent(ev negotiate.Event) {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.open[ev.Session]
	if st == nil && ev.Outcome == nil {
		if len(m.open) >= maxTrackedSessions {
			return
		}
		st = &sessionTiming{started: now, since: now, phase: ev.Phase}
		m.open[ev.Session] = st
	}
	if ev.Outcome != nil {
		outcome := string(ev.Outcome.State)
		m.ended.WithLabelValues(outcome).Inc()
		if st != nil {
			m.phase.WithLabelValues(string(st.phase)).Observe(now.Sub(st.since).Seconds())
			m.duration.WithLabelValues(outcome).Observe(now.Sub(st.started).Seconds())
			delete(m.open, ev.Session)
		}
		return
	}
	if ev.Phase != "" && ev.Phase != st.phase && ev.Phase != negotiate.PhaseDone {
		m.phase.WithLabelValues(string(st.phase)).Observe(now.Sub(st.since).Seconds())
		st.phase, st.since = ev.Phase, now
	}
}
