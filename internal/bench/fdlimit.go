package bench

// Each node's libp2p host keeps up to connsPerNode connections (the
// libp2p connection manager's high watermark), and in a bench every
// connection has both ends in this process; fdsPerNode covers listeners,
// the DHT's streams in flight and the chain file.
const (
	connsPerNode = 192
	fdsPerNode   = 16
	fdsSpare     = 256
)

// neededFDs estimates the open files a run of nodes nodes needs.
func neededFDs(nodes int) uint64 {
	return uint64(nodes*min(nodes-1, connsPerNode) + nodes*fdsPerNode + fdsSpare)
}
