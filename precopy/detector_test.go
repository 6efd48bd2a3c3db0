package precopy

import (
	"math"
	"testing"
	"time"
)

func TestStallDetectionWithNoise(t *testing.T) {
	p := Policy{CompletionTimeout: time.Hour}
	down := func(k int) int64 { return int64(400 * float64(MiB) * math.Pow(0.9, float64(k))) }
	tests := []struct {
		name      string
		gen       synth
		size      func(int) int64
		passes    int
		wantStall bool
		earliest  int // first pass at which a stall may be declared
		latest    int
	}{
		{"trend down 10 %/pass with ±10 % jitter: no stall", synth{total: labMemory, bw: labLink, noise: jitter, minPass: 2 * time.Second}, down, 25, false, 0, 0},
		{"flat with ±10 % jitter: stall", synth{total: labMemory, bw: labLink, noise: jitter, minPass: 2 * time.Second}, flat(100 * MiB), 25, true, 4, 10},
		{"flat, no iteration reported: stall from jumps", synth{total: labMemory, bw: labLink, noIter: true, minPass: 2 * time.Second}, flat(100 * MiB), 25, true, 4, 10},
		{"trend down, no iteration reported: no stall", synth{total: labMemory, bw: labLink, noIter: true, minPass: 2 * time.Second}, down, 25, false, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			samples := tc.gen.samples(tc.passes, tc.size)
			_, got := drive(start(p, Plan{}), samples)
			if !tc.wantStall {
				if len(got) != 0 {
					t.Fatalf("stall declared on a converging series: %v", got)
				}
				return
			}
			if len(got) == 0 {
				t.Fatal("no stall on a flat series")
			}
			first := int(got[0].at/tc.gen.minPass) + 1 // every pass lasts minPass
			t.Logf("first stall in pass %d: %s", first, got[0].Action)
			if first < tc.earliest || first > tc.latest {
				t.Errorf("first stall in pass %d, want %d..%d (%v)", first, tc.earliest, tc.latest, got[0])
			}
			if got[0].Kind != ActRaiseDowntime {
				t.Errorf("first remedy %s, want raise-downtime", got[0].Kind)
			}
		})
	}
}

// TestStallWindowInSeconds: with long passes, StallWindow declares a stall
// before StallIterations passes have gone by.
func TestStallWindowInSeconds(t *testing.T) {
	g := synth{total: 8 * GiB, bw: labLink, minPass: time.Minute}
	samples := g.samples(6, flat(2*GiB))
	for _, tc := range []struct {
		window time.Duration
		before time.Duration
		after  time.Duration
	}{
		{0, 10 * time.Minute, 3 * time.Minute},                       // iterations only: after 3 more passes
		{90 * time.Second, 2*time.Minute + time.Second, time.Minute}, // window: after the second sync
	} {
		p := Policy{CompletionTimeout: 10 * time.Hour, StallWindow: tc.window}
		_, got := drive(start(p, Plan{}), samples)
		if len(got) == 0 {
			t.Fatalf("window %s: no stall", tc.window)
		}
		if got[0].at > tc.before || got[0].at < tc.after {
			t.Errorf("window %s: first stall at %s, want between %s and %s", tc.window, got[0].at, tc.after, tc.before)
		}
	}
}

// TestThrottleRiseIsProgress: while QEMU keeps raising the throttle the
// dirty set may stay flat without a stall; once the throttle stops rising, it stalls.
func TestThrottleRiseIsProgress(t *testing.T) {
	g := lab()
	g.minPass = 2 * time.Second
	g.throttle = func(pass int) int { return min(20+10*(pass/2), 60) } // rises every second pass, then stops
	p := Policy{AllowPostcopy: true, CompletionTimeout: time.Hour}
	pl := Plan{Strategy: StrategyAutoConverge, Job: Job{AutoConverge: true}}
	_, got := drive(start(p, pl), g.samples(20, flat(200*MiB)))
	if len(got) == 0 {
		t.Fatal("no stall once the throttle stopped rising")
	}
	stopped := 8 * 2 * time.Second // the throttle reaches 60 % at pass 8
	if got[0].at < stopped {
		t.Errorf("stall at %s while the throttle was still rising (until %s): %v", got[0].at, stopped, got[0])
	}
}
