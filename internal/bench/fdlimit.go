package bench

// Each bench node's libp2p host keeps up to connsPerNode connections (its
// connection manager's high watermark, HostConfig.MaxConnections), and in
// a bench every connection has both ends in this process. New connections
// are spared for a grace period, so a node may briefly hold more: the
// estimate allows half as many again. fdsPerNode covers listeners, the
// DHT's streams in flight and the chain file with its two journal files.
const (
	connsPerNode = 48
	fdsPerNode   = 16
	fdsSpare     = 256
)

// neededFDs estimates the open files a run of nodes nodes needs.
func neededFDs(nodes int) uint64 { return neededFDsFor(nodes, connsPerNode) }

// neededFDsFor is neededFDs for nodes keeping up to conns connections each.
func neededFDsFor(nodes, conns int) uint64 {
	return uint64(nodes*min(nodes-1, conns*3/2) + nodes*fdsPerNode + fdsSpare)
}
