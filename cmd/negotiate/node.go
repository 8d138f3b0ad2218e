package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/negotiate-dev/negotiate/negotiate/policy"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/negotiate-dev/negotiate/internal/hooks"
	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/negotiate/transport"

	"github.com/urfave/cli/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/internal/control"
	"github.com/negotiate-dev/negotiate/internal/ui"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/sign"
)

const (
	// peerKeyFileName holds the libp2p transport identity, so the peer ID
	// survives restarts.
	peerKeyFileName = "peer.key"
	// metricsReadHeaderTimeout bounds a slow metrics client.
	metricsReadHeaderTimeout = 5 * time.Second
)

// defaultListen are the node's listen addresses without --listen: every
// interface, so LAN peers (mDNS) and bootstrap peers can reach it.
var defaultListen = []string{"/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"}

// nodeFile is <home>/node.json, written while a node runs.
type nodeFile struct {
	PID     int          `json:"pid"`
	AgentID sign.AgentID `json:"agent_id"`
	PeerID  string       `json:"peer_id"`
	Addrs   []string     `json:"addrs"`
	Socket  string       `json:"socket"`
	Metrics string       `json:"metrics,omitempty"` // URL of the metrics endpoint
	UI      string       `json:"ui,omitempty"`      // URL of the dashboard (log in with <home>/ui.token)
}

// startLine is what `node --json` prints at start: node.json plus the
// dashboard's login URL (which holds the token, so it stays out of node.json).
type startLine struct {
	nodeFile
	UILogin string `json:"ui_login,omitempty"`
}

// daemon is a running node as the CLI runs it: the libp2p host, the chain
// held open read-write, and the control server.
type daemon struct {
	home  home
	key   *sign.PrivateKey
	chain *chain.Chain
	host  *transport.Host
	node  *negotiate.Node
	srv   *control.Server
	log   *slog.Logger
	// events fans engine events and arriving direct messages out to
	// GET /v1/events (the dashboard, `negotiate events`).
	events *control.EventHub
}

// routeRegistrars add control routes to a starting node; other files of
// this command (e.g. the engine's session endpoints) append to it in init.
var routeRegistrars []func(d *daemon, srv *control.Server)

func nodeCommand() *cli.Command {
	return &cli.Command{
		Name:  "node",
		Usage: "run the node daemon in the foreground (stop with Ctrl-C or SIGTERM)",
		Description: "Starts the libp2p host (TCP + QUIC, DHT, mDNS), holds the chain open and\n" +
			"serves the control API on <home>/node.sock for the other commands. Prints\n" +
			"the agent ID, peer ID and listen multiaddrs (--json: one object), writes\n" +
			"<home>/node.json, and logs to stderr.",
		Flags: withJSON(
			&cli.StringSliceFlag{Name: "listen", Usage: "listen `MULTIADDR` (repeatable; default all interfaces, TCP and QUIC, random ports)"},
			&cli.StringSliceFlag{Name: "bootstrap", Usage: "bootstrap peer `MULTIADDR` with /p2p/<peer-id> (repeatable)"},
			&cli.BoolFlag{Name: "mdns", Value: true, Usage: "discover peers on the LAN by multicast DNS"},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics on `ADDR` (host:port) at /metrics"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "policy", Usage: "decide proposals unattended with the policy in `FILE` (YAML or JSON, see docs/policy.md)"},
			&cli.StringFlag{Name: "ui", Usage: "serve the web dashboard on `ADDR` (host:port, loopback unless --ui-allow-remote; e.g. 127.0.0.1:7070); prints its login URL"},
			&cli.BoolFlag{Name: "ui-allow-remote", Usage: "let --ui listen on a non-loopback address (anyone who can reach it still needs the token)"},
			&cli.BoolFlag{Name: "allow-warranted", Usage: "take and make sessions with agents that have a warrant for equivocation against them (refused by default)"},
			&cli.DurationFlag{Name: "keep-ended", Value: negotiate.DefaultEndedRetention, Usage: "keep an ended session in memory this `LONG` after it ended and its deadline passed; then only its checkpoint on disk answers for it (0: keep every session in memory)"},
		),
		Action: runNode,
	}
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, usageErr("--log-level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

func runNode(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	h, err := homeOf(c)
	if err != nil {
		return err
	}
	level, err := parseLevel(c.String("log-level"))
	if err != nil {
		return err
	}
	keepEnded := c.Duration("keep-ended")
	switch {
	case keepEnded < 0:
		return usageErr("--keep-ended %s: give a duration of 0 or more (0 keeps every session in memory)", keepEnded)
	case keepEnded == 0:
		keepEnded = -1 // NodeConfig: negative keeps every session
	}
	if n := len(h.socket()); n > maxSocketPath {
		return usageErr("the control socket path %s is %d bytes, the limit is %d: use a shorter --home", h.socket(), n, maxSocketPath)
	}
	log := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: level}))
	uiAddr, uiRemote := c.String("ui"), c.Bool("ui-allow-remote")
	if uiAddr != "" {
		if err := ui.CheckListenAddr(uiAddr, uiRemote); err != nil {
			return usageErr("--ui: %v", err)
		}
	} else if uiRemote {
		return usageErr("--ui-allow-remote needs --ui ADDR")
	}
	key, err := h.loadKey()
	if err != nil {
		return err
	}
	if cl, err := h.dialNode(c.Context); err == nil {
		cl.Close()
		return fmt.Errorf("a node already runs for home %s (socket %s): stop it first", h.dir, h.socket())
	}
	ch, err := chain.Open(h.chain(), chain.Options{})
	if err != nil {
		return fmt.Errorf("open chain: %w", err)
	}
	defer func() {
		if err := ch.Close(); err != nil {
			log.Error("close the chain: its journal keeps what the chain file lacks, and the next start replays it", "err", err)
		}
	}()
	if ch.AgentID() != key.AgentID() {
		return fmt.Errorf("chain %s belongs to agent %s but the key file is agent %s: the home is damaged", h.chain(), ch.AgentID(), key.AgentID())
	}
	listen := c.StringSlice("listen")
	if len(listen) == 0 {
		listen = defaultListen
	}
	ctx := c.Context
	var decider negotiate.Policy
	if path := c.String("policy"); path != "" {
		p, err := policy.LoadFile(path)
		if err != nil {
			return usageErr("--policy: %v", err)
		}
		decider = p
	}
	crashHook, err := crashHookFromEnv()
	if err != nil {
		return err
	}
	if crashHook != nil {
		ctx = hooks.With(ctx, &hooks.Hooks{Crash: crashHook})
	}
	events := control.NewEventHub()
	sm := newSessionMetrics()
	node, err := negotiate.StartNode(ctx, negotiate.NodeConfig{
		Key:   key,
		Chain: ch,
		Host: transport.Config{
			PeerKeyFile: filepath.Join(h.dir, peerKeyFileName),
			Listen:      listen,
			Bootstrap:   c.StringSlice("bootstrap"),
			MDNS:        c.Bool("mdns"),
			Logger:      log,
		},
		Policy:         decider,
		Logger:         log,
		EndedRetention: keepEnded,
		OnEvent: func(ev negotiate.Event) {
			sm.onEvent(ev)
			events.Publish(controlEvent(ev))
		},
		WarrantDir:     filepath.Join(h.dir, warrantsDirName),
		AllowWarranted: c.Bool("allow-warranted"),
	})
	if err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	defer node.Close()
	host := node.Host()
	d := &daemon{home: h, key: key, chain: ch, host: host, node: node, log: log, events: events}

	local := control.NewLocal(ch)
	local.VerifyOptions = chain.VerifyOptions{CheckPayload: engine.CheckAgreementEntry}
	local.DescribeRecord = describeRecord
	local.WriteError = func() string { return writeFailureText(node.WriteFailure()) }
	local.Behind = func() string {
		if err := node.Behind(); err != nil {
			return err.Error()
		}
		return ""
	}
	d.srv = control.NewServer(d, control.Options{
		Chain:    local,
		Classify: controlKind,
		Logger:   log,
		Events:   events,
	})
	for _, reg := range routeRegistrars {
		reg(d, d.srv)
	}
	ln, err := control.Listen(h.socket())
	if err != nil {
		return err
	}
	srvCtx, stopSrv := context.WithCancel(context.Background())
	defer stopSrv()
	srvDone := make(chan error, 1)
	go func() { srvDone <- d.srv.Serve(srvCtx, ln) }()
	go watchInbox(srvCtx, host, events)

	var metricsURL string
	if addr := c.String("metrics"); addr != "" {
		mln, err := net.Listen("tcp", addr)
		if err != nil {
			stopSrv()
			<-srvDone
			return usageErr("--metrics %q: %v", addr, err)
		}
		ms := &http.Server{Handler: newMetricsHandler(d, sm), ReadHeaderTimeout: metricsReadHeaderTimeout}
		go ms.Serve(mln)
		defer ms.Close()
		metricsURL = "http://" + mln.Addr().String() + "/metrics"
	}

	var uiURL, uiLogin string
	if uiAddr != "" {
		url, login, err := d.startUI(srvCtx, uiAddr, uiRemote)
		if err != nil {
			stopSrv()
			<-srvDone
			return err
		}
		uiURL, uiLogin = url, login
	}

	nf := nodeFile{PID: os.Getpid(), AgentID: key.AgentID(), PeerID: host.PeerID().String(), Addrs: host.Addrs(), Socket: h.socket(), Metrics: metricsURL, UI: uiURL}
	if err := writeNodeFile(h.nodeFile(), nf); err != nil {
		log.Warn("cannot write node.json", "err", err)
	}
	defer os.Remove(h.nodeFile())

	if wantJSON(c) {
		printJSON(c, startLine{nodeFile: nf, UILogin: uiLogin})
	} else {
		w := c.App.Writer
		fmt.Fprintf(w, "agent %s\npeer %s\n", nf.AgentID, nf.PeerID)
		for _, a := range nf.Addrs {
			fmt.Fprintf(w, "addr %s\n", a)
		}
		if metricsURL != "" {
			fmt.Fprintf(w, "metrics %s\n", metricsURL)
		}
		fmt.Fprintf(w, "control %s\n", h.socket())
		if uiLogin != "" {
			fmt.Fprintf(w, "ui %s\n", uiLogin)
		}
	}
	log.Info("node running", "agent", key.AgentID(), "peer", nf.PeerID, "home", h.dir)

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("stopping node", "reason", "signal")
	case serveErr = <-srvDone:
		srvDone <- serveErr
		log.Error("control server failed", "err", serveErr)
	}
	stopSrv()
	if err := <-srvDone; err != nil && serveErr == nil {
		log.Warn("control server shutdown", "err", err)
	}
	os.Remove(h.socket()) // Serve's listener close removes it; be sure
	if err := node.Close(); err != nil {
		log.Warn("node close", "err", err)
	}
	log.Info("node stopped")
	return serveErr
}

// writeFailureText says what a failed durable write means for the
// operator ("" for none).
func writeFailureText(f *negotiate.WriteFailure) string {
	if f == nil {
		return ""
	}
	if f.Stopped {
		return fmt.Sprintf("%s: durable write failed, the node stopped its engine: %s; fix the cause and restart the node", f.At.UTC().Format(time.RFC3339), f.Err)
	}
	return fmt.Sprintf("%s: session %s went back to its last durable state, the node carries on once there is room (no restart needed): %s", f.At.UTC().Format(time.RFC3339), f.Session, f.Err)
}

// writeNodeFile writes node.json (0600) via a temporary file and rename.
func writeNodeFile(path string, nf nodeFile) error {
	data, err := json.MarshalIndent(nf, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Identity implements control.Node.
func (d *daemon) Identity(ctx context.Context) (control.Identity, error) {
	pub := d.key.Public()
	return control.Identity{
		AgentID:   d.key.AgentID(),
		Scheme:    pub.SchemeName(),
		PublicKey: pub.Bytes(),
		PeerID:    d.host.PeerID().String(),
		Addrs:     d.host.Addrs(),
		PID:       os.Getpid(),
	}, nil
}

// Peers implements control.Messenger.
func (d *daemon) Peers(ctx context.Context) (control.Peers, error) {
	out := control.Peers{Connected: []control.Peer{}, Agents: []control.KnownAgent{}}
	for _, p := range d.host.Peers() {
		out.Connected = append(out.Connected, control.Peer{PeerID: p.ID, AgentID: p.Agent, Addrs: p.Addrs})
	}
	for _, a := range d.host.KnownAgents() {
		out.Agents = append(out.Agents, control.KnownAgent{AgentID: a.AgentID, PeerID: a.PeerID, Addrs: a.Addrs})
	}
	return out, nil
}

// Ping implements control.Messenger.
func (d *daemon) Ping(ctx context.Context, to sign.AgentID) (control.PingResult, error) {
	rtt, err := d.host.Ping(ctx, to)
	if err != nil {
		return control.PingResult{}, err
	}
	res := control.PingResult{To: to, RTTMS: float64(rtt.Microseconds()) / 1000}
	for _, a := range d.host.KnownAgents() {
		if a.AgentID == to {
			res.PeerID = a.PeerID
		}
	}
	return res, nil
}

// Send implements control.Messenger. A refusal is a result with Accepted
// false and the receiver's reason, not an error.
func (d *daemon) Send(ctx context.Context, req control.SendRequest) (control.SendResult, error) {
	start := time.Now()
	r, err := d.host.Request(ctx, req.To, req.ContentType, []byte(req.Message))
	var refused *transport.RefusedError
	if errors.As(err, &refused) {
		return control.SendResult{To: req.To, Accepted: false, Reason: refused.Reason, RTTMS: ms(time.Since(start))}, nil
	}
	if err != nil {
		return control.SendResult{}, err
	}
	return control.SendResult{
		To:         req.To,
		Accepted:   true,
		Reply:      strings.ToValidUTF8(string(r.Payload), "\uFFFD"),
		ReceivedAt: r.ReceivedAt.UnixMilli(),
		RTTMS:      ms(r.RoundTrip),
	}, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Inbox implements control.Messenger.
func (d *daemon) Inbox(ctx context.Context) ([]control.InboxMessage, error) {
	items := d.host.Inbox()
	out := make([]control.InboxMessage, 0, len(items))
	for _, it := range items {
		out = append(out, control.InboxMessage{
			From:        it.From,
			ReceivedAt:  it.ReceivedAt.UnixMilli(),
			ContentType: it.ContentType,
			Message:     strings.ToValidUTF8(string(it.Payload), "\uFFFD"),
			Accepted:    true,
		})
	}
	return out, nil
}

// The metricsSource methods.
func (d *daemon) messagesIn() uint64          { return d.host.Stats().FramesIn }
func (d *daemon) messagesOut() uint64         { return d.host.Stats().FramesOut }
func (d *daemon) lookups() uint64             { return d.host.Stats().Lookups }
func (d *daemon) introduced() uint64          { return d.host.Stats().Introduced }
func (d *daemon) refusals() map[string]uint64 { return d.node.Refusals() }
func (d *daemon) warrantCount() int {
	ws, _ := d.node.Warrants(context.Background(), "", false)
	return len(ws)
}

func (d *daemon) lockAge() (time.Duration, bool) {
	l, ok := d.chain.Lock()
	if !ok {
		return 0, false
	}
	return max(time.Since(time.UnixMilli(l.Since)), 0), true
}

// sessionsWaitingOnPeer counts open sessions that wait on another agent.
func (d *daemon) sessionsWaitingOnPeer() int {
	self, n := d.key.AgentID(), 0
	for _, s := range d.node.Sessions(false) {
		for _, w := range s.WaitingOn {
			if w != self {
				n++
				break
			}
		}
	}
	return n
}
func (d *daemon) peerCount() int                { return len(d.host.Peers()) }
func (d *daemon) sessionCount() int             { return sessionCount(d) }
func (d *daemon) chainLength() uint64           { return d.chain.Length() }
func (d *daemon) chainStats() chain.CommitStats { return d.chain.CommitStats() }

// sessionCount reports sessions in progress; the engine replaces it.
var sessionCount = func(d *daemon) int { return 0 }

// crashEnv names the fault-injection variable: NEGOTIATE_CRASH_AT=<point>
// makes the node kill itself with SIGKILL at that protocol point (tests of
// crash recovery; see hooks.CrashPoints). Never set it in production.
const crashEnv = "NEGOTIATE_CRASH_AT"

func crashHookFromEnv() (func(point, session string) bool, error) {
	want := os.Getenv(crashEnv)
	if want == "" {
		return nil, nil
	}
	known := false
	for _, p := range hooks.CrashPoints {
		known = known || p == want
	}
	if !known {
		return nil, usageErr("%s=%q: use one of %s", crashEnv, want, strings.Join(hooks.CrashPoints, ", "))
	}
	return func(point, _ string) bool {
		if point == want {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
		return false
	}, nil
}
