package precopy

import (
	"errors"
	"fmt"
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
