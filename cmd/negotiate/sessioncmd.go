package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/negotiate/transport"

	"github.com/fxamacker/cbor/v2"
	"github.com/urfave/cli/v2"

	"github.com/negotiate-dev/negotiate/internal/control"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Session command limits.
const (
	// maxTermsFileBytes bounds a --terms file; terms must fit one wire frame anyway.
	maxTermsFileBytes = 1 << 20
	// proposePollInterval is how often `propose` checks progress.
	proposePollInterval = 100 * time.Millisecond
	// maxReceiptFileBytes bounds a receipt file read by `verify`.
	maxReceiptFileBytes = 4 << 20
)

func shortSession(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func init() {
	sessionCount = func(d *daemon) int { return len(d.node.Sessions(false)) }
	commandBuilders = append(commandBuilders, proposeCommand, decideCommand("accept"), decideCommand("reject"),
		decideCommand("counter"), decideCommand("abort"), sessionsCommand, showCommand, receiptCommand, verifyCommand)
	routeRegistrars = append(routeRegistrars, registerSessionRoutes)
}

// ---- wire types of the session routes ----

type proposeRequest struct {
	With      []sign.AgentID `json:"with"`
	Terms     map[string]any `json:"terms"`
	Witness   sign.AgentID   `json:"witness,omitempty"`
	TimeoutMS int64          `json:"timeout_ms"`
	MaxRounds uint32         `json:"max_rounds"`
	Offer     bool           `json:"offer,omitempty"`
}

type decideRequest struct {
	Action string         `json:"action"`
	Terms  map[string]any `json:"terms,omitempty"`
	Reason string         `json:"reason,omitempty"`
}

// sessionView is a session as the CLI shows it.
type sessionView struct {
	negotiate.SessionInfo
	TermsJSON   map[string]any `json:"terms"`
	CounterJSON map[string]any `json:"counter,omitempty"`
}

// outcomeView is the --json result of `propose`.
type outcomeView struct {
	Outcome    string         `json:"outcome"`
	Session    string         `json:"session"`
	RecordHash string         `json:"record_hash,omitempty"`
	Parties    []sign.AgentID `json:"parties"`
	Terms      map[string]any `json:"terms"`
	Rounds     uint32         `json:"rounds"`
	Reason     string         `json:"reason,omitempty"`
	WaitingOn  []sign.AgentID `json:"waiting_on,omitempty"`
}

// proposalView is a proposal waiting in the inbox.
type proposalView struct {
	Kind     string         `json:"kind"` // "proposal" (accept/reject/counter), "offer" (a signed offer: accept/reject) or "counter" (initiator decides)
	Session  string         `json:"session"`
	From     sign.AgentID   `json:"from"`
	Terms    map[string]any `json:"terms"`
	Round    uint32         `json:"round"`
	Parties  []sign.AgentID `json:"parties"`
	Deadline int64          `json:"deadline"` // unix ms
}

func termsJSON(raw cbor.RawMessage) map[string]any {
	if len(raw) == 0 {
		return nil
	}
	var m map[string]any
	if err := protocol.Unmarshal(raw, &m); err != nil {
		return map[string]any{"_error": err.Error()}
	}
	return m
}

func viewOf(s negotiate.SessionInfo) sessionView {
	return sessionView{SessionInfo: s, TermsJSON: termsJSON(s.Terms), CounterJSON: termsJSON(s.Counter)}
}

// ---- server side (runs in the node) ----

func registerSessionRoutes(d *daemon, srv *control.Server) {
	n := d.node
	srv.Handle("POST", "/v1/sessions", func(ctx context.Context, r *control.Request) (any, error) {
		var req proposeRequest
		if err := r.Decode(&req); err != nil {
			return nil, err
		}
		if err := checkProposeRequest(n.AgentID(), &req); err != nil {
			return nil, err
		}
		terms, err := encodeTermsMap(req.Terms)
		if err != nil {
			return nil, control.Errorf(control.KindBadRequest, "%v", err)
		}
		opts := negotiate.ProposeOptions{Timeout: time.Duration(req.TimeoutMS) * time.Millisecond, MaxRounds: req.MaxRounds, Witness: req.Witness, Offer: req.Offer}
		p, err := n.Propose(ctx, req.With, terms, opts)
		if err != nil {
			return nil, sessionErr(err)
		}
		return map[string]string{"session": p.ID()}, nil
	})
	srv.Handle("GET", "/v1/sessions", func(ctx context.Context, r *control.Request) (any, error) {
		out := []sessionView{}
		for _, s := range n.Sessions(r.Query("all") == "1") {
			out = append(out, viewOf(s))
		}
		return out, nil
	})
	srv.Handle("GET", "/v1/sessions/{id}", func(ctx context.Context, r *control.Request) (any, error) {
		s, err := n.Session(r.HTTP.PathValue("id"))
		if err != nil {
			return nil, sessionErr(err)
		}
		return viewOf(s), nil
	})
	srv.Handle("POST", "/v1/sessions/{id}/decide", func(ctx context.Context, r *control.Request) (any, error) {
		var req decideRequest
		if err := r.Decode(&req); err != nil {
			return nil, err
		}
		d := negotiate.Decision{Session: r.HTTP.PathValue("id"), Action: negotiate.Action(req.Action), Reason: req.Reason}
		if err := checkDecision(n, d, req); err != nil {
			return nil, err
		}
		if req.Terms != nil {
			t, err := encodeTermsMap(req.Terms)
			if err != nil {
				return nil, control.Errorf(control.KindBadRequest, "%v", err)
			}
			d.Terms = t
		}
		if err := n.Decide(d); err != nil {
			return nil, sessionErr(err)
		}
		return map[string]string{"session": d.Session, "action": req.Action}, nil
	})
	srv.Handle("GET", "/v1/sessions/{id}/receipt", func(ctx context.Context, r *control.Request) (any, error) {
		id := r.HTTP.PathValue("id")
		if err := protocol.CheckSessionID(id); err != nil {
			return nil, control.Errorf(control.KindBadRequest, "%q is not a session ID: %v", id, err)
		}
		s, err := n.Session(id)
		if err != nil {
			return nil, sessionErr(err)
		}
		if s.State != negotiate.StateCommitted {
			return nil, control.Errorf(control.KindConflict, "session %s has no receipt: it is %s, and only a committed session has one", id, stateOf(s))
		}
		rec, _, err := n.Receipt(id)
		if err != nil {
			return nil, sessionErr(err)
		}
		return &control.Stream{ContentType: "application/cbor", Write: func(w io.Writer) error {
			_, err := w.Write(rec)
			return err
		}}, nil
	})
	srv.Handle("GET", "/v1/proposals", func(ctx context.Context, r *control.Request) (any, error) {
		return pendingProposals(n), nil
	})
}

// checkProposeRequest refuses, as a bad request, what the engine would
// refuse or misread, before anything starts.
func checkProposeRequest(self sign.AgentID, req *proposeRequest) error {
	if len(req.With) == 0 {
		return control.Errorf(control.KindBadRequest, "name at least one other agent in \"with\"")
	}
	seen := map[sign.AgentID]bool{}
	for i, w := range req.With {
		id, err := sign.ParseAgentID(string(w))
		if err != nil {
			return control.Errorf(control.KindBadRequest, "with[%d]: %v", i, err)
		}
		if id == self {
			return control.Errorf(control.KindBadRequest, "with[%d] is this node's own agent: list only the other parties", i)
		}
		if seen[id] {
			return control.Errorf(control.KindBadRequest, "with[%d]: agent %s is listed twice", i, id.Short())
		}
		seen[id] = true
		req.With[i] = id
	}
	if req.Witness != "" {
		if _, err := sign.ParseAgentID(string(req.Witness)); err != nil {
			return control.Errorf(control.KindBadRequest, "witness: %v", err)
		}
	}
	if req.TimeoutMS < 0 {
		return control.Errorf(control.KindBadRequest, "timeout_ms %d is negative (0 means the default)", req.TimeoutMS)
	}
	if req.MaxRounds > protocol.MaxRounds {
		return control.Errorf(control.KindBadRequest, "max_rounds %d is over the limit %d", req.MaxRounds, protocol.MaxRounds)
	}
	if req.Offer && (req.Witness != "" || req.MaxRounds > 1) {
		return control.Errorf(control.KindBadRequest, "a signed offer is one round with no witness: drop witness and max_rounds, or propose without offer")
	}
	return nil
}

// checkDecision refuses a decision that cannot apply, with the reason, before
// the engine sees it: a malformed session ID or action is a bad request, a
// session that ended or waits for nothing from this agent a conflict.
func checkDecision(n *negotiate.Node, d negotiate.Decision, req decideRequest) error {
	if err := protocol.CheckSessionID(d.Session); err != nil {
		return control.Errorf(control.KindBadRequest, "%q is not a session ID: %v", d.Session, err)
	}
	switch d.Action {
	case negotiate.ActAccept, negotiate.ActReject, negotiate.ActAbort:
		if req.Terms != nil {
			return control.Errorf(control.KindBadRequest, "%s takes no terms (only counter does)", d.Action)
		}
	case negotiate.ActCounter:
		if len(req.Terms) == 0 {
			return control.Errorf(control.KindBadRequest, "counter needs terms: give at least one")
		}
	default:
		return control.Errorf(control.KindBadRequest, "unknown action %q: use accept, reject, counter or abort", req.Action)
	}
	s, err := n.Session(d.Session)
	if err != nil {
		return sessionErr(err)
	}
	if s.State != "" {
		return control.Errorf(control.KindConflict, "session %s already ended (%s): nothing to %s", d.Session, s.State, d.Action)
	}
	return nil
}

func stateOf(s negotiate.SessionInfo) string {
	if s.State != "" {
		return string(s.State)
	}
	return "still " + string(s.Phase)
}

func pendingProposals(n *negotiate.Node) []proposalView {
	out := []proposalView{}
	for _, s := range n.Sessions(false) {
		if !s.Pending {
			continue
		}
		p := proposalView{Kind: "proposal", Session: s.ID, From: s.Initiator, Terms: termsJSON(s.Terms), Round: s.Round, Parties: s.Parties, Deadline: s.Deadline}
		if s.Role == engine.RoleInitiator {
			p.Kind, p.From, p.Terms = "counter", s.CounterBy, termsJSON(s.Counter)
		} else if s.Offer {
			p.Kind = "offer"
		}
		out = append(out, p)
	}
	return out
}

// sessionErr maps engine errors to control error kinds (and so exit codes).
func sessionErr(err error) error {
	switch {
	case errors.Is(err, negotiate.ErrUnknownSession):
		return control.Errorf(control.KindNotFound, "%v", err)
	case errors.Is(err, negotiate.ErrNotYourTurn), errors.Is(err, negotiate.ErrUnsafeAbort), errors.Is(err, negotiate.ErrBusy):
		return control.Errorf(control.KindConflict, "%v", err)
	case errors.Is(err, negotiate.ErrUnreachable), errors.Is(err, negotiate.ErrAgentNotFound):
		return control.Errorf(control.KindUnreachable, "%v", err)
	case errors.Is(err, transport.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return control.Errorf(control.KindTimeout, "%v", err)
	}
	return err
}

func encodeTermsMap(m map[string]any) (cbor.RawMessage, error) {
	if len(m) == 0 {
		return nil, fmt.Errorf("terms are empty: give at least one --term key=value or a --terms file")
	}
	return protocol.EncodeTerms(normalizeJSON(m))
}

// normalizeJSON turns json.Number and float64 integers into int64 so that
// "price=10" and {"price": 10} give the same CBOR terms.
func normalizeJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalizeJSON(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalizeJSON(e)
		}
		return out
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case float64:
		if x == float64(int64(x)) && x < 1e15 && x > -1e15 {
			return int64(x)
		}
		return x
	}
	return v
}

// ---- client side ----

// parseTerms reads --term key=value pairs and/or a --terms JSON file.
func parseTerms(c *cli.Context) (map[string]any, error) {
	m := map[string]any{}
	if path := c.String("terms"); path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, usageErr("--terms: %v", err)
		}
		defer f.Close()
		data, err := io.ReadAll(io.LimitReader(f, maxTermsFileBytes+1))
		if err != nil {
			return nil, usageErr("--terms %s: %v", path, err)
		}
		if len(data) > maxTermsFileBytes {
			return nil, usageErr("--terms %s is over %d bytes", path, maxTermsFileBytes)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			return nil, usageErr("--terms %s must hold one JSON object: %v", path, err)
		}
	}
	for _, kv := range c.StringSlice("term") {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, usageErr("--term %q: write key=value, e.g. --term price=10", kv)
		}
		m[k] = parseTermValue(v)
	}
	if len(m) == 0 {
		return nil, usageErr("no terms: give --term key=value (repeatable) or --terms FILE.json")
	}
	return normalizeJSON(m).(map[string]any), nil
}

// parseTermValue reads integers, decimals and booleans as such, and
// anything else as text. Quote a value ("'10'") to keep it text.
func parseTermValue(v string) any {
	if len(v) >= 2 && (v[0] == '\'' && v[len(v)-1] == '\'' || v[0] == '"' && v[len(v)-1] == '"') {
		return v[1 : len(v)-1]
	}
	if i, err := strconv.ParseInt(v, 10, 64); err == nil {
		return i
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil && !strings.ContainsAny(v, "xXnN") {
		return f
	}
	if b, err := strconv.ParseBool(v); err == nil && (v == "true" || v == "false") {
		return b
	}
	return v
}

func proposeCommand() *cli.Command {
	return &cli.Command{
		Name:      "propose",
		Usage:     "propose terms to one or more agents and countersign them when all accept",
		ArgsUsage: " ",
		Description: "Needs a running node. Prints progress per phase and the outcome.\n" +
			"Exit 0 committed, 3 rejected, 4 aborted or timed out (also when an agent is\n" +
			"unreachable), 1 when the node cannot start it now (--offer while this agent's\n" +
			"chain is locked by another session). --json: {\"outcome\",\"session\",\"record_hash\",\"parties\",\"terms\",\"rounds\"}.\n" +
			"Values of --term are numbers, true/false or text ('quoted' stays text).\n" +
			"--offer signs the terms at once: the others accept (by signing) or reject,\n" +
			"and a 2-party offer commits in one round trip.",
		Flags: withJSON(
			&cli.StringSliceFlag{Name: "with", Usage: "`AGENT-ID` of another party (repeatable)"},
			&cli.StringSliceFlag{Name: "term", Usage: "a term as `key=value` (repeatable)"},
			&cli.StringFlag{Name: "terms", Usage: "terms as a JSON object in `FILE`"},
			&cli.StringFlag{Name: "witness", Usage: "`AGENT-ID` of a witness that decides commit or abort first-come"},
			&cli.DurationFlag{Name: "timeout", Value: 60 * time.Second, Usage: "session deadline"},
			&cli.UintFlag{Name: "max-rounds", Usage: "round cap (default 8)"},
			&cli.BoolFlag{Name: "offer", Usage: "make it a signed offer: sign now, one round, the others accept or reject (no counter, no witness); commits in one round trip, and this chain stays locked until all answered"},
			&cli.BoolFlag{Name: "wait", Value: true, Usage: "wait for the outcome (--wait=false prints the session ID and returns)"},
		),
		Action: runPropose,
	}
}

func runPropose(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	req := proposeRequest{TimeoutMS: c.Duration("timeout").Milliseconds(), MaxRounds: uint32(c.Uint("max-rounds")), Offer: c.Bool("offer")}
	if req.Offer && (c.String("witness") != "" || c.Uint("max-rounds") > 1) {
		return usageErr("--offer is one round with no witness: drop --witness and --max-rounds, or propose without --offer")
	}
	if c.Duration("timeout") <= 0 {
		return usageErr("--timeout must be positive")
	}
	if c.Uint("max-rounds") > protocol.MaxRounds {
		return usageErr("--max-rounds is at most %d", protocol.MaxRounds)
	}
	for _, w := range c.StringSlice("with") {
		id, err := parseAgentArg("--with", w)
		if err != nil {
			return err
		}
		req.With = append(req.With, id)
	}
	if len(req.With) == 0 {
		return usageErr("name the other party with --with AGENT-ID (repeatable)")
	}
	if w := c.String("witness"); w != "" {
		id, err := parseAgentArg("--witness", w)
		if err != nil {
			return err
		}
		req.Witness = id
	}
	terms, err := parseTerms(c)
	if err != nil {
		return err
	}
	req.Terms = terms
	return withNode(c, func(cl *control.Client) error {
		var started map[string]string
		ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout")+5*time.Second)
		defer cancel()
		if err := cl.Do(ctx, "POST", "/v1/sessions", req, &started); err != nil {
			return err
		}
		id := started["session"]
		if !c.Bool("wait") {
			if wantJSON(c) {
				return printJSON(c, map[string]string{"session": id})
			}
			fmt.Fprintln(c.App.Writer, id)
			return nil
		}
		if !wantJSON(c) {
			fmt.Fprintf(c.App.ErrWriter, "session %s: proposed to %d agent(s)\n", id, len(req.With))
		}
		return waitOutcome(c, cl, id, c.Duration("timeout"))
	})
}

// waitOutcome polls a session, printing phase changes, until it ends.
func waitOutcome(c *cli.Context, cl *control.Client, id string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout + 2*time.Second)
	lastPhase, lastRound := negotiate.Phase(""), uint32(0)
	for {
		var s sessionView
		if err := cl.Do(c.Context, "GET", "/v1/sessions/"+id, nil, &s); err != nil {
			return err
		}
		if !wantJSON(c) && (s.Phase != lastPhase || s.Round != lastRound) && s.State == "" {
			fmt.Fprintf(c.App.ErrWriter, "session %s: %s, round %d, waiting on %s\n", shortSession(id), s.Phase, s.Round, idList(s.WaitingOn))
			lastPhase, lastRound = s.Phase, s.Round
		}
		if s.State != "" || time.Now().After(deadline) {
			return reportOutcome(c, s)
		}
		select {
		case <-c.Context.Done():
			return c.Context.Err()
		case <-time.After(proposePollInterval):
		}
	}
}

func reportOutcome(c *cli.Context, s sessionView) error {
	v := outcomeView{Outcome: string(s.State), Session: s.ID, RecordHash: s.RecordHash, Parties: s.Parties,
		Terms: s.TermsJSON, Rounds: s.Round, Reason: s.Reason}
	var err error
	switch s.State {
	case negotiate.StateCommitted:
	case negotiate.StateRejected:
		err = fmt.Errorf("%w: session %s rejected: %s", errRefused, s.ID, s.Reason)
	case negotiate.StateAborted:
		err = fmt.Errorf("%w: session %s aborted: %s", errTimeout, s.ID, s.Reason)
	default:
		v.Outcome, v.WaitingOn = "timeout", s.WaitingOn
		err = fmt.Errorf("%w: session %s is still %s after the timeout, waiting on %s; it resolves by itself (see `negotiate show %s`)",
			errTimeout, s.ID, s.Phase, idList(s.WaitingOn), s.ID)
	}
	if wantJSON(c) {
		if perr := printJSON(c, v); perr != nil {
			return perr
		}
		if err != nil {
			return silent(err)
		}
		return nil
	}
	if s.State == negotiate.StateCommitted {
		fmt.Fprintf(c.App.Writer, "committed  session %s  record %s  rounds %d\n", s.ID, s.RecordHash, s.Round)
	}
	return err
}

func idList(ids []sign.AgentID) string {
	if len(ids) == 0 {
		return "nobody"
	}
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = id.Short()
	}
	return strings.Join(parts, ", ")
}

func decideCommand(action string) func() *cli.Command {
	return func() *cli.Command {
		cmd := &cli.Command{
			Name:      action,
			ArgsUsage: "SESSION",
			Flags:     withJSON(),
		}
		switch action {
		case "accept":
			cmd.Usage = "accept the pending round of a session (or, as initiator, a counter)"
		case "reject":
			cmd.Usage = "reject a session"
			cmd.Flags = withJSON(&cli.StringFlag{Name: "reason", Usage: "why, shown to the other parties"})
		case "counter":
			cmd.Usage = "answer a proposal with other terms"
			cmd.Flags = withJSON(&cli.StringSliceFlag{Name: "term", Usage: "a term as `key=value` (repeatable)"},
				&cli.StringFlag{Name: "terms", Usage: "terms as a JSON object in `FILE`"})
		case "abort":
			cmd.Usage = "abort a session while that is still safe (before this agent signed)"
			cmd.Flags = withJSON(&cli.StringFlag{Name: "reason", Usage: "why"})
		}
		cmd.Action = func(c *cli.Context) error {
			id, err := oneArg(c, fmt.Sprintf("usage: negotiate %s SESSION (see `negotiate inbox`)", action))
			if err != nil {
				return err
			}
			if err := protocol.CheckSessionID(id); err != nil {
				return usageErr("%q is not a session ID: %v", id, err)
			}
			req := decideRequest{Action: action, Reason: c.String("reason")}
			if action == "counter" {
				t, err := parseTerms(c)
				if err != nil {
					return err
				}
				req.Terms = t
			}
			return withNode(c, func(cl *control.Client) error {
				var res map[string]string
				if err := cl.Do(c.Context, "POST", "/v1/sessions/"+id+"/decide", req, &res); err != nil {
					return err
				}
				if wantJSON(c) {
					return printJSON(c, res)
				}
				fmt.Fprintf(c.App.Writer, "%s: %s\n", action, id)
				return nil
			})
		}
		return cmd
	}
}

func sessionsCommand() *cli.Command {
	return &cli.Command{
		Name:  "sessions",
		Usage: "list open sessions (--all: also finished ones)",
		Flags: withJSON(&cli.BoolFlag{Name: "all", Usage: "include finished sessions"}),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			return withNode(c, func(cl *control.Client) error {
				path := "/v1/sessions"
				if c.Bool("all") {
					path += "?all=1"
				}
				var list []sessionView
				if err := cl.Do(c.Context, "GET", path, nil, &list); err != nil {
					return err
				}
				var st control.ChainStatus
				if err := cl.Do(c.Context, "GET", "/v1/chain/status", nil, &st); err == nil {
					for _, w := range []string{st.WriteError, st.FlushError} {
						if w != "" {
							fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", w)
						}
					}
				}
				if list == nil {
					list = []sessionView{}
				}
				if wantJSON(c) {
					return printJSON(c, list)
				}
				if len(list) == 0 {
					fmt.Fprintln(c.App.ErrWriter, "no sessions")
				}
				for _, s := range list {
					state := string(s.Phase)
					if s.State != "" {
						state = string(s.State)
					}
					fmt.Fprintf(c.App.Writer, "%s  %-11s %-11s round %d  waiting on %s since %s\n", s.ID, s.Role, state, s.Round,
						idList(s.WaitingOn), time.UnixMilli(s.Since).UTC().Format(time.RFC3339))
				}
				return nil
			})
		},
	}
}

func showCommand() *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "show one session: phase, round, parties, last messages, whom it waits on, the lock",
		ArgsUsage: "SESSION",
		Flags:     withJSON(),
		Action: func(c *cli.Context) error {
			arg, err := oneArg(c, "usage: negotiate show SESSION")
			if err != nil {
				return err
			}
			return withNode(c, func(cl *control.Client) error {
				var s sessionView
				if err := cl.Do(c.Context, "GET", "/v1/sessions/"+arg, nil, &s); err != nil {
					return err
				}
				if wantJSON(c) {
					return printJSON(c, s)
				}
				w := c.App.Writer
				state := string(s.Phase)
				if s.State != "" {
					state = string(s.State)
				}
				fmt.Fprintf(w, "session    %s\nrole       %s\nstate      %s (since %s)\nround      %d of %d\n", s.ID, s.Role, state,
					time.UnixMilli(s.Since).UTC().Format(time.RFC3339), s.Round, s.MaxRounds)
				terms, _ := json.Marshal(s.TermsJSON)
				fmt.Fprintf(w, "terms      %s\ndeadline   %s\n", terms, time.UnixMilli(s.Deadline).UTC().Format(time.RFC3339))
				if s.RecordHash != "" {
					fmt.Fprintf(w, "record     %s\n", s.RecordHash)
				}
				if s.Reason != "" {
					fmt.Fprintf(w, "reason     %s\n", s.Reason)
				}
				fmt.Fprintf(w, "waiting on %s\n", idList(s.WaitingOn))
				if s.LockHolder != "" {
					fmt.Fprintf(w, "chain lock held by session %s\n", s.LockHolder)
				} else {
					fmt.Fprintln(w, "chain lock free")
				}
				fmt.Fprintln(w, "parties:")
				parties := append([]sign.AgentID(nil), s.Parties...)
				sort.SliceStable(parties, func(i, j int) bool { return false })
				for _, p := range parties {
					last := "nothing yet"
					if a, ok := s.Last[p]; ok {
						last = fmt.Sprintf("%s at %s", a.Type, time.UnixMilli(a.At).UTC().Format(time.RFC3339Nano))
					}
					fmt.Fprintf(w, "  %s  last: %s\n", p, last)
				}
				return nil
			})
		},
	}
}

func receiptCommand() *cli.Command {
	return &cli.Command{
		Name:      "receipt",
		Usage:     "write the commit certificate of a committed session (CBOR) for offline `negotiate verify`",
		ArgsUsage: "SESSION",
		Flags:     withJSON(&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to `FILE` (default stdout)"}),
		Action: func(c *cli.Context) error {
			arg, err := oneArg(c, "usage: negotiate receipt SESSION -o FILE")
			if err != nil {
				return err
			}
			return withNode(c, func(cl *control.Client) error {
				var buf bytes.Buffer
				if err := cl.Stream(c.Context, "GET", "/v1/sessions/"+arg+"/receipt", &buf); err != nil {
					return err
				}
				out := c.String("output")
				if out == "" {
					_, err := c.App.Writer.Write(buf.Bytes())
					return err
				}
				if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
					return fmt.Errorf("write receipt: %w", err)
				}
				if wantJSON(c) {
					return printJSON(c, map[string]any{"session": arg, "file": out, "bytes": buf.Len()})
				}
				fmt.Fprintf(c.App.Writer, "receipt for %s written to %s (%d bytes)\n", arg, out, buf.Len())
				return nil
			})
		},
	}
}

// verifyView is the --json output of `verify`.
type verifyView struct {
	OK    bool   `json:"ok"`
	Kind  string `json:"kind"` // "receipt" or "warrant"
	Error string `json:"error,omitempty"`
	// a warrant: against whom, what it proves, its hash
	Agent       sign.AgentID `json:"agent,omitempty"`
	Proves      string       `json:"proves,omitempty"`
	WarrantHash string       `json:"warrant_hash,omitempty"`
	// a receipt
	Session    string         `json:"session,omitempty"`
	RecordHash string         `json:"record_hash,omitempty"`
	Parties    []sign.AgentID `json:"parties,omitempty"`
	Terms      map[string]any `json:"terms,omitempty"`
	Round      uint32         `json:"round,omitempty"`
	Witness    sign.AgentID   `json:"witness,omitempty"`
}

func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "verify a receipt or a warrant file offline: every signature and agent ID (no node, no network); the kind is detected",
		ArgsUsage: "FILE",
		Flags:     withJSON(),
		Action: func(c *cli.Context) error {
			arg, err := oneArg(c, "usage: negotiate verify FILE")
			if err != nil {
				return err
			}
			v, verr := verifyReceiptFile(arg)
			if wantJSON(c) {
				if err := printJSON(c, v); err != nil {
					return err
				}
				if verr != nil {
					return silent(verr)
				}
				return nil
			}
			if verr != nil {
				return verr
			}
			w := c.App.Writer
			if v.Kind == "warrant" {
				fmt.Fprintf(w, "warrant is valid\nagent    %s\nproves   %s\nhash     %s\n", v.Agent, v.Proves, v.WarrantHash)
				return nil
			}
			terms, _ := json.Marshal(v.Terms)
			fmt.Fprintf(w, "receipt is valid\nsession  %s\nrecord   %s\nround    %d\nterms    %s\nparties:\n", v.Session, v.RecordHash, v.Round, terms)
			for _, p := range v.Parties {
				fmt.Fprintf(w, "  %s  signed\n", p)
			}
			if v.Witness != "" {
				fmt.Fprintf(w, "witness  %s  decided commit\n", v.Witness)
			}
			return nil
		},
	}
}

func verifyReceiptFile(path string) (verifyView, error) {
	f, err := os.Open(path)
	if err != nil {
		return verifyView{Error: err.Error()}, fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	limit := max(maxReceiptFileBytes, protocol.MaxWarrantBytes)
	data, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return verifyView{Error: err.Error()}, fmt.Errorf("verify: read %s: %w", path, err)
	}
	if fileKind(data) == "warrant" {
		return verifyWarrant(path, data)
	}
	if len(data) > maxReceiptFileBytes {
		err := fmt.Errorf("verify: %s is over %d bytes: not a receipt", path, maxReceiptFileBytes)
		return verifyView{Error: err.Error()}, err
	}
	rec, err := engine.DecodeRecord(data)
	if err == nil {
		err = engine.VerifyRecord(rec)
	}
	if err != nil {
		err = fmt.Errorf("verify: %s is not a valid receipt: %w", path, err)
		return verifyView{Error: err.Error()}, err
	}
	a := rec.Agreement
	v := verifyView{OK: true, Kind: "receipt", Session: a.Session, RecordHash: engine.RecordHash(rec).String(), Terms: termsJSON(a.Terms), Round: a.Round}
	for _, p := range a.Parties {
		v.Parties = append(v.Parties, p.ID)
	}
	if a.Witness != nil {
		v.Witness = a.Witness.ID
	}
	return v, nil
}

// oneArg returns the command's one positional argument, or a usage error.
func oneArg(c *cli.Context, usage string) (string, error) {
	pos, err := args(c)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", usageErr("%s", usage)
	}
	return pos[0], nil
}
