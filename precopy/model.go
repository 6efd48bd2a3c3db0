package precopy

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Timing constants of QEMU's migration thread that both Predict and the
// simulator use, so that the two agree by construction rather than by luck.
const (
	// qemuCheckEvery is how often QEMU compares the pending bytes with
	// bandwidth×limit: once per rate-limit slot. The simulator steps at this
	// pace, so the last chunk before a sync undershoots the threshold by up to
	// one step's worth of bytes (Predict assumes half of that).
	qemuCheckEvery = 50 * time.Millisecond
	// SwitchoverOverhead is the part of a stop-and-copy pause that is not RAM:
	// device state and the destination's start-up (26 ms measured for an idle
	// 128 MiB guest in the lab).
	SwitchoverOverhead = 20 * time.Millisecond
	// PostcopySwitchDowntime is the pause when switching to post-copy: device
	// state and the discard bitmap go over, RAM follows on demand. An assumption,
	// not a measurement.
	PostcopySwitchDowntime = 50 * time.Millisecond
	// predictHorizon bounds Predict: a copy that needs longer is reported as
	// not converging.
	predictHorizon = 24 * time.Hour
)

// Inputs are the figures a plan starts from.
type Inputs struct {
	MemoryBytes          int64 `json:"memory_bytes"`                // M: guest RAM
	DirtyBytesPerSec     int64 `json:"dirty_bytes_per_sec"`         // D: measured before start (calc-dirty-rate)
	BandwidthBytesPerSec int64 `json:"bandwidth_bytes_per_sec"`     // B: estimated link speed for migration
	WorkingSetBytes      int64 `json:"working_set_bytes,omitempty"` // W: pages the guest writes at all; 0 = unknown (read as M)
	LinkRTTMS            int64 `json:"link_rtt_ms,omitempty"`       // the link's round trip; 0 = a LAN's, negligible
}

// StreamWindowBytes is how much a migration stream (one TCP connection) has
// in flight at most: Linux's default receive buffer ceiling (tcp_rmem, 6 MiB)
// of which half is window (tcp_adv_win_scale 1). Over a long link one stream
// carries at most this much per round trip.
const StreamWindowBytes = 3 << 20

// windowLimited is the bandwidth one stream reaches over the link's round
// trip (0: no round trip given, no limit).
func (in Inputs) windowLimited() int64 {
	if in.LinkRTTMS <= 0 {
		return 0
	}
	return StreamWindowBytes * 1000 / in.LinkRTTMS
}

// ErrBadInputs is wrapped by Inputs.Validate.
var ErrBadInputs = errors.New("invalid plan inputs")

// Validate checks that a plan can be computed from in.
func (in Inputs) Validate() error {
	switch {
	case in.MemoryBytes <= 0:
		return fmt.Errorf("%w: memory must be positive, got %d bytes", ErrBadInputs, in.MemoryBytes)
	case in.BandwidthBytesPerSec <= 0:
		return fmt.Errorf("%w: bandwidth must be positive, got %d bytes/s", ErrBadInputs, in.BandwidthBytesPerSec)
	case in.DirtyBytesPerSec < 0 || in.WorkingSetBytes < 0:
		return fmt.Errorf("%w: negative dirty rate or working set", ErrBadInputs)
	case in.LinkRTTMS < 0 || in.LinkRTTMS > 10_000:
		return fmt.Errorf("%w: link round trip must be 0-10000 ms, got %d", ErrBadInputs, in.LinkRTTMS)
	}
	return nil
}

// workingSet is W clamped to (0, M]: an unknown working set is the whole memory.
func (in Inputs) workingSet() int64 {
	if in.WorkingSetBytes <= 0 || in.WorkingSetBytes > in.MemoryBytes {
		return in.MemoryBytes
	}
	return in.WorkingSetBytes
}

// Prediction is what plain pre-copy (no throttle, no post-copy, a fixed
// downtime limit) is expected to do.
type Prediction struct {
	DowntimeLimitMS int64 `json:"downtime_limit_ms"`
	Converges       bool  `json:"converges"`
	// Rounds counts the passes over dirty memory before stop-and-copy (the
	// first full pass included); when it does not converge, the passes until
	// the dirty set stopped shrinking.
	Rounds    int   `json:"rounds"`
	TotalMS   int64 `json:"total_ms,omitempty"`   // start to resume on the destination
	SentBytes int64 `json:"sent_bytes,omitempty"` // everything transferred, re-sent pages included
	// DowntimeMS is the predicted pause. QEMU switches over as soon as the
	// pending bytes fit in bandwidth×limit, so a busy guest's pause lands close
	// to the limit, not far below it.
	DowntimeMS int64 `json:"downtime_ms,omitempty"`
	// FloorBytes is the dirty set pre-copy cannot get below when it does not
	// converge, and NeededDowntimeMS the limit that set would need (FloorBytes/B).
	FloorBytes       int64 `json:"floor_bytes,omitempty"`
	NeededDowntimeMS int64 `json:"needed_downtime_ms,omitempty"`
}

// Total returns the predicted migration time.
func (p Prediction) Total() time.Duration { return time.Duration(p.TotalMS) * time.Millisecond }

// Downtime returns the predicted pause.
func (p Prediction) Downtime() time.Duration { return time.Duration(p.DowntimeMS) * time.Millisecond }

// Predict runs the round model of plain pre-copy at downtime limit `limit`:
//
//	round 1 sends all of M; each later round sends what the guest dirtied
//	during the previous one, at most W; QEMU switches over when the pending
//	bytes fall below the threshold B·L.
//
// Pages dirtied in a round of length t: min(D·t, W − pages of W still pending).
// So pre-copy converges when D < B (each round is D/B of the one before), or
// when the whole working set already fits the threshold (W ≤ B·L); with D ≥ B
// and W > B·L the dirty set settles at W and FloorBytes says so. (DESIGN §3's
// "D < B and W ≤ L·B" is the hot-set reading of W, where W is rewritten faster
// than any round; with the lab guest's "W bytes at D bytes/s" either condition
// suffices.)
func Predict(in Inputs, limit time.Duration) Prediction {
	pred := Prediction{DowntimeLimitMS: limit.Milliseconds()}
	if in.Validate() != nil {
		return pred
	}
	m := float64(in.MemoryBytes)
	w := float64(in.workingSet())
	d := float64(in.DirtyBytesPerSec)
	b := float64(in.BandwidthBytesPerSec)
	threshold := b * limit.Seconds()
	chunk := b * qemuCheckEvery.Seconds()
	undershoot := min(chunk/2, threshold)

	// Pending pages of the bitmap, split by whether they lie in the working set:
	// only round 1 has pages outside it.
	pendIn, pendOut := w, m-w
	var elapsed, sent float64
	prev := m
	for round := 1; ; round++ {
		pend := pendIn + pendOut
		// QEMU sends until the pending estimate drops below the threshold (at
		// least one chunk, since it only knows its bandwidth after one slot).
		a := min(pend, max(pend-(threshold-undershoot), chunk))
		tau := a / b
		sentIn := pendIn * a / pend
		pendIn -= sentIn
		pendOut -= a - sentIn
		dirtied := min(d*tau, max(w-pendIn, 0))
		pendIn += dirtied
		elapsed += tau
		sent += a
		pend = pendIn + pendOut
		pred.Rounds = round
		if pend < threshold || pend == 0 {
			pause := pend/b + SwitchoverOverhead.Seconds()
			pred.Converges = true
			pred.DowntimeMS = secondsToMS(pause)
			pred.TotalMS = secondsToMS(elapsed + pause)
			pred.SentBytes = int64(sent + pend)
			return pred
		}
		// Stop when the dirty set no longer shrinks, or would take too long.
		if (round > 2 && pend >= prev*(1-1e-3)) || elapsed > predictHorizon.Seconds() {
			pred.TotalMS = secondsToMS(elapsed)
			pred.SentBytes = int64(sent)
			pred.FloorBytes = int64(pend)
			pred.NeededDowntimeMS = secondsToMS(pend / b)
			return pred
		}
		prev = pend
	}
}

func secondsToMS(s float64) int64 { return int64(math.Round(s * 1000)) }

// fmtBytes renders a byte count the way operators read it: "512 MiB", "1.5 GiB".
func fmtBytes(n int64) string {
	f := float64(n)
	switch {
	case n >= GiB:
		return trimFloat(f/float64(GiB)) + " GiB"
	case n >= MiB:
		return trimFloat(f/float64(MiB)) + " MiB"
	case n >= KiB:
		return trimFloat(f/float64(KiB)) + " KiB"
	}
	return fmt.Sprintf("%d B", n)
}

func fmtRate(bytesPerSec int64) string { return fmtBytes(bytesPerSec) + "/s" }

// fmtDur renders "300 ms" below a second and "12.8 s" above.
func fmtDur(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%d ms", d.Milliseconds())
	}
	return trimFloat(d.Seconds()) + " s"
}

// trimFloat keeps one decimal, or none when the value is whole or large.
func trimFloat(f float64) string {
	if f >= 100 || f == math.Trunc(f) {
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprintf("%.1f", f)
}
