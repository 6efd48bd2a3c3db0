package precopy

import (
	"errors"
	"fmt"
	"time"
)

// World is what the simulated guest and network really do. A plan only knows
// estimates of these; tests give the simulator the truth.
type World struct {
	MemoryBytes          int64
	DirtyBytesPerSec     int64 // the guest's write rate before any throttle
	WorkingSetBytes      int64 // pages the guest writes at all; 0 = the whole memory
	BandwidthBytesPerSec int64 // link speed; the job's cap may lower it in pre-copy
}

// Inputs returns w as plan inputs (everything known).
func (w World) Inputs() Inputs {
	return Inputs{MemoryBytes: w.MemoryBytes, DirtyBytesPerSec: w.DirtyBytesPerSec,
		BandwidthBytesPerSec: w.BandwidthBytesPerSec, WorkingSetBytes: w.WorkingSetBytes}
}

// SimConfig sets up a simulation. Zero durations take the defaults noted.
type SimConfig struct {
	World
	Job   Job       // how the job starts (Run takes it from the plan)
	Start time.Time // fake clock origin; zero = 2025-01-01 00:00 UTC

	Step        time.Duration // QEMU's check granularity; default 50 ms
	SampleEvery time.Duration // how often Run feeds Step; default 250 ms, as the orchestrator
	Limit       time.Duration // stop after this much simulated time; default 1 h
	// PeriodicSync models QEMU ≥ 9.2, which syncs the dirty bitmap at least
	// every 5 s while auto-converge is on, so the throttle can rise during long
	// passes. Default 5 s; negative = off (older QEMU syncs only at pass ends).
	PeriodicSync time.Duration
	// ThrottleTriggerPct is QEMU's throttle-trigger-threshold: a sync period
	// counts as unproductive when it dirtied more than this share of what it
	// sent; two such periods raise the throttle one step. Default 50.
	ThrottleTriggerPct int
	// Perturb, if set, changes each sample before Run hands it to Step (noise).
	Perturb func(Sample) Sample
}

func (c SimConfig) normalized() SimConfig {
	if c.Start.IsZero() {
		c.Start = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if c.Step <= 0 {
		c.Step = qemuCheckEvery
	}
	if c.SampleEvery <= 0 {
		c.SampleEvery = 250 * time.Millisecond
	}
	if c.Limit <= 0 {
		c.Limit = time.Hour
	}
	if c.PeriodicSync == 0 {
		c.PeriodicSync = 5 * time.Second
	}
	if c.ThrottleTriggerPct <= 0 {
		c.ThrottleTriggerPct = 50
	}
	if c.Job.DowntimeMS <= 0 {
		c.Job.DowntimeMS = DefaultInitialDowntime.Milliseconds()
	}
	if c.Job.ThrottleInitialPct <= 0 {
		c.Job.ThrottleInitialPct = DefaultThrottleInitialPct
	}
	if c.Job.ThrottleIncrementPct <= 0 {
		c.Job.ThrottleIncrementPct = DefaultThrottleIncrementPct
	}
	return c
}

// Outcome is how a simulated migration ended.
type Outcome string

const (
	OutcomeCompleted  Outcome = "completed"
	OutcomeAborted    Outcome = "aborted"
	OutcomeUnfinished Outcome = "unfinished" // still copying when the simulation limit was reached
)

// Event is an action and when it was applied, counted from the start.
type Event struct {
	AtMS int64 `json:"at_ms"`
	Action
}

// Result summarises a simulated migration.
type Result struct {
	Outcome         Outcome `json:"outcome"`
	Postcopy        bool    `json:"postcopy"`  // finished through post-copy
	Suspended       bool    `json:"suspended"` // the policy paused the guest
	Rounds          int     `json:"rounds"`    // dirty-bitmap syncs after the first pass began
	TotalMS         int64   `json:"total_ms"`
	DowntimeMS      int64   `json:"downtime_ms"`
	SentBytes       int64   `json:"sent_bytes"`
	MaxThrottlePct  int     `json:"max_throttle_pct"`
	DowntimeLimitMS int64   `json:"downtime_limit_ms"` // at the end
	Actions         []Event `json:"actions,omitempty"`
	Rejected        []Event `json:"rejected,omitempty"` // actions the simulated job refused
}

// Total returns the migration time.
func (r Result) Total() time.Duration { return time.Duration(r.TotalMS) * time.Millisecond }

// Downtime returns the guest's pause.
func (r Result) Downtime() time.Duration { return time.Duration(r.DowntimeMS) * time.Millisecond }

// Count returns how many actions of kind k were applied.
func (r Result) Count(k ActionKind) int {
	n := 0
	for _, e := range r.Actions {
		if e.Kind == k {
			n++
		}
	}
	return n
}

// Sim is a model of QEMU's RAM pre-copy: passes over the dirty bitmap at a
// capped bandwidth, a guest dirtying pages at a rate within its working set,
// the switchover rule (pending < bandwidth × downtime limit, checked every
// Step), auto-converge's throttle (−throttle % of the dirty rate, raised one
// step after every second sync period that dirtied more than half of what it
// sent, as QEMU does), post-copy (pending pages pulled at link speed after a
// short switch pause) and a suspended guest (dirtying stops; the pause runs
// until the copy completes).
type Sim struct {
	cfg     SimConfig
	elapsed time.Duration
	phase   Phase
	outcome Outcome

	limit  time.Duration // current downtime limit
	capBps float64       // the job's bandwidth cap in pre-copy, 0 = link speed

	// The bitmap: pending pages inside / outside the working set, and pages
	// dirtied since the last sync (always inside it).
	pendIn, pendOut, fresh float64
	sent                   float64
	iteration              int
	lastSync               time.Duration

	autoConverge           bool
	throttleInit, throtInc int
	throttle, maxThrottle  int
	highCnt                int
	periodStart            time.Duration
	periodDirty            float64
	periodXfer             float64
	dirtyRate              float64 // as QEMU measures it: new dirty pages per second of the last period

	postcopyArmed, postcopyReq bool
	usedPostcopy, suspended    bool
	pausedAt, downtime         time.Duration

	actions, rejected []Event
}

// NewSim starts a simulated job at cfg.Start.
func NewSim(cfg SimConfig) *Sim {
	cfg = cfg.normalized()
	w := float64(cfg.Inputs().workingSet())
	s := &Sim{
		cfg:           cfg,
		phase:         PhasePrecopy,
		limit:         time.Duration(cfg.Job.DowntimeMS) * time.Millisecond,
		capBps:        float64(cfg.Job.BandwidthBytesPerSec),
		pendIn:        w,
		pendOut:       float64(cfg.MemoryBytes) - w,
		iteration:     1, // QEMU syncs once at setup: the first pass is iteration 1
		autoConverge:  cfg.Job.AutoConverge,
		throttleInit:  cfg.Job.ThrottleInitialPct,
		throtInc:      cfg.Job.ThrottleIncrementPct,
		postcopyArmed: cfg.Job.Postcopy,
	}
	return s
}

// Done reports whether the simulated job has ended.
func (s *Sim) Done() bool { return s.outcome != "" }

// Elapsed is the simulated time since the start.
func (s *Sim) Elapsed() time.Duration { return s.elapsed }

// bandwidth is the current transfer rate: the link, or the job's cap in pre-copy.
func (s *Sim) bandwidth() float64 {
	link := float64(s.cfg.BandwidthBytesPerSec)
	if s.phase == PhasePrecopy && s.capBps > 0 {
		return min(link, s.capBps)
	}
	return link
}

// Advance runs the model for d (or until the job ends, or the limit).
func (s *Sim) Advance(d time.Duration) {
	end := s.elapsed + d
	for !s.Done() && s.elapsed < end {
		if s.elapsed >= s.cfg.Limit {
			s.outcome = OutcomeUnfinished
			return
		}
		dt := min(s.cfg.Step, end-s.elapsed)
		if s.phase == PhasePostcopy {
			s.postcopyStep(dt)
		} else {
			s.precopyStep(dt)
		}
	}
}

func (s *Sim) precopyStep(dt time.Duration) {
	b := s.bandwidth()
	pend := s.pendIn + s.pendOut
	a := min(b*dt.Seconds(), pend)
	if pend > 0 {
		in := s.pendIn * a / pend
		s.pendIn -= in
		s.pendOut -= a - in
	}
	s.sent += a
	s.periodXfer += a
	if !s.suspended {
		rate := float64(s.cfg.DirtyBytesPerSec) * float64(100-s.throttle) / 100
		w := float64(s.cfg.Inputs().workingSet())
		add := min(rate*dt.Seconds(), max(w-s.pendIn-s.fresh, 0))
		s.fresh += add
		s.periodDirty += add
	}
	s.elapsed += dt

	if s.postcopyReq {
		s.sync()
		s.phase, s.usedPostcopy = PhasePostcopy, true
		s.downtime = PostcopySwitchDowntime
		s.elapsed += PostcopySwitchDowntime
		return
	}
	threshold := b * s.limit.Seconds()
	periodic := s.autoConverge && s.iteration >= 2 && s.cfg.PeriodicSync > 0 && s.elapsed-s.lastSync >= s.cfg.PeriodicSync
	if s.pendIn+s.pendOut < threshold || periodic {
		s.sync()
		if pend := s.pendIn + s.pendOut; pend < threshold {
			s.complete(pend, b)
		}
	}
}

// sync folds the pages dirtied since the last sync into the bitmap and, once
// a period of at least a second has passed, runs QEMU's throttle trigger.
func (s *Sim) sync() {
	s.iteration++
	s.pendIn += s.fresh
	s.fresh = 0
	s.lastSync = s.elapsed
	period := s.elapsed - s.periodStart
	if period < time.Second {
		return
	}
	s.dirtyRate = s.periodDirty / period.Seconds()
	if s.autoConverge && s.periodDirty > s.periodXfer*float64(s.cfg.ThrottleTriggerPct)/100 {
		s.highCnt++
		if s.highCnt >= 2 {
			s.highCnt = 0
			if s.throttle == 0 {
				s.throttle = s.throttleInit
			} else {
				s.throttle = min(s.throttle+s.throtInc, DefaultThrottleMaxPct)
			}
			s.maxThrottle = max(s.maxThrottle, s.throttle)
		}
	}
	s.periodStart, s.periodDirty, s.periodXfer = s.elapsed, 0, 0
}

// complete is stop-and-copy: the rest goes with the guest paused.
func (s *Sim) complete(pend, b float64) {
	final := time.Duration(pend / b * float64(time.Second))
	s.sent += pend
	s.pendIn, s.pendOut = 0, 0
	s.elapsed += final + SwitchoverOverhead
	if s.suspended {
		s.downtime = s.elapsed - s.pausedAt
	} else {
		s.downtime = final + SwitchoverOverhead
	}
	s.phase, s.outcome = PhaseCompleted, OutcomeCompleted
}

func (s *Sim) postcopyStep(dt time.Duration) {
	b := s.bandwidth()
	pend := s.pendIn + s.pendOut
	a := min(b*dt.Seconds(), pend)
	s.pendIn, s.pendOut = pend-a, 0 // where a page lies no longer matters
	s.sent += a
	if a < b*dt.Seconds() {
		s.elapsed += time.Duration(a / b * float64(time.Second))
		s.phase, s.outcome = PhaseCompleted, OutcomeCompleted
		return
	}
	s.elapsed += dt
}

// Sample reads the job's statistics as libvirt would report them.
func (s *Sim) Sample() Sample {
	pend := s.pendIn + s.pendOut
	b := s.bandwidth()
	smp := Sample{
		At:                   s.cfg.Start.Add(s.elapsed),
		Iteration:            s.iteration,
		MemoryTotalBytes:     s.cfg.MemoryBytes,
		MemoryRemainingBytes: int64(pend),
		MemoryProcessedBytes: int64(s.sent),
		DirtyBytesPerSec:     int64(s.dirtyRate),
		BandwidthBytesPerSec: int64(b),
		ThrottlePct:          s.throttle,
		Postcopy:             s.phase == PhasePostcopy,
		Phase:                s.phase,
	}
	if s.outcome == OutcomeAborted {
		smp.Phase = PhaseCancelled
	}
	if b > 0 {
		smp.ExpectedDowntime = time.Duration(pend / b * float64(time.Second))
	}
	return smp
}

// Errors the simulated job returns for actions it cannot take, as libvirt would.
var (
	ErrPostcopyNotArmed = errors.New("post-copy was not enabled when the job started")
	ErrNotInPrecopy     = errors.New("the job is not in pre-copy")
	ErrAbortPostcopy    = errors.New("cannot abort a migration in post-copy")
)

// Apply carries out a on the simulated job, recording it with the time.
func (s *Sim) Apply(a Action) error {
	err := s.apply(a)
	e := Event{AtMS: s.elapsed.Milliseconds(), Action: a}
	if err != nil {
		s.rejected = append(s.rejected, e)
		return fmt.Errorf("%s: %w", a.Kind, err)
	}
	s.actions = append(s.actions, e)
	return nil
}

func (s *Sim) apply(a Action) error {
	if s.Done() {
		return ErrNotInPrecopy
	}
	switch a.Kind {
	case ActRaiseDowntime:
		s.limit = time.Duration(a.DowntimeMS) * time.Millisecond
	case ActSetBandwidth:
		s.capBps = float64(a.BandwidthBytesPerSec)
	case ActSetAutoConverge:
		s.autoConverge = true
		if a.ThrottleInitialPct > 0 {
			s.throttleInit = a.ThrottleInitialPct
		}
		if a.ThrottleIncrementPct > 0 {
			s.throtInc = a.ThrottleIncrementPct
		}
	case ActStartPostcopy:
		switch {
		case !s.postcopyArmed:
			return ErrPostcopyNotArmed
		case s.phase != PhasePrecopy:
			return ErrNotInPrecopy
		}
		s.postcopyReq = true
	case ActSuspend:
		if s.phase != PhasePrecopy {
			return ErrNotInPrecopy
		}
		if !s.suspended {
			s.suspended, s.pausedAt = true, s.elapsed
		}
	case ActAbort:
		if s.phase == PhasePostcopy {
			return ErrAbortPostcopy
		}
		s.outcome = OutcomeAborted
	default:
		return fmt.Errorf("unknown action %q", a.Kind)
	}
	return nil
}

// Result summarises the job so far.
func (s *Sim) Result() Result {
	r := Result{
		Outcome:         s.outcome,
		Postcopy:        s.usedPostcopy,
		Suspended:       s.suspended,
		Rounds:          s.iteration - 1,
		TotalMS:         s.elapsed.Milliseconds(),
		SentBytes:       int64(s.sent),
		MaxThrottlePct:  s.maxThrottle,
		DowntimeLimitMS: s.limit.Milliseconds(),
		Actions:         s.actions,
		Rejected:        s.rejected,
	}
	if s.outcome == "" {
		r.Outcome = OutcomeUnfinished
	}
	if s.outcome == OutcomeCompleted {
		r.DowntimeMS = s.downtime.Milliseconds()
	}
	return r
}

// Simulate runs QEMU alone with cfg.Job's settings: no policy, no actions.
func Simulate(cfg SimConfig) Result {
	s := NewSim(cfg)
	s.Advance(s.cfg.Limit + s.cfg.Step)
	return s.Result()
}

// Run simulates a migration under policy p started with plan pl: every
// SampleEvery the simulated job's sample goes through Step with the fake clock,
// and the actions are applied (a refused one is reported with State.Failed, as
// the orchestrator does).
func Run(cfg SimConfig, p Policy, pl Plan) Result {
	cfg.Job = p.jobFor(pl)
	s := NewSim(cfg)
	st := p.Start(pl, s.cfg.Start)
	if st.memoryBytes == 0 {
		st.memoryBytes = cfg.MemoryBytes
		st.Deadline = st.Started.Add(st.Policy.Deadline(cfg.MemoryBytes))
	}
	for !s.Done() {
		s.Advance(s.cfg.SampleEvery)
		if s.Done() {
			break
		}
		smp := s.Sample()
		if s.cfg.Perturb != nil {
			smp = s.cfg.Perturb(smp)
		}
		var acts []Action
		st, acts = Step(st, smp, s.cfg.Start.Add(s.elapsed))
		for _, a := range acts {
			if s.Apply(a) != nil {
				st = st.Failed(a)
			}
		}
	}
	return s.Result()
}
