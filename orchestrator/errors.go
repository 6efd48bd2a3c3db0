package orchestrator

import (
	"errors"
	"fmt"
)

// Refusals: the request was checked and nothing was changed on any host.
var (
	ErrRefused            = errors.New("migration refused")
	ErrInvalidRequest     = errors.New("invalid request")
	ErrUnknownHost        = errors.New("unknown host")
	ErrUnknownVM          = errors.New("unknown VM")
	ErrVetoed             = errors.New("vetoed by a pre-migration hook") // or webhook (hooks.go)
	ErrSameHost           = errors.New("source and destination are the same host")
	ErrNotRunning         = errors.New("VM not running")
	ErrNameClash          = errors.New("a domain with that name or UUID exists on the destination")
	ErrInsufficientMemory = errors.New("not enough free memory on the destination")
	ErrCPUIncompatible    = errors.New("destination CPU incompatible")
	ErrUnreachable        = errors.New("host unreachable")
	ErrBusy               = errors.New("VM already being migrated")
	// ErrLimit: a host's limit of concurrent moves is reached; try later.
	ErrLimit = errors.New("concurrent move limit reached")
)

// Outcomes after something was attempted.
var (
	// ErrRolledBack: the migration failed or was cancelled and the VM runs on the source.
	ErrRolledBack = errors.New("migration rolled back")
	// ErrNeedsRecovery: the outcome could not be made consistent; run `ferry recover`.
	ErrNeedsRecovery = errors.New("migration needs recovery")
)

// refusal tags an error as a refusal of a specific kind; errors.Is matches
// ErrRefused, the kind, and the underlying cause.
type refusal struct {
	kind error
	msg  string
	err  error
}

func (r *refusal) Error() string { return r.msg }
func (r *refusal) Unwrap() []error {
	errs := []error{ErrRefused, r.kind}
	if r.err != nil {
		errs = append(errs, r.err)
	}
	return errs
}

func refuse(kind error, cause error, format string, args ...any) error {
	return &refusal{kind: kind, msg: fmt.Sprintf(format, args...), err: cause}
}
