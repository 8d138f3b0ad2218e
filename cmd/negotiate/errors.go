package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/negotiate-dev/negotiate/negotiate/transport"

	"github.com/negotiate-dev/negotiate/internal/control"
	"github.com/negotiate-dev/negotiate/negotiate"
)

// Exit codes; exitCodesHelp documents them for --help.
const (
	exitOK      = 0 // success
	exitError   = 1 // any other error
	exitUsage   = 2 // bad flags or arguments
	exitRefused = 3 // rejected or refused by a peer
	exitAborted = 4 // aborted, timed out or unreachable
)

const exitCodesHelp = `EXIT CODES:
   0  success
   1  error (e.g. no node running when the command needs one, chain broken,
      scenario failed)
   2  usage: unknown command or flag, bad flag value or arguments
   3  rejected or refused by the peer
   4  aborted, timed out or unreachable`

// Sentinel errors the commands return; exitCode maps them.
var (
	// errUsage marks bad flags or arguments.
	errUsage = errors.New("usage")
	// errRefused marks a peer's refusal (e.g. a direct message not accepted).
	errRefused = errors.New("refused")
	// errTimeout marks an operation that did not finish in time.
	errTimeout = errors.New("timed out")
	// errUnreachable marks a peer that could not be reached.
	errUnreachable = errors.New("unreachable")
	// errNoNode marks a command that needs a running node when none runs.
	errNoNode = errors.New("no node running")
	// errSilent marks an error whose message was already printed.
	errSilent = errors.New("already reported")
)

// usageErr builds an error that exits with exitUsage.
func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// silent wraps err so run does not print it again (the command already did).
func silent(err error) error { return fmt.Errorf("%w%w", errSilent, err) }

func isSilent(err error) bool { return errors.Is(err, errSilent) }

// exitCode maps an error to the process exit code. It is the one place where
// errors become exit codes; everything else returns wrapped sentinels.
func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errUsage), errors.Is(err, control.ErrBadRequest):
		return exitUsage
	case errors.Is(err, errRefused), errors.Is(err, control.ErrRefused), errors.Is(err, transport.ErrRefused),
		errors.Is(err, negotiate.ErrRejected):
		return exitRefused
	case errors.Is(err, errTimeout), errors.Is(err, errUnreachable),
		errors.Is(err, control.ErrTimeout), errors.Is(err, control.ErrUnreachable),
		errors.Is(err, transport.ErrTimeout), errors.Is(err, negotiate.ErrUnreachable),
		errors.Is(err, negotiate.ErrAgentNotFound), errors.Is(err, transport.ErrHostClosed),
		errors.Is(err, negotiate.ErrAborted), errors.Is(err, negotiate.ErrBusy),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return exitAborted
	default:
		return exitError
	}
}

// controlKind tells the control server which wire kind an error of the node
// is, from the same mapping as exitCode, so the client's exit code matches.
func controlKind(err error) control.Kind {
	switch exitCode(err) {
	case exitUsage:
		return control.KindBadRequest
	case exitRefused:
		return control.KindRefused
	case exitAborted:
		if errors.Is(err, errUnreachable) || errors.Is(err, negotiate.ErrUnreachable) || errors.Is(err, negotiate.ErrAgentNotFound) {
			return control.KindUnreachable
		}
		return control.KindTimeout
	}
	return ""
}
