// Package ui is the node's web dashboard: `negotiate node --ui ADDR`.
//
// The server holds no negotiation logic of its own. It serves a small,
// dependency-free front end from embedded assets and mounts the node's
// control API (the same handlers `negotiate` commands call over the unix
// socket) under /api, behind its own access checks, so every action in the
// browser takes the CLI's code path and the engine's checks.
//
// Access: every request needs the node's UI token, as the cookie set at
// login (by the one-time link /login?code=... the node prints, or by
// /login?token=...) or in the X-Negotiate-Token header (or
// Authorization: Bearer). Without it the answer is 401 and nothing else.
// State-changing requests are POSTs; one authenticated by the cookie must
// also carry the CSRF token the page holds. Cross-origin requests (by
// Origin or Sec-Fetch-Site) and, unless remote access is allowed, requests
// naming a non-loopback Host (DNS rebinding) are refused.
//
// The package must never reach the engine, the chain or the host other
// than through the control API handler it is given.
package ui
