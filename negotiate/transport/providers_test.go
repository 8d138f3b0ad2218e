package transport

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/sign"
)

// Two agents provide a key, a third finds both by agent ID and can then
// talk to them; a key nobody provides finds nobody.
func TestProvidersFoundByAgentID(t *testing.T) {
	boot := hostTestNew(t, "prov-boot")
	s1 := hostTestNew(t, "prov-s1", boot)
	s2 := hostTestNew(t, "prov-s2", boot)
	buyer := hostTestNew(t, "prov-buyer", boot)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, s := range []*Host{s1, s2} {
		if err := s.Provide(ctx, "category/books"); err != nil {
			t.Fatalf("provide: %v", err)
		}
	}
	if err := s1.Provide(ctx, ""); err == nil {
		t.Fatal("an empty key was provided")
	}
	got, err := buyer.FindProviders(ctx, "category/books", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []sign.AgentID{s1.AgentID(), s2.AgentID()}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("providers %v, want %v", got, want)
	}
	for _, id := range got {
		if _, err := buyer.Ping(ctx, id); err != nil {
			t.Fatalf("ping provider %s: %v", id.Short(), err)
		}
	}
	none, err := buyer.FindProviders(ctx, "category/nothing", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(none) != 0 {
		t.Fatalf("providers of an unprovided key: %v", none)
	}
}
