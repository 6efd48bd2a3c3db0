package precopy

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Defaults. Anchors: QEMU's downtime-limit and auto-converge parameters,
// oVirt's downtime schedule, KubeVirt's completion timeout per GiB.
const (
	DefaultInitialDowntime      = 300 * time.Millisecond
	DefaultDowntimeCeiling      = time.Second
	DefaultThrottleInitialPct   = 20
	DefaultThrottleIncrementPct = 10
	DefaultThrottleMaxPct       = 99
	DefaultCompletionPerGiB     = 150 * time.Second
	// DefaultCompletionMin keeps small guests from getting a deadline shorter
	// than a throttled copy needs: the lab's 512 MiB guest writing 76 MB/s over a
	// 40 MiB/s link took 105 s under plain QEMU auto-converge.
	DefaultCompletionMin   = 120 * time.Second
	DefaultStallIterations = 3
	DefaultStallMarginPct  = 5
	// stallMinTime keeps a burst of fast syncs (QEMU syncs every time pending
	// dips under the threshold) from counting as a stall within one sample.
	stallMinTime = time.Second
)

// DefaultDowntimeSteps is oVirt's schedule continued upwards; a policy uses the
// steps above its current limit and up to its ceiling, then the ceiling.
func DefaultDowntimeSteps() []time.Duration {
	return []time.Duration{
		100 * time.Millisecond, 150 * time.Millisecond, 200 * time.Millisecond,
		300 * time.Millisecond, 400 * time.Millisecond, 500 * time.Millisecond,
		750 * time.Millisecond, time.Second, 1500 * time.Millisecond,
		2 * time.Second, 3 * time.Second, 5 * time.Second,
	}
}

// TimeoutAction is what the policy does when the completion deadline passes.
type TimeoutAction string

const (
	OnTimeoutAbort    TimeoutAction = "abort"    // cancel the job; the source keeps running
	OnTimeoutPostcopy TimeoutAction = "postcopy" // switch to post-copy (armed at start for this)
	// OnTimeoutPause suspends the guest so the copy completes, but only when
	// the predicted pause fits the downtime ceiling; otherwise it aborts. The
	// ceiling is the operator's promise to the guest and no path breaks it;
	// raise --max-downtime-ceiling to accept a longer pause.
	OnTimeoutPause TimeoutAction = "pause"
)

// Policy is the configuration Step works with. The zero value is usable:
// every zero field takes its default (see the constants above), so callers set
// only what the operator gave. Fields are read-only once a State holds them.
type Policy struct {
	InitialDowntime time.Duration // limit set at start; default 300 ms
	DowntimeCeiling time.Duration // --max-downtime-ceiling: highest limit set and longest pause forced; default 1 s
	DowntimeSteps   []time.Duration

	BandwidthBytesPerSec    int64 // cap at start; 0 = unlimited
	MaxBandwidthBytesPerSec int64 // a stall may raise the cap up to this; 0 = never raise

	NoAutoConverge       bool // forbid throttling the guest
	ThrottleInitialPct   int  // floor for the first throttle step; default 20
	ThrottleIncrementPct int  // default 10
	ThrottleMaxPct       int  // default 99

	AllowPostcopy bool // post-copy may be used by the ladder and the plan

	CompletionTimeout time.Duration // fixed deadline; 0 = per GiB of memory
	CompletionPerGiB  time.Duration // default 150 s
	CompletionMin     time.Duration // default 120 s
	OnTimeout         TimeoutAction // default abort

	StallIterations int           // syncs without progress that make a stall; default 3
	StallWindow     time.Duration // also a stall after this long without progress; 0 = off
	StallMarginPct  int           // progress = dirty set down by this much; default 5
}

// DefaultPolicy returns the policy with every default spelled out.
func DefaultPolicy() Policy { return Policy{}.normalized() }

// ErrBadPolicy is wrapped by Policy.Validate.
var ErrBadPolicy = errors.New("invalid pre-copy policy")

// Validate reports settings that contradict each other (checked after defaults).
func (p Policy) Validate() error {
	n := p.normalized()
	var errs []error
	if p.DowntimeCeiling != 0 && p.InitialDowntime > p.DowntimeCeiling {
		errs = append(errs, fmt.Errorf("initial downtime %s above ceiling %s", fmtDur(p.InitialDowntime), fmtDur(p.DowntimeCeiling)))
	}
	if p.InitialDowntime < 0 || p.DowntimeCeiling < 0 || p.CompletionTimeout < 0 || p.StallWindow < 0 {
		errs = append(errs, errors.New("negative duration"))
	}
	if p.BandwidthBytesPerSec < 0 || p.MaxBandwidthBytesPerSec < 0 {
		errs = append(errs, errors.New("negative bandwidth"))
	}
	for _, pct := range []int{p.ThrottleInitialPct, p.ThrottleIncrementPct, p.ThrottleMaxPct} {
		if pct < 0 || pct > 99 {
			errs = append(errs, fmt.Errorf("throttle %d %% outside 0–99", pct))
		}
	}
	if p.StallIterations < 0 || p.StallMarginPct < 0 || p.StallMarginPct >= 100 {
		errs = append(errs, errors.New("stall iterations or margin out of range"))
	}
	switch n.OnTimeout {
	case OnTimeoutAbort, OnTimeoutPostcopy, OnTimeoutPause:
	default:
		errs = append(errs, fmt.Errorf("unknown timeout action %q (abort, postcopy, pause)", p.OnTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrBadPolicy, err)
	}
	return nil
}

// normalized fills defaults and clamps what cannot work.
func (p Policy) normalized() Policy {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(i *int, v int) {
		if *i <= 0 {
			*i = v
		}
	}
	def(&p.InitialDowntime, DefaultInitialDowntime)
	def(&p.DowntimeCeiling, DefaultDowntimeCeiling)
	p.DowntimeCeiling = max(p.DowntimeCeiling, p.InitialDowntime)
	if len(p.DowntimeSteps) == 0 {
		p.DowntimeSteps = DefaultDowntimeSteps()
	}
	def(&p.CompletionPerGiB, DefaultCompletionPerGiB)
	def(&p.CompletionMin, DefaultCompletionMin)
	defInt(&p.ThrottleInitialPct, DefaultThrottleInitialPct)
	defInt(&p.ThrottleIncrementPct, DefaultThrottleIncrementPct)
	defInt(&p.ThrottleMaxPct, DefaultThrottleMaxPct)
	p.ThrottleMaxPct = min(p.ThrottleMaxPct, 99)
	p.ThrottleInitialPct = min(p.ThrottleInitialPct, p.ThrottleMaxPct)
	defInt(&p.StallIterations, DefaultStallIterations)
	defInt(&p.StallMarginPct, DefaultStallMarginPct)
	p.StallMarginPct = min(p.StallMarginPct, 99)
	if p.OnTimeout == "" {
		p.OnTimeout = OnTimeoutAbort
	}
	return p
}

// Deadline is the completion timeout for a guest of memoryBytes: the fixed
// CompletionTimeout if set, else CompletionPerGiB per GiB, at least CompletionMin.
func (p Policy) Deadline(memoryBytes int64) time.Duration {
	p = p.normalized()
	if p.CompletionTimeout > 0 {
		return p.CompletionTimeout
	}
	perGiB := time.Duration(float64(p.CompletionPerGiB) * float64(memoryBytes) / float64(GiB))
	return max(perGiB, p.CompletionMin)
}

// armPostcopy says whether the job must start with post-copy enabled: libvirt
// can only switch to post-copy if the job was started with VIR_MIGRATE_POSTCOPY.
func (p Policy) armPostcopy() bool {
	return p.AllowPostcopy || p.OnTimeout == OnTimeoutPostcopy
}

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

// Step is the policy: given the state after the previous sample, one new
// sample and the current time, it returns the next state and the actions to
// apply now, in order. It is pure and cheap; call it for every sample.
//
// Escalation, one rung per stall (dirty set not down by StallMarginPct over
// StallIterations syncs, or over StallWindow): raise the downtime limit through
// DowntimeSteps up to the ceiling (straight to the ceiling, and on to the next
// rung at once, when even the ceiling cannot hold the dirty set) → raise the
// bandwidth cap if MaxBandwidthBytesPerSec allows → auto-converge → post-copy if
// allowed → suspend when the predicted pause fits the ceiling → abort, but only
// when OnTimeout is abort (otherwise the deadline decides). A plan of strategy
// post-copy switches after the first full pass instead of waiting for a stall.
// At the deadline OnTimeout applies once. Once post-copy is requested or
// active nothing more is emitted: the destination holds the guest, so an abort
// would lose it.
func Step(st State, s Sample, now time.Time) (State, []Action) {
	if st.Done() {
		return st, nil
	}
	if st.Policy.StallIterations == 0 { // a State not made by Start: fill the defaults once
		st.Policy = st.Policy.normalized()
	}
	if st.Started.IsZero() {
		st.Started = now
	}
	s = s.Clamp()
	if !st.lastAt.IsZero() && !s.At.IsZero() && s.At.Before(st.lastAt) {
		return st, nil // out of order: an older reading says nothing new
	}
	if !s.At.IsZero() {
		st.lastAt = s.At
	}
	p := st.Policy
	switch {
	case s.Phase.finished():
		st.Finished = true
		return st, nil
	case s.Postcopy:
		st.PostcopyActive = true
		return st, nil
	}
	if s.ThrottlePct > 0 {
		st.AutoConverge = true
	}
	if st.Deadline.IsZero() && s.MemoryTotalBytes > 0 {
		st.memoryBytes = s.MemoryTotalBytes
		st.Deadline = st.Started.Add(p.Deadline(s.MemoryTotalBytes))
	}
	if s.Phase == PhasePrecopy {
		st.det = st.det.observe(s, now, p.StallMarginPct)
	}

	// At switchover QEMU is already finishing: a late deadline must not undo it.
	if !st.TimedOut && !st.Deadline.IsZero() && !now.Before(st.Deadline) && s.Phase != PhaseSwitchover {
		return st.onDeadline(s, now)
	}
	if st.Suspended || st.TimedOut || s.Phase != PhasePrecopy {
		return st, nil
	}
	if st.Strategy == StrategyPostcopy && st.det.syncs > 0 && st.postcopyUsable() {
		return st.startPostcopy(fmt.Sprintf("first pass done and the plan says pre-copy cannot converge (dirty %s against %s)",
			fmtRate(max(st.plannedDirtyBytesPerSec, st.dirtyRate())), fmtRate(st.bandwidth())))
	}
	if st.Rung >= RungSuspend && !st.suspendFailed {
		if pause := st.predictedPause(s, now); pause <= p.DowntimeCeiling {
			return st.suspend(fmt.Sprintf("predicted pause %s fits the %s ceiling", fmtDur(pause), fmtDur(p.DowntimeCeiling)))
		}
	}
	if !st.det.stalled(now, p) {
		return st, nil
	}
	return st.escalate(s, now)
}

// postcopyUsable says whether StartPostcopy can work at all.
func (st State) postcopyUsable() bool { return st.PostcopyArmed && !st.postcopyFailed }

func (st State) startPostcopy(why string) (State, []Action) {
	st.PostcopyRequested = true
	return st, []Action{{Kind: ActStartPostcopy, Reason: "switching to post-copy: " + why}}
}

func (st State) suspend(why string) (State, []Action) {
	st.Suspended = true
	return st, []Action{{Kind: ActSuspend, Reason: "suspending the guest to finish the copy: " + why}}
}

func (st State) abort(why string) (State, []Action) {
	st.Aborted = true
	return st, []Action{{Kind: ActAbort, Reason: "aborting the migration: " + why}}
}

// onDeadline applies OnTimeout, once.
func (st State) onDeadline(s Sample, now time.Time) (State, []Action) {
	p := st.Policy
	st.TimedOut = true
	why := fmt.Sprintf("completion timeout %s reached", fmtDur(st.Deadline.Sub(st.Started)))
	switch p.OnTimeout {
	case OnTimeoutPostcopy:
		if st.postcopyUsable() {
			return st.startPostcopy(why)
		}
		return st.abort(why + " and post-copy is not available")
	case OnTimeoutPause:
		if st.Suspended {
			return st, nil
		}
		pause := st.predictedPause(s, now)
		if pause <= p.DowntimeCeiling {
			return st.suspend(fmt.Sprintf("%s; predicted pause %s fits the %s ceiling", why, fmtDur(pause), fmtDur(p.DowntimeCeiling)))
		}
		return st.abort(fmt.Sprintf("%s; pausing would take %s, beyond the %s ceiling", why, fmtDur(pause), fmtDur(p.DowntimeCeiling)))
	}
	if st.Suspended {
		return st.abort(why + " while suspended; the source resumes")
	}
	return st.abort(why)
}

// ladder is the order remedies are tried in. When the operator allows
// post-copy it comes before throttling: it finishes in about M/B, while
// auto-converge slows the guest for as long as the copy crawls.
func (st State) ladder() []Rung {
	if st.Policy.AllowPostcopy {
		return []Rung{RungDowntime, RungBandwidth, RungPostcopy, RungAutoConverge, RungSuspend, RungAbort}
	}
	return []Rung{RungDowntime, RungBandwidth, RungAutoConverge, RungPostcopy, RungSuspend, RungAbort}
}

// after is the rung that follows r on this policy's ladder.
func (st State) after(r Rung) Rung {
	l := st.ladder()
	for i, x := range l[:len(l)-1] {
		if x == r {
			return l[i+1]
		}
	}
	return RungAbort
}

// escalate applies the next usable rung of the ladder.
func (st State) escalate(s Sample, now time.Time) (State, []Action) {
	p := st.Policy
	stall := st.det.describe(p)
	st.det = st.det.reset(now)
	st.Escalations++
	var acts []Action
	for {
		switch st.Rung {
		case RungDowntime:
			ceiling := p.DowntimeCeiling.Milliseconds()
			if st.DowntimeMS < ceiling {
				need := st.neededDowntime(st.det.lastSize)
				target := st.nextDowntime(need)
				reason := fmt.Sprintf("downtime limit raised to %d ms: %s", target, stall)
				beyond := need > p.DowntimeCeiling
				switch {
				case beyond && st.bandwidth() <= 0:
					reason += "; bandwidth not measured, so no limit can be shown to suffice"
				case beyond:
					reason += fmt.Sprintf("; %s needs %s at %s, more than the %s ceiling", fmtBytes(st.det.lastSize), fmtDur(need), fmtRate(st.bandwidth()), fmtDur(p.DowntimeCeiling))
				}
				st.DowntimeMS = target
				acts = append(acts, Action{Kind: ActRaiseDowntime, DowntimeMS: target, Reason: reason})
				if !beyond {
					return st, acts
				}
				stall = "the downtime limit alone cannot converge"
			}
			st.Rung = st.after(RungDowntime)
		case RungBandwidth:
			st.Rung = st.after(RungBandwidth)
			if top := p.MaxBandwidthBytesPerSec; top > 0 && st.BandwidthBytesPerSec > 0 && st.BandwidthBytesPerSec < top {
				st.BandwidthBytesPerSec = top
				return st, append(acts, Action{Kind: ActSetBandwidth, BandwidthBytesPerSec: top,
					Reason: fmt.Sprintf("bandwidth cap raised to %s: %s", fmtRate(top), stall)})
			}
		case RungAutoConverge:
			st.Rung = st.after(RungAutoConverge)
			if !p.NoAutoConverge && !st.AutoConverge && !st.autoConvergeFailed {
				st.AutoConverge = true
				initial := st.throttleInitial()
				return st, append(acts, Action{Kind: ActSetAutoConverge, ThrottleInitialPct: initial, ThrottleIncrementPct: p.ThrottleIncrementPct,
					Reason: fmt.Sprintf("auto-converge on (throttle %d %% + %d %%): %s", initial, p.ThrottleIncrementPct, stall)})
			}
		case RungPostcopy:
			st.Rung = st.after(RungPostcopy)
			if p.AllowPostcopy && st.postcopyUsable() {
				var post []Action
				st, post = st.startPostcopy(stall)
				return st, append(acts, post...)
			}
		case RungSuspend:
			st.Rung = st.after(RungSuspend)
			if pause := st.predictedPause(s, now); pause <= p.DowntimeCeiling && !st.suspendFailed {
				var sus []Action
				st, sus = st.suspend(fmt.Sprintf("%s; predicted pause %s fits the %s ceiling", stall, fmtDur(pause), fmtDur(p.DowntimeCeiling)))
				return st, append(acts, sus...)
			}
			// Keep watching: Step suspends as soon as the pause fits.
			return st, acts
		default: // RungAbort
			if p.OnTimeout == OnTimeoutAbort {
				var ab []Action
				st, ab = st.abort(stall + " after every remedy")
				return st, append(acts, ab...)
			}
			return st, acts // the deadline's OnTimeout decides
		}
	}
}

// nextDowntime picks the limit to raise to: the smallest schedule step that
// holds `need`, at least the next step above the current limit, at most the
// ceiling. Skipping steps that cannot help saves a stall window per step.
func (st State) nextDowntime(need time.Duration) int64 {
	ceiling := st.Policy.DowntimeCeiling.Milliseconds()
	steps := make([]int64, 0, len(st.Policy.DowntimeSteps)+1)
	for _, d := range st.Policy.DowntimeSteps {
		if ms := d.Milliseconds(); ms > st.DowntimeMS && ms < ceiling {
			steps = append(steps, ms)
		}
	}
	steps = append(steps, ceiling)
	slices.Sort(steps)
	needMS := need.Milliseconds()
	for _, ms := range steps {
		if ms >= needMS {
			return ms
		}
	}
	return ceiling
}

// neededDowntime is the limit under which QEMU would switch over with
// `bytes` pending at the current bandwidth.
func (st State) neededDowntime(bytes int64) time.Duration {
	b := st.bandwidth()
	if b <= 0 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(float64(bytes) / float64(b) * float64(time.Second))
}

// predictedPause is how long the RAM part of a pause would take if the guest
// were suspended now: the pages still pending plus those dirtied since the
// last sync, at the current bandwidth. Like QEMU's downtime limit it leaves out
// the device-state overhead (SwitchoverOverhead), so it compares with the ceiling
// on the same terms as the limit does.
func (st State) predictedPause(s Sample, now time.Time) time.Duration {
	since := max(now.Sub(st.det.iterStart), 0)
	dirtied := int64(float64(st.dirtyRate()) * since.Seconds())
	if s.MemoryTotalBytes > 0 {
		dirtied = min(dirtied, s.MemoryTotalBytes-s.MemoryRemainingBytes)
	}
	return st.neededDowntime(s.MemoryRemainingBytes + dirtied)
}

// throttleInitial is the first throttle step for the measured (or planned) rates.
func (st State) throttleInitial() int {
	return throttleFor(st.Policy, max(st.plannedDirtyBytesPerSec, st.dirtyRate()), st.bandwidth())
}

// bandwidth is the measured transfer rate, else the planned one.
func (st State) bandwidth() int64 {
	if st.det.bandwidth > 0 {
		return int64(st.det.bandwidth)
	}
	if st.BandwidthBytesPerSec > 0 && (st.plannedBandwidthBytesPerSec == 0 || st.BandwidthBytesPerSec < st.plannedBandwidthBytesPerSec) {
		return st.BandwidthBytesPerSec
	}
	return st.plannedBandwidthBytesPerSec
}

// dirtyRate is the measured dirty rate, else the planned one.
func (st State) dirtyRate() int64 {
	if st.det.dirty > 0 {
		return int64(st.det.dirty)
	}
	return st.plannedDirtyBytesPerSec
}

// detector tracks the dirty set from sync to sync: the pending bytes right
// after a sync are what the guest dirtied during the pass before it. Progress
// is that figure dropping StallMarginPct below the best seen since the last
// reset, or QEMU raising the throttle on its own. Comparing with the best
// (rather than the previous value) makes ±10 % noise on a flat series unable to
// pass for progress for long, while a genuine downward trend keeps beating it.
type detector struct {
	seen          bool
	iter          int       // last sync count seen (reported or inferred)
	syncs         int       // syncs seen since the job started
	iterStart     time.Time // when the current pass was first seen
	lastSize      int64     // pending bytes right after the last sync (estimated)
	best          int64
	bestAt        time.Time
	sinceBest     int // syncs since best improved
	lastRemaining int64
	lastThrottle  int
	lastAt        time.Time
	bandwidth     float64 // smoothed bytes/s
	dirty         float64 // smoothed bytes/s
}

// smoothing weighs the newest sample in the bandwidth and dirty-rate averages.
const smoothing = 0.3

func (d detector) observe(s Sample, now time.Time, marginPct int) detector {
	ewma := func(avg *float64, v int64) {
		if v <= 0 {
			return
		}
		if *avg == 0 {
			*avg = float64(v)
			return
		}
		*avg += smoothing * (float64(v) - *avg)
	}
	ewma(&d.bandwidth, s.BandwidthBytesPerSec)
	ewma(&d.dirty, s.DirtyBytesPerSec)
	rem := s.MemoryRemainingBytes
	if !d.seen {
		d.seen, d.iter, d.iterStart = true, s.Iteration, now
		d.syncs = max(s.Iteration-1, 0) // sampling began after the first pass
		d.lastSize, d.best, d.bestAt = rem, rem, now
		d.lastRemaining, d.lastThrottle, d.lastAt = rem, s.ThrottlePct, now
		return d
	}
	synced := 0
	switch {
	case s.Iteration > d.iter:
		synced = s.Iteration - d.iter
		d.iter = s.Iteration
	case s.Iteration == 0 && d.iter == 0 && float64(rem) > float64(d.lastRemaining)*(1+float64(marginPct)/100):
		synced = 1 // no sync count reported: a jump of the pending bytes is a sync
	}
	if synced > 0 {
		// The sync happened somewhere since the previous sample, and QEMU has
		// been sending since: add back half an interval's worth of sending.
		half := now.Sub(d.lastAt).Seconds() / 2
		size := rem + int64(d.bandwidth*max(half, 0))
		if s.MemoryTotalBytes > 0 {
			size = min(size, s.MemoryTotalBytes)
		}
		d.syncs += synced
		d.iterStart, d.lastSize = now, size
		if float64(size) < float64(d.best)*(1-float64(marginPct)/100) {
			d.best, d.bestAt, d.sinceBest = size, now, 0
		} else {
			d.sinceBest += synced
		}
	}
	if s.ThrottlePct > d.lastThrottle {
		d = d.reset(now) // QEMU is still tightening the throttle: give it time
	}
	d.lastRemaining, d.lastThrottle, d.lastAt = rem, s.ThrottlePct, now
	return d
}

// reset starts a new stall window from the current pass.
func (d detector) reset(now time.Time) detector {
	d.best, d.bestAt, d.sinceBest = d.lastSize, now, 0
	return d
}

func (d detector) stalled(now time.Time, p Policy) bool {
	if !d.seen || d.sinceBest == 0 {
		return false
	}
	quiet := now.Sub(d.bestAt)
	return (d.sinceBest >= p.StallIterations && quiet >= stallMinTime) ||
		(p.StallWindow > 0 && quiet >= p.StallWindow)
}

// describe words the stall for action reasons.
func (d detector) describe(p Policy) string {
	return fmt.Sprintf("remaining flat at %s for %d iterations (not %d %% below %s)",
		fmtBytes(d.lastSize), d.sinceBest, p.StallMarginPct, fmtBytes(d.best))
}
