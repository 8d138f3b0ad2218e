package negotiate

// Policy decides proposals and counters as they arrive. ok=false leaves
// the decision to the application (Node.Decide) or the user (the CLI's
// inbox). Implementations must be safe for concurrent use. The rule files
// of `negotiate node --policy` are a Policy too (package
// negotiate/policy).
type Policy interface {
	Decide(p Proposal) (d Decision, ok bool)
}

// PolicyFunc adapts a function to Policy.
type PolicyFunc func(p Proposal) (Decision, bool)

// Decide calls f(p).
func (f PolicyFunc) Decide(p Proposal) (Decision, bool) { return f(p) }

// AcceptAll accepts every proposal and counter. For an initiator, accepting
// a counter proposes the countered terms as the next round.
var AcceptAll Policy = PolicyFunc(func(p Proposal) (Decision, bool) {
	if p.Kind != EvProposal && p.Kind != EvCounter {
		return Decision{}, false
	}
	return Decision{Session: p.Session, Action: ActAccept}, true
})
