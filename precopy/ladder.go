package precopy

import (
	"fmt"
	"math"
	"slices"
	"time"
)

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
