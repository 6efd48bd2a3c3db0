package drain

import (
	"context"
	"time"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/placement"
)

// Defaults (DESIGN.md §6): two moves at once, one into any host.
const (
	DefaultParallel     = 2
	DefaultMaxPerTarget = 1
	DefaultRetries      = 2
	DefaultBackoff      = 5 * time.Second
)

// Drain states.
const (
	StateRunning    = journal.DrainRunning
	StateDone       = "done"       // the host is empty
	StateIncomplete = "incomplete" // finished, VMs left on the host
	StateCancelled  = "cancelled"
	StatePlanned    = "dry_run"
	// StateInterrupted: its process died; a re-run continues it.
	StateInterrupted = journal.DrainInterrupted
)

// Per-VM states within a drain.
const (
	VMPending    = "pending"
	VMWaiting    = "waiting" // for a free target or a retry's backoff
	VMMoving     = "moving"
	VMMoved      = "moved"
	VMFailed     = "failed"
	VMSkipped    = "skipped"     // not to be moved (e.g. stopped with --running-only)
	VMNotStarted = "not_started" // cancelled before its turn
)

// Request empties one host.
type Request struct {
	ID   string // optional; a new UUID when empty
	Host string // inventory name
	// Parallel bounds the moves in flight out of the host; MaxPerTarget the
	// moves in flight into any one destination (across ferry processes).
	Parallel     int
	MaxPerTarget int
	// Order is smallest (default), largest or name.
	Order       string
	RunningOnly bool
	DryRun      bool
	// Retries after a failed move (0: none; the CLI defaults to
	// DefaultRetries), waiting Backoff, doubled each time.
	Retries int
	Backoff time.Duration
	// Targets restricts destinations to these inventory hosts (default: all others).
	Targets []string
	Place   placement.Options
	// Live carries the live-migration options applied to every running VM.
	Live orchestrator.LiveOptions
	// BandwidthMiBps caps every move's copy (live and cold); 0: none.
	BandwidthMiBps uint64
	// Reason is stored with the maintenance mark.
	Reason string
	// Abort, when done, rolls back the moves in flight; nil: they finish.
	Abort context.Context
	// Progress, when set, receives a snapshot after every change.
	Progress func(Report)
}

// VM is one VM of a drain.
type VM struct {
	VM          string   `json:"vm"`
	UUID        string   `json:"uuid"`
	Kind        string   `json:"kind"` // live or cold
	MemoryBytes uint64   `json:"memory_bytes"`
	State       string   `json:"state"`
	Dest        string   `json:"destination,omitempty"`
	Stage       string   `json:"stage,omitempty"`
	Percent     float64  `json:"percent,omitempty"`
	SentBytes   uint64   `json:"sent_bytes,omitempty"`
	Attempts    int      `json:"attempts"`
	Migrations  []string `json:"migrations,omitempty"`
	DowntimeMS  int64    `json:"downtime_ms,omitempty"`
	Reason      string   `json:"reason,omitempty"` // placement choice or why it waits
	// NeedsRecovery: its move ended needing `ferry recover` (kept as a flag:
	// the stored report holds errors as text).
	NeedsRecovery bool      `json:"needs_recovery,omitempty"`
	Error         string    `json:"error,omitempty"`
	StartedAt     time.Time `json:"started_at,omitzero"`
	FinishedAt    time.Time `json:"finished_at,omitzero"`
}

// Report is a drain's state; it is persisted after every change so other
// processes (ferry serve, ferry drain --cancel) can read it.
type Report struct {
	ID           string    `json:"id"`
	Host         string    `json:"host"`
	State        string    `json:"state"`
	DryRun       bool      `json:"dry_run,omitempty"`
	Parallel     int       `json:"parallel"`
	MaxPerTarget int       `json:"max_per_target"`
	StartedAt    time.Time `json:"started_at"`
	FinishedAt   time.Time `json:"finished_at,omitzero"`
	VMs          []VM      `json:"vms"`
	Moved        int       `json:"moved"`
	Failed       int       `json:"failed"`
	Left         int       `json:"left"` // not moved yet (pending, waiting, moving)
	SentBytes    uint64    `json:"sent_bytes"`
	// Empty: no VM is defined on the host any more (with RunningOnly: none runs).
	Empty bool `json:"empty"`
	// Remaining names what is still on the host and why.
	Remaining []string `json:"remaining,omitempty"`
	Recovered []string `json:"recovered,omitempty"` // interrupted moves finished first
	Error     string   `json:"error,omitempty"`
	Owner     string   `json:"owner,omitempty"`
	Cancel    bool     `json:"cancel_requested,omitempty"`
}
