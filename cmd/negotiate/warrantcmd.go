package main

import (
	"context"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/negotiate-dev/negotiate/internal/control"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

func init() {
	commandBuilders = append(commandBuilders, warrantsCommand)
	routeRegistrars = append(routeRegistrars, registerWarrantRoutes)
}

// warrantsDirName is the home's directory of warrant files.
const warrantsDirName = "warrants"

// ---- server side (runs in the node) ----

func registerWarrantRoutes(d *daemon, srv *control.Server) {
	// GET /v1/warrants?agent=ID: the warrants this node holds (all, or
	// against agent) and, with an agent named, the one the DHT holds.
	srv.Handle("GET", "/v1/warrants", func(ctx context.Context, r *control.Request) (any, error) {
		var agent sign.AgentID
		if a := r.Query("agent"); a != "" {
			id, err := sign.ParseAgentID(a)
			if err != nil {
				return nil, control.Errorf(control.KindBadRequest, "agent %q: %v", a, err)
			}
			agent = id
		}
		ws, err := d.node.Warrants(ctx, agent, agent != "")
		if ws == nil {
			ws = []negotiate.Warrant{}
		}
		if err != nil {
			// The local ones still count; say what the DHT lookup did.
			return warrantsReply{Warrants: ws, DHTError: err.Error()}, nil
		}
		return warrantsReply{Warrants: ws}, nil
	})
}

// warrantsReply is the /v1/warrants answer.
type warrantsReply struct {
	Warrants []negotiate.Warrant `json:"warrants"`
	DHTError string              `json:"dht_error,omitempty"`
}

// ---- client side ----

func warrantsCommand() *cli.Command {
	return &cli.Command{
		Name:      "warrants",
		Usage:     "list warrants (evidence of equivocation) the node holds, or against AGENT (also looked up in the DHT)",
		ArgsUsage: "[AGENT]",
		Flags: withJSON(
			&cli.StringFlag{Name: "out", Usage: "write the first warrant found to `FILE` (for negotiate verify)"},
		),
		Action: func(c *cli.Context) error {
			pos, err := args(c)
			if err != nil {
				return err
			}
			path := "/v1/warrants"
			switch len(pos) {
			case 0:
			case 1:
				id, err := sign.ParseAgentID(pos[0])
				if err != nil {
					return usageErr("AGENT: %v", err)
				}
				path += "?agent=" + string(id)
			default:
				return usageErr("usage: negotiate warrants [AGENT]")
			}
			return withNode(c, func(cl *control.Client) error {
				var rep warrantsReply
				if err := cl.Do(c.Context, "GET", path, nil, &rep); err != nil {
					return err
				}
				if out := c.String("out"); out != "" && len(rep.Warrants) > 0 {
					if err := os.WriteFile(out, rep.Warrants[0].Raw, 0o600); err != nil {
						return fmt.Errorf("write warrant: %w", err)
					}
				}
				if wantJSON(c) {
					return printJSON(c, rep)
				}
				if rep.DHTError != "" {
					fmt.Fprintf(c.App.ErrWriter, "DHT lookup failed: %s\n", rep.DHTError)
				}
				if len(rep.Warrants) == 0 {
					fmt.Fprintln(c.App.ErrWriter, "no warrants")
				}
				for _, w := range rep.Warrants {
					fmt.Fprintf(c.App.Writer, "%s  %-5s %s  %s\n", w.Agent, w.Source, w.Hash[:16], w.Proves)
				}
				return nil
			})
		},
	}
}

// fileKind tells a warrant from a receipt by the keys of its top-level
// CBOR map: a warrant has "agent", "a" and "b"; anything else is taken
// for a receipt, whose checks then say what is wrong with it.
func fileKind(raw []byte) string {
	var m map[string]any
	if err := protocol.Unmarshal(raw, &m); err != nil {
		return "receipt"
	}
	_, agent := m["agent"]
	_, a := m["a"]
	_, b := m["b"]
	if agent && a && b {
		return "warrant"
	}
	return "receipt"
}

// verifyWarrant is `verify` of a warrant file's bytes.
func verifyWarrant(path string, raw []byte) (verifyView, error) {
	w, err := negotiate.ParseWarrant(raw)
	if err != nil {
		err = fmt.Errorf("verify: %s is not a valid warrant: %w", path, err)
		return verifyView{Kind: "warrant", Error: err.Error()}, err
	}
	return verifyView{OK: true, Kind: "warrant", Agent: w.Agent, Proves: w.Proves, WarrantHash: w.Hash}, nil
}
