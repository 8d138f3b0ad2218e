// Package sign owns everything about agent keys: the signature schemes
// (through circl's sign/schemes), agent IDs derived from public keys, key
// files on disk and domain-separated signing and verification.
//
// It must never import another package of this module: every other package
// builds on it. A signature made for one domain (message type, record kind)
// never verifies for another.
package sign
