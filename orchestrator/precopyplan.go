package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/ferryvm/ferry/precopy"
	"github.com/ferryvm/ferry/virt"
)

// Pre-copy control: before the job starts ferry measures the guest's dirty
// rate and asks precopy for a plan (which libvirt flags to start with); while
// it runs, every sample goes through precopy.Step and its actions are applied
// here. precopy decides; this file only translates.

// DefaultLinkMiBps estimates the migration link when neither --bandwidth nor
// the inventory's link_mibps says otherwise (10 GbE less overhead).
const DefaultLinkMiBps = 1024

// dirtyRateSample is how long the plan samples the guest's dirty rate: 250 ms
// read a steady 78 MiB/s writer anywhere from 61 to 83 MiB/s, 500 ms 70 to 83.
const dirtyRateSample = 500 * time.Millisecond

// precopyPolicy builds the pre-copy policy from a request.
func (r Request) precopyPolicy() precopy.Policy {
	return precopy.Policy{
		InitialDowntime:      r.Live.MaxDowntime,
		DowntimeCeiling:      r.Live.DowntimeCeiling,
		BandwidthBytesPerSec: BandwidthBytesPerSec(r.BandwidthMiBps),
		AllowPostcopy:        r.Live.AllowPostcopy,
		CompletionTimeout:    r.Live.CompletionTimeout,
		OnTimeout:            precopy.TimeoutAction(r.Live.OnTimeout),
	}
}

// PlanInfo is the plan with where its inputs came from, for --plan and the journal.
type PlanInfo struct {
	precopy.Plan
	DirtyRateSource string `json:"dirty_rate_source"`
	BandwidthSource string `json:"bandwidth_source"`
	DeadlineMS      int64  `json:"deadline_ms"`
	OnTimeout       string `json:"on_timeout"`
	CeilingMS       int64  `json:"ceiling_ms"`
}

// plan measures the guest and predicts how the copy will converge.
func (m *move) plan(ctx context.Context) (*PlanInfo, error) {
	pol := m.req.precopyPolicy()
	if err := pol.Validate(); err != nil {
		return nil, refuse(ErrInvalidRequest, err, "%v", err)
	}
	info := &PlanInfo{}
	mctx, cancel := context.WithTimeout(ctx, 10*dirtyRateSample+5*time.Second)
	defer cancel()
	dirty, err := m.dom.MeasureDirtyRate(mctx, dirtyRateSample)
	if err != nil {
		// Without a measurement the policy still works from job stats; the
		// plan then assumes an idle guest.
		m.log.WithError(err).Warn("dirty rate not measured")
		info.DirtyRateSource = "not measured: " + err.Error()
	} else {
		info.DirtyRateSource = fmt.Sprintf("measured by QEMU over %s", dirtyRateSample)
	}
	link := m.dst.LinkMiBps
	info.BandwidthSource = "inventory link_mibps of " + m.dst.Name
	if link == 0 {
		link, info.BandwidthSource = DefaultLinkMiBps, "default link estimate (set link_mibps in the inventory)"
	}
	if m.req.BandwidthMiBps > 0 && m.req.BandwidthMiBps < link {
		link, info.BandwidthSource = m.req.BandwidthMiBps, "--bandwidth cap"
	}
	if m.dst.LinkRTTMs > 0 {
		info.BandwidthSource += fmt.Sprintf("; round trip %d ms (inventory link_rtt_ms of %s)", m.dst.LinkRTTMs, m.dst.Name)
	}
	pl, err := pol.Plan(precopy.Inputs{
		MemoryBytes:          int64(m.info.MemoryBytes),
		DirtyBytesPerSec:     int64(dirty),
		BandwidthBytesPerSec: BandwidthBytesPerSec(link),
		LinkRTTMS:            int64(m.dst.LinkRTTMs),
	})
	if err != nil {
		return nil, refuse(ErrInvalidRequest, err, "%v", err)
	}
	info.Plan = pl
	info.DeadlineMS = pol.Deadline(int64(m.info.MemoryBytes)).Milliseconds()
	info.OnTimeout = string(precopy.DefaultPolicy().OnTimeout)
	if m.req.Live.OnTimeout != "" {
		info.OnTimeout = m.req.Live.OnTimeout
	}
	info.CeilingMS = pol.DowntimeCeiling.Milliseconds()
	if info.CeilingMS == 0 {
		info.CeilingMS = precopy.DefaultPolicy().DowntimeCeiling.Milliseconds()
	}
	return info, nil
}

// QEMU's throttle trigger (percent of the bytes sent per sync period that
// dirtying must exceed): dormant arms auto-converge without changing a job
// that converges, since it fires only when the guest dirties faster than the
// link sends; active is QEMU's default, used once the policy asks to throttle.
const (
	throttleTriggerDormantPct = 100
	throttleTriggerActivePct  = 50
)

// sampleOf converts libvirt job stats for precopy.Step.
func sampleOf(js virt.JobStats, at time.Time, switchover, postcopy bool) precopy.Sample {
	s := precopy.Sample{
		At:                   at,
		Iteration:            js.Iteration,
		MemoryTotalBytes:     int64(js.MemTotal),
		MemoryRemainingBytes: int64(js.MemRemaining),
		MemoryProcessedBytes: int64(js.MemProcessed),
		DirtyBytesPerSec:     int64(js.DirtyBytesPerSec()),
		BandwidthBytesPerSec: int64(js.MemBytesPerSec),
		ThrottlePct:          js.Throttle,
		Postcopy:             postcopy,
		Phase:                precopy.PhasePrecopy,
	}
	if js.DowntimeSet {
		s.ExpectedDowntime = js.Downtime
	}
	switch {
	case postcopy:
		s.Phase = precopy.PhasePostcopy
	case switchover:
		s.Phase = precopy.PhaseSwitchover
	case js.Iteration == 0:
		s.Phase = precopy.PhaseSetup
	}
	return s.Clamp()
}

// applyAction carries out one decision of the policy. abort cancels the job.
// Every job starts with auto-converge (see run), so throttling works mid-job.
func (m *move) applyAction(a precopy.Action, abort func(error)) error {
	switch a.Kind {
	case precopy.ActRaiseDowntime:
		return m.dom.SetMaxDowntime(time.Duration(a.DowntimeMS) * time.Millisecond)
	case precopy.ActSetBandwidth:
		return m.dom.SetMaxSpeed(uint64(max(a.BandwidthBytesPerSec>>20, 1)))
	case precopy.ActSetAutoConverge:
		return m.dom.SetThrottle(a.ThrottleInitialPct, a.ThrottleIncrementPct, throttleTriggerActivePct)
	case precopy.ActStartPostcopy:
		return m.dom.StartPostcopy()
	case precopy.ActSuspend:
		return m.dom.Suspend()
	case precopy.ActAbort:
		abort(fmt.Errorf("pre-copy policy: %s", a.Reason))
		return nil
	}
	return fmt.Errorf("unknown policy action %q", a.Kind)
}
