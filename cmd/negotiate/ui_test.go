package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/internal/ui"
	"github.com/negotiate-dev/negotiate/sign"
)

// uiClient calls a node's dashboard API the way a script would: with the
// token in a header.
type uiClient struct {
	t     *testing.T
	base  string
	token string
}

func newUIClient(t *testing.T, d *daemonProc) *uiClient {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(d.home, ui.TokenFileName))
	if err != nil {
		t.Fatal(err)
	}
	if d.info.UI == "" {
		t.Fatal("node.json names no dashboard")
	}
	return &uiClient{t: t, base: strings.TrimSuffix(d.info.UI, "/"), token: strings.TrimSpace(string(tok))}
}

// do sends a request to /api+path and returns the status and body.
func (c *uiClient) do(method, path, body string) (int, string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+"/api"+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set(ui.TokenHeader, c.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// ok calls do and fails the test unless the answer is 200; it decodes a
// JSON answer into out (when not nil).
func (c *uiClient) ok(method, path, body string, out any) string {
	c.t.Helper()
	code, resp := c.do(method, path, body)
	if code != 200 {
		c.t.Fatalf("%s %s %s: %d %s", method, path, body, code, resp)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(resp), out); err != nil {
			c.t.Fatalf("%s %s: %v: %s", method, path, err, resp)
		}
	}
	return resp
}

// state is what a refused request must leave unchanged.
func (c *uiClient) state() string {
	c.t.Helper()
	var st struct {
		Length uint64 `json:"length"`
		Head   string `json:"head"`
		Lock   any    `json:"lock"`
	}
	c.ok("GET", "/v1/chain/status", "", &st)
	var sessions []map[string]any
	c.ok("GET", "/v1/sessions?all=1", "", &sessions)
	var props []any
	c.ok("GET", "/v1/proposals", "", &props)
	var inbox []any
	c.ok("GET", "/v1/inbox", "", &inbox)
	b, _ := json.Marshal([]any{st, len(sessions), sessionStates(sessions), len(props), len(inbox)})
	return string(b)
}

func sessionStates(ss []map[string]any) map[string]any {
	out := map[string]any{}
	for _, s := range ss {
		out[s["session"].(string)] = []any{s["phase"], s["state"], s["round"]}
	}
	return out
}

// waitFor polls path until match says yes.
func (c *uiClient) waitFor(what, path string, match func(body string) bool) string {
	c.t.Helper()
	var last string
	eventually(c.t, 20*time.Second, what, func() (bool, string) {
		_, last = c.do("GET", path, "")
		return match(last), last
	})
	return last
}

// TestDashboardAPI drives every dashboard action against two real nodes
// through the dashboard's HTTP server (the control API mounted under /api),
// and checks that bad input gets a 4xx with a message, never a 500, and
// changes nothing.
func TestDashboardAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two libp2p daemons")
	}
	dir := shortTemp(t)
	homeA, idA := initHome(t, filepath.Join(dir, "a"))
	homeB, idB := initHome(t, filepath.Join(dir, "b"))
	a := startDaemon(t, homeA, "--ui", "127.0.0.1:0")
	b := startDaemon(t, homeB, "--ui", "127.0.0.1:0", "--bootstrap", a.info.Addrs[0])
	A, B := newUIClient(t, a), newUIClient(t, b)
	eventually(t, 20*time.Second, "a pings b", func() (bool, string) {
		code, body := A.do("POST", "/v1/ping", `{"to":"`+idB.String()+`","timeout_ms":3000}`)
		return code == 200, body
	})

	// Reads.
	var id struct {
		AgentID sign.AgentID `json:"agent_id"`
	}
	A.ok("GET", "/v1/identity", "", &id)
	if id.AgentID != idA {
		t.Fatalf("identity %s, want %s", id.AgentID, idA)
	}
	var peers struct {
		Agents []struct {
			AgentID sign.AgentID `json:"agent_id"`
		} `json:"agents"`
	}
	A.ok("GET", "/v1/peers", "", &peers)
	if len(peers.Agents) == 0 {
		t.Fatalf("A knows no agent after pinging B: %+v", peers)
	}
	var ping struct {
		RTTMS float64 `json:"rtt_ms"`
	}
	A.ok("POST", "/v1/ping", `{"to":"`+idB.String()+`"}`, &ping)
	if ping.RTTMS <= 0 {
		t.Fatalf("ping rtt %v", ping.RTTMS)
	}

	// The event stream answers with a hello at once.
	func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", A.base+"/api/v1/events", nil)
		req.Header.Set(ui.TokenHeader, A.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("events content type %q", ct)
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() == "event: hello" {
				return
			}
		}
		t.Fatalf("no hello event: %v", sc.Err())
	}()

	// A direct message arrives in B's inbox.
	var sent struct {
		Accepted bool   `json:"accepted"`
		Reply    string `json:"reply"`
	}
	A.ok("POST", "/v1/send", `{"to":"`+idB.String()+`","message":"hello from the dashboard"}`, &sent)
	if !sent.Accepted || !strings.Contains(sent.Reply, "ack") {
		t.Fatalf("send: %+v", sent)
	}
	B.waitFor("message in B's inbox", "/v1/inbox", func(s string) bool { return strings.Contains(s, "hello from the dashboard") })

	// Session 1: A proposes, B counters, A rejects the counter.
	var started struct {
		Session string `json:"session"`
	}
	A.ok("POST", "/v1/sessions", `{"with":["`+idB.String()+`"],"terms":{"item":"book","price":12},"timeout_ms":30000}`, &started)
	s1 := started.Session
	B.waitFor("proposal at B", "/v1/proposals", func(s string) bool { return strings.Contains(s, s1) && strings.Contains(s, `"deadline"`) })
	B.ok("POST", "/v1/sessions/"+s1+"/decide", `{"action":"counter","terms":{"item":"book","price":15}}`, nil)
	A.waitFor("counter at A", "/v1/proposals", func(s string) bool { return strings.Contains(s, s1) && strings.Contains(s, `"kind":"counter"`) })
	A.ok("POST", "/v1/sessions/"+s1+"/decide", `{"action":"reject","reason":"too dear"}`, nil)
	B.waitFor("B sees the rejection", "/v1/sessions/"+s1, func(s string) bool { return strings.Contains(s, `"state":"rejected"`) })

	// Session 2: A proposes, B accepts; both commit the same record.
	A.ok("POST", "/v1/sessions", `{"with":["`+idB.String()+`"],"terms":{"item":"pen","price":3},"timeout_ms":30000}`, &started)
	s2 := started.Session
	B.waitFor("proposal at B", "/v1/proposals", func(s string) bool { return strings.Contains(s, s2) })
	B.ok("POST", "/v1/sessions/"+s2+"/decide", `{"action":"accept"}`, nil)
	var recA, recB struct {
		RecordHash string `json:"record_hash"`
		State      string `json:"state"`
	}
	json.Unmarshal([]byte(A.waitFor("A commits", "/v1/sessions/"+s2, func(s string) bool { return strings.Contains(s, `"state":"committed"`) })), &recA)
	json.Unmarshal([]byte(B.waitFor("B commits", "/v1/sessions/"+s2, func(s string) bool { return strings.Contains(s, `"state":"committed"`) })), &recB)
	if recA.RecordHash == "" || recA.RecordHash != recB.RecordHash {
		t.Fatalf("record hashes %q and %q", recA.RecordHash, recB.RecordHash)
	}
	code, receipt := A.do("GET", "/v1/sessions/"+s2+"/receipt", "")
	if code != 200 || len(receipt) < 100 {
		t.Fatalf("receipt: %d, %d bytes", code, len(receipt))
	}
	var page struct {
		Records []struct {
			Kind       string `json:"kind"`
			RecordHash string `json:"record_hash"`
			Verified   bool   `json:"verified"`
			Record     struct {
				Session string         `json:"session"`
				Terms   map[string]any `json:"terms"`
			} `json:"record"`
		} `json:"records"`
	}
	for _, q := range []string{"", "?q=" + s2[:10], "?q=pen", "?q=" + idB.String()[:12]} {
		B.ok("GET", "/v1/chain/records"+q, "", &page)
		if len(page.Records) == 0 || page.Records[0].RecordHash != recA.RecordHash || !page.Records[0].Verified || page.Records[0].Record.Session != s2 {
			t.Fatalf("records%s: %+v", q, page.Records)
		}
	}
	B.ok("GET", "/v1/chain/records?q=no-such-thing", "", &page)
	if len(page.Records) != 0 {
		t.Fatalf("search for nothing found %+v", page.Records)
	}
	// The CLI runs the same search through the control API.
	r := runCLI(t, nil, "--home", homeB, "chain", "search", "PEN", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, recA.RecordHash) || strings.Contains(r.stdout, `"book"`) {
		t.Fatalf("chain search PEN: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, nil, "--home", homeB, "chain", "search"); r.code != exitUsage {
		t.Fatalf("chain search without text: exit %d", r.code)
	}
	var verify struct {
		OK bool `json:"ok"`
	}
	B.ok("GET", "/v1/chain/verify", "", &verify)
	if !verify.OK {
		t.Fatal("B's chain does not verify")
	}
	var timeline []struct {
		Kind string `json:"kind"`
	}
	A.ok("GET", "/v1/events/recent?session="+s2, "", &timeline)
	if len(timeline) == 0 || timeline[len(timeline)-1].Kind != "committed" {
		t.Fatalf("A's timeline of %s: %+v", s2, timeline)
	}

	// Session 3: A proposes and aborts before signing (safe).
	A.ok("POST", "/v1/sessions", `{"with":["`+idB.String()+`"],"terms":{"item":"cup"},"timeout_ms":30000}`, &started)
	s3 := started.Session
	A.ok("POST", "/v1/sessions/"+s3+"/decide", `{"action":"abort","reason":"changed my mind"}`, nil)
	A.waitFor("A aborted", "/v1/sessions/"+s3, func(s string) bool { return strings.Contains(s, `"state":"aborted"`) })

	// Bad input and refusals: a 4xx with a message, never a 500, and no change.
	unknown := mustNewID(t)
	before := A.state()
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/v1/sessions", `{"with":["not-an-agent"],"terms":{"a":1}}`},
		{"POST", "/v1/sessions", `{"with":["` + idB.String() + `"],"terms":{}}`},
		{"POST", "/v1/sessions", `{"with":[],"terms":{"a":1}}`},
		{"POST", "/v1/sessions", `{"with":["` + idB.String() + `"],"terms":{"a":1},"bogus":true}`},
		{"POST", "/v1/sessions", `{"with":["` + idB.String() + `"],"terms":{"a":1},"timeout_ms":-5}`},
		{"POST", "/v1/sessions", `{"with":["` + idB.String() + `"],"terms":{"a":1},"max_rounds":100000}`},
		{"POST", "/v1/sessions", `{"with":["` + idA.String() + `"],"terms":{"a":1}}`},
		{"POST", "/v1/sessions", `{"with":["` + idB.String() + `"],"terms":{"a":1},"offer":true,"max_rounds":3}`},
		{"POST", "/v1/sessions", `{"with":`},
		{"POST", "/v1/sessions", `[1,2]`},
		{"POST", "/v1/sessions", ``},
		{"POST", "/v1/sessions/" + s2 + "/decide", `{"action":"accept"}`},
		{"POST", "/v1/sessions/" + s2 + "/decide", `{"action":"abort"}`},
		{"POST", "/v1/sessions/" + s2 + "/decide", `{"action":"dance"}`},
		{"POST", "/v1/sessions/" + s2 + "/decide", `{"action":"counter","terms":{}}`},
		{"POST", "/v1/sessions/0123456789abcdef0123456789abcdef/decide", `{"action":"accept"}`},
		{"POST", "/v1/sessions/nonsense/decide", `{"action":"reject"}`},
		{"GET", "/v1/sessions/nonsense", ``},
		{"GET", "/v1/sessions/0123456789abcdef0123456789abcdef/receipt", ``},
		{"GET", "/v1/sessions/" + s1 + "/receipt", ``},
		{"POST", "/v1/ping", `{"to":"nope"}`},
		{"POST", "/v1/ping", `{"to":"` + idB.String() + `","timeout_ms":99999999}`},
		{"POST", "/v1/send", `{"to":"nope","message":"x"}`},
		{"POST", "/v1/send", `{"to":"` + idB.String() + `","message":"x","timeout_ms":-1}`},
		{"GET", "/v1/chain/records?limit=abc", ``},
		{"GET", "/v1/chain/records?limit=100000", ``},
		{"GET", "/v1/chain/entries?from=-1", ``},
		{"GET", "/v1/chain/export?format=xml", ``},
		{"GET", "/v1/no/such/route", ``},
		{"POST", "/v1/identity", `{}`},
	} {
		code, body := A.do(c.method, c.path, c.body)
		var e struct {
			Error string `json:"error"`
			Kind  string `json:"kind"`
		}
		json.Unmarshal([]byte(body), &e)
		if code < 400 || code >= 500 || e.Error == "" {
			t.Errorf("%s %s %s: %d %s, want a 4xx with a message", c.method, c.path, c.body, code, body)
		}
	}
	// An agent nobody publishes: the node cannot reach it (a gateway error,
	// not an internal one), named in the message.
	code, body := A.do("POST", "/v1/ping", `{"to":"`+unknown.String()+`","timeout_ms":2000}`)
	if code == 500 || code < 400 || !strings.Contains(body, `"error"`) {
		t.Errorf("ping an unknown agent: %d %s", code, body)
	}
	if after := A.state(); after != before {
		t.Fatalf("refused requests changed the node:\nbefore %s\nafter  %s", before, after)
	}

	// Refusals of the engine in a session's state are 409s that say why:
	// a signed offer locks A's chain at once, so aborting it is unsafe and
	// a second offer finds the chain busy.
	A.ok("POST", "/v1/sessions", `{"with":["`+idB.String()+`"],"terms":{"item":"lamp"},"offer":true,"timeout_ms":30000}`, &started)
	s4 := started.Session
	B.waitFor("offer at B", "/v1/proposals", func(s string) bool { return strings.Contains(s, s4) && strings.Contains(s, `"kind":"offer"`) })
	for _, c := range []struct{ path, body, want string }{
		{"/v1/sessions/" + s4 + "/decide", `{"action":"abort"}`, "no longer safe"},
		{"/v1/sessions", `{"with":["` + idB.String() + `"],"terms":{"item":"desk"},"offer":true}`, "busy"},
	} {
		code, body := A.do("POST", c.path, c.body)
		if code != 409 || !strings.Contains(body, c.want) {
			t.Errorf("POST %s %s: %d %s, want 409 saying %q", c.path, c.body, code, body, c.want)
		}
	}
	if code, body := B.do("POST", "/v1/sessions/"+s4+"/decide", `{"action":"counter","terms":{"item":"lamp","price":1}}`); code != 409 {
		t.Errorf("counter to a signed offer: %d %s, want 409", code, body)
	}
	B.ok("POST", "/v1/sessions/"+s4+"/decide", `{"action":"reject","reason":"no lamps"}`, nil)
	A.waitFor("A's offer rejected, lock released", "/v1/chain/status", func(s string) bool { return strings.Contains(s, `"lock":null`) })

	// An agent nobody publishes: the session ends unreachable, naming it.
	code, body = A.do("POST", "/v1/sessions", `{"with":["`+unknown.String()+`"],"terms":{"item":"x"},"timeout_ms":20000}`)
	if code == 200 {
		json.Unmarshal([]byte(body), &started)
		body = A.waitFor("session with an unknown agent ends", "/v1/sessions/"+started.Session, func(s string) bool { return strings.Contains(s, `"state":"aborted"`) })
	}
	if !strings.Contains(body, unknown.Short()) && !strings.Contains(body, string(unknown)) {
		t.Errorf("propose to an unknown agent: %d %s, want it named", code, body)
	}
}

func TestNodeUIFlagsUsage(t *testing.T) {
	dir := shortTemp(t)
	home, _ := initHome(t, dir)
	runCLICases(t, []cliCase{
		{name: "remote address refused", args: []string{"--home", home, "node", "--ui", "0.0.0.0:7070"}, code: exitUsage, stderr: "--ui-allow-remote"},
		{name: "all interfaces refused", args: []string{"--home", home, "node", "--ui", ":7070"}, code: exitUsage, stderr: "not loopback"},
		{name: "no port", args: []string{"--home", home, "node", "--ui", "127.0.0.1"}, code: exitUsage, stderr: "host:port"},
		{name: "allow-remote alone", args: []string{"--home", home, "node", "--ui-allow-remote"}, code: exitUsage, stderr: "needs --ui"},
	})
	if _, err := os.Stat(filepath.Join(home, ui.TokenFileName)); err == nil {
		t.Fatal("a refused start wrote a token file")
	}
}

func TestEventsCommandFollowsTheNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a libp2p daemon")
	}
	dir := shortTemp(t)
	home, _ := initHome(t, dir)
	startDaemon(t, home)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, "--home", home, "events", "--json")
	cmd.Env = cleanEnv()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatalf("no event line: %v", sc.Err())
	}
	var ev struct {
		Kind string `json:"kind"`
	}
	decodeJSON(t, sc.Text(), &ev)
	if ev.Kind != "hello" {
		t.Fatalf("first event %s, want hello", sc.Text())
	}
	r := runCLI(t, nil, "--home", dir+"/nohome", "events")
	if r.code != exitError || !strings.Contains(r.stderr, "no node running") {
		t.Fatalf("events without a node: exit %d %s", r.code, r.stderr)
	}
}
