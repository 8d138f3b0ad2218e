package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

// Client limits.
const (
	// MaxResponseBytes bounds a JSON answer held in memory (a full page of
	// MaxEntriesPerRequest entries is a few MiB).
	MaxResponseBytes = 64 << 20
	// maxErrorBytes bounds an error body.
	maxErrorBytes = 64 << 10
	// replyGrace is added to a ping/send timeout on the client so the node's
	// own timeout error arrives before the client gives up.
	replyGrace = 2 * time.Second
)

// Client calls a node's control API over its unix socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the socket at path; it does not connect.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:    2,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: path, hc: &http.Client{Transport: tr}}
}

// Dial returns a client for the node on the socket at path after checking
// that it answers; ErrNoNode when no socket exists or nothing answers.
func Dial(ctx context.Context, path string) (*Client, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%w (no socket at %s)", ErrNoNode, path)
	}
	c := NewClient(path)
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if err := c.Health(pctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Close releases idle connections.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

// Do sends a request with in as JSON body (nil = none) and decodes a JSON
// answer into out (nil = discard). Engine endpoints use it directly.
// Errors from the node are *Error; transport failures wrap ErrNoNode.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err := io.Copy(io.Discard, io.LimitReader(resp.Body, MaxResponseBytes))
		return err
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, MaxResponseBytes))
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("control: %s %s: malformed answer: %w", method, path, err)
	}
	return nil
}

// send performs a request and returns a 2xx response or an error.
func (c *Client) send(ctx context.Context, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("control: encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://node"+path, body)
	if err != nil {
		return nil, fmt.Errorf("control: %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("control: %s %s: %w", method, path, ctx.Err())
		}
		return nil, fmt.Errorf("%w: node on %s does not answer: %v", ErrNoNode, c.socket, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
	var e Error
	if json.Unmarshal(data, &e) != nil || e.Message == "" {
		e = Error{Kind: KindInternal, Message: fmt.Sprintf("control: %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))}
	}
	if e.Kind == "" {
		e.Kind = KindInternal
	}
	e.Status = resp.StatusCode
	return nil, &e
}

// Health checks that the node answers.
func (c *Client) Health(ctx context.Context) error {
	return c.Do(ctx, "GET", "/v1/health", nil, nil)
}

// Routes lists the node's routes.
func (c *Client) Routes(ctx context.Context) ([]Route, error) {
	var rs []Route
	return rs, c.Do(ctx, "GET", "/v1/routes", nil, &rs)
}

// Identity returns the node's identity, peer ID and addresses.
func (c *Client) Identity(ctx context.Context) (Identity, error) {
	var id Identity
	return id, c.Do(ctx, "GET", "/v1/identity", nil, &id)
}

// ChainStatus implements ChainReader.
func (c *Client) ChainStatus(ctx context.Context) (ChainStatus, error) {
	var st ChainStatus
	return st, c.Do(ctx, "GET", "/v1/chain/status", nil, &st)
}

// ChainEntries implements ChainReader.
func (c *Client) ChainEntries(ctx context.Context, from, limit uint64) ([]Entry, error) {
	q := url.Values{"from": {strconv.FormatUint(from, 10)}, "limit": {strconv.FormatUint(limit, 10)}}
	var es []Entry
	return es, c.Do(ctx, "GET", "/v1/chain/entries?"+q.Encode(), nil, &es)
}

// ChainVerify implements ChainReader.
func (c *Client) ChainVerify(ctx context.Context) (VerifyResult, error) {
	var r VerifyResult
	return r, c.Do(ctx, "GET", "/v1/chain/verify", nil, &r)
}

// ChainExport implements ChainReader.
func (c *Client) ChainExport(ctx context.Context, format string, w io.Writer) error {
	resp, err := c.send(ctx, "GET", "/v1/chain/export?"+url.Values{"format": {format}}.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("control: export: %w", err)
	}
	if msg := resp.Trailer.Get(StreamErrorTrailer); msg != "" {
		return errors.New("control: export failed on the node: " + msg)
	}
	return nil
}

// ChainBackup writes the node's consistent copy of its chain file to w.
func (c *Client) ChainBackup(ctx context.Context, w io.Writer) error {
	resp, err := c.send(ctx, "GET", "/v1/chain/backup", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("control: backup: %w", err)
	}
	if msg := resp.Trailer.Get(StreamErrorTrailer); msg != "" {
		return errors.New("control: backup failed on the node: " + msg)
	}
	return nil
}

// Peers lists connected peers and known agents.
func (c *Client) Peers(ctx context.Context) (Peers, error) {
	var p Peers
	return p, c.Do(ctx, "GET", "/v1/peers", nil, &p)
}

// Inbox lists received direct messages.
func (c *Client) Inbox(ctx context.Context) ([]InboxMessage, error) {
	var ms []InboxMessage
	return ms, c.Do(ctx, "GET", "/v1/inbox", nil, &ms)
}

func withReplyTimeout(ctx context.Context, ms int64) (context.Context, context.CancelFunc) {
	d := time.Duration(ms) * time.Millisecond
	if ms <= 0 {
		d = DefaultTimeout
	}
	return context.WithTimeout(ctx, d+replyGrace)
}

// Ping asks the node for one round trip to req.To.
func (c *Client) Ping(ctx context.Context, req PingRequest) (PingResult, error) {
	ctx, cancel := withReplyTimeout(ctx, req.TimeoutMS)
	defer cancel()
	var r PingResult
	return r, c.Do(ctx, "POST", "/v1/ping", req, &r)
}

// Send asks the node to send a direct message and returns the reply.
func (c *Client) Send(ctx context.Context, req SendRequest) (SendResult, error) {
	ctx, cancel := withReplyTimeout(ctx, req.TimeoutMS)
	defer cancel()
	var r SendResult
	return r, c.Do(ctx, "POST", "/v1/send", req, &r)
}
