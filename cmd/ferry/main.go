// Command ferry moves virtual machines between libvirt/QEMU hosts.
//
// This package is the only one that prints for humans or picks exit codes;
// the work itself lives in orchestrator (and, below it, virt).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/ferryvm/ferry/drain"
	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
)

// Exit codes, documented in the README.
const (
	exitOK         = 0
	exitFailure    = 1 // anything else
	exitRefused    = 2 // bad input or a failed pre-flight check; nothing changed
	exitRolledBack = 3 // the migration failed or was cancelled; the VM runs on the source
	exitRecover    = 4 // the outcome needs `ferry recover`
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	root := newRootCmd()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "ferry: %v\n", err)
	os.Exit(exitCode(err))
}

func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitRefused
	case errors.Is(err, drain.ErrIncomplete), errors.Is(err, drain.ErrCancelled):
		// Its VMs' errors ride along (refusals among them): the drain
		// itself ran, and one of them may need recover.
		if errors.Is(err, orchestrator.ErrNeedsRecovery) {
			return exitRecover
		}
		return exitFailure
	case errors.Is(err, journal.ErrDatabase):
		return exitFailure
	case errors.Is(err, orchestrator.ErrRefused), errors.Is(err, orchestrator.ErrInvalidRequest), errors.Is(err, inventory.ErrInvalid),
		errors.Is(err, journal.ErrNoRecord), errors.Is(err, journal.ErrAmbiguousID), errors.Is(err, drain.ErrUnknown):
		return exitRefused
	case errors.Is(err, orchestrator.ErrRolledBack):
		return exitRolledBack
	case errors.Is(err, orchestrator.ErrNeedsRecovery):
		return exitRecover
	}
	return exitFailure
}

// usageError marks errors in flags or arguments.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }
