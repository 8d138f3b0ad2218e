package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate/engine"

	"github.com/urfave/cli/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/internal/control"
)

// errBroken marks a chain that failed verification (exit 1).
var errBroken = errors.New("chain verification failed")

// chainReader returns the running node's control API when one answers on
// the home's socket (the node holds the chain open), else the chain file
// opened read-only. close releases it.
func chainReader(ctx context.Context, h home) (r control.ChainReader, close func(), err error) {
	if cl, err := h.dialNode(ctx); err == nil {
		return cl, func() { cl.Close() }, nil
	}
	l, err := control.OpenLocal(h.chain())
	if err != nil {
		switch {
		case errors.Is(err, chain.ErrNoChain):
			return nil, nil, fmt.Errorf("no chain at %s: run `negotiate --home %s init` first: %w", h.chain(), h.dir, err)
		case errors.Is(err, chain.ErrHeldByOther):
			return nil, nil, fmt.Errorf("%w (a node holds the chain but does not answer on %s: wait for it or stop it)", err, h.socket())
		}
		return nil, nil, err
	}
	// The same checks as the node's: agreement records too.
	l.VerifyOptions = chain.VerifyOptions{CheckPayload: engine.CheckAgreementEntry}
	l.DescribeRecord = describeRecord
	return l, func() { l.Close() }, nil
}

func chainCommand() *cli.Command {
	return &cli.Command{
		Name:  "chain",
		Usage: "inspect, verify and export this agent's source chain",
		Description: "Reads the chain through the running node when one runs (it holds the\n" +
			"file open), else straight from <home>/chain.db.",
		Subcommands: []*cli.Command{
			chainStatusCommand(),
			chainShowCommand(),
			chainVerifyCommand(),
			chainExportCommand(),
			chainSearchCommand(),
			chainBackupCommand(),
			chainRestoreCommand(),
			chainRecoverCommand(),
		},
	}
}

// withChain resolves the home, opens a ChainReader and runs f with it.
func withChain(c *cli.Context, f func(control.ChainReader) error) error {
	if err := noArgs(c); err != nil {
		return err
	}
	h, err := homeOf(c)
	if err != nil {
		return err
	}
	r, closeFn, err := chainReader(c.Context, h)
	if err != nil {
		return err
	}
	defer closeFn()
	return f(r)
}

func short(hexHash string) string {
	if len(hexHash) > 16 {
		return hexHash[:16]
	}
	return hexHash
}

func chainStatusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "print the chain's agent, length, head and lock",
		Description: "--json: {\"agent_id\",\"length\",\"head\",\"head_seq\",\"lock\"}; lock is null or\n" +
			"{\"session\",\"since\" (unix ms),\"parties\"}; while the running node's last durable write\n" +
			"failed (a full disk), also \"write_error\", and \"flush_error\" while its journal cannot\n" +
			"reach the chain file.",
		Flags: withJSON(),
		Action: func(c *cli.Context) error {
			return withChain(c, func(r control.ChainReader) error {
				st, err := r.ChainStatus(c.Context)
				if err != nil {
					return err
				}
				if wantJSON(c) {
					return printJSON(c, st)
				}
				w := c.App.Writer
				fmt.Fprintf(w, "agent   %s\n", st.AgentID)
				fmt.Fprintf(w, "length  %d\n", st.Length)
				fmt.Fprintf(w, "head    %d %s\n", st.HeadSeq, st.Head)
				if st.Lock == nil {
					fmt.Fprintln(w, "lock    none")
				} else {
					since := time.UnixMilli(st.Lock.Since).UTC().Format(time.RFC3339)
					fmt.Fprintf(w, "lock    session %s since %s, %d parties\n", st.Lock.Session, since, len(st.Lock.Parties))
					for _, p := range st.Lock.Parties {
						fmt.Fprintf(w, "        %s\n", p)
					}
				}
				if st.WriteError != "" {
					fmt.Fprintf(w, "write   %s\n", st.WriteError)
				}
				if st.FlushError != "" {
					fmt.Fprintf(w, "flush   %s\n", st.FlushError)
				}
				if st.Behind != "" {
					fmt.Fprintf(w, "behind  %s\n", st.Behind)
				}
				return nil
			})
		},
	}
}

func chainShowCommand() *cli.Command {
	return &cli.Command{
		Name:  "show",
		Usage: "list chain entries, one line each",
		Description: "Text: seq, kind, time, hash prefix (and record hash prefix for agreements).\n" +
			"--json: an array of {\"seq\",\"hash\",\"prev\",\"kind\",\"timestamp\",\"time\",\n" +
			"\"payload_bytes\"[,\"record_hash\"]}; hashes are hex.",
		Flags: withJSON(
			&cli.Uint64Flag{Name: "from", Usage: "first seq to show"},
			&cli.Uint64Flag{Name: "limit", Usage: "show at most `N` entries (0 = all)"},
		),
		Action: func(c *cli.Context) error {
			return withChain(c, func(r control.ChainReader) error {
				entries, err := readEntries(c.Context, r, c.Uint64("from"), c.Uint64("limit"))
				if err != nil {
					return err
				}
				if wantJSON(c) {
					return printJSON(c, entries)
				}
				for _, e := range entries {
					line := fmt.Sprintf("%6d  %-10s %s  %s", e.Seq, e.Kind, e.Time, short(e.Hash))
					if e.RecordHash != "" {
						line += "  record " + short(e.RecordHash)
					}
					fmt.Fprintln(c.App.Writer, line)
				}
				return nil
			})
		},
	}
}

// readEntries pages through the chain from seq from, up to limit entries
// (0 = to the head).
func readEntries(ctx context.Context, r control.ChainReader, from, limit uint64) ([]control.Entry, error) {
	out := []control.Entry{}
	for {
		page := uint64(control.MaxEntriesPerRequest)
		if limit > 0 {
			left := limit - uint64(len(out))
			if left == 0 {
				return out, nil
			}
			page = min(page, left)
		}
		es, err := r.ChainEntries(ctx, from, page)
		if err != nil {
			return nil, err
		}
		out = append(out, es...)
		if uint64(len(es)) < page || len(es) == 0 {
			return out, nil
		}
		from = es[len(es)-1].Seq + 1
	}
}

func chainVerifyCommand() *cli.Command {
	return &cli.Command{
		Name:  "verify",
		Usage: "check every hash link and signature; exit 1 naming the first bad seq",
		Description: "--json: {\"ok\",\"length\"[,\"bad_seq\",\"reason\"]}. Exit 0 when sound,\n" +
			"1 when broken (the message names the first bad seq).",
		Flags: withJSON(),
		Action: func(c *cli.Context) error {
			return withChain(c, func(r control.ChainReader) error {
				res, err := r.ChainVerify(c.Context)
				if err != nil {
					return err
				}
				if wantJSON(c) {
					if err := printJSON(c, res); err != nil {
						return err
					}
				} else if res.OK {
					fmt.Fprintf(c.App.Writer, "chain sound: %d entries verified\n", res.Length)
				}
				if !res.OK {
					seq := uint64(0)
					if res.BadSeq != nil {
						seq = *res.BadSeq
					}
					return fmt.Errorf("%w at seq %d: %s", errBroken, seq, res.Reason)
				}
				return nil
			})
		},
	}
}

func chainExportCommand() *cli.Command {
	return &cli.Command{
		Name:  "export",
		Usage: "write the whole chain as JSON or CBOR",
		Flags: withJSON(
			&cli.StringFlag{Name: "format", Value: control.FormatJSON, Usage: "json or cbor"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to `FILE` (created 0600) instead of stdout"},
		),
		Action: func(c *cli.Context) error {
			format := strings.ToLower(c.String("format"))
			if format != control.FormatJSON && format != control.FormatCBOR {
				return usageErr("--format %q: use json or cbor", c.String("format"))
			}
			out := c.String("output")
			return withChain(c, func(r control.ChainReader) error {
				if out == "" || out == "-" {
					return r.ChainExport(c.Context, format, c.App.Writer)
				}
				return exportToFile(c, r, format, out)
			})
		},
	}
}

// exportToFile writes the export to a temporary file beside path and
// renames it into place, so a failed export leaves no partial file.
func exportToFile(c *cli.Context, r control.ChainReader, format, path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("export to %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("export to %s: %w", path, err)
	}
	if err := r.ChainExport(c.Context, format, tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("export to %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("export to %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("export to %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("export to %s: %w", path, err)
	}
	if wantJSON(c) {
		return printJSON(c, map[string]string{"file": path, "format": format})
	}
	fmt.Fprintf(c.App.ErrWriter, "exported chain (%s) to %s\n", format, path)
	return nil
}

func chainSearchCommand() *cli.Command {
	return &cli.Command{
		Name:      "search",
		Usage:     "list agreement records whose session, party or terms contain TEXT, newest first",
		ArgsUsage: "TEXT",
		Description: "Case-insensitive. One line per record: seq, time, record hash, session, round,\n" +
			"terms, and whether the record verifies. --json: {\"records\":[...],\"next_before\",...}\n" +
			"(pass next_before as --before for older matches). The same search as the\n" +
			"dashboard's chain page (GET /v1/chain/records).",
		Flags: withJSON(
			&cli.UintFlag{Name: "limit", Value: control.DefaultRecordsPerPage, Usage: "at most `N` records"},
			&cli.Uint64Flag{Name: "before", Usage: "only entries below seq `N` (0: from the head)"},
		),
		Action: func(c *cli.Context) error {
			text, err := oneArg(c, "usage: negotiate chain search TEXT")
			if err != nil {
				return err
			}
			q, err := control.CheckQuery(control.RecordQuery{Before: c.Uint64("before"), Limit: int(c.Uint("limit")), Search: text})
			if err != nil {
				return usageErr("%v", err)
			}
			if q.Search == "" {
				return usageErr("give some text to search for (use `chain show` to list every entry)")
			}
			h, err := homeOf(c)
			if err != nil {
				return err
			}
			r, closeFn, err := chainReader(c.Context, h)
			if err != nil {
				return err
			}
			defer closeFn()
			page, err := r.ChainRecords(c.Context, q)
			if err != nil {
				return err
			}
			if wantJSON(c) {
				return printJSON(c, page)
			}
			if len(page.Records) == 0 {
				fmt.Fprintf(c.App.ErrWriter, "no record matches %q\n", q.Search)
			}
			for _, rec := range page.Records {
				ok := "verified"
				if !rec.Verified {
					ok = "NOT VERIFIED: " + rec.VerifyError
				}
				session, round, terms := "", uint32(0), []byte("null")
				if d := rec.Record; d != nil {
					session, round = d.Session, d.Round
					terms, _ = json.Marshal(d.Terms)
				}
				fmt.Fprintf(c.App.Writer, "%8d  %s  record %s  session %s  round %d  %s  %s\n", rec.Seq, rec.Time, short(rec.RecordHash), session, round, terms, ok)
			}
			if page.NextBefore > 0 && !wantJSON(c) {
				fmt.Fprintf(c.App.ErrWriter, "older entries remain: --before %d\n", page.NextBefore)
			}
			return nil
		},
	}
}
