package orchestrator

import (
	"time"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
)

// The kinds of move (Request.Kind, Result.Kind, the journal's kind column).
const (
	// KindLive: a running VM, memory copied while it runs (DESIGN.md §2).
	KindLive = journal.KindLive
	// KindCold: a stopped VM, its files copied (DESIGN.md §4).
	KindCold = journal.KindCold
)

// Request is one move. Kind picks which of Live and Cold applies; the rest
// is common.
type Request struct {
	// ID names the move; empty: a new UUID (ferry serve sets it to answer
	// before the move ends).
	ID   string
	Kind string // KindLive (the default, "") or KindCold
	VM   string
	From string // inventory name or URI; empty: search the inventory
	To   string // inventory name or URI
	// DryRun runs the checks and changes nothing.
	DryRun bool
	// PlanOnly is a dry run that also plans: a live move measures the guest
	// and predicts the pre-copy, a cold move lists its artifacts.
	PlanOnly bool
	// BandwidthMiBps caps the copy's data rate; 0: none.
	BandwidthMiBps uint64
	// Limits on concurrent moves per host (zero fields: the controller's).
	Limits inventory.Limits
	// WaitForSlot waits for a free slot when a limit is reached instead of
	// refusing with ErrLimit.
	WaitForSlot bool
	Live        LiveOptions
	Cold        ColdOptions
	// Progress, when set, is called from the move's goroutines.
	Progress func(Progress)
}

// LiveOptions are a live move's own settings; zero values take defaults.
type LiveOptions struct {
	MaxDowntime time.Duration
	Timeout     time.Duration // 0: none
	CopyStorage bool
	// Pre-copy control (see package precopy).
	DowntimeCeiling   time.Duration
	AllowPostcopy     bool
	CompletionTimeout time.Duration
	OnTimeout         string // abort, postcopy or pause
	// PostcopyResumeWindow: how long a broken post-copy is resumed before it
	// is left to `ferry recover` (0: DefaultPostcopyResumeWindow).
	PostcopyResumeWindow time.Duration
}

// ColdOptions are a cold move's own settings.
type ColdOptions struct {
	// ToPool is the destination pool for disks; empty: the source disk's
	// pool name if the destination has it, else "default".
	ToPool     string
	KeepSource bool
	Start      bool // start the VM on the destination
	// Shutdown allows stopping a running VM first: a guest shutdown request,
	// waiting ShutdownTimeout, then (Force) destroying it.
	Shutdown        bool
	ShutdownTimeout time.Duration
	Force           bool
}

// DefaultShutdownTimeout is how long --shutdown waits for the guest.
const DefaultShutdownTimeout = 60 * time.Second

// withDefaults fills what a zero value leaves to ferry.
func (r Request) withDefaults() Request {
	if r.Kind == "" {
		r.Kind = KindLive
	}
	if r.PlanOnly {
		r.DryRun = true
	}
	if r.Live.MaxDowntime == 0 {
		r.Live.MaxDowntime = DefaultMaxDowntime
	}
	if r.Cold.ShutdownTimeout == 0 {
		r.Cold.ShutdownTimeout = DefaultShutdownTimeout
	}
	return r
}
