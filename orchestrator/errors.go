package orchestrator

import (
	"errors"
	"fmt"

	"github.com/ferryvm/ferry/journal"
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
	// ErrInsufficientStorage: the destination pool lacks the space for the copies.
	ErrInsufficientStorage = errors.New("not enough free storage on the destination")
	// ErrTooFewCPUs: the destination has fewer CPUs than the VM has vCPUs.
	ErrTooFewCPUs = errors.New("destination has too few CPUs")
	// ErrNoPlacement: no host can take the VM (placement says why for each).
	ErrNoPlacement     = errors.New("no host can take the VM")
	ErrCPUIncompatible = errors.New("destination CPU incompatible")
	ErrUnreachable     = errors.New("host unreachable")
	ErrBusy            = errors.New("VM already being migrated")
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

// NewRefusal is a refusal of the given kind (one of this package's
// refusal sentinels) for packages built on the controller (drain): the
// message is the whole text; errors.Is matches ErrRefused, kind and cause.
func NewRefusal(kind, cause error, format string, args ...any) error {
	return refuse(kind, cause, format, args...)
}

// claimRefusal turns the journal's "another unfinished move holds the VM"
// into the refusal that names it; other errors pass.
func claimRefusal(err error) error {
	var ce *journal.ClaimError
	if !errors.As(err, &ce) {
		return err
	}
	r := ce.Holder
	what := fmt.Sprintf("%s move %s (%s → %s, %s, stage %s, started %s by %s",
		r.Kind, r.ID, r.Source, r.Dest, r.State, r.StageName, r.StartedAt.Local().Format("15:04:05"), journal.DescribeOwner(r.Owner))
	if ce.Alive {
		return refuse(ErrBusy, err, "VM %s is already being moved by %s, still running); wait for it to finish (ferry show %s)", r.VM, what, r.ID)
	}
	return refuse(ErrBusy, err, "VM %s has an unfinished %s, which is gone); run `ferry recover %s` first", r.VM, what, r.ID)
}

// slotRefusal turns a move-slot limit into ErrLimit; other errors pass.
func slotRefusal(err error) error {
	if errors.Is(err, journal.ErrLimit) {
		return refuse(ErrLimit, err, "%v", err)
	}
	return err
}

// short abbreviates an id for messages.
func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
