package chain

import "errors"

// Sentinel errors. Every error returned by this package wraps at most one of
// them, so callers branch with errors.Is.
var (
	// ErrSeqMismatch: an appended entry's seq is not head+1.
	ErrSeqMismatch = errors.New("seq mismatch")
	// ErrPrevMismatch: an appended entry's prev is not the head hash.
	ErrPrevMismatch = errors.New("prev hash mismatch")
	// ErrBadSignature: an entry's signature is not the chain key's
	// signature over the entry hash. It also wraps sign.ErrBadSignature.
	ErrBadSignature = errors.New("bad entry signature")
	// ErrBadEntry: an entry is malformed (kind, payload encoding, size).
	ErrBadEntry = errors.New("malformed entry")
	// ErrBadWrite: a Write is inconsistent (e.g. a checkpoint without a
	// session); it is a caller bug and nothing was written.
	ErrBadWrite = errors.New("invalid write")
	// ErrLocked: the chain lock is held by another session. The error
	// message names the holding session.
	ErrLocked = errors.New("locked")
	// ErrHeadMoved: Write.ExpectHead is not the current head.
	ErrHeadMoved = errors.New("head moved")
	// ErrHeldByOther: another process has the chain file open. The message
	// reads "chain: <path> is in use by another process (...)".
	ErrHeldByOther = errors.New("is in use by another process")
	// ErrNotChain: the file is not a chain file (or its metadata is damaged).
	ErrNotChain = errors.New("not a chain file")
	// ErrNoChain: there is no chain file at the path.
	ErrNoChain = errors.New("no chain file")
	// ErrExists: Create was pointed at a file that already exists.
	ErrExists = errors.New("file exists")
	// ErrReadOnly: a write on a chain opened read-only.
	ErrReadOnly = errors.New("opened read-only")
	// ErrNotFound: no entry with that seq.
	ErrNotFound = errors.New("no such entry")
	// ErrWrongKey: the signing key is not the key this chain belongs to.
	ErrWrongKey = errors.New("key does not own this chain")
	// ErrBadExport: a CBOR export cannot be read.
	ErrBadExport = errors.New("bad export")
	// ErrNotWritten: a Write was refused before any of it reached the
	// disk (the journal could not grow: the file system is full or over
	// quota, or failed). The chain is unchanged and keeps taking writes:
	// the same Write may succeed once there is room. When the cause is
	// space, the error also wraps syscall.ENOSPC or EDQUOT and its text
	// says which directory to free space in.
	ErrNotWritten = errors.New("write refused, nothing of it written")
	// ErrBroken is wrapped by every *VerifyError: the chain failed verification.
	ErrBroken = errors.New("verification failed")
)
