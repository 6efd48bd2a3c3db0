package precopy

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Strategy is how a migration is planned to converge.
type Strategy string

const (
	// StrategyPrecopy: plain pre-copy converges at the initial limit or at one
	// the ladder reaches below the ceiling (post-copy stays armed when allowed).
	StrategyPrecopy Strategy = "pre-copy"
	// StrategyPostcopy: pre-copy cannot converge; copy everything once, then
	// switch to post-copy (libvirt's --postcopy-after-precopy).
	StrategyPostcopy Strategy = "post-copy"
	// StrategyAutoConverge: pre-copy cannot converge on its own; start with
	// auto-converge so the throttle brings the dirty rate under the bandwidth.
	StrategyAutoConverge Strategy = "auto-converge"
	// StrategyNone: nothing allowed converges before the deadline within the
	// ceiling; needs post-copy or a larger ceiling.
	StrategyNone Strategy = "will-not-converge"
)

// Job is how the orchestrator starts the libvirt migration job.
type Job struct {
	DowntimeMS           int64 `json:"downtime_ms"`                       // virDomainMigrateSetMaxDowntime right after start
	BandwidthBytesPerSec int64 `json:"bandwidth_bytes_per_sec,omitempty"` // VIR_MIGRATE_PARAM_BANDWIDTH (in MiB/s there); 0 = unlimited
	AutoConverge         bool  `json:"auto_converge"`                     // VIR_MIGRATE_AUTO_CONVERGE
	ThrottleInitialPct   int   `json:"throttle_initial_pct"`              // VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL
	ThrottleIncrementPct int   `json:"throttle_increment_pct"`            // VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT
	Postcopy             bool  `json:"postcopy"`                          // VIR_MIGRATE_POSTCOPY: arm post-copy
	CompletionTimeoutMS  int64 `json:"completion_timeout_ms"`
}

// Plan is the decision made before a migration starts, for `ferry migrate
// --plan` and for the orchestrator (Job, then Policy.Start).
type Plan struct {
	Inputs   Inputs   `json:"inputs"`
	Strategy Strategy `json:"strategy"`
	// Feasible: the simulator, running this policy on Inputs, completes before
	// the deadline with a pause within the ceiling (plus SwitchoverOverhead: the
	// ceiling, like QEMU's limit, bounds the RAM part of the pause).
	Feasible  bool       `json:"feasible"`
	Reason    string     `json:"reason"`
	Job       Job        `json:"job"`
	Precopy   Prediction `json:"precopy"`    // plain pre-copy at the initial limit
	AtCeiling Prediction `json:"at_ceiling"` // plain pre-copy at the ceiling
	Expected  Result     `json:"expected"`   // the policy run through the simulator
}

// Plan predicts plain pre-copy from in, picks a strategy allowed by p, and
// simulates the whole policy to say what to expect. An unknown working set is
// taken as the whole memory, the pessimistic reading.
func (p Policy) Plan(in Inputs) (Plan, error) {
	if err := in.Validate(); err != nil {
		return Plan{}, err
	}
	p = p.normalized()
	eff := in // what pre-copy sees: the link, or the job's cap or one stream's window over the round trip if lower
	if p.BandwidthBytesPerSec > 0 {
		eff.BandwidthBytesPerSec = min(eff.BandwidthBytesPerSec, p.BandwidthBytesPerSec)
	}
	var notes []string
	if w := in.windowLimited(); w > 0 && w < eff.BandwidthBytesPerSec {
		eff.BandwidthBytesPerSec = w
		notes = append(notes, fmt.Sprintf("a %d ms round trip holds one stream to %s", in.LinkRTTMS, fmtRate(w)))
	}
	deadline := p.Deadline(in.MemoryBytes)
	pl := Plan{
		Inputs:    in,
		Precopy:   Predict(eff, p.InitialDowntime),
		AtCeiling: Predict(eff, p.DowntimeCeiling),
	}
	pl.Job = p.jobFor(pl)

	// With post-copy allowed, a pre-copy that crawls to convergence (more
	// than twice M/B) loses to post-copy, which finishes in about M/B.
	floor := time.Duration(float64(in.MemoryBytes) / float64(max(eff.BandwidthBytesPerSec, 1)) * float64(time.Second))
	fits := func(pr Prediction) bool {
		return pr.Converges && pr.Total() <= deadline && !(p.AllowPostcopy && pr.Total() > 2*floor)
	}
	rates := fmt.Sprintf("dirty %s against %s", fmtRate(in.DirtyBytesPerSec), fmtRate(eff.BandwidthBytesPerSec))
	var why string
	switch {
	case fits(pl.Precopy):
		pl.Strategy = StrategyPrecopy
		why = fmt.Sprintf("pre-copy converges: %d rounds, %s, pause %s with the %s limit (%s)",
			pl.Precopy.Rounds, fmtDur(pl.Precopy.Total()), fmtDur(pl.Precopy.Downtime()), fmtDur(p.InitialDowntime), rates)
	case fits(pl.AtCeiling):
		pl.Strategy = StrategyPrecopy
		why = fmt.Sprintf("pre-copy converges once the downtime limit is raised towards the %s ceiling: %d rounds, %s, pause %s (%s)",
			fmtDur(p.DowntimeCeiling), pl.AtCeiling.Rounds, fmtDur(pl.AtCeiling.Total()), fmtDur(pl.AtCeiling.Downtime()), rates)
	case p.AllowPostcopy:
		pl.Strategy = StrategyPostcopy
		why = fmt.Sprintf("pre-copy cannot converge (%s); post-copy after the first pass", rates)
		if pl.AtCeiling.Converges {
			why = fmt.Sprintf("pre-copy would crawl (%s, %s against a %s floor at M/B); post-copy after the first pass",
				rates, fmtDur(pl.AtCeiling.Total()), fmtDur(floor))
		}
	case !p.NoAutoConverge:
		pl.Strategy = StrategyAutoConverge
		pl.Job.AutoConverge = true
		pl.Job.ThrottleInitialPct = throttleFor(p, eff.DirtyBytesPerSec, eff.BandwidthBytesPerSec)
		why = fmt.Sprintf("pre-copy cannot converge (%s); auto-converge from the start, throttle %d %% + %d %%",
			rates, pl.Job.ThrottleInitialPct, pl.Job.ThrottleIncrementPct)
	default:
		pl.Strategy = StrategyNone
	}

	link := in.BandwidthBytesPerSec
	if w := in.windowLimited(); w > 0 {
		link = min(link, w)
	}
	pl.Expected = Run(SimConfig{World: World{MemoryBytes: in.MemoryBytes, DirtyBytesPerSec: in.DirtyBytesPerSec,
		WorkingSetBytes: in.WorkingSetBytes, BandwidthBytesPerSec: link}}, p, pl)
	pl.Feasible = pl.Expected.Outcome == OutcomeCompleted && pl.Expected.Total() <= deadline &&
		pl.Expected.Downtime() <= p.DowntimeCeiling+SwitchoverOverhead
	if pl.Strategy == StrategyAutoConverge && !pl.Feasible {
		pl.Strategy = StrategyNone
		why = fmt.Sprintf("auto-converge does not finish within the %s completion timeout in simulation", fmtDur(deadline))
	}
	if pl.Strategy == StrategyNone {
		why = strings.TrimPrefix(why+"; ", "; ") + noConvergence(p, pl, rates)
	}
	if pl.Job.Postcopy && pl.Strategy == StrategyPrecopy {
		notes = append(notes, "post-copy armed as a fallback")
	}
	if in.WorkingSetBytes == 0 {
		notes = append(notes, "working set unknown, taken as the whole memory")
	}
	if len(notes) > 0 {
		why += " (" + strings.Join(notes, "; ") + ")"
	}
	pl.Reason = why + expectation(pl.Expected)
	return pl, nil
}

// noConvergence says what would make the migration converge.
func noConvergence(p Policy, pl Plan, rates string) string {
	need := "a larger ceiling"
	if ms := pl.AtCeiling.NeededDowntimeMS; ms > 0 {
		need = fmt.Sprintf("a ceiling of at least %s (--max-downtime-ceiling)", fmtDur(time.Duration(ms)*time.Millisecond))
	}
	s := fmt.Sprintf("will not converge (%s", rates)
	if pl.AtCeiling.FloorBytes > 0 {
		s += fmt.Sprintf(", dirty set stays at %s", fmtBytes(pl.AtCeiling.FloorBytes))
	}
	s += ") — needs post-copy (--allow-postcopy) or " + need
	if p.NoAutoConverge {
		s += ", or auto-converge"
	}
	return s
}

// expectation summarises the simulated run for the reason line.
func expectation(r Result) string {
	switch r.Outcome {
	case OutcomeCompleted:
		via := ""
		if r.Postcopy {
			via = " via post-copy"
		}
		return fmt.Sprintf(". Simulated: completes%s in %s, pause %s, %s sent", via, fmtDur(r.Total()), fmtDur(r.Downtime()), fmtBytes(r.SentBytes))
	case OutcomeAborted:
		return fmt.Sprintf(". Simulated: aborted after %s", fmtDur(r.Total()))
	}
	return fmt.Sprintf(". Simulated: still copying after %s", fmtDur(r.Total()))
}

// jobFor is pl.Job with the policy's settings filled in where it is silent.
func (p Policy) jobFor(pl Plan) Job {
	p = p.normalized()
	j := pl.Job
	if j.DowntimeMS <= 0 {
		j.DowntimeMS = p.InitialDowntime.Milliseconds()
	}
	if j.BandwidthBytesPerSec == 0 {
		j.BandwidthBytesPerSec = p.BandwidthBytesPerSec
	}
	if j.ThrottleInitialPct <= 0 {
		j.ThrottleInitialPct = p.ThrottleInitialPct
	}
	if j.ThrottleIncrementPct <= 0 {
		j.ThrottleIncrementPct = p.ThrottleIncrementPct
	}
	j.Postcopy = j.Postcopy || p.armPostcopy()
	if j.CompletionTimeoutMS <= 0 && pl.Inputs.MemoryBytes > 0 {
		j.CompletionTimeoutMS = p.Deadline(pl.Inputs.MemoryBytes).Milliseconds()
	}
	return j
}

// throttleFor is the first throttle step: the policy's floor, raised to the
// step (a multiple of 10 %) that brings dirty rate d down to half of bandwidth
// b, so each round at least halves what is left (auto-converge is chosen when
// the copy would not converge, even if the measured d reads below b). QEMU raises the throttle only
// every second unproductive sync, so a step that merely matches the link (or
// 20 % against a guest dirtying twice its speed) leaves it ramping for a
// minute or more; and QEMU's sampled dirty rate tends to read low (56 MiB/s
// measured for a guest writing 78 MiB/s in the lab).
func throttleFor(p Policy, d, b int64) int {
	initial := p.ThrottleInitialPct
	if 2*d > b && b > 0 {
		need := int(math.Ceil((1-float64(b)/(2*float64(d)))*10)) * 10
		initial = max(initial, need)
	}
	return min(initial, p.ThrottleMaxPct)
}
