package main

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/sign"
)

// nodeStartTimeout bounds a daemon's start (listen, DHT, socket).
const nodeStartTimeout = 30 * time.Second

// daemonProc is a `negotiate node` process under test.
type daemonProc struct {
	home   string
	cmd    *exec.Cmd
	info   nodeFile
	line   string // the start line as printed (--json)
	mu     sync.Mutex
	stderr bytes.Buffer
	done   chan error
}

func (d *daemonProc) logs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

type lockedWriter struct{ d *daemonProc }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.d.mu.Lock()
	defer w.d.mu.Unlock()
	return w.d.stderr.Write(p)
}

// startDaemon runs `negotiate --home home node --json` on loopback without
// mDNS and waits for its start line.
func startDaemon(t *testing.T, home string, extra ...string) *daemonProc {
	t.Helper()
	return startDaemonEnv(t, home, nil, extra...)
}

// startDaemonEnv is startDaemon with extra environment variables.
func startDaemonEnv(t *testing.T, home string, env []string, extra ...string) *daemonProc {
	t.Helper()
	args := append([]string{"--home", home, "node", "--json", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false"}, extra...)
	d := &daemonProc{home: home, cmd: exec.Command(binPath, args...), done: make(chan error, 1)}
	d.cmd.Env = append(cleanEnv(), env...)
	d.cmd.Stderr = lockedWriter{d}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			<-d.done
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		for sc.Scan() {
		}
		d.done <- d.cmd.Wait()
	}()
	select {
	case line, ok := <-lines:
		if !ok {
			t.Fatalf("node exited before its start line: %s", d.logs())
		}
		decodeJSON(t, line, &d.info)
		d.line = line
	case <-time.After(nodeStartTimeout):
		t.Fatalf("node did not start in %s: %s", nodeStartTimeout, d.logs())
	}
	return d
}

// stop sends SIGTERM and checks a clean exit that removes socket and node.json.
func (d *daemonProc) stop(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("node exited with %v after SIGTERM: %s", err, d.logs())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("node did not stop within 15s of SIGTERM: %s", d.logs())
	}
	for _, f := range []string{socketFileName, nodeFileName} {
		if _, err := os.Stat(filepath.Join(d.home, f)); err == nil {
			t.Errorf("%s still exists after the node stopped", f)
		}
	}
}

// eventually retries f until it returns true or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := f()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %s; last: %s", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestTwoNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two libp2p daemons")
	}
	dir := shortTemp(t)
	homeA, idA := initHome(t, filepath.Join(dir, "a"))
	homeB, idB := initHome(t, filepath.Join(dir, "b"))
	a := startDaemon(t, homeA)
	if len(a.info.Addrs) == 0 || a.info.AgentID != idA || a.info.PeerID == "" {
		t.Fatalf("node A start line: %+v", a.info)
	}
	// node.json matches the start line.
	var nf nodeFile
	data, err := os.ReadFile(filepath.Join(homeA, nodeFileName))
	if err != nil {
		t.Fatal(err)
	}
	decodeJSON(t, string(data), &nf)
	if nf.PeerID != a.info.PeerID || nf.PID != a.cmd.Process.Pid {
		t.Errorf("node.json %+v does not match the running node %+v", nf, a.info)
	}
	if st, err := os.Stat(filepath.Join(homeA, socketFileName)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("socket: %v, mode %v; want 0600", err, st.Mode().Perm())
	}
	b := startDaemon(t, homeB, "--bootstrap", a.info.Addrs[0], "--metrics", "127.0.0.1:0", "--keep-ended", "1s")

	// Discovery is eventually consistent: wait until each resolves the other.
	for _, p := range []struct {
		home string
		to   sign.AgentID
	}{{homeA, idB}, {homeB, idA}} {
		eventually(t, 30*time.Second, "ping "+p.to.Short(), func() (bool, string) {
			r := runCLI(t, nil, "--home", p.home, "ping", string(p.to), "--timeout", "5s")
			return r.code == 0, r.stderr
		})
	}

	type pingLine struct {
		To    string  `json:"to"`
		RTTMS float64 `json:"rtt_ms"`
	}
	runCLICases(t, []cliCase{
		{name: "ping A to B twice", args: []string{"--home", homeA, "ping", "--count", "2", "--interval", "50ms", string(idB)}, stdout: "time=", check: func(t *testing.T, r result) {
			if n := strings.Count(r.stdout, "reply from"); n != 2 {
				t.Errorf("%d reply lines, want 2: %q", n, r.stdout)
			}
		}},
		{name: "ping B to A json, flags after the ID", args: []string{"--home", homeB, "ping", string(idA), "--json", "--count", "2", "--interval", "50ms"}, check: func(t *testing.T, r result) {
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			if len(lines) != 2 {
				t.Fatalf("%d lines, want 2: %q", len(lines), r.stdout)
			}
			for _, l := range lines {
				var p pingLine
				decodeJSON(t, l, &p)
				if p.To != string(idA) || p.RTTMS <= 0 {
					t.Errorf("ping line %+v", p)
				}
			}
		}},
		{name: "send A to B", args: []string{"--home", homeA, "send", "--to", string(idB), "hello", "from", "A"}, stdout: "ack from " + string(idB)},
		{name: "send B to A json", args: []string{"--home", homeB, "--json", "send", "--to", string(idA), "hello from B"}, check: func(t *testing.T, r result) {
			var s struct {
				To       string `json:"to"`
				Accepted bool   `json:"accepted"`
				Reply    string `json:"reply"`
			}
			decodeJSON(t, r.stdout, &s)
			if !s.Accepted || s.To != string(idA) || !strings.Contains(s.Reply, string(idA)) {
				t.Errorf("send result %+v", s)
			}
		}},
		{name: "inbox B", args: []string{"--home", homeB, "inbox", "--json"}, check: checkInbox(idA, "hello from A")},
		{name: "inbox A", args: []string{"--home", homeA, "inbox", "--json"}, check: checkInbox(idB, "hello from B")},
		{name: "inbox text", args: []string{"--home", homeA, "inbox"}, stdout: "hello from B"},
		{name: "peers json", args: []string{"--home", homeA, "peers", "--json"}, check: func(t *testing.T, r result) {
			var p struct {
				Connected []struct {
					PeerID string `json:"peer_id"`
				} `json:"connected"`
				Agents []struct {
					AgentID string `json:"agent_id"`
				} `json:"agents"`
			}
			decodeJSON(t, r.stdout, &p)
			found := false
			for _, c := range p.Connected {
				found = found || c.PeerID == b.info.PeerID
			}
			if !found {
				t.Errorf("A's connected peers %+v lack B %s", p.Connected, b.info.PeerID)
			}
		}},
		{name: "id while running", args: []string{"--home", homeA, "id", "--json"}, check: func(t *testing.T, r result) {
			var id nodeFile
			decodeJSON(t, r.stdout, &id)
			if id.PeerID != a.info.PeerID || len(id.Addrs) == 0 {
				t.Errorf("id --json %+v, want peer %s and addrs", id, a.info.PeerID)
			}
		}},
		{name: "chain status while running", args: []string{"--home", homeA, "chain", "status", "--json"}, check: checkStatus(idA, 1)},
		{name: "chain verify while running", args: []string{"--home", homeB, "chain", "verify"}, stdout: "chain sound"},
		{name: "chain export while running", args: []string{"--home", homeB, "chain", "export"}, stdout: string(idB)},
		{name: "negative --keep-ended", args: []string{"--home", homeA, "node", "--keep-ended", "-1s"}, code: 2, stderr: "--keep-ended -1s"},
		{name: "second node on the same home", args: []string{"--home", homeA, "node", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns=false"}, code: 1, stderr: "already runs"},
		{name: "send to an agent that is not running", args: []string{"--home", homeA, "send", "--timeout", "2s", "--to", string(mustNewID(t)), "hi"}, code: 4},
		{name: "ping an agent that is not running", args: []string{"--home", homeA, "ping", "--timeout", "2s", string(mustNewID(t))}, code: 4},
		{name: "bad agent ID", args: []string{"--home", homeA, "ping", "a" + strings.Repeat("b", 61)}, code: 2},
	})

	// Metrics count the messages B received.
	if b.info.Metrics == "" {
		t.Fatal("node B started with --metrics but reports no metrics URL")
	}
	body := httpGet(t, b.info.Metrics)
	for _, m := range []string{"negotiate_messages_in_total", "negotiate_peers 1", "negotiate_sessions 0", "negotiate_chain_length 1",
		"negotiate_chain_writes_total", "negotiate_chain_journal_syncs_total", "negotiate_chain_flushes_total"} {
		if !strings.Contains(body, m) {
			t.Errorf("metrics lack %q:\n%s", m, body)
		}
	}

	a.stop(t)
	b.stop(t)
	// With the node gone, chain commands read the file again, and node
	// commands say how to start one.
	if r := runCLI(t, nil, "--home", homeA, "chain", "status", "--json"); r.code != 0 {
		t.Errorf("chain status after stop: exit %d: %s", r.code, r.stderr)
	}
	if r := runCLI(t, nil, "--home", homeA, "peers"); r.code != 1 || !strings.Contains(r.stderr, "negotiate --home "+homeA+" node") {
		t.Errorf("peers after stop: exit %d: %s", r.code, r.stderr)
	}
}

func checkInbox(from sign.AgentID, msg string) func(t *testing.T, r result) {
	return func(t *testing.T, r result) {
		t.Helper()
		var ms []struct {
			From    string `json:"from"`
			Message string `json:"message"`
		}
		decodeJSON(t, r.stdout, &ms)
		for _, m := range ms {
			if m.From == string(from) && m.Message == msg {
				return
			}
		}
		t.Errorf("inbox %+v lacks %q from %s", ms, msg, from.Short())
	}
}

func mustNewID(t *testing.T) sign.AgentID {
	t.Helper()
	s, _ := sign.SchemeByName(sign.DefaultScheme)
	k, err := s.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.AgentID()
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
