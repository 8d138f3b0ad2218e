package policy

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/lexer"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"

	"github.com/negotiate-dev/negotiate/negotiate/engine"
	"github.com/negotiate-dev/negotiate/protocol"
	"github.com/negotiate-dev/negotiate/sign"
)

// Policy file limits. A policy is written by hand; each limit bounds what
// a mistaken or hostile file can make the node parse, hold or scan.
const (
	// MaxFileBytes bounds a policy file: 1000 rules fit in a quarter of it,
	// and the YAML parser's time grows with the size.
	MaxFileBytes = 256 << 10
	// MaxRules bounds the rules scanned, first match wins, for every proposal.
	MaxRules = 1000
	// maxPolicyTerms bounds the terms one rule's when or counter names.
	maxPolicyTerms = 256
	// maxPolicyList bounds a from, in or not_in list.
	maxPolicyList = 1000
	// maxPolicyNameBytes bounds rule names and term names, which appear in logs.
	maxPolicyNameBytes = 256
	// maxPolicyFlowDepth bounds [ ] and { } nesting: the schema needs 3
	// levels, and the YAML parser's time grows with the square of the depth.
	maxPolicyFlowDepth = 16
	// maxPolicyIndent bounds the column of block keys and "-" entries, which
	// bounds block nesting for the same reason.
	maxPolicyIndent = 128
)

// ErrInvalid is wrapped by every error about a policy file's content.
var ErrInvalid = errors.New("negotiate: bad policy")

// Error is a mistake in a policy file, with where it is.
type Error struct {
	Source string // the file name (or the source given to Parse)
	Line   int    // 1-based; 0 when the error is about the whole file
	Column int    // 1-based; 0 when unknown
	Field  string // the field's path, e.g. "rules[0].when.price.min"; "" for syntax errors
	Msg    string // what is wrong and what to do
}

// Error formats the error as "policy FILE:LINE:COL: FIELD: MESSAGE".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("policy ")
	b.WriteString(e.Source)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *Error) Unwrap() error { return ErrInvalid }

// Policy rule actions as written in a file.
const (
	policyAccept  = "accept"
	policyReject  = "reject"
	policyCounter = "counter"
	policyAsk     = "ask"
)

// Rules is a declarative policy loaded from a file: an ordered list of
// rules (the first that matches decides), a default for when none matches,
// and an optional round limit. It is immutable after loading and safe for
// concurrent use. The file format is described in docs/policy.md.
type Rules struct {
	source   string
	rules    []policyRule
	def      string // accept, reject or ask
	maxRound uint32 // 0 = no limit
}

type policyRule struct {
	name   string
	line   int
	from   []sign.AgentID // nil: anyone
	role   engine.Role    // "": either
	when   []termCond
	action string
	reason string
	moves  []termMove
	set    []termSet
}

// termCond is every condition on one term; all must hold.
type termCond struct {
	term     string
	absent   bool // present: false
	min, max *policyNum
	equals   *policyValue
	in       []policyValue
	notIn    []policyValue
}

type termMove struct {
	term    string
	toward  policyNum
	step    policyNum
	hasStep bool
}

type termSet struct {
	term  string
	value policyValue
}

// policyNum is an exact number: an integer (any size) or a finite float.
type policyNum struct {
	i *big.Int // set for integers
	f float64  // otherwise
}

func (n policyNum) isInt() bool { return n.i != nil }

func (n policyNum) bigFloat() *big.Float {
	if n.i != nil {
		return new(big.Float).SetInt(n.i)
	}
	return big.NewFloat(n.f)
}

func (n policyNum) cmp(o policyNum) int {
	if n.i != nil && o.i != nil {
		return n.i.Cmp(o.i)
	}
	return n.bigFloat().Cmp(o.bigFloat())
}

// wholeInt returns n as an integer if it has an integral value.
func (n policyNum) wholeInt() (*big.Int, bool) {
	if n.i != nil {
		return n.i, true
	}
	if n.f != math.Trunc(n.f) {
		return nil, false
	}
	i, _ := big.NewFloat(n.f).Int(nil)
	return i, true
}

func (n policyNum) float() float64 {
	if n.i != nil {
		f, _ := new(big.Float).SetInt(n.i).Float64()
		return f
	}
	return n.f
}

func (n policyNum) String() string {
	if n.i != nil {
		return n.i.String()
	}
	return strconv.FormatFloat(n.f, 'g', -1, 64)
}

// goValue is the value as it goes into terms: int64 or uint64, float64.
func (n policyNum) goValue() any {
	if n.i != nil {
		if n.i.IsInt64() {
			return n.i.Int64()
		}
		return n.i.Uint64() // results lie between two values that fit 64 bits
	}
	return n.f
}

// numOf reads a term value as a number; ok is false for anything else,
// including NaN and infinities.
func numOf(v any) (policyNum, bool) {
	switch x := v.(type) {
	case int:
		return policyNum{i: big.NewInt(int64(x))}, true
	case int8:
		return policyNum{i: big.NewInt(int64(x))}, true
	case int16:
		return policyNum{i: big.NewInt(int64(x))}, true
	case int32:
		return policyNum{i: big.NewInt(int64(x))}, true
	case int64:
		return policyNum{i: big.NewInt(x)}, true
	case uint:
		return policyNum{i: new(big.Int).SetUint64(uint64(x))}, true
	case uint8:
		return policyNum{i: new(big.Int).SetUint64(uint64(x))}, true
	case uint16:
		return policyNum{i: new(big.Int).SetUint64(uint64(x))}, true
	case uint32:
		return policyNum{i: new(big.Int).SetUint64(uint64(x))}, true
	case uint64:
		return policyNum{i: new(big.Int).SetUint64(x)}, true
	case float32:
		return finiteNum(float64(x))
	case float64:
		return finiteNum(x)
	}
	return policyNum{}, false
}

func finiteNum(f float64) (policyNum, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return policyNum{}, false
	}
	return policyNum{f: f}, true
}

// policyValue is a scalar of a policy file: a string, a number or a bool.
type policyValue struct {
	kind byte // 's', 'n' or 'b'
	s    string
	n    policyNum
	b    bool
}

// equal compares a term value with v: numbers by value (10 equals 10.0),
// strings and bools exactly; different kinds are never equal.
func (v policyValue) equal(term any) bool {
	switch v.kind {
	case 's':
		s, ok := term.(string)
		return ok && s == v.s
	case 'b':
		b, ok := term.(bool)
		return ok && b == v.b
	default:
		n, ok := numOf(term)
		return ok && n.cmp(v.n) == 0
	}
}

func (v policyValue) goValue() any {
	switch v.kind {
	case 's':
		return v.s
	case 'b':
		return v.b
	default:
		return v.n.goValue()
	}
}

func anyEqual(vs []policyValue, term any) bool {
	for _, v := range vs {
		if v.equal(term) {
			return true
		}
	}
	return false
}

func (c *termCond) holds(terms map[string]any) bool {
	v, ok := terms[c.term]
	if c.absent {
		return !ok
	}
	if !ok {
		return false
	}
	if c.min != nil || c.max != nil {
		n, ok := numOf(v)
		if !ok || (c.min != nil && n.cmp(*c.min) < 0) || (c.max != nil && n.cmp(*c.max) > 0) {
			return false
		}
	}
	if c.equals != nil && !c.equals.equal(v) {
		return false
	}
	if len(c.in) > 0 && !anyEqual(c.in, v) {
		return false
	}
	if len(c.notIn) > 0 && anyEqual(c.notIn, v) {
		return false
	}
	return true
}

// Verdict is a policy's answer with the rule that gave it, for logs and
// for testing a policy file.
type Verdict struct {
	// Decision is the decision to apply when Decided.
	Decision engine.Decision
	// Decided is false when the decision is left to the user.
	Decided bool
	// Rule is the name of the rule that decided ("" for the default or the round limit).
	Rule string
	// Why says in words how the verdict came about.
	Why string
}

// Source is the file name the policy was loaded from.
func (p *Rules) Source() string { return p.source }

// Rules lists the rule names in order (unnamed rules are "rule N", 1-based).
func (p *Rules) Rules() []string {
	names := make([]string, len(p.rules))
	for i, r := range p.rules {
		names[i] = r.name
	}
	return names
}

// Decide implements Policy: it returns Evaluate's decision. A nil policy
// decides nothing.
func (p *Rules) Decide(pr engine.Proposal) (engine.Decision, bool) {
	v := p.Evaluate(pr)
	return v.Decision, v.Decided
}

// Evaluate decides pr and says which rule did. The round limit is checked
// first, then the rules in order; a counter rule whose terms to move are
// missing or not numbers does not match. When nothing matches, the
// default applies.
func (p *Rules) Evaluate(pr engine.Proposal) Verdict {
	v := Verdict{Decision: engine.Decision{Session: pr.Session}}
	if p == nil {
		v.Why = "no policy"
		return v
	}
	if pr.Kind != engine.EvProposal && pr.Kind != engine.EvCounter {
		v.Why = fmt.Sprintf("a policy decides proposals and counters, not %q events", pr.Kind)
		return v
	}
	terms := pr.Terms
	if terms == nil && len(pr.RawTerms) > 0 {
		if err := protocol.Unmarshal(pr.RawTerms, &terms); err != nil {
			v.Why = fmt.Sprintf("the terms cannot be decoded: %v", err)
			return v
		}
	}
	if p.maxRound > 0 {
		// An initiator that does anything but reject a counter proposes the next round.
		next := pr.Round
		if pr.Kind == engine.EvCounter {
			next++
		}
		if next > p.maxRound {
			v.Decision.Action, v.Decided = engine.ActReject, true
			v.Decision.Reason = "round limit reached"
			v.Why = fmt.Sprintf("round %d would be beyond max_round %d", next, p.maxRound)
			return v
		}
	}
	for i := range p.rules {
		r := &p.rules[i]
		if !r.matches(pr, terms) {
			continue
		}
		v.Rule = r.name
		switch r.action {
		case policyAsk:
			v.Why = fmt.Sprintf("rule %q: ask the user", r.name)
			return v
		case policyAccept:
			v.Decision.Action, v.Decided = engine.ActAccept, true
			v.Why = fmt.Sprintf("rule %q: accept", r.name)
			return v
		case policyReject:
			v.Decision.Action, v.Decided = engine.ActReject, true
			v.Decision.Reason = r.reason
			if v.Decision.Reason == "" {
				v.Decision.Reason = "rejected by policy"
			}
			v.Why = fmt.Sprintf("rule %q: reject", r.name)
			return v
		}
		next, atTarget, ok := r.counterTerms(terms)
		if !ok {
			v.Rule = ""
			continue
		}
		if atTarget {
			v.Decision.Action, v.Decided = engine.ActAccept, true
			v.Why = fmt.Sprintf("rule %q: the terms are already at the counter's targets: accept", r.name)
			return v
		}
		raw, err := protocol.EncodeTerms(next)
		if err != nil {
			v.Why = fmt.Sprintf("rule %q: the counter terms cannot be encoded, ask the user: %v", r.name, err)
			return v
		}
		v.Decision.Action, v.Decision.Terms, v.Decided = engine.ActCounter, raw, true
		v.Why = fmt.Sprintf("rule %q: counter", r.name)
		return v
	}
	switch p.def {
	case policyAccept:
		v.Decision.Action, v.Decided = engine.ActAccept, true
	case policyReject:
		v.Decision.Action, v.Decided = engine.ActReject, true
		v.Decision.Reason = "rejected by policy"
	}
	v.Why = "no rule matched: default " + p.def
	return v
}

func (r *policyRule) matches(pr engine.Proposal, terms map[string]any) bool {
	if r.role != "" && r.role != pr.Role {
		return false
	}
	if r.from != nil && !slices.Contains(r.from, pr.From) {
		return false
	}
	for i := range r.when {
		if !r.when[i].holds(terms) {
			return false
		}
	}
	return true
}

// counterTerms returns a copy of terms with the rule's moves and sets
// applied. atTarget reports that every moved term already is at its target
// and every set term already has its value. ok is false when a term to
// move is missing or not a number.
func (r *policyRule) counterTerms(terms map[string]any) (next map[string]any, atTarget, ok bool) {
	next = make(map[string]any, len(terms)+len(r.set))
	for k, v := range terms {
		next[k] = v
	}
	atTarget = true
	for _, m := range r.moves {
		cur, ok := numOf(terms[m.term])
		if !ok {
			return nil, false, false
		}
		if cur.cmp(m.toward) != 0 {
			atTarget = false
		}
		next[m.term] = m.apply(cur)
	}
	for _, s := range r.set {
		old, ok := terms[s.term]
		if !ok || !s.value.equal(old) {
			atTarget = false
		}
		next[s.term] = s.value.goValue()
	}
	return next, atTarget, true
}

// apply moves cur toward the target by at most step, never past it. The
// result is an integer when cur is one and the target and step are whole
// numbers; otherwise a float64.
func (m termMove) apply(cur policyNum) any {
	if cur.isInt() {
		target, tok := m.toward.wholeInt()
		step, sok := m.step.wholeInt()
		if tok && fits64(target) && (sok || !m.hasStep) {
			d := new(big.Int).Sub(target, cur.i)
			if !m.hasStep || new(big.Int).Abs(d).Cmp(step) <= 0 {
				return policyNum{i: target}.goValue()
			}
			if d.Sign() > 0 {
				return policyNum{i: new(big.Int).Add(cur.i, step)}.goValue()
			}
			return policyNum{i: new(big.Int).Sub(cur.i, step)}.goValue()
		}
	}
	c, t := cur.float(), m.toward.float()
	if !m.hasStep {
		return t
	}
	s := m.step.float()
	if math.Abs(t-c) <= s {
		return t
	}
	if t > c {
		return math.Min(c+s, t)
	}
	return math.Max(c-s, t)
}

var (
	minInt64  = big.NewInt(math.MinInt64)
	maxUint64 = new(big.Int).SetUint64(math.MaxUint64)
)

// fits64 reports whether i is an int64 or a uint64.
func fits64(i *big.Int) bool { return i.Cmp(minInt64) >= 0 && i.Cmp(maxUint64) <= 0 }

// LoadFile reads and parses a policy file (YAML, or JSON, which is YAML).
func LoadFile(path string) (*Rules, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("negotiate: read policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("negotiate: read policy %s: %w", path, err)
	}
	return Parse(data, path)
}

// Parse parses a policy from data; source names it in errors. Every
// mistake is a *Error (wrapping ErrInvalid) with the line, column
// and field. Unknown fields, duplicate keys, anchors, aliases and tags are
// errors.
func Parse(data []byte, source string) (*Rules, error) {
	if source == "" {
		source = "(policy)"
	}
	ps := &policyParser{source: source}
	if len(data) > MaxFileBytes {
		return nil, &Error{Source: source, Msg: fmt.Sprintf("the file is larger than %d bytes: split or shorten it", MaxFileBytes)}
	}
	file, err := ps.parseYAML(data)
	if err != nil {
		return nil, err
	}
	var body ast.Node
	for _, doc := range file.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		if _, ok := doc.Body.(*ast.CommentGroupNode); ok {
			continue
		}
		if body != nil {
			return nil, ps.errf(doc.Body, "", "the file holds more than one YAML document (---): keep one")
		}
		body = doc.Body
	}
	if body == nil {
		return nil, &Error{Source: source, Msg: "the policy is empty: add rules and/or a default (see docs/policy.md)"}
	}
	return ps.file(body)
}

// parseYAML bounds the nesting, then parses data into a syntax tree.
func (ps *policyParser) parseYAML(data []byte) (file *ast.File, err error) {
	defer func() {
		// The YAML lexer and parser are third-party code: a failure inside
		// them must not take the node down (no panic on any file content).
		if r := recover(); r != nil {
			file, err = nil, &Error{Source: ps.source, Msg: fmt.Sprintf("the YAML parser failed on this file (%v): check its syntax", r)}
		}
	}()
	if err := ps.checkNesting(data); err != nil {
		return nil, err
	}
	file, err = parser.ParseBytes(data, 0)
	if err != nil {
		// Not err.Error(): it prints the source around the error, which
		// costs much on a long line.
		var ye yaml.Error
		if !errors.As(err, &ye) {
			return nil, &Error{Source: ps.source, Msg: "YAML syntax: " + err.Error()}
		}
		pe := &Error{Source: ps.source, Msg: "YAML syntax: " + ye.GetMessage()}
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			pe.Line, pe.Column = tk.Position.Line, tk.Position.Column
		}
		return nil, pe
	}
	if file == nil {
		return nil, &Error{Source: ps.source, Msg: "the YAML parser returned nothing: check the file's syntax"}
	}
	return file, nil
}

type policyParser struct {
	source string
}

// nodePos is the position of n: for a mapping, its first key.
func nodePos(n ast.Node) (line, col int) {
	switch m := n.(type) {
	case nil:
		return 0, 0
	case *ast.MappingNode:
		if len(m.Values) > 0 {
			return nodePos(m.Values[0])
		}
	case *ast.MappingValueNode:
		if m.Key != nil {
			return nodePos(m.Key)
		}
	case *ast.LiteralNode:
		if m.Start == nil && m.Value != nil {
			return nodePos(m.Value)
		}
	}
	tk := n.GetToken()
	if tk == nil || tk.Position == nil {
		return 0, 0
	}
	return tk.Position.Line, tk.Position.Column
}

func (ps *policyParser) errf(n ast.Node, field, format string, args ...any) *Error {
	line, col := nodePos(n)
	return &Error{Source: ps.source, Line: line, Column: col, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// checkNesting bounds nesting before the parser sees the file, whose time
// grows with the square of the depth.
func (ps *policyParser) checkNesting(data []byte) error {
	depth := 0
	var prev *token.Token
	for _, tk := range lexer.Tokenize(string(data)) {
		if tk == nil {
			continue
		}
		line, col := 0, 0
		if tk.Position != nil {
			line, col = tk.Position.Line, tk.Position.Column
		}
		deep := false
		switch tk.Type {
		case token.SequenceStartType, token.MappingStartType:
			depth++
			deep = depth > maxPolicyFlowDepth
		case token.SequenceEndType, token.MappingEndType:
			if depth > 0 {
				depth--
			}
		case token.SequenceEntryType:
			deep = depth == 0 && col > maxPolicyIndent
		case token.MappingValueType:
			if depth == 0 && prev != nil && prev.Position != nil && prev.Position.Column > maxPolicyIndent {
				deep = true
			}
		}
		if deep {
			return &Error{Source: ps.source, Line: line, Column: col,
				Msg: fmt.Sprintf("nested too deeply (more than %d levels of brackets or indented past column %d): a policy needs a few levels only", maxPolicyFlowDepth, maxPolicyIndent)}
		}
		prev = tk
	}
	return nil
}

// strip returns n without its document wrapper and refuses anchors,
// aliases and tags, which a policy does not need.
func (ps *policyParser) strip(n ast.Node, field string) (ast.Node, error) {
	for {
		switch x := n.(type) {
		case *ast.DocumentNode:
			n = x.Body
			continue
		case *ast.SequenceEntryNode:
			n = x.Value
			continue
		case *ast.AnchorNode, *ast.AliasNode, *ast.MergeKeyNode:
			return nil, ps.errf(n, field, "anchors (&), aliases (*) and merge keys (<<) are not supported: write the value out")
		case *ast.TagNode:
			return nil, ps.errf(n, field, "YAML tags (!!) are not supported: write a plain value")
		case *ast.MappingKeyNode:
			return nil, ps.errf(n, field, "complex keys (?) are not supported")
		case *ast.DirectiveNode:
			return nil, ps.errf(n, field, "YAML directives (%%) are not supported")
		}
		return n, nil
	}
}

// describe names a node's kind for error messages.
func describe(n ast.Node) string {
	switch x := n.(type) {
	case nil, *ast.NullNode:
		return "nothing (null)"
	case *ast.StringNode:
		return fmt.Sprintf("the text %q", abbreviateText(x.Value))
	case *ast.LiteralNode:
		return "a block of text"
	case *ast.IntegerNode, *ast.FloatNode:
		return "the number " + tokenText(x)
	case *ast.InfinityNode, *ast.NanNode:
		return tokenText(x)
	case *ast.BoolNode:
		return "the boolean " + tokenText(x)
	case *ast.SequenceNode:
		return "a list"
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	}
	return "a " + n.Type().String()
}

func tokenText(n ast.Node) string {
	if tk := n.GetToken(); tk != nil {
		return abbreviateText(tk.Value)
	}
	return "?"
}

func abbreviateText(s string) string {
	const maxShown = 40
	if len(s) > maxShown {
		return s[:maxShown] + "..."
	}
	return s
}

type policyField struct {
	key   string
	keyN  ast.Node
	value ast.Node
}

// mapping returns the entries of a mapping; keys are checked against
// known (nil: any key). Duplicate keys are syntax errors of the parser.
func (ps *policyParser) mapping(n ast.Node, field string, known []string) ([]policyField, error) {
	n, err := ps.strip(n, field)
	if err != nil {
		return nil, err
	}
	var values []*ast.MappingValueNode
	switch m := n.(type) {
	case *ast.MappingNode:
		values = m.Values
	case *ast.MappingValueNode:
		values = []*ast.MappingValueNode{m}
	default:
		return nil, ps.errf(n, field, "must be a mapping (key: value), not %s", describe(n))
	}
	out := make([]policyField, 0, len(values))
	for _, mv := range values {
		if mv == nil {
			continue
		}
		keyN, err := ps.strip(mv.Key, field)
		if err != nil {
			return nil, err
		}
		var key string
		switch k := keyN.(type) {
		case *ast.StringNode:
			key = k.Value
		case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode:
			key = tokenText(k)
		default:
			return nil, ps.errf(mv, field, "a key must be plain text, not %s", describe(keyN))
		}
		sub := key
		if field != "" {
			sub = field + "." + key
		}
		if known != nil && !slices.Contains(known, key) {
			return nil, ps.errf(keyN, sub, "unknown field %q: use %s", abbreviateText(key), strings.Join(known, ", "))
		}
		val, err := ps.strip(mv.Value, sub)
		if err != nil {
			return nil, err
		}
		if val == nil {
			val = &ast.NullNode{BaseNode: &ast.BaseNode{}, Token: mv.Start}
		}
		out = append(out, policyField{key: key, keyN: keyN, value: val})
	}
	return out, nil
}

func (ps *policyParser) list(n ast.Node, field string, maxItems int) ([]ast.Node, error) {
	seq, ok := n.(*ast.SequenceNode)
	if !ok {
		return nil, ps.errf(n, field, "must be a list, e.g. [a, b], not %s", describe(n))
	}
	if len(seq.Values) == 0 {
		return nil, ps.errf(n, field, "is an empty list: name at least one or remove the field")
	}
	if len(seq.Values) > maxItems {
		return nil, ps.errf(n, field, "has %d items, the limit is %d", len(seq.Values), maxItems)
	}
	out := make([]ast.Node, len(seq.Values))
	for i, v := range seq.Values {
		sv, err := ps.strip(v, fmt.Sprintf("%s[%d]", field, i))
		if err != nil {
			return nil, err
		}
		if sv == nil {
			return nil, ps.errf(n, fmt.Sprintf("%s[%d]", field, i), "is empty")
		}
		out[i] = sv
	}
	return out, nil
}

func (ps *policyParser) text(n ast.Node, field string) (string, error) {
	switch x := n.(type) {
	case *ast.StringNode:
		return x.Value, nil
	case *ast.LiteralNode:
		if x.Value != nil {
			return x.Value.Value, nil
		}
	}
	return "", ps.errf(n, field, "must be text, not %s", describe(n))
}

func (ps *policyParser) number(n ast.Node, field string) (policyNum, error) {
	switch x := n.(type) {
	case *ast.IntegerNode:
		switch v := x.Value.(type) {
		case int64:
			return policyNum{i: big.NewInt(v)}, nil
		case uint64:
			return policyNum{i: new(big.Int).SetUint64(v)}, nil
		}
	case *ast.FloatNode:
		if n, ok := finiteNum(x.Value); ok {
			return n, nil
		}
	case *ast.StringNode:
		if _, err := strconv.ParseFloat(strings.ReplaceAll(x.Value, "_", ""), 64); err == nil || errors.Is(err, strconv.ErrRange) {
			return policyNum{}, ps.errf(n, field, "must be a number, not %s (integers must fit in 64 bits, decimals in a float64; numbers in quotes are text)", describe(n))
		}
	}
	return policyNum{}, ps.errf(n, field, "must be a finite number, not %s", describe(n))
}

func (ps *policyParser) boolean(n ast.Node, field string) (bool, error) {
	if b, ok := n.(*ast.BoolNode); ok {
		return b.Value, nil
	}
	return false, ps.errf(n, field, "must be true or false, not %s", describe(n))
}

func (ps *policyParser) value(n ast.Node, field string) (policyValue, error) {
	switch x := n.(type) {
	case *ast.StringNode, *ast.LiteralNode:
		s, err := ps.text(x, field)
		return policyValue{kind: 's', s: s}, err
	case *ast.BoolNode:
		return policyValue{kind: 'b', b: x.Value}, nil
	case *ast.IntegerNode, *ast.FloatNode:
		num, err := ps.number(x, field)
		return policyValue{kind: 'n', n: num}, err
	}
	return policyValue{}, ps.errf(n, field, "must be text, a number or true/false, not %s", describe(n))
}

func (ps *policyParser) values(n ast.Node, field string) ([]policyValue, error) {
	items, err := ps.list(n, field, maxPolicyList)
	if err != nil {
		return nil, err
	}
	out := make([]policyValue, len(items))
	for i, it := range items {
		if out[i], err = ps.value(it, fmt.Sprintf("%s[%d]", field, i)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (ps *policyParser) name(n ast.Node, field, what string) (string, error) {
	s, err := ps.text(n, field)
	if err != nil {
		return "", err
	}
	return s, ps.checkName(s, n, field, what)
}

// checkName bounds a rule or term name.
func (ps *policyParser) checkName(s string, n ast.Node, field, what string) error {
	if s == "" {
		return ps.errf(n, field, "%s is empty", what)
	}
	if len(s) > maxPolicyNameBytes {
		return ps.errf(n, field, "%s is %d bytes, the limit is %d", what, len(s), maxPolicyNameBytes)
	}
	return nil
}

var (
	policyFileFields    = []string{"rules", "default", "max_round"}
	policyRuleFields    = []string{"name", "from", "role", "when", "action", "reason", "counter"}
	policyCondFields    = []string{"min", "max", "equals", "in", "not_in", "present"}
	policyMoveFields    = []string{"toward", "step"}
	policyActions       = []string{policyAccept, policyReject, policyCounter, policyAsk}
	policyDefaults      = []string{policyAccept, policyReject, policyAsk}
	policyRoles         = []string{string(engine.RoleInitiator), string(engine.RoleParticipant)}
	policyNullFieldHint = "has no value: give one or remove the field"
)

func (ps *policyParser) file(body ast.Node) (*Rules, error) {
	fields, err := ps.mapping(body, "", policyFileFields)
	if err != nil {
		return nil, err
	}
	p := &Rules{source: ps.source, def: policyAsk}
	for _, f := range fields {
		if _, ok := f.value.(*ast.NullNode); ok {
			return nil, ps.errf(f.keyN, f.key, "%s", policyNullFieldHint)
		}
		switch f.key {
		case "rules":
			items, err := ps.list(f.value, "rules", MaxRules)
			if err != nil {
				return nil, err
			}
			names := make(map[string]int, len(items))
			for i, it := range items {
				r, err := ps.rule(it, i)
				if err != nil {
					return nil, err
				}
				if prev, dup := names[r.name]; dup {
					return nil, ps.errf(it, fmt.Sprintf("rules[%d].name", i), "rule name %q is already used by the rule at line %d: names must be unique", r.name, prev)
				}
				names[r.name] = r.line
				p.rules = append(p.rules, r)
			}
		case "default":
			s, err := ps.text(f.value, "default")
			if err != nil || !slices.Contains(policyDefaults, s) {
				return nil, ps.errf(f.value, "default", "must be one of %s, not %s", strings.Join(policyDefaults, ", "), describe(f.value))
			}
			p.def = s
		case "max_round":
			n, err := ps.number(f.value, "max_round")
			if err != nil {
				return nil, err
			}
			if !n.isInt() || n.i.Sign() <= 0 || n.i.Cmp(big.NewInt(protocol.MaxRounds)) > 0 {
				return nil, ps.errf(f.value, "max_round", "must be a whole number from 1 to %d, not %s", protocol.MaxRounds, n)
			}
			p.maxRound = uint32(n.i.Uint64())
		}
	}
	return p, nil
}

func (ps *policyParser) rule(n ast.Node, idx int) (policyRule, error) {
	field := fmt.Sprintf("rules[%d]", idx)
	fields, err := ps.mapping(n, field, policyRuleFields)
	if err != nil {
		return policyRule{}, err
	}
	r := policyRule{name: fmt.Sprintf("rule %d", idx+1)}
	r.line, _ = nodePos(n)
	var actionN, counterN, reasonN ast.Node
	for _, f := range fields {
		sub := field + "." + f.key
		if _, ok := f.value.(*ast.NullNode); ok {
			return policyRule{}, ps.errf(f.keyN, sub, "%s", policyNullFieldHint)
		}
		switch f.key {
		case "name":
			if r.name, err = ps.name(f.value, sub, "the name"); err != nil {
				return policyRule{}, err
			}
		case "from":
			items, err := ps.list(f.value, sub, maxPolicyList)
			if err != nil {
				return policyRule{}, err
			}
			r.from = make([]sign.AgentID, 0, len(items))
			for i, it := range items {
				itf := fmt.Sprintf("%s[%d]", sub, i)
				s, err := ps.text(it, itf)
				if err != nil {
					return policyRule{}, err
				}
				id, err := sign.ParseAgentID(s)
				if err != nil {
					return policyRule{}, ps.errf(it, itf, "%v", err)
				}
				r.from = append(r.from, id)
			}
		case "role":
			s, err := ps.text(f.value, sub)
			if err != nil || !slices.Contains(policyRoles, s) {
				return policyRule{}, ps.errf(f.value, sub, "must be %s, not %s", strings.Join(policyRoles, " or "), describe(f.value))
			}
			r.role = engine.Role(s)
		case "when":
			if r.when, err = ps.when(f.value, sub); err != nil {
				return policyRule{}, err
			}
		case "action":
			s, err := ps.text(f.value, sub)
			if err != nil || !slices.Contains(policyActions, s) {
				return policyRule{}, ps.errf(f.value, sub, "must be one of %s, not %s", strings.Join(policyActions, ", "), describe(f.value))
			}
			r.action, actionN = s, f.value
		case "reason":
			if r.reason, err = ps.text(f.value, sub); err != nil {
				return policyRule{}, err
			}
			if len(r.reason) > protocol.MaxReasonBytes {
				return policyRule{}, ps.errf(f.value, sub, "is %d bytes, the limit is %d", len(r.reason), protocol.MaxReasonBytes)
			}
			reasonN = f.keyN
		case "counter":
			counterN = f.keyN
			if r.moves, r.set, err = ps.counter(f.value, sub); err != nil {
				return policyRule{}, err
			}
		}
	}
	switch {
	case r.action == "":
		return policyRule{}, ps.errf(n, field+".action", "is missing: every rule needs an action (%s)", strings.Join(policyActions, ", "))
	case r.action == policyCounter && counterN == nil:
		return policyRule{}, ps.errf(actionN, field+".counter", "is missing: action counter needs a counter section saying which terms to move or set")
	case r.action != policyCounter && counterN != nil:
		return policyRule{}, ps.errf(counterN, field+".counter", "is only for action counter, and this rule's action is %s", r.action)
	case r.action != policyReject && reasonN != nil:
		return policyRule{}, ps.errf(reasonN, field+".reason", "is only for action reject, and this rule's action is %s", r.action)
	}
	return r, nil
}

func (ps *policyParser) when(n ast.Node, field string) ([]termCond, error) {
	fields, err := ps.mapping(n, field, nil)
	if err != nil {
		return nil, err
	}
	if len(fields) == 0 {
		return nil, ps.errf(n, field, "is empty: name terms with conditions, or remove it")
	}
	if len(fields) > maxPolicyTerms {
		return nil, ps.errf(n, field, "names %d terms, the limit is %d", len(fields), maxPolicyTerms)
	}
	out := make([]termCond, 0, len(fields))
	for _, f := range fields {
		sub := field + "." + f.key
		if err := ps.checkName(f.key, f.keyN, sub, "the term name"); err != nil {
			return nil, err
		}
		c, err := ps.cond(f, sub)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func (ps *policyParser) cond(tf policyField, field string) (termCond, error) {
	c := termCond{term: tf.key}
	fields, err := ps.mapping(tf.value, field, policyCondFields)
	if err != nil {
		var pe *Error
		if errors.As(err, &pe) && strings.HasPrefix(pe.Msg, "must be a mapping") {
			pe.Msg += fmt.Sprintf(", e.g. %s: {equals: ...} or {min: 1, max: 10}", abbreviateText(tf.key))
		}
		return c, err
	}
	if len(fields) == 0 {
		return c, ps.errf(tf.value, field, "has no condition: use %s", strings.Join(policyCondFields, ", "))
	}
	var minN, presentN ast.Node
	present := true
	for _, f := range fields {
		sub := field + "." + f.key
		switch f.key {
		case "min", "max":
			num, err := ps.number(f.value, sub)
			if err != nil {
				return c, err
			}
			if f.key == "min" {
				c.min, minN = &num, f.value
			} else {
				c.max = &num
			}
		case "equals":
			v, err := ps.value(f.value, sub)
			if err != nil {
				return c, err
			}
			c.equals = &v
		case "in":
			if c.in, err = ps.values(f.value, sub); err != nil {
				return c, err
			}
		case "not_in":
			if c.notIn, err = ps.values(f.value, sub); err != nil {
				return c, err
			}
		case "present":
			if present, err = ps.boolean(f.value, sub); err != nil {
				return c, err
			}
			presentN = f.keyN
		}
	}
	if c.min != nil && c.max != nil && c.min.cmp(*c.max) > 0 {
		return c, ps.errf(minN, field, "min %s is greater than max %s: no value can match", c.min, c.max)
	}
	if !present {
		if len(fields) > 1 {
			return c, ps.errf(presentN, field, "present: false cannot be combined with other conditions on the same term")
		}
		c.absent = true
	}
	return c, nil
}

func (ps *policyParser) counter(n ast.Node, field string) ([]termMove, []termSet, error) {
	fields, err := ps.mapping(n, field, nil)
	if err != nil {
		return nil, nil, err
	}
	if len(fields) == 0 {
		return nil, nil, ps.errf(n, field, "is empty: name terms to move ({toward: N, step: S}) or set")
	}
	var (
		moves []termMove
		sets  []termSet
		named = make(map[string]bool)
	)
	for _, f := range fields {
		sub := field + "." + f.key
		if f.key == "set" {
			sf, err := ps.mapping(f.value, sub, nil)
			if err != nil {
				return nil, nil, err
			}
			if len(sf) == 0 {
				return nil, nil, ps.errf(f.value, sub, "is empty: name terms and their values, or remove it")
			}
			for _, s := range sf {
				ssub := sub + "." + s.key
				if err := ps.checkName(s.key, s.keyN, ssub, "the term name"); err != nil {
					return nil, nil, err
				}
				if named[s.key] {
					return nil, nil, ps.errf(s.keyN, ssub, "term %q is both moved and set: do one", abbreviateText(s.key))
				}
				named[s.key] = true
				v, err := ps.value(s.value, ssub)
				if err != nil {
					return nil, nil, err
				}
				sets = append(sets, termSet{term: s.key, value: v})
			}
			continue
		}
		if err := ps.checkName(f.key, f.keyN, sub, "the term name"); err != nil {
			return nil, nil, err
		}
		if named[f.key] {
			return nil, nil, ps.errf(f.keyN, sub, "term %q is both moved and set: do one", abbreviateText(f.key))
		}
		named[f.key] = true
		mf, err := ps.mapping(f.value, sub, policyMoveFields)
		if err != nil {
			var pe *Error
			if errors.As(err, &pe) && strings.HasPrefix(pe.Msg, "must be a mapping") {
				pe.Msg += fmt.Sprintf(", e.g. %s: {toward: 80, step: 5} (fixed values go under set)", abbreviateText(f.key))
			}
			return nil, nil, err
		}
		m := termMove{term: f.key}
		hasToward := false
		for _, g := range mf {
			gsub := sub + "." + g.key
			num, err := ps.number(g.value, gsub)
			if err != nil {
				return nil, nil, err
			}
			if g.key == "toward" {
				m.toward, hasToward = num, true
				continue
			}
			if num.cmp(policyNum{i: new(big.Int)}) <= 0 {
				return nil, nil, ps.errf(g.value, gsub, "must be greater than 0, not %s", num)
			}
			m.step, m.hasStep = num, true
		}
		if !hasToward {
			return nil, nil, ps.errf(f.value, sub+".toward", "is missing: say which value to move %q toward", abbreviateText(f.key))
		}
		moves = append(moves, m)
	}
	if len(moves)+len(sets) > maxPolicyTerms {
		return nil, nil, ps.errf(n, field, "names %d terms, the limit is %d", len(moves)+len(sets), maxPolicyTerms)
	}
	return moves, sets, nil
}
