package precopy

import (
	"fmt"
	"time"
)

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

// stallMinTime keeps a burst of fast syncs (QEMU syncs every time pending
// dips under the threshold) from counting as a stall within one sample.
const stallMinTime = time.Second

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
