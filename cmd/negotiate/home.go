package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/internal/control"
	"github.com/negotiate-dev/negotiate/sign"
)

// Files in a home directory.
const (
	keyFileName    = "key.json"
	chainFileName  = "chain.db"
	socketFileName = "node.sock"
	nodeFileName   = "node.json"
	// homeMode keeps the home (key, chain, socket) to its owner.
	homeMode = 0o700
	// maxSocketPath is the longest unix socket path every platform accepts
	// (sun_path is 104 bytes on macOS/BSD, 108 on Linux, NUL included).
	maxSocketPath = 103
)

// home is an agent's home directory.
type home struct{ dir string }

func (h home) key() string    { return filepath.Join(h.dir, keyFileName) }
func (h home) chain() string  { return filepath.Join(h.dir, chainFileName) }
func (h home) socket() string { return filepath.Join(h.dir, socketFileName) }
func (h home) nodeFile() string {
	return filepath.Join(h.dir, nodeFileName)
}

// homeOf resolves --home (or NEGOTIATE_HOME, or ~/.negotiate) to an absolute path.
func homeOf(c *cli.Context) (home, error) {
	dir := c.String("home")
	if dir == "" {
		u, err := os.UserHomeDir()
		if err != nil {
			return home{}, usageErr("no --home given and no user home directory (%v): pass --home DIR", err)
		}
		dir = filepath.Join(u, ".negotiate")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return home{}, usageErr("bad --home %q: %v", dir, err)
	}
	return home{dir: abs}, nil
}

// loadKey reads the home's key file.
func (h home) loadKey() (*sign.PrivateKey, error) {
	if _, err := os.Stat(h.dir); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no agent home at %s: run `negotiate --home %s init` first", h.dir, h.dir)
	}
	return sign.LoadKeyFile(h.key())
}

// dialNode connects to the home's running node; ErrNoNode when none answers.
func (h home) dialNode(ctx context.Context) (*control.Client, error) {
	return control.Dial(ctx, h.socket())
}

// needNode connects to the running node or explains how to start one.
func (h home) needNode(ctx context.Context) (*control.Client, error) {
	cl, err := h.dialNode(ctx)
	if err != nil {
		if errors.Is(err, control.ErrNoNode) {
			return nil, fmt.Errorf("%w for home %s: start one with `negotiate --home %s node`", errNoNode, h.dir, h.dir)
		}
		return nil, err
	}
	return cl, nil
}

func nowMillis() int64 { return time.Now().UnixMilli() }

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create an agent home: key pair and source chain",
		Description: "Creates the home directory (mode 0700), the key file key.json (0600) and the\n" +
			"chain chain.db with its genesis entry, then prints the new agent ID.\n" +
			"Refuses to touch a home that already holds a key or a chain.",
		Flags: withJSON(&cli.StringFlag{
			Name:  "scheme",
			Usage: "signature scheme: " + fmt.Sprint(sign.SchemeNames()),
			Value: sign.DefaultScheme,
		}),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			h, err := homeOf(c)
			if err != nil {
				return err
			}
			scheme, err := sign.SchemeByName(c.String("scheme"))
			if err != nil {
				return usageErr("--scheme: %v", err)
			}
			if err := createHome(h); err != nil {
				return err
			}
			key, err := scheme.GenerateKey()
			if err != nil {
				return err
			}
			if err := sign.SaveKeyFile(h.key(), key); err != nil {
				return fmt.Errorf("init %s: %w", h.dir, err)
			}
			ch, err := chain.Create(h.chain(), key, nowMillis())
			if err != nil {
				os.Remove(h.key()) // leave the home as it was: empty
				return fmt.Errorf("init %s: %w", h.dir, err)
			}
			if err := ch.Close(); err != nil {
				return fmt.Errorf("init %s: %w", h.dir, err)
			}
			if wantJSON(c) {
				return printJSON(c, map[string]any{"home": h.dir, "agent_id": key.AgentID(), "scheme": scheme.Name()})
			}
			fmt.Fprintf(c.App.ErrWriter, "created agent home %s (scheme %s)\n", h.dir, scheme.Name())
			fmt.Fprintln(c.App.Writer, key.AgentID())
			return nil
		},
	}
}

// createHome makes the home directory, or accepts an existing empty one; a
// home that holds a key, chain or socket is refused.
func createHome(h home) error {
	for _, p := range []string{h.key(), h.chain(), h.socket()} {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("home %s already holds an agent (%s exists): refusing to overwrite it; choose another --home", h.dir, filepath.Base(p))
		}
	}
	if err := os.MkdirAll(h.dir, homeMode); err != nil {
		return fmt.Errorf("create home %s: %w", h.dir, err)
	}
	if err := os.Chmod(h.dir, homeMode); err != nil {
		return fmt.Errorf("create home %s: %w", h.dir, err)
	}
	return nil
}

func idCommand() *cli.Command {
	return &cli.Command{
		Name:  "id",
		Usage: "print this home's agent ID (and, while a node runs, its peer ID and addresses)",
		Description: "Prints the agent ID on the first line. While a node runs, also prints\n" +
			"`peer <peer-id>` and one `addr <multiaddr>` line per listen address.\n" +
			"--json: {\"agent_id\",\"scheme\",\"public_key\" (base64)[,\"peer_id\",\"addrs\",\"pid\"]}.",
		Flags: withJSON(),
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
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
			pub := key.Public()
			id := control.Identity{AgentID: key.AgentID(), Scheme: pub.SchemeName(), PublicKey: pub.Bytes()}
			if cl, err := h.dialNode(c.Context); err == nil {
				defer cl.Close()
				nid, err := cl.Identity(c.Context)
				if err != nil {
					return fmt.Errorf("ask the running node: %w", err)
				}
				if nid.AgentID != id.AgentID {
					return fmt.Errorf("the node on %s runs agent %s, but the key file is agent %s: stop the node and check the home", h.socket(), nid.AgentID, id.AgentID)
				}
				id.PeerID, id.Addrs, id.PID = nid.PeerID, nid.Addrs, nid.PID
			}
			if wantJSON(c) {
				return printJSON(c, id)
			}
			w := c.App.Writer
			fmt.Fprintln(w, id.AgentID)
			if id.PeerID != "" {
				fmt.Fprintf(w, "peer %s\n", id.PeerID)
				for _, a := range id.Addrs {
					fmt.Fprintf(w, "addr %s\n", a)
				}
			}
			return nil
		},
	}
}
