package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// jsonFlag is accepted globally and on every command, so both
// `negotiate --json chain status` and `negotiate chain status --json` work.
var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print JSON instead of text"}

const appDescription = `negotiate lets agents agree on a transaction and countersign it, peer to
peer: agents find each other by agent ID in a Kademlia DHT, negotiate over
encrypted libp2p streams and append the identical countersigned record to
their own append-only source chains.

Start with ` + "`negotiate init`" + `, run the daemon with ` + "`negotiate node`" + `, then use
the other commands from another terminal. Flags go before or after the
command's arguments; --json works everywhere.

` + exitCodesHelp

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:        "negotiate",
		Usage:       "peer-to-peer transaction negotiation and countersigning",
		Description: appDescription,
		Writer:      stdout,
		ErrWriter:   stderr,
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:        "home",
				Usage:       "agent home directory (key, chain, node socket)",
				EnvVars:     []string{"NEGOTIATE_HOME"},
				DefaultText: "~/.negotiate",
			},
			jsonFlag,
		},
		Commands: []*cli.Command{
			initCommand(),
			idCommand(),
			chainCommand(),
			nodeCommand(),
			peersCommand(),
			pingCommand(),
			sendCommand(),
			inboxCommand(),
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usageErr("unknown command %q", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
		CommandNotFound: func(c *cli.Context, name string) {
			fmt.Fprintf(c.App.ErrWriter, "negotiate: no help topic for %q\n", name)
		},
		HideVersion:    true,
		ExitErrHandler: func(*cli.Context, error) {}, // run maps errors to exit codes
	}
	for _, build := range commandBuilders {
		app.Commands = append(app.Commands, build())
	}
	onUsage := func(c *cli.Context, err error, _ bool) error {
		return usageErr("%v", err)
	}
	app.OnUsageError = onUsage
	var walk func([]*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, cmd := range cmds {
			cmd.OnUsageError = onUsage
			if len(cmd.Subcommands) > 0 && cmd.Action == nil {
				cmd.Action = groupAction
			}
			walk(cmd.Subcommands)
		}
	}
	walk(app.Commands)
	return app
}

// commandBuilders lets other files of this command add top-level commands
// (e.g. the scenario runner, session commands): append in an init func.
var commandBuilders []func() *cli.Command

// groupAction runs for a command group (e.g. `chain`) given no known subcommand.
func groupAction(c *cli.Context) error {
	if c.NArg() > 0 {
		return usageErr("unknown command %q for `negotiate %s`", c.Args().First(), c.Command.Name)
	}
	return cli.ShowSubcommandHelp(c)
}

// wantJSON reports whether --json was given at any level.
func wantJSON(c *cli.Context) bool {
	for _, x := range c.Lineage() {
		if x.Bool("json") {
			return true
		}
	}
	return false
}

// withJSON adds the --json flag to a command's flags.
func withJSON(flags ...cli.Flag) []cli.Flag { return append(flags, jsonFlag) }

// args returns the command's positional arguments, applying any of the
// command's flags that were written after them (`ping ID --count 3`).
func args(c *cli.Context) ([]string, error) {
	in := c.Args().Slice()
	var pos []string
	for i := 0; i < len(in); i++ {
		a := in[i]
		if a == "--" {
			pos = append(pos, in[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := findFlag(c.Command.Flags, name)
		if f == nil {
			return nil, usageErr("flag provided but not defined: %s", a)
		}
		if !hasVal {
			if _, isBool := f.(*cli.BoolFlag); isBool {
				val = "true"
			} else {
				if i+1 >= len(in) {
					return nil, usageErr("flag needs an argument: %s", a)
				}
				i++
				val = in[i]
			}
		}
		// Set by the primary name: an alias (-o) has its own flag.FlagSet
		// entry, and the command reads the primary one.
		if err := c.Set(f.Names()[0], val); err != nil {
			return nil, usageErr("invalid value %q for flag %s: %v", val, a, err)
		}
	}
	return pos, nil
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}
