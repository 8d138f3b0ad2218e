package bench

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
)

// TestManagedMockHost checks the wiring of the mock hosts' connection
// manager: the host hands it out (the DHT and the transport protect peers
// through it), it counts the host's connections from the network's
// notifications, and it lets go of a closed connection.
func TestManagedMockHost(t *testing.T) {
	nw := &netRun{opts: NetworkOptions{MaxConnections: 16}, mn: mocknet.New()}
	t.Cleanup(func() { nw.mn.Close() })
	a, err := nw.newMockHost()
	if err != nil {
		t.Fatal(err)
	}
	b, err := nw.newMockHost()
	if err != nil {
		t.Fatal(err)
	}
	if err := nw.mn.LinkAll(); err != nil {
		t.Fatal(err)
	}
	cm := a.(*managedHost).cm
	if a.ConnManager() != cm {
		t.Fatal("the host does not hand out its connection manager")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		t.Fatal(err)
	}
	if n := cm.GetInfo().ConnCount; n != 1 {
		t.Fatalf("the manager counts %d connections after one dial, want 1", n)
	}
	a.ConnManager().Protect(b.ID(), "test")
	if !cm.IsProtected(b.ID(), "test") {
		t.Fatal("a protection through the host did not reach the manager")
	}
	if err := a.Network().ClosePeer(b.ID()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for cm.GetInfo().ConnCount != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the manager still counts %d connections after the close", cm.GetInfo().ConnCount)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	b.Close()
}
