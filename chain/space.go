package chain

import (
	"errors"
	"fmt"
	"syscall"
)

// isNoSpace reports whether err says the file system is full or the
// owner is over quota.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// spaceHint is the advice appended to a refused write's error when the
// file system is full: what to do, naming the directory. Empty for other
// errors.
func spaceHint(err error, dir string) string {
	return spaceHintThen(err, dir, "the chain takes writes again once there is room (nothing of this write reached the disk)")
}

// spaceHintThen is spaceHint with what happens then.
func spaceHintThen(err error, dir, then string) string {
	if !isNoSpace(err) {
		return ""
	}
	return fmt.Sprintf(": free space in %s; %s", dir, then)
}
