package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/negotiate-dev/negotiate/negotiate/transport"

	"github.com/negotiate-dev/negotiate/chain"
	"github.com/negotiate-dev/negotiate/internal/control"
	"github.com/negotiate-dev/negotiate/negotiate"
	"github.com/negotiate-dev/negotiate/sign"
)

// binPath is the negotiate binary built once by TestMain.
var binPath string

// commandTimeout bounds one CLI run in tests.
const commandTimeout = 60 * time.Second

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "negotiate-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "negotiate")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build negotiate:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs the binary with args and an environment without NEGOTIATE_HOME
// (plus env).
func runCLI(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append(cleanEnv(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run negotiate %v: %v", args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NEGOTIATE_HOME=") {
			env = append(env, kv)
		}
	}
	return env
}

// shortTemp returns a short temporary directory: unix socket paths are
// limited to ~104 bytes and t.TempDir paths can be long.
func shortTemp(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ng")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func initHome(t *testing.T, dir string, extra ...string) (string, sign.AgentID) {
	t.Helper()
	home := filepath.Join(dir, "home")
	r := runCLI(t, nil, append([]string{"--home", home, "init"}, extra...)...)
	if r.code != 0 {
		t.Fatalf("init: exit %d: %s", r.code, r.stderr)
	}
	id, err := sign.ParseAgentID(strings.TrimSpace(r.stdout))
	if err != nil {
		t.Fatalf("init printed %q: %v", r.stdout, err)
	}
	return home, id
}

// cliCase is one run of the binary and what it must print and exit with.
type cliCase struct {
	name   string
	env    []string
	args   []string
	code   int
	stdout string // substring of stdout
	stderr string // substring of stderr
	check  func(t *testing.T, r result)
}

// runCLICases runs each case as a subtest.
func runCLICases(t *testing.T, cases []cliCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.env, tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tc.code, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stdout, tc.stdout) {
				t.Errorf("stdout %q lacks %q", r.stdout, tc.stdout)
			}
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr %q lacks %q", r.stderr, tc.stderr)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func decodeJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("output is not JSON (%v): %q", err, s)
	}
}

func TestExitCodeMapping(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 0},
		{"plain", errors.New("boom"), 1},
		{"usage", usageErr("bad flag"), 2},
		{"bad request from node", &control.Error{Kind: control.KindBadRequest, Message: "x"}, 2},
		{"refused", fmt.Errorf("send: %w", errRefused), 3},
		{"refused by node", &control.Error{Kind: control.KindRefused, Message: "x"}, 3},
		{"refused by host", fmt.Errorf("x: %w", &transport.RefusedError{Reason: "no"}), 3},
		{"timeout by node", &control.Error{Kind: control.KindTimeout, Message: "x"}, 4},
		{"unreachable by node", &control.Error{Kind: control.KindUnreachable, Message: "x"}, 4},
		{"agent not found", fmt.Errorf("x: %w", negotiate.ErrAgentNotFound), 4},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), 4},
		{"no node", fmt.Errorf("%w for home x", errNoNode), 1},
		{"broken chain", fmt.Errorf("%w at seq 2", errBroken), 1},
		{"session rejected", fmt.Errorf("x: %w", negotiate.ErrRejected), 3},
		{"session aborted", fmt.Errorf("x: %w", negotiate.ErrAborted), 4},
		{"busy", fmt.Errorf("x: %w", negotiate.ErrBusy), 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitCode(tc.err); got != tc.want {
				t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

func TestControlKindMatchesExitCode(t *testing.T) {
	for _, err := range []error{
		errors.New("boom"), usageErr("x"), errRefused, transport.ErrRefused,
		transport.ErrTimeout, negotiate.ErrUnreachable, negotiate.ErrAgentNotFound,
	} {
		k := controlKind(err)
		if k == "" {
			k = control.KindInternal
		}
		back := &control.Error{Kind: k, Message: err.Error()}
		if exitCode(back) != exitCode(err) {
			t.Errorf("%v: exit %d locally but %d through the control API (kind %s)", err, exitCode(err), exitCode(back), k)
		}
	}
}

func TestCommands(t *testing.T) {
	dir := shortTemp(t)
	home, id := initHome(t, dir)
	out := filepath.Join(dir, "export.cbor")
	runCLICases(t, []cliCase{
		{name: "id", args: []string{"--home", home, "id"}, stdout: string(id)},
		{name: "id from env", env: []string{"NEGOTIATE_HOME=" + home}, args: []string{"id"}, stdout: string(id)},
		{name: "id json", args: []string{"--home", home, "id", "--json"}, check: func(t *testing.T, r result) {
			var v struct {
				AgentID   string `json:"agent_id"`
				Scheme    string `json:"scheme"`
				PublicKey []byte `json:"public_key"`
				PeerID    string `json:"peer_id"`
			}
			decodeJSON(t, r.stdout, &v)
			pub, err := sign.ParsePublicKey(v.Scheme, v.PublicKey)
			if err != nil || v.AgentID != string(id) || !id.Matches(pub) || v.PeerID != "" {
				t.Errorf("id --json = %+v (%v), want agent %s with its key and no peer", v, err, id)
			}
		}},
		{name: "global json", args: []string{"--json", "--home", home, "id"}, stdout: `"agent_id":"` + string(id)},
		{name: "chain status", args: []string{"--home", home, "chain", "status"}, stdout: "length  1"},
		{name: "chain status json after command", args: []string{"--home", home, "chain", "status", "--json"}, check: checkStatus(id, 1)},
		{name: "chain status json global", args: []string{"--json", "--home", home, "chain", "status"}, check: checkStatus(id, 1)},
		{name: "chain show", args: []string{"--home", home, "chain", "show"}, stdout: "genesis"},
		{name: "chain show json", args: []string{"--home", home, "chain", "show", "--json"}, check: func(t *testing.T, r result) {
			var es []map[string]any
			decodeJSON(t, r.stdout, &es)
			if len(es) != 1 || es[0]["kind"] != "genesis" || es[0]["seq"] != 0.0 {
				t.Fatalf("chain show --json = %v, want the genesis entry", es)
			}
			for _, k := range []string{"hash", "prev", "timestamp"} {
				if _, ok := es[0][k]; !ok {
					t.Errorf("entry lacks %q: %v", k, es[0])
				}
			}
		}},
		{name: "chain show from beyond head", args: []string{"--home", home, "chain", "show", "--from", "5", "--json"}, stdout: "[]"},
		{name: "chain verify", args: []string{"--home", home, "chain", "verify"}, stdout: "chain sound: 1 entries"},
		{name: "chain verify json", args: []string{"--home", home, "chain", "verify", "--json"}, stdout: `"ok":true`},
		{name: "chain export json", args: []string{"--home", home, "chain", "export", "--format", "json"}, check: func(t *testing.T, r result) {
			if !strings.Contains(r.stdout, string(id)) || !strings.Contains(r.stdout, "genesis") {
				t.Errorf("export json lacks the genesis of %s: %q", id, r.stdout)
			}
		}},
		{name: "chain export cbor", args: []string{"--home", home, "chain", "export", "--format", "cbor", "-o", out}, check: func(t *testing.T, r result) {
			f, err := os.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			es, err := chain.ReadCBORExport(f)
			if err != nil || len(es) != 1 || es[0].Kind != "genesis" {
				t.Fatalf("cbor export: %d entries, %v", len(es), err)
			}
			if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
				t.Errorf("export file mode %v, want 0600", st.Mode().Perm())
			}
		}},
		{name: "init twice", args: []string{"--home", home, "init"}, code: 1, stderr: "already holds an agent"},
		{name: "bad scheme", args: []string{"--home", filepath.Join(dir, "other"), "init", "--scheme", "rot13"}, code: 2, stderr: "ed25519"},
		{name: "unknown flag", args: []string{"--home", home, "chain", "status", "--bogus"}, code: 2, stderr: "bogus"},
		{name: "unknown global flag", args: []string{"--bogus", "id"}, code: 2},
		{name: "unknown command", args: []string{"--home", home, "frobnicate"}, code: 2, stderr: "frobnicate"},
		{name: "unknown subcommand", args: []string{"--home", home, "chain", "frobnicate"}, code: 2},
		{name: "extra argument", args: []string{"--home", home, "chain", "status", "extra"}, code: 2},
		{name: "bad export format", args: []string{"--home", home, "chain", "export", "--format", "xml"}, code: 2, stderr: "cbor"},
		{name: "no home", args: []string{"--home", filepath.Join(dir, "none"), "chain", "status"}, code: 1, stderr: "init"},
		{name: "no node for ping", args: []string{"--home", home, "ping", string(id)}, code: 1, stderr: "no node running for home " + home + ": start one with `negotiate --home " + home + " node`"},
		{name: "no node for inbox", args: []string{"--home", home, "inbox"}, code: 1, stderr: "no node running"},
		{name: "bad agent id", args: []string{"--home", home, "send", "--to", "bob", "hi"}, code: 2, stderr: "agent ID"},
		{name: "message over the limit", args: []string{"--home", home, "send", "--to", string(id), strings.Repeat("x", 100_000), strings.Repeat("y", 100_000), strings.Repeat("z", 100_000)}, code: 2, stderr: "limit"},
		{name: "help documents exit codes", args: []string{"--help"}, stdout: "4  aborted, timed out or unreachable"},
	})
	// Nothing above changed the key of the home.
	if r := runCLI(t, nil, "--home", home, "id"); strings.TrimSpace(r.stdout) != string(id) {
		t.Errorf("after the table, id = %q, want %s", r.stdout, id)
	}
	if _, err := os.Stat(filepath.Join(dir, "other")); err == nil {
		t.Errorf("init with a bad scheme created the home")
	}
}

func TestInitModes(t *testing.T) {
	for _, scheme := range []string{"ed25519", "ml-dsa-65"} {
		t.Run(scheme, func(t *testing.T) {
			home, id := initHome(t, shortTemp(t), "--scheme", scheme)
			for path, want := range map[string]os.FileMode{home: 0o700, filepath.Join(home, "key.json"): 0o600, filepath.Join(home, "chain.db"): 0o600} {
				st, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != want {
					t.Errorf("%s mode %v, want %v", path, st.Mode().Perm(), want)
				}
			}
			s, err := id.Scheme()
			if err != nil || s.Name() != scheme {
				t.Errorf("agent ID scheme %v (%v), want %s", s, err, scheme)
			}
		})
	}
}

func checkStatus(id sign.AgentID, length uint64) func(t *testing.T, r result) {
	return func(t *testing.T, r result) {
		t.Helper()
		var st map[string]any
		decodeJSON(t, r.stdout, &st)
		if st["agent_id"] != string(id) || st["length"] != float64(length) {
			t.Errorf("status %v, want agent %s length %d", st, id, length)
		}
		if lock, ok := st["lock"]; !ok || lock != nil {
			t.Errorf("status lock = %v (present %v), want null", lock, ok)
		}
		if h, _ := st["head"].(string); len(h) != 64 {
			t.Errorf("status head %q, want 64 hex digits", h)
		}
	}
}

// appendNotes appends n signed "note" entries to the chain of home.
func appendNotes(t *testing.T, home string, n int) {
	t.Helper()
	key, err := sign.LoadKeyFile(filepath.Join(home, "key.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := chain.Open(filepath.Join(home, "chain.db"), chain.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < n; i++ {
		e, err := c.NewEntry(key, "note", map[string]any{"n": i}, time.Now().UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Apply(chain.Write{Append: e}); err != nil {
			t.Fatal(err)
		}
	}
}
