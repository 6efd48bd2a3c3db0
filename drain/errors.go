package drain

import (
	"errors"
	"fmt"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
)

// Errors of a drain.
var (
	// ErrIncomplete: the drain ended with VMs still on the host.
	ErrIncomplete = errors.New("host not empty after drain")
	// ErrCancelled: the drain was cancelled before it emptied the host.
	ErrCancelled = errors.New("drain cancelled")
	// ErrUnknown: no drain with that id (the journal's sentinel).
	ErrUnknown = journal.ErrUnknownDrain
)

// VMError is why one VM is still on the drained host: its move's error
// (which errors.Is sees through: a move that needs recovery, say) or why it
// was never moved.
type VMError struct {
	VM    string
	State string // its state on the host (running, shut off)
	Err   error
}

func (e *VMError) Error() string { return fmt.Sprintf("%s (%s): %v", e.VM, e.State, e.Err) }
func (e *VMError) Unwrap() error { return e.Err }

// busyRefusal is the refusal of a drain of a host another live process drains.
func busyRefusal(b *journal.DrainBusyError) error {
	return orchestrator.NewRefusal(orchestrator.ErrBusy, b, "host %s is already being drained by drain %s (%s); watch it with `ferry drain %s --status` or stop it with `ferry drain %s --cancel`",
		b.Host, b.ID, journal.DescribeOwner(b.Owner), b.Host, b.Host)
}
