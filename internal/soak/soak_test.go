package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// binary builds cmd/negotiate once for the package's tests.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "soak-test-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin, buildErr = BuildBinary(context.Background(), dir)
		if buildErr == nil {
			buildErr = statSources()
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// statSources stats every Go source of the module. go test caches a
// result by the package's own dependencies and the files the test opened
// or stat'ed; the binary built above comes from a subprocess, so without
// this a change to cmd/negotiate or the engine would not rerun the soak.
func statSources() error {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != root {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum") {
			_, err := os.Stat(path)
			return err
		}
		return nil
	})
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// TestSoakShort is the crash soak in short: 5 real daemons, 30 s of
// random sessions while daemons are SIGKILLed and restarted, then every
// invariant on the chain files.
func TestSoakShort(t *testing.T) {
	bin := binary(t)
	var progress strings.Builder
	rep, err := Run(context.Background(), Options{
		Bin:           bin,
		Dir:           filepath.Join(t.TempDir(), "soak"),
		Duration:      30 * time.Second,
		KillMin:       2 * time.Second,
		KillMax:       5 * time.Second,
		Progress:      &progress,
		ProgressEvery: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	rep.WriteText(&text)
	t.Log("\n" + text.String())
	if !rep.OK() {
		t.Fatalf("invariant violations:\n%s", strings.Join(rep.Violations, "\n"))
	}
	// The run did what a soak is for: it killed daemons while sessions
	// ran, sessions committed and were rejected, and the check read them.
	if rep.Kills == 0 {
		t.Error("no daemon was killed")
	}
	if rep.AfterCrash.Started == 0 {
		t.Error("no session was in flight when a party was killed")
	}
	if rep.Sessions.Committed == 0 || rep.Sessions.Rejected == 0 {
		t.Errorf("want committed and rejected sessions, got %+v", rep.Sessions)
	}
	if rep.Check.Records != rep.Sessions.Committed+rep.Check.Untracked {
		t.Errorf("chains hold %d records (%d untracked), the initiators reported %d committed",
			rep.Check.Records, rep.Check.Untracked, rep.Sessions.Committed)
	}
	if len(rep.Check.Chains) != DefaultNodes {
		t.Errorf("checked %d chains, want %d", len(rep.Check.Chains), DefaultNodes)
	}
	for _, c := range rep.Check.Chains {
		if !c.Verified || c.Locked != "" {
			t.Errorf("chain %+v", c)
		}
	}
	if !strings.Contains(progress.String(), "started") {
		t.Errorf("no progress line: %q", progress.String())
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"sessions"`, `"resolved_after_crash"`, `"violations":[]`, `"committed"`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("JSON report lacks %s: %s", key, b)
		}
	}
}

// twoHomes makes two homes, runs them as daemons and commits one session
// between them. It returns the homes, the session ID and its record hash.
func twoHomes(t *testing.T, bin string, beforeStart func(a, b string)) (homes []string, session, record string) {
	t.Helper()
	ctx := context.Background()
	c := cli{bin: bin}
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte(policyYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	var nodes []*node
	for i, name := range []string{"a", "b"} {
		home := filepath.Join(dir, name)
		if _, err := c.run(ctx, "--home", home, "init"); err != nil {
			t.Fatal(err)
		}
		out, err := c.run(ctx, "--home", home, "id", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var id struct {
			AgentID string `json:"agent_id"`
		}
		if err := json.Unmarshal(out, &id); err != nil {
			t.Fatal(err)
		}
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, &node{index: i, home: home, agent: id.AgentID, policy: policy,
			tcpPort: port, udpPort: port, logPath: filepath.Join(dir, name+".log")})
		homes = append(homes, home)
	}
	if beforeStart != nil {
		beforeStart(homes[0], homes[1])
	}
	if err := nodes[0].start(ctx, bin, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nodes[0].kill() })
	if err := nodes[1].start(ctx, bin, nodes[0].addrs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nodes[1].kill() })
	var out []byte
	var err error
	for range 20 {
		out, err = c.run(ctx, "--home", homes[0], "propose", "--json", "--with", nodes[1].agent,
			"--term", "item=book", "--term", "price=25", "--timeout", "10s")
		if err == nil {
			break
		}
		time.Sleep(500 * time.Millisecond) // the DHT may not have b's record yet
	}
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Outcome    string `json:"outcome"`
		Session    string `json:"session"`
		RecordHash string `json:"record_hash"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.Outcome != "committed" {
		t.Fatalf("propose: %s (%v)", out, err)
	}
	// b commits on a's Ready; wait until its chain has the record.
	for range 50 {
		st, err := nodes[1].client().ChainStatus(ctx)
		if err == nil && st.Length == 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, n := range nodes {
		if err := n.stop(); err != nil {
			t.Fatal(err)
		}
	}
	return homes, res.Session, res.RecordHash
}

// TestCheckHomesPasses: a committed session between two real daemons
// passes every check, and the expectation that it committed is checked.
func TestCheckHomesPasses(t *testing.T) {
	bin := binary(t)
	homes, session, record := twoHomes(t, bin, nil)
	rep, err := CheckHomes(context.Background(), bin, homes, []Expectation{{Session: session, Outcome: "committed", RecordHash: record}})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("violations: %v", rep.Violations)
	}
	if rep.Records != 1 || rep.Expected != 1 || rep.Untracked != 0 {
		t.Errorf("report %+v", rep)
	}
	// A wrong expectation is caught: the session did not end aborted.
	rep, err = CheckHomes(context.Background(), bin, homes, []Expectation{{Session: session, Outcome: "aborted"}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || !strings.Contains(strings.Join(rep.Violations, "\n"), "ended aborted at its initiator but its record is on") {
		t.Errorf("an aborted expectation for a committed session passed: %v", rep.Violations)
	}
}

// TestCheckHomesFindsMissingRecord: when one party's chain lacks the
// record (its chain file is put back as it was before the session), the
// check reports the broken atomicity and the committed session it lacks.
func TestCheckHomesFindsMissingRecord(t *testing.T) {
	bin := binary(t)
	saved := filepath.Join(t.TempDir(), "b-chain.db")
	var bHome string
	homes, session, record := twoHomes(t, bin, func(a, b string) {
		bHome = b
		copyFile(t, filepath.Join(b, "chain.db"), saved)
	})
	copyFile(t, saved, filepath.Join(bHome, "chain.db"))
	rep, err := CheckHomes(context.Background(), bin, homes, []Expectation{{Session: session, Outcome: "committed", RecordHash: record}})
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(rep.Violations, "\n")
	for _, want := range []string{"atomicity: session " + session, "committed at its initiator but party"} {
		if !strings.Contains(all, want) {
			t.Errorf("violations lack %q:\n%s", want, all)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
