package scenarios_test

import (
	"context"
	"fmt"

	"github.com/negotiate-dev/negotiate/scenarios"
)

func ExampleRunSim() {
	sc, err := scenarios.Parse([]byte(`
name: example
parties:
  - name: alice
  - name: bob
    policy: {kind: accept-if, field: price, max: 50}
steps:
  - propose: {from: alice, with: [bob], terms: {item: book, price: 10}}
expect:
  outcome: {alice: committed, bob: committed}
  record_on: [alice, bob]
`), "example.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	r, err := scenarios.RunSim(context.Background(), sc, scenarios.SimOptions{Seed: 7})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.Status, r.Outcomes["s1"]["bob"].State)
	for _, l := range r.Expectations {
		fmt.Println(l.Passed, l.Name)
	}
	// Output:
	// passed committed
	// true outcome s1 alice = committed
	// true outcome s1 bob = committed
	// true record on exactly [alice bob]
	// true every chain verifies
	// true no lock held
}

func ExampleExplore() {
	scs, err := scenarios.Load("3-party-agreement.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	rep, err := scenarios.Explore(context.Background(), scs[0], scenarios.ExploreOptions{Runs: 20, Seed: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(rep.Runs, rep.Passed)
	for _, f := range rep.Failures {
		fmt.Println("replay:", f.Replay)
	}
	// Output:
	// 20 true
}
