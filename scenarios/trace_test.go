package scenarios

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden traces under testdata/")

// checkGoldenTrace compares a trace with testdata/<name>.trace; with
// -update it rewrites the file instead.
func checkGoldenTrace(t *testing.T, name string, trace []string) {
	t.Helper()
	got := strings.Join(trace, "\n") + "\n"
	path := filepath.Join("testdata", name+".trace")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./scenarios -run TestShippedScenariosSim -update)", err)
	}
	if got != string(want) {
		t.Errorf("trace differs from %s (review the diff, then -update):\n%s", path, firstDiff(string(want), got))
	}
}

func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return "line " + itoa(i+1) + ":\n  want: " + a + "\n  got:  " + b
		}
	}
	return ""
}

func itoa(i int) string {
	return fmtInt(i)
}

func fmtInt(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for i > 0 {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
	}
	return string(b)
}

// TestDeterministicAndSealed: a seed replays to the same trace, and real
// sealing (protocol.Seal/OpenFor on every message) gives the same run as
// the fast path, for every shipped scenario, with and without random faults.
func TestDeterministicAndSealed(t *testing.T) {
	scs, err := Load(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range scs {
		for _, random := range []bool{false, true} {
			a, err := RunSim(context.Background(), sc, SimOptions{Seed: 42, RandomFaults: random})
			if err != nil {
				t.Fatal(err)
			}
			b, err := RunSim(context.Background(), sc, SimOptions{Seed: 42, RandomFaults: random})
			if err != nil {
				t.Fatal(err)
			}
			c, err := RunSim(context.Background(), sc, SimOptions{Seed: 42, RandomFaults: random, Seal: true})
			if err != nil {
				t.Fatal(err)
			}
			if a.TraceHash != b.TraceHash {
				t.Errorf("%s random=%v: two runs of seed 42 differ", sc.Name, random)
			}
			if a.TraceHash != c.TraceHash || a.Passed != c.Passed {
				t.Errorf("%s random=%v: sealed run differs from fast run (passed %v/%v)", sc.Name, random, a.Passed, c.Passed)
			}
		}
	}
}
