package bench

import (
	"errors"
	"fmt"
	"time"

	coreconnmgr "github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
)

// Bounds of NetworkOptions.MaxConnections.
const (
	minNetworkConns = 8
	maxNetworkConns = 1000
	// mockConnGracePeriod protects a new connection from trimming while
	// it is set up and used, as the transport's connection manager does.
	mockConnGracePeriod = 10 * time.Second
)

// managedHost is a mock-network host with a real connection manager.
// go-libp2p's mock hosts have none (the null one), so a node would keep
// every connection it ever opened: at 500 agents about 130 per node, each
// costing goroutines at both ends, where a real node's connection manager
// trims (libp2p's default keeps 160 to 192, transport.Config.MaxConnections
// sets its own). The manager learns of connections from the host's network
// and trims them as it does on a real host; the DHT finds it through
// ConnManager and protects its closest routing-table peers, as it does on
// a real host.
type managedHost struct {
	host.Host
	cm *connmgr.BasicConnMgr
}

// ConnManager returns the host's connection manager.
func (h *managedHost) ConnManager() coreconnmgr.ConnManager { return h.cm }

// Close stops the connection manager and closes the host.
func (h *managedHost) Close() error {
	return errors.Join(h.cm.Close(), h.Host.Close())
}

// newMockHost makes a host on the run's mock network, managed like a real
// node's with the run's connection watermarks (low half the high, the
// transport's grace period for new connections).
func (nw *netRun) newMockHost() (host.Host, error) {
	h, err := nw.mn.GenPeer()
	if err != nil {
		return nil, fmt.Errorf("bench: mock host: %w", err)
	}
	high := nw.opts.MaxConnections
	cm, err := connmgr.NewConnManager(max(1, high/2), high, connmgr.WithGracePeriod(mockConnGracePeriod))
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("bench: connection manager: %w", err)
	}
	h.Network().Notify(cm.Notifee())
	return &managedHost{Host: h, cm: cm}, nil
}
