package precopy

import (
	"errors"
	"math"
	"testing"
	"time"
)

// Figures from the lab (DESIGN §8): a 512 MiB guest writing 76 MB/s, a
// 40 MiB/s migration link.
const (
	labMemory = 512 * MiB
	labDirty  = 76_000_000
	labLink   = 40 * MiB
)

func TestPredict(t *testing.T) {
	limit := DefaultInitialDowntime
	tests := []struct {
		name       string
		in         Inputs
		converges  bool
		maxRounds  int   // when it converges
		floorBytes int64 // when it does not: the dirty set it settles at
	}{
		{"idle guest", Inputs{MemoryBytes: labMemory, BandwidthBytesPerSec: labLink}, true, 1, 0},
		{"D much smaller than B", Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: 5_000_000, BandwidthBytesPerSec: labLink}, true, 3, 0},
		{"fast link", Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: GiB}, true, 2, 0},
		{"D close to B converges slowly", Inputs{MemoryBytes: 4 * GiB, DirtyBytesPerSec: 60_000_000, BandwidthBytesPerSec: 100 * MiB}, true, 20, 0},
		{"D above B, whole memory written", Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink}, false, 0, labMemory},
		{"D above B, 200 MiB working set", Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink, WorkingSetBytes: 200 * MiB}, false, 0, 200 * MiB},
		{"D above B, working set fits B·L", Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink, WorkingSetBytes: 8 * MiB}, true, 6, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Predict(tc.in, limit)
			if p.Converges != tc.converges {
				t.Fatalf("Converges = %v, want %v (%+v)", p.Converges, tc.converges, p)
			}
			minTime := time.Duration(float64(tc.in.MemoryBytes) / float64(tc.in.BandwidthBytesPerSec) * float64(time.Second))
			if !tc.converges {
				if math.Abs(float64(p.FloorBytes-tc.floorBytes)) > 0.02*float64(tc.floorBytes) {
					t.Errorf("FloorBytes = %s, want about %s", fmtBytes(p.FloorBytes), fmtBytes(tc.floorBytes))
				}
				wantNeed := float64(tc.floorBytes) / float64(tc.in.BandwidthBytesPerSec) * 1000
				if math.Abs(float64(p.NeededDowntimeMS)-wantNeed) > 0.02*wantNeed {
					t.Errorf("NeededDowntimeMS = %d, want about %.0f", p.NeededDowntimeMS, wantNeed)
				}
				return
			}
			if p.Rounds < 1 || p.Rounds > tc.maxRounds {
				t.Errorf("Rounds = %d, want 1..%d", p.Rounds, tc.maxRounds)
			}
			if p.Downtime() > limit+SwitchoverOverhead {
				t.Errorf("Downtime = %s, above limit %s + overhead", p.Downtime(), limit)
			}
			if p.Total() < minTime {
				t.Errorf("Total = %s, below M/B = %s", p.Total(), minTime)
			}
			if p.SentBytes < tc.in.MemoryBytes {
				t.Errorf("SentBytes = %d, below M", p.SentBytes)
			}
		})
	}
}

// TestPredictClosedForm checks the model against the fluid formula: with D < B
// and no cap, pending falls at B−D, so the copy takes about (M − B·L)/(B − D).
func TestPredictClosedForm(t *testing.T) {
	in := Inputs{MemoryBytes: 4 * GiB, DirtyBytesPerSec: 60_000_000, BandwidthBytesPerSec: 100 * MiB}
	p := Predict(in, DefaultInitialDowntime)
	m, d, b := float64(in.MemoryBytes), float64(in.DirtyBytesPerSec), float64(in.BandwidthBytesPerSec)
	want := (m - b*DefaultInitialDowntime.Seconds()) / (b - d)
	if got := p.Total().Seconds(); math.Abs(got-want) > 0.05*want {
		t.Errorf("Total = %.1f s, closed form %.1f s", got, want)
	}
}

// TestSimulatorAgreesWithPredict runs QEMU's model alone on the same inputs:
// same verdict, and for converging copies time, data and rounds within tolerance.
func TestSimulatorAgreesWithPredict(t *testing.T) {
	worlds := []World{
		{MemoryBytes: labMemory, DirtyBytesPerSec: 5_000_000, BandwidthBytesPerSec: labLink},
		{MemoryBytes: labMemory, DirtyBytesPerSec: 20_000_000, BandwidthBytesPerSec: labLink},
		{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: GiB},
		{MemoryBytes: 4 * GiB, DirtyBytesPerSec: 60_000_000, BandwidthBytesPerSec: 100 * MiB},
		{MemoryBytes: 2 * GiB, DirtyBytesPerSec: 30_000_000, BandwidthBytesPerSec: labLink, WorkingSetBytes: 64 * MiB},
		{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink},
		{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink, WorkingSetBytes: 200 * MiB},
	}
	for _, w := range worlds {
		name := fmtBytes(w.MemoryBytes) + " D=" + fmtRate(w.DirtyBytesPerSec) + " B=" + fmtRate(w.BandwidthBytesPerSec) + " W=" + fmtBytes(w.WorkingSetBytes)
		t.Run(name, func(t *testing.T) {
			p := Predict(w.Inputs(), DefaultInitialDowntime)
			r := Simulate(SimConfig{World: w, Limit: 10 * time.Minute})
			if got := r.Outcome == OutcomeCompleted; got != p.Converges {
				t.Fatalf("simulator completed=%v, Predict converges=%v\nsim %+v\npredict %+v", got, p.Converges, r, p)
			}
			if !p.Converges {
				if r.MaxThrottlePct != 0 || r.DowntimeLimitMS != DefaultInitialDowntime.Milliseconds() {
					t.Fatalf("plain run changed its own settings: %+v", r)
				}
				return
			}
			t.Logf("total %s vs %s, sent %s vs %s, pause %s vs %s, rounds %d vs %d (simulator vs Predict)",
				r.Total(), p.Total(), fmtBytes(r.SentBytes), fmtBytes(p.SentBytes), r.Downtime(), p.Downtime(), r.Rounds, p.Rounds)
			within := func(what string, got, want, rel, abs float64) {
				if math.Abs(got-want) > max(rel*want, abs) {
					t.Errorf("%s: simulator %.0f, Predict %.0f", what, got, want)
				}
			}
			within("total ms", float64(r.TotalMS), float64(p.TotalMS), 0.05, 100)
			within("sent bytes", float64(r.SentBytes), float64(p.SentBytes), 0.05, float64(MiB))
			within("downtime ms", float64(r.DowntimeMS), float64(p.DowntimeMS), 0.15, 50)
			within("rounds", float64(r.Rounds), float64(p.Rounds), 0.25, 2)
			if r.Downtime() > DefaultInitialDowntime+SwitchoverOverhead {
				t.Errorf("simulated pause %s above the limit", r.Downtime())
			}
		})
	}
}

// TestSimulatorNeverConvergesAboveBandwidth checks the non-converging case
// sample by sample: with D > B and nothing done, the dirty set after every sync
// stays far above B·L.
func TestSimulatorNeverConvergesAboveBandwidth(t *testing.T) {
	w := World{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink}
	s := NewSim(SimConfig{World: w})
	threshold := int64(float64(labLink) * DefaultInitialDowntime.Seconds())
	iter := 1
	for s.Elapsed() < 5*time.Minute {
		s.Advance(250 * time.Millisecond)
		smp := s.Sample()
		if s.Done() {
			t.Fatalf("completed at %s without help", s.Elapsed())
		}
		if smp.Iteration > iter {
			iter = smp.Iteration
			if smp.MemoryRemainingBytes <= 10*threshold {
				t.Fatalf("after sync %d pending %s, close to B·L = %s", iter, fmtBytes(smp.MemoryRemainingBytes), fmtBytes(threshold))
			}
		}
	}
	if iter < 10 {
		t.Errorf("only %d passes in 5 min, want a pass every M/B = 12.8 s", iter)
	}
}

func TestInputsValidate(t *testing.T) {
	for _, in := range []Inputs{{}, {MemoryBytes: GiB}, {MemoryBytes: GiB, BandwidthBytesPerSec: MiB, DirtyBytesPerSec: -1}} {
		if err := in.Validate(); !errors.Is(err, ErrBadInputs) {
			t.Errorf("Validate(%+v) = %v, want ErrBadInputs", in, err)
		}
		if p := Predict(in, time.Second); p.Converges || p.Rounds != 0 {
			t.Errorf("Predict(%+v) = %+v, want nothing", in, p)
		}
	}
}

func TestSampleValidateAndClamp(t *testing.T) {
	at := time.Unix(100, 0)
	good := Sample{At: at, Iteration: 2, MemoryTotalBytes: GiB, MemoryRemainingBytes: MiB, ThrottlePct: 20}
	if err := good.Validate(); err != nil {
		t.Fatalf("good sample: %v", err)
	}
	bad := Sample{Iteration: -1, MemoryTotalBytes: MiB, MemoryRemainingBytes: GiB, BandwidthBytesPerSec: -5, ThrottlePct: 150}
	if err := bad.Validate(); !errors.Is(err, ErrBadSample) {
		t.Fatalf("bad sample: %v, want ErrBadSample", err)
	}
	c := bad.Clamp()
	if c.Iteration != 0 || c.MemoryRemainingBytes != MiB || c.BandwidthBytesPerSec != 0 || c.ThrottlePct != 100 || c.Phase != PhasePrecopy {
		t.Errorf("Clamp = %+v", c)
	}
	if err := (Sample{At: at, Phase: PhasePostcopy}).Clamp(); !err.Postcopy {
		t.Errorf("post-copy phase not read as post-copy")
	}
}
