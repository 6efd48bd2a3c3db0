package orchestrator

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Ranges of the numbers a move or drain request carries. The API and the
// CLI check their input against these, naming the field as their user wrote
// it ("parallel", "--parallel"), and the controller checks them again, so no
// caller can hand the library a size it cannot use: a channel of 2^63
// slots, a MiB/s cap whose byte rate overflows to "no cap".

// Range bounds an integer. Zero, when set, says what 0 means (a default,
// "none"); 0 is then accepted although below Min.
type Range struct {
	Min, Max int64
	Zero     string
}

// DurationRange bounds a duration, with Zero as in Range.
type DurationRange struct {
	Min, Max time.Duration
	Zero     string
}

// The ranges of moves (package drain has its own). Maxima are far above any sane setting and far below what
// would overflow a conversion or an allocation.
var (
	// 1 TiB/s: 2^40 bytes/s still fits every int64 byte rate.
	RangeBandwidthMiBps = Range{Min: 1, Max: MaxBandwidthMiBps, Zero: "no cap"}
	// QEMU refuses a downtime limit above 2000 s.
	RangeMaxDowntime       = DurationRange{Min: time.Millisecond, Max: 2000 * time.Second, Zero: "the default, " + DefaultMaxDowntime.String()}
	RangeDowntimeCeiling   = DurationRange{Min: time.Millisecond, Max: 2000 * time.Second, Zero: "the default, 1s"}
	RangeCompletionTimeout = DurationRange{Min: time.Second, Max: 7 * 24 * time.Hour, Zero: "150 s per GiB of memory, at least 120 s"}
	RangeTimeout           = DurationRange{Min: time.Second, Max: 7 * 24 * time.Hour, Zero: "none"}
	RangeShutdownTimeout   = DurationRange{Min: time.Second, Max: 24 * time.Hour, Zero: "the default"}
	// The resume window of a broken post-copy: the guest is frozen meanwhile.
	RangePostcopyResumeWindow = DurationRange{Min: time.Second, Max: 24 * time.Hour, Zero: "the default, 2m0s"}
	// RangeListLimit bounds how many journal rows one listing returns.
	RangeListLimit = Range{Min: 1, Max: 100000, Zero: "all"}
)

// MaxBandwidthMiBps is the highest bandwidth cap, 1 TiB/s.
const MaxBandwidthMiBps = 1 << 20

// RangeError is a number outside its range. It is a refusal of an invalid
// request: errors.Is matches ErrRefused and ErrInvalidRequest.
type RangeError struct {
	Field string // as the caller's user wrote it: "parallel", "--parallel"
	Value string
	Want  string
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("%s %s: out of range, give %s", e.Field, e.Value, e.Want)
}

func (e *RangeError) Unwrap() []error { return []error{ErrRefused, ErrInvalidRequest} }

func (r Range) want() string {
	s := fmt.Sprintf("%d to %d", r.Min, r.Max)
	if r.Zero != "" {
		s += " (0: " + r.Zero + ")"
	}
	return s
}

// Check returns a *RangeError when v is outside r.
func (r Range) Check(field string, v int64) error {
	if (v == 0 && r.Zero != "") || (v >= r.Min && v <= r.Max) {
		return nil
	}
	return &RangeError{Field: field, Value: strconv.FormatInt(v, 10), Want: r.want()}
}

// CheckUint is Check for unsigned values (a JSON number up to 2^64-1).
func (r Range) CheckUint(field string, v uint64) error {
	if v > math.MaxInt64 {
		return &RangeError{Field: field, Value: strconv.FormatUint(v, 10), Want: r.want()}
	}
	return r.Check(field, int64(v))
}

// Check returns a *RangeError when d is outside r.
func (r DurationRange) Check(field string, d time.Duration) error {
	if (d == 0 && r.Zero != "") || (d >= r.Min && d <= r.Max) {
		return nil
	}
	want := fmt.Sprintf("%s to %s", r.Min, r.Max)
	if r.Zero != "" {
		want += " (0: " + r.Zero + ")"
	}
	return &RangeError{Field: field, Value: d.String(), Want: want}
}

// BandwidthBytesPerSec converts a MiB/s cap to bytes/s, saturating instead
// of wrapping: a cap beyond MaxBandwidthMiBps (refused by the checks) can
// never turn into a negative or zero rate, that is into "no cap".
func BandwidthBytesPerSec(mibps uint64) int64 {
	if mibps > math.MaxInt64>>20 {
		return math.MaxInt64
	}
	return int64(mibps) << 20
}

// CheckRanges checks a request's numbers, its kind's ones and the common
// ones; flag names as the CLI has them (the API checks its own field names
// first).
func (r Request) CheckRanges() error {
	durations := []struct {
		field string
		rng   DurationRange
		v     time.Duration
	}{
		{"--max-downtime", RangeMaxDowntime, r.Live.MaxDowntime},
		{"--max-downtime-ceiling", RangeDowntimeCeiling, r.Live.DowntimeCeiling},
		{"--completion-timeout", RangeCompletionTimeout, r.Live.CompletionTimeout},
		{"--timeout", RangeTimeout, r.Live.Timeout},
		{"--postcopy-resume-window", RangePostcopyResumeWindow, r.Live.PostcopyResumeWindow},
	}
	if r.Kind == KindCold {
		durations = durations[:0]
		durations = append(durations, struct {
			field string
			rng   DurationRange
			v     time.Duration
		}{"--shutdown-timeout", RangeShutdownTimeout, r.Cold.ShutdownTimeout})
	}
	for _, c := range durations {
		if err := c.rng.Check(c.field, c.v); err != nil {
			return err
		}
	}
	return RangeBandwidthMiBps.CheckUint("--bandwidth", r.BandwidthMiBps)
}
