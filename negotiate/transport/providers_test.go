package transport

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/sign"
)

// Two agents provide a key, a third finds both by agent ID and can then
// talk to them; a key nobody provides finds nobody.
func TestProvidersFoundByAgentID(t *testing.T) {
	boot := providerTestNew(t, "prov-boot")
	s1 := providerTestNew(t, "prov-s1", boot)
	s2 := providerTestNew(t, "prov-s2", boot)
	buyer := providerTestNew(t, "prov-buyer", boot)
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

// Without Config.Providers a node keeps no provider records and says so.
func TestProvidersOffByDefault(t *testing.T) {
	a, b := hostTestPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Provide(ctx, "category/books"); !errors.Is(err, ErrNoProviders) {
		t.Fatalf("Provide without Config.Providers: %v, want ErrNoProviders", err)
	}
	if _, err := b.FindProviders(ctx, "category/books", 0); !errors.Is(err, ErrNoProviders) {
		t.Fatalf("FindProviders without Config.Providers: %v, want ErrNoProviders", err)
	}
}

// providerTestNew starts a host whose DHT keeps provider records.
func providerTestNew(t *testing.T, name string, bootstrap ...*Host) *Host {
	t.Helper()
	cfg := Config{Key: hostTestKey(t, name), Logger: hostTestLogger(), Providers: true}
	for _, b := range bootstrap {
		cfg.Bootstrap = append(cfg.Bootstrap, b.Addrs()...)
	}
	h, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}
