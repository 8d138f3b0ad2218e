package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/internal/control"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/sign"
)

// backupOut is what `chain backup --json` prints.
type backupOut struct {
	File    string       `json:"file"`
	AgentID sign.AgentID `json:"agent_id"`
	Length  uint64       `json:"length"`
	HeadSeq uint64       `json:"head_seq"`
	Head    string       `json:"head"`
	Bytes   int64        `json:"bytes"`
	Via     string       `json:"via"` // "node" or "file"
}

// restoreOut is what `chain restore --json` prints.
type restoreOut struct {
	File     string       `json:"file"`
	AgentID  sign.AgentID `json:"agent_id"`
	Length   uint64       `json:"length"`
	HeadSeq  uint64       `json:"head_seq"`
	Head     string       `json:"head"`
	Replaced uint64       `json:"replaced_length"`
	Dropped  uint64       `json:"dropped"`
	Forced   bool         `json:"forced"`
}

func chainBackupCommand() *cli.Command {
	return &cli.Command{
		Name:      "backup",
		Usage:     "write a consistent copy of the chain file to FILE, while the node runs or not",
		ArgsUsage: "FILE",
		Description: "Through the running node when one runs (it applies its journal, then copies the\n" +
			"file in one read transaction, so every write made before the command is in the\n" +
			"copy while the node goes on), else straight from <home>/chain.db. The copy is\n" +
			"verified, then renamed into place (mode 0600); `chain restore FILE` puts it back.\n" +
			"--json: {\"file\",\"agent_id\",\"length\",\"head_seq\",\"head\",\"bytes\",\"via\"}.",
		Flags: withJSON(),
		Action: func(c *cli.Context) error {
			file, err := oneArg(c, "usage: negotiate chain backup FILE")
			if err != nil {
				return err
			}
			h, err := homeOf(c)
			if err != nil {
				return err
			}
			if abs, _ := filepath.Abs(file); abs == h.chain() {
				return usageErr("%s is the chain file itself: name another file", file)
			}
			var r control.ChainReader
			via := "node"
			if cl, err := h.dialNode(c.Context); err == nil {
				defer cl.Close()
				r = cl
			} else {
				ch, err := chain.Open(h.chain(), chain.Options{})
				if err != nil {
					switch {
					case errors.Is(err, chain.ErrNoChain):
						return fmt.Errorf("no chain at %s: run `negotiate --home %s init` first: %w", h.chain(), h.dir, err)
					case errors.Is(err, chain.ErrHeldByOther):
						return fmt.Errorf("%w (a node holds the chain but does not answer on %s: wait for it or stop it)", err, h.socket())
					}
					return err
				}
				defer ch.Close()
				r, via = control.NewLocal(ch), "file"
			}
			out, err := writeBackup(c, r, file)
			if err != nil {
				return fmt.Errorf("backup to %s: %w", file, err)
			}
			out.Via = via
			if wantJSON(c) {
				return printJSON(c, out)
			}
			fmt.Fprintf(c.App.Writer, "backup %s: agent %s, %d entries, head %d %s, %d bytes (via the %s)\n",
				out.File, out.AgentID, out.Length, out.HeadSeq, short(out.Head), out.Bytes, via)
			return nil
		},
	}
}

// writeBackup writes r's backup to a temporary file beside path, checks it
// is a chain that verifies, and renames it into place.
func writeBackup(c *cli.Context, r control.ChainReader, path string) (backupOut, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return backupOut{}, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return backupOut{}, err
	}
	if err := r.ChainBackup(c.Context, tmp); err != nil {
		tmp.Close()
		return backupOut{}, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return backupOut{}, err
	}
	st, err := tmp.Stat()
	tmp.Close()
	if err != nil {
		return backupOut{}, err
	}
	b, err := chain.OpenReadOnly(tmp.Name())
	if err != nil {
		return backupOut{}, fmt.Errorf("the copy is not a chain: %w", err)
	}
	head := b.Head()
	out := backupOut{File: path, AgentID: b.AgentID(), Length: b.Length(), HeadSeq: head.Seq, Head: hex.EncodeToString(head.Hash[:]), Bytes: st.Size()}
	verr := b.Verify(chain.VerifyOptions{CheckPayload: engine.CheckAgreementEntry})
	b.Close()
	if verr != nil {
		return backupOut{}, fmt.Errorf("the copy does not verify: %w", verr)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return backupOut{}, err
	}
	return out, nil
}

func chainRestoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "put a backup back as the chain file (the node must be stopped)",
		ArgsUsage: "FILE",
		Description: "Checks FILE is a chain of this home's agent and verifies it, then replaces\n" +
			"<home>/chain.db with it in one rename. Refuses, changing nothing, when a node runs,\n" +
			"and, without --force, when the chain is longer than the backup, diverges from it\n" +
			"or is locked. After restoring an older copy, the node learns from its peers which\n" +
			"records it lost and refuses to sign until `chain recover` fetched them.\n" +
			"--json: {\"file\",\"agent_id\",\"length\",\"head_seq\",\"head\",\"replaced_length\",\"dropped\",\"forced\"}.",
		Flags: withJSON(&cli.BoolFlag{Name: "force", Usage: "replace a longer, diverging or locked chain (its newer entries are lost)"}),
		Action: func(c *cli.Context) error {
			file, err := oneArg(c, "usage: negotiate chain restore [--force] FILE")
			if err != nil {
				return err
			}
			h, err := homeOf(c)
			if err != nil {
				return err
			}
			key, err := h.loadKey()
			if err != nil {
				return err
			}
			if cl, err := h.dialNode(c.Context); err == nil {
				cl.Close()
				return fmt.Errorf("a node runs for home %s: stop it first (restore replaces the chain file it holds open)", h.dir)
			}
			info, err := chain.Restore(file, h.chain(), chain.RestoreOptions{
				Force: c.Bool("force"), Agent: key.AgentID(),
				Verify: chain.VerifyOptions{CheckPayload: engine.CheckAgreementEntry},
			})
			if err != nil {
				return err
			}
			out := restoreOut{File: file, AgentID: info.AgentID, Length: info.Length, HeadSeq: info.Head.Seq,
				Head: hex.EncodeToString(info.Head.Hash[:]), Replaced: info.Replaced, Dropped: info.Dropped, Forced: info.Forced}
			if wantJSON(c) {
				return printJSON(c, out)
			}
			fmt.Fprintf(c.App.Writer, "restored %s: %d entries, head %d %s", file, out.Length, out.HeadSeq, short(out.Head))
			if out.Replaced > 0 {
				fmt.Fprintf(c.App.Writer, "; replaced a chain of %d entries", out.Replaced)
				if out.Dropped > 0 {
					fmt.Fprintf(c.App.Writer, " (%d dropped)", out.Dropped)
				}
			}
			fmt.Fprintln(c.App.Writer)
			return nil
		},
	}
}

func init() {
	routeRegistrars = append(routeRegistrars, registerRecoverRoute)
}

// recoverRequest is the body of POST /v1/chain/recover.
type recoverRequest struct {
	From      sign.AgentID `json:"from"`
	TimeoutMS int64        `json:"timeout_ms"`
}

func registerRecoverRoute(d *daemon, srv *control.Server) {
	srv.Handle("POST", "/v1/chain/recover", func(ctx context.Context, r *control.Request) (any, error) {
		var req recoverRequest
		if err := r.Decode(&req); err != nil {
			return nil, err
		}
		if _, err := sign.ParseAgentID(string(req.From)); err != nil {
			return nil, control.Errorf(control.KindBadRequest, "from: %v", err)
		}
		if req.From == d.key.AgentID() {
			return nil, control.Errorf(control.KindBadRequest, "from: name a counterparty, not this agent")
		}
		timeout := time.Duration(req.TimeoutMS) * time.Millisecond
		if timeout <= 0 || timeout > control.MaxTimeout {
			timeout = control.DefaultTimeout
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return d.node.Recover(ctx, req.From)
	})
}

func chainRecoverCommand() *cli.Command {
	return &cli.Command{
		Name:  "recover",
		Usage: "fetch back from a counterparty the countersigned records this chain lost (needs a node)",
		Description: "After the chain was restored from an older copy, its counterparties tell the\n" +
			"node which records it lacks (`chain status` shows them under behind, and the node\n" +
			"signs nothing meanwhile). recover asks agent --from for the records it holds that\n" +
			"name this agent above the chain's head, verifies each (every signature, and this\n" +
			"agent's head in it equal to the chain's head) and appends it where it was.\n" +
			"--json: {\"from\",\"appended\" (seqs),\"head\",\"behind\" (what is still missing)}.\n" +
			"Exit 1 when a record does not verify or does not go next.",
		Flags: withJSON(
			&cli.StringFlag{Name: "from", Usage: "the counterparty `AGENT-ID` to fetch the records from (required)"},
			&cli.DurationFlag{Name: "timeout", Value: control.DefaultTimeout, Usage: "give up after `D`"},
		),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			if c.String("from") == "" {
				return usageErr("name the counterparty that holds the records: --from AGENT-ID")
			}
			from, err := sign.ParseAgentID(c.String("from"))
			if err != nil {
				return usageErr("--from: %v", err)
			}
			return withNode(c, func(cl *control.Client) error {
				var res negotiate.RecoverResult
				ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout")+5*time.Second)
				defer cancel()
				if err := cl.Do(ctx, "POST", "/v1/chain/recover", recoverRequest{From: from, TimeoutMS: c.Duration("timeout").Milliseconds()}, &res); err != nil {
					return err
				}
				if wantJSON(c) {
					return printJSON(c, res)
				}
				if len(res.Appended) == 0 {
					fmt.Fprintf(c.App.Writer, "%s holds no record of this agent above seq %d\n", from, res.Head.Seq)
				} else {
					fmt.Fprintf(c.App.Writer, "recovered %d records from %s: seqs %d to %d; head %d\n", len(res.Appended), from, res.Appended[0], res.Appended[len(res.Appended)-1], res.Head.Seq)
				}
				if res.Behind != "" {
					fmt.Fprintf(c.App.ErrWriter, "still behind: %s\n", res.Behind)
				}
				return nil
			})
		},
	}
}
