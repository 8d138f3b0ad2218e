package transport

import (
	"sync"
	"time"

	"github.com/negotiate-dev/negotiate/sign"
)

// InboxItem is one direct message kept by the default direct handler.
type InboxItem struct {
	// From is the verified sender.
	From sign.AgentID `json:"from"`
	// ContentType is the sender's label of the payload.
	ContentType string `json:"content_type"`
	// Payload is the message content.
	Payload []byte `json:"payload"`
	// ReceivedAt is when this node accepted it.
	ReceivedAt time.Time `json:"received_at"`
	// Nonce is the message nonce (unique per sender).
	Nonce []byte `json:"nonce"`
}

// hostInbox is a bounded FIFO of direct messages: at most InboxCap items
// and InboxMaxBytes of payload; the oldest go first.
type hostInbox struct {
	mu    sync.Mutex
	items []InboxItem
	bytes int
}

func newHostInbox() *hostInbox { return &hostInbox{} }

// add appends it, dropping the oldest items beyond the limits.
func (b *hostInbox) add(it InboxItem) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.items = append(b.items, it)
	b.bytes += len(it.Payload)
	for len(b.items) > InboxCap || (b.bytes > InboxMaxBytes && len(b.items) > 1) {
		b.bytes -= len(b.items[0].Payload)
		b.items[0] = InboxItem{}
		b.items = b.items[1:]
	}
}

// list returns a copy of the items, oldest first.
func (b *hostInbox) list() []InboxItem {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]InboxItem, len(b.items))
	for i, it := range b.items {
		it.Payload = append([]byte(nil), it.Payload...)
		it.Nonce = append([]byte(nil), it.Nonce...)
		out[i] = it
	}
	return out
}

// Inbox returns the direct messages kept by the default direct handler,
// oldest first (at most InboxCap of them).
func (h *Host) Inbox() []InboxItem { return h.inbox.list() }
