// Package control is the control API of a running `negotiate node`: HTTP
// with JSON bodies over a unix socket (<home>/node.sock, mode 0600), so only
// the owner of the home directory can drive the node.
//
// The server side is a small router: NewServer registers the built-in routes
// (identity, chain, messaging) and Server.Handle adds more (the engine adds
// its session endpoints this way). Handlers return a value (encoded as JSON)
// or an error; errors travel as {"error": message, "kind": kind} and come back
// from the Client as an *Error that matches the package's sentinel errors
// with errors.Is, so a CLI maps them to exit codes in one place.
//
// An EventHub (Options.Events) streams what happens on the node as
// server-sent events (GET /v1/events) to the web dashboard and `negotiate
// events`, and keeps recent events for session timelines. Chain records are
// paged newest first and searched (GET /v1/chain/records) with the engine's
// record decoder plugged in (Local.DescribeRecord).
//
// Local serves the same chain views straight from a bbolt file, so commands
// read the chain through one interface (ChainReader) whether a node runs or
// not. The package must never hold protocol or engine logic: it moves
// requests and answers between a process and the node.
package control
