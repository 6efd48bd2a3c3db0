package precopy

import (
	"fmt"
	"time"
)

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
