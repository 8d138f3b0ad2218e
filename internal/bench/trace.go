package bench

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/negotiate-dev/negotiate/internal/hooks"
)

// TimelineStep is one moment of the median session timeline
// (Options.Trace): which party, which hooks.TracePoint (and message
// type), and when, in µs from Propose (AtUs) and from the step before
// (StepUs).
type TimelineStep struct {
	Role   string  `json:"role"`
	Point  string  `json:"point"`
	Type   string  `json:"type,omitempty"`
	AtUs   float64 `json:"at_us"`
	StepUs float64 `json:"step_us"`
}

// tracer keeps the trace events of the measured sessions.
type tracer struct {
	mu     sync.Mutex
	begin  map[string]time.Time // session -> Propose called
	events map[string][]tracedEvent
}

type tracedEvent struct {
	at    time.Time
	role  string
	point hooks.TracePoint
	typ   string
}

func newTracer() *tracer {
	return &tracer{begin: map[string]time.Time{}, events: map[string][]tracedEvent{}}
}

// reset forgets everything recorded so far (the warm-up sessions).
func (t *tracer) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.begin, t.events = map[string]time.Time{}, map[string][]tracedEvent{}
}

// started records when Propose was called for session.
func (t *tracer) started(session string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.begin[session] = at
}

// add records one node's trace event; role names the node's party.
func (t *tracer) add(ev hooks.TraceEvent, role string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.events[ev.Session] = append(t.events[ev.Session], tracedEvent{at: ev.At, role: role, point: ev.Point, typ: ev.Type})
}

// timeline returns the median timeline of the sessions that passed the
// trace points in the most common order, and how many sessions did.
func (t *tracer) timeline() ([]TimelineStep, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	paths := map[string][][]float64{} // path -> each session's offsets, µs

	shapes := map[string][]tracedEvent{}
	for session, begin := range t.begin {
		evs := slices.Clone(t.events[session])
		if len(evs) == 0 {
			continue
		}
		sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
		var key strings.Builder
		offsets := make([]float64, len(evs))
		for i, e := range evs {
			fmt.Fprintf(&key, "%s/%s/%s;", e.role, e.point, e.typ)
			offsets[i] = float64(e.at.Sub(begin).Nanoseconds()) / 1e3
		}
		k := key.String()
		paths[k] = append(paths[k], offsets)
		shapes[k] = evs
	}
	best := ""
	for k, runs := range paths {
		if len(runs) > len(paths[best]) || len(runs) == len(paths[best]) && k < best {
			best = k
		}
	}
	runs := paths[best]
	if len(runs) == 0 {
		return nil, 0
	}
	var out []TimelineStep
	prev := 0.0
	for i, e := range shapes[best] {
		col := make([]float64, len(runs))
		for j, r := range runs {
			col[j] = r[i]
		}
		sort.Float64s(col)
		at := round3(col[len(col)/2])
		out = append(out, TimelineStep{Role: e.role, Point: string(e.point), Type: e.typ, AtUs: at, StepUs: round3(at - prev)})
		prev = at
	}
	return out, len(runs)
}
