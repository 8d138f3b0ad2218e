// Command chaincheck checks the invariants over the chains of several
// agent homes whose nodes are stopped: `negotiate chain verify` passes on
// each, no chain is locked, and every countersigned record is on the
// chain of each of its parties with identical bytes. With --outcomes it
// also checks what the sessions' initiators reported: a committed
// session's record is on every party's chain with the reported hash; a
// rejected or aborted one is on none. The outcomes file holds one
// `negotiate propose --json` result per line.
//
//	go run ./scripts/chaincheck --bin bin/negotiate --outcomes outcomes.jsonl /tmp/a /tmp/b /tmp/c
//
// It prints what it checked and exits 1 on any violation, 2 on bad usage.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/negotiate-dev/negotiate/internal/soak"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("chaincheck", flag.ContinueOnError)
	bin := fs.String("bin", "negotiate", "negotiate binary")
	outcomes := fs.String("outcomes", "", "file of `negotiate propose --json` results, one per line")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "chaincheck: name the homes to check")
		return 2
	}
	var expect []soak.Expectation
	if *outcomes != "" {
		var err error
		if expect, err = readOutcomes(*outcomes); err != nil {
			fmt.Fprintln(os.Stderr, "chaincheck:", err)
			return 2
		}
	}
	rep, err := soak.CheckHomes(context.Background(), *bin, fs.Args(), expect)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaincheck:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		rep.WriteText(os.Stdout)
	}
	if !rep.OK() {
		fmt.Fprintf(os.Stderr, "chaincheck: %d violation(s):\n", len(rep.Violations))
		for _, v := range rep.Violations {
			fmt.Fprintf(os.Stderr, "  - %s\n", v)
		}
		return 1
	}
	fmt.Println("chaincheck: ok, 0 violations")
	return 0
}

// readOutcomes reads one `propose --json` object per line (blank lines
// and lines not starting with "{" are skipped: a failed propose prints
// nothing on stdout).
func readOutcomes(path string) ([]soak.Expectation, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []soak.Expectation
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var e soak.Expectation
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		if e.Session == "" {
			return nil, fmt.Errorf("%s:%d: no session", path, n)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}
