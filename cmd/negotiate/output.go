package main

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"
)

// printJSON writes v as one line of JSON to stdout.
func printJSON(c *cli.Context, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode JSON output: %w", err)
	}
	_, err = fmt.Fprintf(c.App.Writer, "%s\n", data)
	return err
}

// noArgs rejects positional arguments (after applying trailing flags).
func noArgs(c *cli.Context) error {
	pos, err := args(c)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr("`negotiate %s` takes no arguments, got %q", c.Command.FullName(), pos)
	}
	return nil
}
