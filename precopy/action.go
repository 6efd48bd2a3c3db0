package precopy

// ActionKind names what an Action asks the orchestrator to do.
type ActionKind string

const (
	// ActRaiseDowntime: virDomainMigrateSetMaxDowntime(DowntimeMS).
	ActRaiseDowntime ActionKind = "raise-downtime"
	// ActSetBandwidth: virDomainMigrateSetMaxSpeed(BandwidthBytesPerSec, converted to MiB/s).
	ActSetBandwidth ActionKind = "set-bandwidth"
	// ActSetAutoConverge: throttle the guest's vCPUs, starting at
	// ThrottleInitialPct and rising ThrottleIncrementPct per unproductive pass,
	// as QEMU's auto-converge does. libvirt can only enable auto-converge when
	// the job starts (VIR_MIGRATE_AUTO_CONVERGE + _PARAM_AUTO_CONVERGE_INITIAL/
	// _INCREMENT, see Job); mid-job the orchestrator needs another way (QMP
	// migrate-set-parameters when the capability is on, or vCPU quota). If it
	// has none, it reports State.Failed and the ladder moves on.
	ActSetAutoConverge ActionKind = "set-auto-converge"
	// ActStartPostcopy: virDomainMigrateStartPostCopy.
	ActStartPostcopy ActionKind = "start-postcopy"
	// ActSuspend: virDomainSuspend; QEMU then finishes the copy with the guest paused.
	ActSuspend ActionKind = "suspend"
	// ActAbort: virDomainAbortJob; the source keeps running.
	ActAbort ActionKind = "abort"
)

// Action is one decision of Step. Reason is a sentence for the progress display
// and the journal, e.g. "downtime limit raised to 500 ms: remaining flat at 60
// MiB for 3 iterations".
type Action struct {
	Kind                 ActionKind `json:"kind"`
	DowntimeMS           int64      `json:"downtime_ms,omitempty"`
	BandwidthBytesPerSec int64      `json:"bandwidth_bytes_per_sec,omitempty"`
	ThrottleInitialPct   int        `json:"throttle_initial_pct,omitempty"`
	ThrottleIncrementPct int        `json:"throttle_increment_pct,omitempty"`
	Reason               string     `json:"reason"`
}

func (a Action) String() string { return string(a.Kind) + ": " + a.Reason }

// Rung is a remedy on the escalation ladder, listed in the order Step tries
// them; with AllowPostcopy, post-copy moves ahead of auto-converge (ladder).
type Rung int

const (
	RungDowntime     Rung = iota // raise the downtime limit step by step up to the ceiling
	RungBandwidth                // raise the bandwidth cap to MaxBandwidthBytesPerSec
	RungAutoConverge             // throttle the guest
	RungPostcopy                 // switch to post-copy
	RungSuspend                  // pause the guest once the predicted pause fits the ceiling
	RungAbort                    // give up (only if the deadline would abort anyway)
)

func (r Rung) String() string {
	return [...]string{"downtime", "bandwidth", "auto-converge", "post-copy", "suspend", "abort"}[min(max(int(r), 0), int(RungAbort))]
}

// MarshalText makes a Rung read as its name in JSON.
func (r Rung) MarshalText() ([]byte, error) { return []byte(r.String()), nil }
