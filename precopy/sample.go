package precopy

import (
	"errors"
	"fmt"
	"time"
)

// Phase is where the migration job is, as the orchestrator reads it from libvirt.
type Phase string

const (
	PhaseSetup      Phase = "setup"      // job started, no page sent yet
	PhasePrecopy    Phase = "pre-copy"   // iterative copy, guest running on the source
	PhaseSwitchover Phase = "switchover" // source paused, QEMU sending the last pages and device state
	PhasePostcopy   Phase = "post-copy"  // guest running on the destination, pages pulled from the source
	PhaseCompleted  Phase = "completed"
	PhaseFailed     Phase = "failed"
	PhaseCancelled  Phase = "cancelled"
)

// finished reports whether the job has ended one way or the other.
func (p Phase) finished() bool {
	return p == PhaseCompleted || p == PhaseFailed || p == PhaseCancelled
}

// Sample is one reading of the migration job's statistics. The orchestrator
// fills it from virDomainGetJobStats every 250 ms and on MIGRATION_ITERATION
// events; the simulator produces the same thing.
type Sample struct {
	At time.Time
	// Iteration is QEMU's dirty-sync count (libvirt memory_iteration): 1 during
	// the first full pass, +1 at each dirty-bitmap sync. 0 means "not reported";
	// Step then infers syncs from upward jumps of MemoryRemainingBytes.
	Iteration            int
	MemoryTotalBytes     int64
	MemoryRemainingBytes int64 // pages still marked dirty in QEMU's bitmap
	MemoryProcessedBytes int64 // bytes transferred so far
	// DirtyBytesPerSec is QEMU's measured dirty rate (libvirt reports pages/s:
	// multiply by memory_page_size). 0 until QEMU has measured a period.
	DirtyBytesPerSec     int64
	BandwidthBytesPerSec int64         // measured transfer rate (libvirt memory_bps)
	ExpectedDowntime     time.Duration // QEMU's estimate: remaining / bandwidth
	ThrottlePct          int           // current auto-converge CPU throttle, 0–99
	Postcopy             bool          // post-copy is active
	Phase                Phase         // "" is read as PhasePrecopy
}

// ErrBadSample is wrapped by Sample.Validate.
var ErrBadSample = errors.New("invalid migration sample")

// Validate reports values that cannot come from a real job. Step does not
// reject such samples; it clamps them (Clamp), because one garbled reading must
// not stop the controller. The orchestrator may log Validate's error.
func (s Sample) Validate() error {
	var errs []error
	if s.At.IsZero() {
		errs = append(errs, errors.New("no timestamp"))
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"iteration", int64(s.Iteration)},
		{"memory total", s.MemoryTotalBytes},
		{"memory remaining", s.MemoryRemainingBytes},
		{"memory processed", s.MemoryProcessedBytes},
		{"dirty rate", s.DirtyBytesPerSec},
		{"bandwidth", s.BandwidthBytesPerSec},
		{"expected downtime", int64(s.ExpectedDowntime)},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("negative %s %d", f.name, f.v))
		}
	}
	if s.MemoryTotalBytes > 0 && s.MemoryRemainingBytes > s.MemoryTotalBytes {
		errs = append(errs, fmt.Errorf("remaining %d bytes exceeds total %d", s.MemoryRemainingBytes, s.MemoryTotalBytes))
	}
	if s.ThrottlePct < 0 || s.ThrottlePct > 100 {
		errs = append(errs, fmt.Errorf("throttle %d %% outside 0–100", s.ThrottlePct))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSample, err)
	}
	return nil
}

// Clamp returns s with impossible values forced into range: negatives to 0,
// remaining to at most total, throttle to 0–100, an empty phase to pre-copy.
func (s Sample) Clamp() Sample {
	nonNeg := func(v *int64) {
		if *v < 0 {
			*v = 0
		}
	}
	nonNeg(&s.MemoryTotalBytes)
	nonNeg(&s.MemoryRemainingBytes)
	nonNeg(&s.MemoryProcessedBytes)
	nonNeg(&s.DirtyBytesPerSec)
	nonNeg(&s.BandwidthBytesPerSec)
	if s.Iteration < 0 {
		s.Iteration = 0
	}
	if s.ExpectedDowntime < 0 {
		s.ExpectedDowntime = 0
	}
	if s.MemoryTotalBytes > 0 && s.MemoryRemainingBytes > s.MemoryTotalBytes {
		s.MemoryRemainingBytes = s.MemoryTotalBytes
	}
	s.ThrottlePct = min(max(s.ThrottlePct, 0), 100)
	if s.Phase == "" {
		s.Phase = PhasePrecopy
	}
	if s.Phase == PhasePostcopy {
		s.Postcopy = true
	}
	return s
}
