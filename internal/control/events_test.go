package control

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestEventHubFanOutAndHistory(t *testing.T) {
	hub := NewEventHub()
	ch1, cancel1, err := hub.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	ch2, cancel2, err := hub.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer cancel2()
	hub.Publish(Event{Kind: "proposal", Session: "s1"})
	hub.Publish(Event{Kind: "committed", Session: "s2"})
	for _, ch := range []<-chan Event{ch1, ch2} {
		a, b := <-ch, <-ch
		if a.Kind != "proposal" || a.Seq != 1 || b.Kind != "committed" || b.Seq != 2 || a.At == 0 {
			t.Fatalf("got %+v then %+v", a, b)
		}
	}
	cancel1()
	cancel1() // twice is harmless
	hub.Publish(Event{Kind: "phase", Session: "s1"})
	select {
	case ev := <-ch1:
		t.Fatalf("cancelled subscriber got %+v", ev)
	default:
	}
	if got := hub.Recent("s1"); len(got) != 2 || got[0].Kind != "proposal" || got[1].Kind != "phase" {
		t.Fatalf("Recent(s1) = %+v", got)
	}
	if got := hub.Recent(""); len(got) != 3 {
		t.Fatalf("Recent() has %d events, want 3", len(got))
	}
}

func TestEventHubHistoryIsBounded(t *testing.T) {
	hub := NewEventHub()
	for i := 0; i < EventHistory+10; i++ {
		hub.Publish(Event{Kind: "phase", Session: "s"})
	}
	got := hub.Recent("s")
	if len(got) != EventHistory || got[0].Seq != 11 || got[len(got)-1].Seq != EventHistory+10 {
		t.Fatalf("kept %d events, first %d last %d", len(got), got[0].Seq, got[len(got)-1].Seq)
	}
}

func TestEventHubSlowSubscriberGetsResync(t *testing.T) {
	hub := NewEventHub()
	ch, cancel, err := hub.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	for i := 0; i < eventBuffer+5; i++ { // never blocks
		hub.Publish(Event{Kind: "phase"})
	}
	for i := 0; i < eventBuffer; i++ {
		<-ch
	}
	hub.Publish(Event{Kind: "committed"})
	if ev := <-ch; ev.Kind != EventResync {
		t.Fatalf("after lagging got %+v, want a resync", ev)
	}
}

func TestEventHubLimitsSubscribers(t *testing.T) {
	hub := NewEventHub()
	for i := 0; i < MaxEventSubscribers; i++ {
		if _, cancel, err := hub.Subscribe(); err != nil {
			t.Fatal(err)
		} else {
			defer cancel()
		}
	}
	if _, _, err := hub.Subscribe(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("subscriber %d: err %v, want ErrUnavailable", MaxEventSubscribers+1, err)
	}
}

func TestEventsStreamOverTheSocket(t *testing.T) {
	hub := NewEventHub()
	cl, _ := serve(t, NewServer(&testNode{}, Options{Events: hub}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan Event, 4)
	done := make(chan error, 1)
	go func() {
		done <- cl.Events(ctx, func(ev Event) error {
			got <- ev
			if ev.Kind == "committed" {
				return errors.New("stop")
			}
			return nil
		})
	}()
	if ev := <-got; ev.Kind != EventHello {
		t.Fatalf("first event %+v, want hello", ev)
	}
	hub.Publish(Event{Kind: "committed", Session: "abc", Round: 2})
	if ev := <-got; ev.Kind != "committed" || ev.Session != "abc" || ev.Round != 2 {
		t.Fatalf("got %+v", ev)
	}
	if err := <-done; err == nil || err.Error() != "stop" {
		t.Fatalf("Events returned %v, want fn's error", err)
	}
	var recent []Event
	if err := cl.Do(ctx, "GET", "/v1/events/recent?session=abc", nil, &recent); err != nil || len(recent) != 1 {
		t.Fatalf("recent: %v %+v", err, recent)
	}
}

func TestReadEventsRejectsMalformedData(t *testing.T) {
	err := readEvents(strings.NewReader("event: x\ndata: {not json\n\n"), func(Event) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "malformed event") {
		t.Fatalf("err %v", err)
	}
}
