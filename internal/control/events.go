package control

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/negotiate-dev/negotiate/sign"
)

// Event limits.
const (
	// MaxEventSubscribers bounds concurrent event streams (dashboards,
	// `negotiate events`), so a client cannot pile up goroutines.
	MaxEventSubscribers = 64
	// eventBuffer is how many events a subscriber may lag behind before it
	// loses events (and is told so with an EventResync).
	eventBuffer = 256
	// eventHeartbeat keeps idle streams (and proxies) from timing out.
	eventHeartbeat = 15 * time.Second
	// maxEventLineBytes bounds one line the client reads from a stream.
	maxEventLineBytes = 1 << 20
	// EventHistory is how many recent events the hub keeps for session
	// timelines (GET /v1/events/recent).
	EventHistory = 4096
)

// Event kinds beyond the engine's (proposal, counter, phase, committed,
// rejected, aborted, violation).
const (
	// EventMessage: a direct message arrived in the inbox.
	EventMessage = "message"
	// EventResync: the subscriber lagged and lost events; reload every view.
	EventResync = "resync"
	// EventHello: the first event of every stream, so a client knows it is live.
	EventHello = "hello"
)

// Event is something that changed on the node: a session event of the
// engine or a direct message. Clients refetch the views it concerns.
type Event struct {
	Seq     uint64       `json:"seq"`
	Kind    string       `json:"kind"`
	Session string       `json:"session,omitempty"`
	Phase   string       `json:"phase,omitempty"`
	Round   uint32       `json:"round,omitempty"`
	From    sign.AgentID `json:"from,omitempty"`
	Reason  string       `json:"reason,omitempty"`
	At      int64        `json:"at"` // unix ms at the node
}

// EventHub fans node events out to event streams. Publish never blocks: a
// subscriber that falls eventBuffer events behind loses the overflow and
// receives an EventResync instead. The zero value is not usable; use
// NewEventHub.
type EventHub struct {
	mu   sync.Mutex
	seq  uint64
	subs map[*eventSub]struct{}
	now  func() time.Time
	ring []Event // the last EventHistory events, oldest first once full
	next int     // where the next event goes in ring once full
}

type eventSub struct {
	ch     chan Event
	lagged bool
}

// NewEventHub returns an empty hub.
func NewEventHub() *EventHub {
	return &EventHub{subs: map[*eventSub]struct{}{}, now: time.Now}
}

// Publish numbers ev, stamps it when At is zero and hands it to every
// subscriber.
func (h *EventHub) Publish(ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	ev.Seq = h.seq
	if ev.At == 0 {
		ev.At = h.now().UnixMilli()
	}
	if len(h.ring) < EventHistory {
		h.ring = append(h.ring, ev)
	} else {
		h.ring[h.next] = ev
		h.next = (h.next + 1) % EventHistory
	}
	for s := range h.subs {
		if s.lagged {
			// Make room for the resync marker once the reader catches up.
			select {
			case s.ch <- Event{Seq: ev.Seq, Kind: EventResync, At: ev.At}:
				s.lagged = false
			default:
			}
			continue
		}
		select {
		case s.ch <- ev:
		default:
			s.lagged = true
		}
	}
}

// Subscribe returns a channel of events and a function that ends the
// subscription. It fails with ErrUnavailable when MaxEventSubscribers
// streams are open.
func (h *EventHub) Subscribe() (<-chan Event, func(), error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) >= MaxEventSubscribers {
		return nil, nil, Errorf(KindUnavailable, "too many event streams open (limit %d): close a dashboard tab or an `events` command", MaxEventSubscribers)
	}
	s := &eventSub{ch: make(chan Event, eventBuffer)}
	h.subs[s] = struct{}{}
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			h.mu.Lock()
			delete(h.subs, s)
			h.mu.Unlock()
		})
	}, nil
}

// Recent returns the kept events of session (all kept events when session
// is ""), oldest first.
func (h *EventHub) Recent(session string) []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := []Event{}
	for i := range h.ring {
		ev := h.ring[(h.next+i)%len(h.ring)]
		if session == "" || ev.Session == session {
			out = append(out, ev)
		}
	}
	return out
}

func (s *Server) registerEvents(hub *EventHub) {
	s.Handle("GET", "/v1/events/recent", func(ctx context.Context, r *Request) (any, error) {
		return hub.Recent(r.Query("session")), nil
	})
	s.Handle("GET", "/v1/events", func(ctx context.Context, r *Request) (any, error) {
		ch, cancel, err := hub.Subscribe()
		if err != nil {
			return nil, err
		}
		return &Stream{ContentType: "text/event-stream", Flush: true, Write: func(w io.Writer) error {
			defer cancel()
			return writeEvents(ctx, w, ch, Event{Kind: EventHello, At: time.Now().UnixMilli()})
		}}, nil
	})
}

// writeEvents writes server-sent events until ctx ends or the
// subscription's channel closes.
func writeEvents(ctx context.Context, w io.Writer, ch <-chan Event, first Event) error {
	write := func(ev Event) error {
		data, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("control: encode event: %w", err)
		}
		_, err = fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.Seq, ev.Kind, data)
		return err
	}
	if err := write(first); err != nil {
		return nil // the client went away
	}
	tick := time.NewTicker(eventHeartbeat)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-ch:
			if !ok {
				return nil
			}
			if err := write(ev); err != nil {
				return nil
			}
		case <-tick.C:
			if _, err := io.WriteString(w, ": keepalive\n\n"); err != nil {
				return nil
			}
		}
	}
}

// Events streams the node's events to fn until ctx ends, the node stops or
// fn returns an error (which Events returns). The first event is an
// EventHello.
func (c *Client) Events(ctx context.Context, fn func(Event) error) error {
	resp, err := c.send(ctx, "GET", "/v1/events", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return readEvents(resp.Body, fn)
}

// readEvents parses a server-sent event stream of Events.
func readEvents(r io.Reader, fn func(Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxEventLineBytes)
	var data strings.Builder
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if data.Len() == 0 {
				continue
			}
			var ev Event
			if err := json.Unmarshal([]byte(data.String()), &ev); err != nil {
				return fmt.Errorf("control: malformed event %q: %w", data.String(), err)
			}
			data.Reset()
			if err := fn(ev); err != nil {
				return err
			}
		case strings.HasPrefix(line, "data: "):
			data.WriteString(strings.TrimPrefix(line, "data: "))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("control: read events: %w", err)
	}
	return nil
}
