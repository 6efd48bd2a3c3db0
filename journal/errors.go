package journal

import (
	"errors"
	"fmt"
)

// Sentinels; each error of this package wraps one.
var (
	// ErrDatabase: the state database failed (cannot open, locked past the
	// busy timeout, disk full, corrupt). Nothing the request asked for can
	// be assumed done or not done.
	ErrDatabase = errors.New("state database error")
	// ErrNoRecord: no journal row with that id.
	ErrNoRecord = errors.New("no such migration in the journal")
	// ErrAmbiguousID: an id prefix matching several rows.
	ErrAmbiguousID = errors.New("id prefix matches several migrations")
	// ErrClaimed: the VM has another unfinished move (*ClaimError names it).
	ErrClaimed = errors.New("VM already has an unfinished move")
	// ErrNoRoom: a reservation does not fit (*NoRoomError says by how much).
	ErrNoRoom = errors.New("reservation does not fit")
	// ErrLimit: a host's limit of concurrent moves is reached (*LimitError).
	ErrLimit = errors.New("concurrent move limit reached")
	// ErrDrainRunning: a live process already drains the host (*DrainBusyError).
	ErrDrainRunning = errors.New("host already being drained")
	// ErrUnknownDrain: no drain with that id, or no running drain of that host.
	ErrUnknownDrain = errors.New("unknown drain")
)

// ClaimError names the unfinished move that holds a VM.
type ClaimError struct {
	Holder *Record
	Alive  bool // its owner still runs
}

func (e *ClaimError) Error() string {
	return fmt.Sprintf("VM %s has an unfinished %s move %s (owner %s)", e.Holder.VM, e.Holder.Kind, e.Holder.ID, DescribeOwner(e.Holder.Owner))
}

func (e *ClaimError) Unwrap() error { return ErrClaimed }

// NoRoomError is a reservation that does not fit on its host.
type NoRoomError struct {
	HostName        string
	Need, Available uint64 // bytes asked for; bytes the caller said exist
	Held            uint64 // bytes held by open reservations
}

// Left is what the open reservations leave of Available.
func (e *NoRoomError) Left() uint64 {
	if e.Available > e.Held {
		return e.Available - e.Held
	}
	return 0
}

func (e *NoRoomError) Error() string {
	return fmt.Sprintf("%s: %d bytes needed, %d left of %d after %d held by moves in flight", e.HostName, e.Need, e.Left(), e.Available, e.Held)
}

func (e *NoRoomError) Unwrap() error { return ErrNoRoom }

// LimitError is a move slot refused by a host's limit.
type LimitError struct {
	Host      string
	InFlight  int
	Limit     int
	Direction string // incoming or outgoing
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%s already has %d %s move(s) in flight (limit %d)", e.Host, e.InFlight, e.Direction, e.Limit)
}

func (e *LimitError) Unwrap() error { return ErrLimit }

// DrainBusyError names the running drain of a host.
type DrainBusyError struct {
	Host, ID, Owner string
}

func (e *DrainBusyError) Error() string {
	return fmt.Sprintf("host %s is already being drained by drain %s (%s)", e.Host, e.ID, DescribeOwner(e.Owner))
}

func (e *DrainBusyError) Unwrap() error { return ErrDrainRunning }
