package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/negotiate-dev/negotiate/internal/control"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// maxPingCount bounds --count so a typo cannot ping for days.
const maxPingCount = 10000

// withNode resolves the home, connects to its running node and runs f.
func withNode(c *cli.Context, f func(cl *control.Client) error) error {
	h, err := homeOf(c)
	if err != nil {
		return err
	}
	cl, err := h.needNode(c.Context)
	if err != nil {
		return err
	}
	defer cl.Close()
	return f(cl)
}

func parseAgentArg(flag, text string) (sign.AgentID, error) {
	if text == "" {
		return "", usageErr("%s: an agent ID is required (see `negotiate id` on the other agent)", flag)
	}
	id, err := sign.ParseAgentID(text)
	if err != nil {
		return "", usageErr("%s: %v", flag, err)
	}
	return id, nil
}

func timeoutMS(c *cli.Context) (int64, error) {
	d := c.Duration("timeout")
	if d <= 0 || d > control.MaxTimeout {
		return 0, usageErr("--timeout %s: use a duration between 1ms and %s", d, control.MaxTimeout)
	}
	return d.Milliseconds(), nil
}

func peersCommand() *cli.Command {
	return &cli.Command{
		Name:        "peers",
		Usage:       "list connected peers and known agents (needs a running node)",
		Description: "--json: {\"connected\":[{\"peer_id\",\"agent_id\",\"addrs\"}],\"agents\":[{\"agent_id\",\"peer_id\",\"addrs\"}]}.",
		Flags:       withJSON(),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			return withNode(c, func(cl *control.Client) error {
				p, err := cl.Peers(c.Context)
				if err != nil {
					return err
				}
				if wantJSON(c) {
					return printJSON(c, p)
				}
				w := c.App.Writer
				fmt.Fprintf(w, "connected peers: %d\n", len(p.Connected))
				for _, x := range p.Connected {
					agent := "-"
					if x.AgentID != "" {
						agent = string(x.AgentID)
					}
					fmt.Fprintf(w, "  %s  agent %s  %s\n", x.PeerID, agent, strings.Join(x.Addrs, " "))
				}
				fmt.Fprintf(w, "known agents: %d\n", len(p.Agents))
				for _, a := range p.Agents {
					fmt.Fprintf(w, "  %s  peer %s\n", a.AgentID, a.PeerID)
				}
				return nil
			})
		},
	}
}

func pingCommand() *cli.Command {
	return &cli.Command{
		Name:      "ping",
		Usage:     "measure round trips to an agent (needs a running node)",
		ArgsUsage: "<agent-id>",
		Description: "Prints one line per round trip (--json: one object per line,\n" +
			"{\"to\",\"peer_id\",\"rtt_ms\"}). Exit 4 when no round trip succeeds within --timeout.",
		Flags: withJSON(
			&cli.IntFlag{Name: "count", Aliases: []string{"c"}, Value: 1, Usage: "number of round trips"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, Usage: "give up on one round trip after this"},
			&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "wait between round trips"},
		),
		Action: func(c *cli.Context) error {
			pos, err := args(c)
			if err != nil {
				return err
			}
			if len(pos) != 1 {
				return usageErr("ping takes one agent ID, got %d arguments", len(pos))
			}
			to, err := parseAgentArg("ping", pos[0])
			if err != nil {
				return err
			}
			count := c.Int("count")
			if count < 1 || count > maxPingCount {
				return usageErr("--count %d: use 1 to %d", count, maxPingCount)
			}
			tms, err := timeoutMS(c)
			if err != nil {
				return err
			}
			return withNode(c, func(cl *control.Client) error {
				ok := 0
				var lastErr error
				for i := 0; i < count; i++ {
					if i > 0 {
						select {
						case <-c.Context.Done():
							return c.Context.Err()
						case <-time.After(c.Duration("interval")):
						}
					}
					r, err := cl.Ping(c.Context, control.PingRequest{To: to, TimeoutMS: tms})
					if err != nil {
						if errors.Is(err, errNoNode) || errors.Is(err, control.ErrNoNode) || errors.Is(err, control.ErrBadRequest) {
							return err
						}
						lastErr = err
						fmt.Fprintf(c.App.ErrWriter, "ping %s: %v\n", to.Short(), err)
						continue
					}
					ok++
					if wantJSON(c) {
						if err := printJSON(c, r); err != nil {
							return err
						}
					} else {
						fmt.Fprintf(c.App.Writer, "reply from %s: seq=%d time=%.3f ms\n", to.Short(), i+1, r.RTTMS)
					}
				}
				if ok == 0 {
					return silent(fmt.Errorf("%w: %s: %w", errUnreachable, to, lastErr))
				}
				return nil
			})
		},
	}
}

func sendCommand() *cli.Command {
	return &cli.Command{
		Name:      "send",
		Usage:     "send a direct off-the-record message and print the reply (needs a running node)",
		ArgsUsage: "MESSAGE...",
		Description: "The words of MESSAGE are joined by spaces. Prints the receiver's reply\n" +
			"(--json: {\"to\",\"accepted\",\"reason\",\"reply\",\"received_at\",\"rtt_ms\"}).\n" +
			"Exit 3 when the receiver refuses, 4 when it cannot be reached in --timeout.",
		Flags: withJSON(
			&cli.StringFlag{Name: "to", Usage: "receiving `AGENT-ID`"},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "give up waiting for the reply after this"},
			&cli.StringFlag{Name: "content-type", Value: "text/plain", Usage: "content type label of the message"},
		),
		Action: func(c *cli.Context) error {
			pos, err := args(c)
			if err != nil {
				return err
			}
			to, err := parseAgentArg("--to", c.String("to"))
			if err != nil {
				return err
			}
			if len(pos) == 0 {
				return usageErr("send needs a MESSAGE: negotiate send --to <agent-id> MESSAGE")
			}
			tms, err := timeoutMS(c)
			if err != nil {
				return err
			}
			msg := strings.Join(pos, " ")
			if len(msg) > protocol.MaxDirectBytes {
				return usageErr("MESSAGE is %d bytes, the limit is %d", len(msg), protocol.MaxDirectBytes)
			}
			return withNode(c, func(cl *control.Client) error {
				r, err := cl.Send(c.Context, control.SendRequest{To: to, ContentType: c.String("content-type"), Message: msg, TimeoutMS: tms})
				if err != nil {
					return err
				}
				if wantJSON(c) {
					if err := printJSON(c, r); err != nil {
						return err
					}
				} else if r.Accepted {
					fmt.Fprintln(c.App.Writer, r.Reply)
				}
				if !r.Accepted {
					return fmt.Errorf("%w: %s refused the message: %s", errRefused, to.Short(), r.Reason)
				}
				return nil
			})
		},
	}
}

func inboxCommand() *cli.Command {
	return &cli.Command{
		Name:  "inbox",
		Usage: "list received direct messages and proposals waiting for a decision (needs a running node)",
		Description: "Oldest first. --json: an array of objects with \"kind\": \"message\" (direct\n" +
			"message: \"from\",\"received_at\" (unix ms),\"content_type\",\"message\",\"accepted\") or\n" +
			"\"proposal\" / \"counter\" (waiting for `negotiate accept|reject|counter SESSION`:\n" +
			"\"session\",\"from\",\"terms\",\"round\",\"parties\").",
		Flags: withJSON(),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			return withNode(c, func(cl *control.Client) error {
				msgs, err := cl.Inbox(c.Context)
				if err != nil {
					return err
				}
				var props []proposalView
				if err := cl.Do(c.Context, "GET", "/v1/proposals", nil, &props); err != nil {
					return err
				}
				if wantJSON(c) {
					out := make([]any, 0, len(msgs)+len(props))
					for _, m := range msgs {
						out = append(out, inboxMessageView{Kind: "message", InboxMessage: m})
					}
					for _, p := range props {
						out = append(out, p)
					}
					return printJSON(c, out)
				}
				for _, m := range msgs {
					at := time.UnixMilli(m.ReceivedAt).UTC().Format(time.RFC3339)
					fmt.Fprintf(c.App.Writer, "%s  message from %s  %s\n", at, m.From, m.Message)
				}
				for _, p := range props {
					terms, _ := json.Marshal(p.Terms)
					fmt.Fprintf(c.App.Writer, "%s  %s  from %s  round %d  %s\n", p.Session, p.Kind, p.From, p.Round, terms)
				}
				if len(msgs) == 0 && len(props) == 0 {
					fmt.Fprintln(c.App.ErrWriter, "inbox is empty")
				}
				return nil
			})
		},
	}
}

// inboxMessageView is a direct message in `inbox --json`.
type inboxMessageView struct {
	Kind string `json:"kind"`
	control.InboxMessage
}
