package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/negotiate-dev/negotiate/internal/control"
)

// Process limits.
const (
	// nodeStartTimeout bounds how long a daemon may take to print its
	// identity line after it was started (a restart replays the journal
	// and resumes every open session first).
	nodeStartTimeout = 30 * time.Second
	// nodeStopTimeout bounds a clean stop after SIGTERM.
	nodeStopTimeout = 30 * time.Second
	// cliTimeout bounds one short CLI command (init, id, chain status).
	cliTimeout = 60 * time.Second
	// startAttempts is how often a (re)start is tried before the soak
	// gives up: a port picked free can be taken by another process.
	startAttempts = 5
)

// cli runs the negotiate binary.
type cli struct {
	bin string
}

// run runs the binary with args and returns its stdout; an exit status
// other than 0 is an *exec.ExitError wrapped with the command and its
// stderr.
func (c cli) run(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("negotiate %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// node is one daemon: its home, its fixed ports (kept across restarts so
// the other nodes' bootstrap addresses stay valid) and its process.
type node struct {
	index   int
	home    string
	agent   string
	tcpPort int
	udpPort int
	policy  string
	logPath string

	mu     sync.Mutex
	peerID string
	addrs  []string
	proc   *os.Process
	exited chan struct{} // closed when proc exited
	exit   error         // proc's exit error, set before exited closes
	starts int
}

// socket is the node's control socket.
func (n *node) socket() string { return filepath.Join(n.home, "node.sock") }

// client is a control API client for the node's socket.
func (n *node) client() *control.Client { return control.NewClient(n.socket()) }

// running reports whether the node's process is alive (as far as this
// driver knows: it is the only one that starts and kills it).
func (n *node) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// nodeInfo is the identity line `negotiate node --json` prints.
type nodeInfo struct {
	PID     int      `json:"pid"`
	AgentID string   `json:"agent_id"`
	PeerID  string   `json:"peer_id"`
	Addrs   []string `json:"addrs"`
}

// start starts the daemon with bootstrap addresses and waits for its
// identity line. The daemon's stderr is appended to its log file.
func (n *node) start(ctx context.Context, bin string, bootstrap []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil {
		select {
		case <-n.exited:
		default:
			return fmt.Errorf("node %d: already running (pid %d)", n.index, n.proc.Pid)
		}
	}
	args := []string{"--home", n.home, "node", "--json", "--mdns=false", "--log-level", "warn",
		"--listen", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", n.tcpPort),
		"--listen", fmt.Sprintf("/ip4/127.0.0.1/udp/%d/quic-v1", n.udpPort),
		"--policy", n.policy}
	for _, b := range bootstrap {
		args = append(args, "--bootstrap", b)
	}
	logf, err := os.OpenFile(n.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("node %d: open log: %w", n.index, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== soak: start %d at %s\n", n.starts+1, time.Now().UTC().Format(time.RFC3339Nano))
	// Not CommandContext: the driver decides when a daemon dies.
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("node %d: stdout pipe: %w", n.index, err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("node %d: start %s: %w", n.index, bin, err)
	}
	exited := make(chan struct{})
	lines := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		lines <- line
		io.Copy(io.Discard, r)
	}()
	go func() {
		err := cmd.Wait()
		n.mu.Lock()
		n.exit = err
		n.mu.Unlock()
		close(exited)
	}()
	n.proc, n.exited, n.exit = cmd.Process, exited, nil
	n.starts++
	timer := time.NewTimer(nodeStartTimeout)
	defer timer.Stop()
	var line string
	select {
	case line = <-lines:
	case <-timer.C:
		cmd.Process.Kill()
		return fmt.Errorf("node %d: no identity line within %s (log %s)", n.index, nodeStartTimeout, n.logPath)
	case <-ctx.Done():
		cmd.Process.Kill()
		return ctx.Err()
	}
	var info nodeInfo
	if err := json.Unmarshal([]byte(line), &info); err != nil || info.PeerID == "" {
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("node %d: did not start (%s): %s", n.index, exitText(n.exit), tailFile(n.logPath, 600))
	}
	n.peerID, n.addrs = info.PeerID, info.Addrs
	return nil
}

// kill sends SIGKILL and waits until the process is gone.
func (n *node) kill() error {
	n.mu.Lock()
	p, exited := n.proc, n.exited
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	if err := p.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("node %d: kill: %w", n.index, err)
	}
	<-exited
	return nil
}

// stop sends SIGTERM and waits for a clean exit; it kills the process
// and fails when it does not stop in time or exits with an error.
func (n *node) stop() error {
	n.mu.Lock()
	p, exited := n.proc, n.exited
	n.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-exited:
		return nil
	default:
	}
	if err := p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("node %d: SIGTERM: %w", n.index, err)
	}
	t := time.NewTimer(nodeStopTimeout)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		p.Kill()
		<-exited
		return fmt.Errorf("node %d: did not stop within %s of SIGTERM (killed; log %s)", n.index, nodeStopTimeout, n.logPath)
	}
	n.mu.Lock()
	err := n.exit
	n.mu.Unlock()
	if err != nil {
		return fmt.Errorf("node %d: stopped with %s: %s", n.index, exitText(err), tailFile(n.logPath, 600))
	}
	return nil
}

// exitText describes a process exit error.
func exitText(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

// tailFile returns the last max bytes of a file, for error messages.
func tailFile(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "(log: " + err.Error() + ")"
	}
	off := max
	if st.Size() < off {
		off = st.Size()
	}
	buf := make([]byte, off)
	if _, err := f.ReadAt(buf, st.Size()-off); err != nil && !errors.Is(err, io.EOF) {
		return "(log: " + err.Error() + ")"
	}
	return strings.TrimSpace(string(buf))
}

// freePort finds a port free for both TCP and UDP on 127.0.0.1. Another
// process can take it before the daemon binds it; start retries with a
// new port only on the first start (afterwards the port is part of the
// node's address that the others bootstrap from).
func freePort() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		return port, nil
	}
	return 0, errors.New("find a free port: no port free for both TCP and UDP after 50 tries")
}

// BuildBinary builds cmd/negotiate of this module into dir and returns
// its path. It runs `go build` from the current directory, which must be
// inside the module.
func BuildBinary(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "negotiate")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/negotiate-dev/negotiate/cmd/negotiate")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("soak: go build cmd/negotiate: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return bin, nil
}
