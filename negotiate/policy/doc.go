// Package policy is the declarative rule policy behind
// `negotiate node --policy FILE`: a YAML list of rules, first match wins,
// each saying when (role, counterpart, term conditions) to accept, reject
// or counter toward a target in steps. docs/policy.md describes the file.
//
// A *Rules is a negotiate.Policy. Parsing never panics and bounds what a
// mistaken or hostile file can make a node parse, hold or scan; every
// error names the line, the field and what to write instead.
package policy
