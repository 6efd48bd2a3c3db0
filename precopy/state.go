package precopy

import "time"

// State is everything Step remembers between samples. It is a plain value:
// Step returns a new one and never mutates the one it was given, so callers may
// keep old states (for display or tests). Create it with Policy.Start.
type State struct {
	Policy   Policy    `json:"-"`
	Strategy Strategy  `json:"strategy"`
	Started  time.Time `json:"started"`
	Deadline time.Time `json:"deadline"` // zero until the memory size is known

	Rung                 Rung  `json:"rung"` // next remedy on a stall
	DowntimeMS           int64 `json:"downtime_ms"`
	BandwidthBytesPerSec int64 `json:"bandwidth_bytes_per_sec"` // current cap, 0 = unlimited
	AutoConverge         bool  `json:"auto_converge"`           // requested, or a throttle was seen
	PostcopyArmed        bool  `json:"postcopy_armed"`
	PostcopyRequested    bool  `json:"postcopy_requested"`
	PostcopyActive       bool  `json:"postcopy_active"`
	Suspended            bool  `json:"suspended"`
	Aborted              bool  `json:"aborted"`
	TimedOut             bool  `json:"timed_out"`
	Finished             bool  `json:"finished"`    // the job reported completed, failed or cancelled
	Escalations          int   `json:"escalations"` // stalls handled

	// From the plan: used until the job's own measurements arrive.
	plannedDirtyBytesPerSec     int64
	plannedBandwidthBytesPerSec int64
	memoryBytes                 int64

	autoConvergeFailed bool
	postcopyFailed     bool
	suspendFailed      bool
	lastAt             time.Time
	det                detector
}

// Start returns the state for a job that begins now with plan pl (a zero Plan
// is fine: the job then starts with the policy's own settings).
func (p Policy) Start(pl Plan, now time.Time) State {
	p = p.normalized()
	job := p.jobFor(pl)
	st := State{
		Policy:                      p,
		Strategy:                    pl.Strategy,
		Started:                     now,
		DowntimeMS:                  job.DowntimeMS,
		BandwidthBytesPerSec:        job.BandwidthBytesPerSec,
		AutoConverge:                job.AutoConverge,
		PostcopyArmed:               job.Postcopy,
		plannedDirtyBytesPerSec:     pl.Inputs.DirtyBytesPerSec,
		plannedBandwidthBytesPerSec: pl.Inputs.BandwidthBytesPerSec,
		memoryBytes:                 pl.Inputs.MemoryBytes,
	}
	if st.Strategy == "" {
		st.Strategy = StrategyPrecopy
	}
	if st.memoryBytes > 0 {
		st.Deadline = now.Add(p.Deadline(st.memoryBytes))
	}
	return st
}

// Done reports whether the policy has nothing left to decide: the job ended,
// was aborted, or is in (or was switched to) post-copy.
func (st State) Done() bool {
	return st.Finished || st.Aborted || st.PostcopyActive || st.PostcopyRequested
}

// Failed tells the policy that the orchestrator could not apply a. A failed
// SetAutoConverge, StartPostcopy or Suspend takes that remedy off the ladder,
// so it is not retried every tick and the next stall escalates further. Other
// kinds leave the state unchanged (a failed Abort is the orchestrator's to retry).
func (st State) Failed(a Action) State {
	switch a.Kind {
	case ActSetAutoConverge:
		st.AutoConverge, st.autoConvergeFailed = false, true
	case ActStartPostcopy:
		if !st.PostcopyActive {
			st.PostcopyRequested, st.postcopyFailed = false, true
		}
	case ActSuspend:
		st.Suspended, st.suspendFailed = false, true
	}
	return st
}
