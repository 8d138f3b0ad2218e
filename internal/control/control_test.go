package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/sign"
)

// testNode is a Node and Messenger with canned answers.
type testNode struct {
	id      Identity
	sendErr error
	inbox   []InboxMessage
}

func (n *testNode) Identity(ctx context.Context) (Identity, error) { return n.id, nil }
func (n *testNode) Peers(ctx context.Context) (Peers, error) {
	return Peers{Connected: []Peer{{PeerID: "p1"}}, Agents: []KnownAgent{}}, nil
}
func (n *testNode) Ping(ctx context.Context, to sign.AgentID) (PingResult, error) {
	<-ctx.Done() // never answers: the request's timeout must end it
	return PingResult{}, ctx.Err()
}
func (n *testNode) Send(ctx context.Context, req SendRequest) (SendResult, error) {
	if n.sendErr != nil {
		return SendResult{}, n.sendErr
	}
	return SendResult{To: req.To, Accepted: true, Reply: "re: " + req.Message + " (" + req.ContentType + ")"}, nil
}
func (n *testNode) Inbox(ctx context.Context) ([]InboxMessage, error) { return n.inbox, nil }

// newChain creates a real chain file with extra note entries.
func newChain(t *testing.T, notes int) (*chain.Chain, *sign.PrivateKey) {
	t.Helper()
	s, _ := sign.SchemeByName(sign.DefaultScheme)
	key, err := s.DeriveKey([]byte(t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	c, err := chain.Create(filepath.Join(t.TempDir(), "chain.db"), key, 1_700_000_000_000)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for i := 0; i < notes; i++ {
		e, err := c.NewEntry(key, "note", map[string]int{"n": i}, int64(1_700_000_000_001+i))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(chain.Write{Append: e}); err != nil {
			t.Fatal(err)
		}
	}
	return c, key
}

// serve runs srv on a unix socket in a short temp dir and returns a client.
func serve(t *testing.T, srv *Server) (*Client, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "node.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	cl, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl, path
}

// TestClientMatchesLocal: the same chain gives the same views directly and
// through the control API.
func TestClientMatchesLocal(t *testing.T) {
	c, key := newChain(t, 3)
	local := NewLocal(c)
	cl, _ := serve(t, NewServer(&testNode{}, Options{Chain: local}))
	ctx := context.Background()

	ls, _ := local.ChainStatus(ctx)
	rs, err := cl.ChainStatus(ctx)
	if err != nil || !reflect.DeepEqual(ls, rs) {
		t.Fatalf("status: local %+v, remote %+v (%v)", ls, rs, err)
	}
	if rs.Length != 4 || rs.AgentID != key.AgentID() || rs.Lock != nil {
		t.Errorf("status %+v, want 4 entries of %s, unlocked", rs, key.AgentID())
	}
	for _, q := range []struct{ from, limit uint64 }{{0, 0}, {1, 2}, {3, 10}, {9, 0}} {
		le, err1 := local.ChainEntries(ctx, q.from, q.limit)
		re, err2 := cl.ChainEntries(ctx, q.from, q.limit)
		if err1 != nil || err2 != nil || len(le) != len(re) || (len(le) > 0 && !reflect.DeepEqual(le, re)) {
			t.Errorf("entries %+v: local %v (%v), remote %v (%v)", q, le, err1, re, err2)
		}
	}
	for _, f := range []string{FormatJSON, FormatCBOR} {
		var lb, rb bytes.Buffer
		if err := local.ChainExport(ctx, f, &lb); err != nil {
			t.Fatal(err)
		}
		if err := cl.ChainExport(ctx, f, &rb); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(lb.Bytes(), rb.Bytes()) || lb.Len() == 0 {
			t.Errorf("%s export differs: local %d bytes, remote %d", f, lb.Len(), rb.Len())
		}
	}
	if err := cl.ChainExport(ctx, "xml", io.Discard); !errors.Is(err, ErrBadRequest) {
		t.Errorf("export xml: %v, want ErrBadRequest", err)
	}
	v, err := cl.ChainVerify(ctx)
	if err != nil || !v.OK || v.Length != 4 {
		t.Errorf("verify %+v %v", v, err)
	}
}

func TestDescribeAgreementRecordHash(t *testing.T) {
	c, key := newChain(t, 0)
	payload := map[string]string{"terms": "x"}
	e, err := c.NewEntry(key, KindAgreement, payload, 1_700_000_000_500)
	if err != nil {
		t.Fatal(err)
	}
	v := DescribeEntry(e)
	want := sign.Hash(e.Payload)
	if v.RecordHash == "" || v.RecordHash != hexOf(want[:]) || v.Kind != KindAgreement || v.Seq != 1 {
		t.Errorf("agreement view %+v, want record hash %x", v, want)
	}
	g, _ := c.Entry(0)
	if DescribeEntry(g).RecordHash != "" {
		t.Error("genesis view has a record hash")
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, x := range b {
		out = append(out, digits[x>>4], digits[x&15])
	}
	return string(out)
}

func TestErrorsCrossTheSocket(t *testing.T) {
	node := &testNode{sendErr: Errorf(KindRefused, "bob refused: busy")}
	srv := NewServer(node, Options{Classify: func(err error) Kind {
		if strings.Contains(err.Error(), "gone") {
			return KindUnreachable
		}
		return ""
	}})
	srv.Handle("POST", "/v1/echo/{word}", func(ctx context.Context, r *Request) (any, error) {
		var in struct {
			N int `json:"n"`
		}
		if err := r.Decode(&in); err != nil {
			return nil, err
		}
		return map[string]any{"word": r.HTTP.PathValue("word"), "n": in.N}, nil
	})
	srv.Handle("GET", "/v1/gone", func(ctx context.Context, r *Request) (any, error) {
		return nil, errors.New("peer gone")
	})
	srv.Handle("GET", "/v1/boom", func(ctx context.Context, r *Request) (any, error) {
		return nil, errors.New("boom")
	})
	cl, _ := serve(t, srv)
	ctx := context.Background()
	agent := mustAgent(t)

	var echo struct {
		Word string `json:"word"`
		N    int    `json:"n"`
	}
	if err := cl.Do(ctx, "POST", "/v1/echo/hi", map[string]int{"n": 7}, &echo); err != nil || echo.Word != "hi" || echo.N != 7 {
		t.Fatalf("echo: %+v %v", echo, err)
	}
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"refused by node", func() error {
			_, err := cl.Send(ctx, SendRequest{To: agent, Message: "x"})
			return err
		}, ErrRefused},
		{"classified", func() error { return cl.Do(ctx, "GET", "/v1/gone", nil, nil) }, ErrUnreachable},
		{"unknown route", func() error { return cl.Do(ctx, "GET", "/v1/nope", nil, nil) }, ErrNotFound},
		{"unknown field", func() error { return cl.Do(ctx, "POST", "/v1/echo/x", map[string]int{"m": 1}, nil) }, ErrBadRequest},
		{"body not JSON", func() error { return cl.Do(ctx, "POST", "/v1/echo/x", "text", nil) }, ErrBadRequest},
		{"oversized body", func() error {
			return cl.Do(ctx, "POST", "/v1/echo/x", map[string]string{"pad": strings.Repeat("x", MaxRequestBytes)}, nil)
		}, ErrBadRequest},
		{"bad agent ID", func() error {
			_, err := cl.Ping(ctx, PingRequest{To: "bob"})
			return err
		}, ErrBadRequest},
		{"negative timeout", func() error {
			_, err := cl.Ping(ctx, PingRequest{To: agent, TimeoutMS: -1})
			return err
		}, ErrBadRequest},
		{"timeout", func() error {
			_, err := cl.Ping(ctx, PingRequest{To: agent, TimeoutMS: 50})
			return err
		}, ErrTimeout},
		{"no chain routes without Options.Chain", func() error { return cl.Do(ctx, "GET", "/v1/chain/status", nil, nil) }, ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	err := cl.Do(ctx, "GET", "/v1/boom", nil, nil)
	var ce *Error
	if !errors.As(err, &ce) || ce.Kind != KindInternal || ce.Message != "boom" || ce.Status != 500 {
		t.Errorf("internal error arrives as %#v", err)
	}
	routes, err := cl.Routes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[Route]bool{{"GET", "/v1/identity"}: true, {"POST", "/v1/send"}: true, {"POST", "/v1/echo/{word}"}: true}
	for _, r := range routes {
		delete(want, r)
	}
	if len(want) > 0 {
		t.Errorf("routes %v lack %v", routes, want)
	}
}

func mustAgent(t *testing.T) sign.AgentID {
	s, _ := sign.SchemeByName(sign.DefaultScheme)
	k, err := s.DeriveKey([]byte("agent"))
	if err != nil {
		t.Fatal(err)
	}
	return k.AgentID()
}

func TestSendAndInbox(t *testing.T) {
	agent := mustAgent(t)
	cl, _ := serve(t, NewServer(&testNode{inbox: []InboxMessage{{From: agent, Message: "hi"}}}, Options{}))
	ctx := context.Background()
	r, err := cl.Send(ctx, SendRequest{To: agent, Message: "hello"})
	if err != nil || r.Reply != "re: hello (text/plain)" || r.To != agent {
		t.Errorf("send: %+v %v", r, err)
	}
	in, err := cl.Inbox(ctx)
	if err != nil || len(in) != 1 || in[0].From != agent {
		t.Errorf("inbox: %+v %v", in, err)
	}
	p, err := cl.Peers(ctx)
	if err != nil || len(p.Connected) != 1 {
		t.Errorf("peers: %+v %v", p, err)
	}
}

func TestListen(t *testing.T) {
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "node.sock")

	// A stale socket (no server) is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := Dial(context.Background(), path); !errors.Is(err, ErrNoNode) {
		t.Fatalf("dial a stale socket: %v, want ErrNoNode", err)
	}
	cl, live := serve(t, NewServer(&testNode{id: Identity{PeerID: "p"}}, Options{}))
	st, err := os.Stat(live)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v, want 0600", st.Mode().Perm(), err)
	}
	// A live socket is not taken over.
	if _, err := Listen(live); !errors.Is(err, ErrNodeRunning) {
		t.Fatalf("listen on a live socket: %v, want ErrNodeRunning", err)
	}
	id, err := cl.Identity(context.Background())
	if err != nil || id.PeerID != "p" {
		t.Fatalf("identity: %+v %v", id, err)
	}
	ln, err := Listen(path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	ln.Close()
	if _, err := os.Stat(path); err == nil {
		t.Error("socket file left after the listener closed")
	}
	if _, err := Dial(context.Background(), filepath.Join(dir, "none.sock")); !errors.Is(err, ErrNoNode) {
		t.Errorf("dial a missing socket: %v, want ErrNoNode", err)
	}
}

func TestServeStopsAndRemovesSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "node.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(&testNode{}, Options{}).Serve(ctx, ln) }()
	if _, err := Dial(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := os.Stat(path); err == nil {
		t.Error("socket left after Serve returned")
	}
}

// ExampleServer_Handle shows how a node adds its own endpoint and how a
// client calls it.
func ExampleServer_Handle() {
	srv := NewServer(&testNode{}, Options{})
	srv.Handle("GET", "/v1/sessions/{id}", func(ctx context.Context, r *Request) (any, error) {
		if r.HTTP.PathValue("id") != "s1" {
			return nil, Errorf(KindNotFound, "no session %q", r.HTTP.PathValue("id"))
		}
		return map[string]string{"id": "s1", "state": "negotiating"}, nil
	})

	dir, _ := os.MkdirTemp("", "ctl")
	defer os.RemoveAll(dir)
	ln, _ := Listen(filepath.Join(dir, "node.sock"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Serve(ctx, ln) }()

	cl := NewClient(filepath.Join(dir, "node.sock"))
	var s struct{ ID, State string }
	err := cl.Do(context.Background(), "GET", "/v1/sessions/s1", nil, &s)
	fmt.Println(s.ID, s.State, err == nil)
	err = cl.Do(context.Background(), "GET", "/v1/sessions/s2", nil, nil)
	fmt.Println(errors.Is(err, ErrNotFound), err.Error())
	cancel()
	<-done
	// Output:
	// s1 negotiating true
	// true no session "s2"
}
