package precopy

import (
	"math"
	"reflect"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// synth builds the samples libvirt would report for passes of the given sizes:
// every pass starts with size(k) pending and drains at bw; a sample every 250 ms.
// noise(i) scales each sample's remaining bytes (1 = exact).
type synth struct {
	total      int64
	bw         int64
	dirty      int64
	minPass    time.Duration
	noIter     bool // report Iteration 0, as a libvirt without memory_iteration
	throttle   func(pass int) int
	noise      func(i int) float64
	postcopyAt time.Duration // if > 0, samples report post-copy from then on
}

func (g synth) samples(passes int, size func(pass int) int64) []Sample {
	var out []Sample
	at := time.Duration(0)
	i := 0
	for k := 1; k <= passes; k++ {
		sz := size(k)
		dur := max(time.Duration(float64(sz)/float64(g.bw)*float64(time.Second)), g.minPass, 500*time.Millisecond)
		for into := time.Duration(0); into < dur; into += 250 * time.Millisecond {
			at += 250 * time.Millisecond
			rem := max(sz-int64(float64(g.bw)*into.Seconds()), sz/20)
			if g.noise != nil {
				rem = int64(float64(rem) * g.noise(i))
			}
			s := Sample{At: t0.Add(at), Iteration: k, MemoryTotalBytes: g.total, MemoryRemainingBytes: rem,
				MemoryProcessedBytes: int64(at.Seconds() * float64(g.bw)), DirtyBytesPerSec: g.dirty,
				BandwidthBytesPerSec: g.bw, Phase: PhasePrecopy}
			if g.noIter {
				s.Iteration = 0
			}
			if g.throttle != nil {
				s.ThrottlePct = g.throttle(k)
			}
			if g.postcopyAt > 0 && at >= g.postcopyAt {
				s.Postcopy, s.Phase = true, PhasePostcopy
			}
			out = append(out, s)
			i++
		}
	}
	return out
}

type fired struct {
	at   time.Duration
	pass int
	Action
}

// drive feeds samples through Step (now = the sample's time) and collects actions.
func drive(st State, samples []Sample) (State, []fired) {
	var got []fired
	for _, s := range samples {
		var acts []Action
		st, acts = Step(st, s, s.At)
		for _, a := range acts {
			got = append(got, fired{at: s.At.Sub(t0), pass: s.Iteration, Action: a})
		}
	}
	return st, got
}

func kinds(fs []fired) []ActionKind {
	var out []ActionKind
	for _, f := range fs {
		out = append(out, f.Kind)
	}
	return out
}

func flat(sz int64) func(int) int64 { return func(int) int64 { return sz } }

// jitter is deterministic noise within ±10 %.
func jitter(i int) float64 { return 1 + 0.1*math.Sin(float64(i)*2.3) }

func lab() synth { return synth{total: labMemory, bw: labLink, dirty: labDirty} }

func start(p Policy, pl Plan) State {
	if pl.Inputs.MemoryBytes == 0 {
		pl.Inputs = Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink}
	}
	return p.Start(pl, t0)
}

func TestStepEscalatesInOrder(t *testing.T) {
	const (
		R = ActRaiseDowntime
		B = ActSetBandwidth
		A = ActSetAutoConverge
		P = ActStartPostcopy
		S = ActSuspend
		X = ActAbort
	)
	noDeadline := time.Hour
	tests := []struct {
		name      string
		policy    Policy
		plan      Plan
		size      int64 // flat dirty set; Step estimates it 5 MiB higher (half a sample of sending)
		want      []ActionKind
		downtimes []int64 // RaiseDowntime values in order
	}{
		{"fits after steps, post-copy allowed: post-copy before throttling", Policy{AllowPostcopy: true, CompletionTimeout: noDeadline},
			Plan{}, 10 * MiB, []ActionKind{R, R, R, R, P}, []int64{400, 500, 750, 1000}},
		{"fits after steps, no post-copy: suspend", Policy{CompletionTimeout: noDeadline},
			Plan{}, 10 * MiB, []ActionKind{R, R, R, R, A, S}, []int64{400, 500, 750, 1000}},
		{"ceiling off the schedule is the last step", Policy{DowntimeCeiling: 1200 * time.Millisecond, NoAutoConverge: true, CompletionTimeout: noDeadline},
			Plan{}, 10 * MiB, []ActionKind{R, R, R, R, R, S}, []int64{400, 500, 750, 1000, 1200}},
		{"skips steps that cannot hold the dirty set", Policy{DowntimeCeiling: 5 * time.Second, NoAutoConverge: true, CompletionTimeout: noDeadline},
			Plan{}, 80 * MiB, []ActionKind{R, R, S}, []int64{3000, 5000}},
		{"need just above the ceiling: the ceiling, never the step past it", Policy{AllowPostcopy: true, CompletionTimeout: noDeadline},
			Plan{}, 40 * MiB, []ActionKind{R, P}, []int64{1000}},
		{"hopeless: ceiling and post-copy at once", Policy{AllowPostcopy: true, CompletionTimeout: noDeadline},
			Plan{}, 400 * MiB, []ActionKind{R, P}, []int64{1000}},
		{"hopeless, no post-copy: abort after every remedy", Policy{CompletionTimeout: noDeadline},
			Plan{}, 400 * MiB, []ActionKind{R, A, X}, []int64{1000}},
		{"hopeless, no post-copy, pause on timeout: wait for the deadline", Policy{OnTimeout: OnTimeoutPause, CompletionTimeout: noDeadline},
			Plan{}, 400 * MiB, []ActionKind{R, A}, []int64{1000}},
		{"bandwidth before throttle", Policy{BandwidthBytesPerSec: labLink, MaxBandwidthBytesPerSec: 100 * MiB, AllowPostcopy: true, CompletionTimeout: noDeadline},
			Plan{}, 400 * MiB, []ActionKind{R, B, P}, []int64{1000}},
		{"throttle already on from the plan", Policy{AllowPostcopy: true, CompletionTimeout: noDeadline},
			Plan{Strategy: StrategyAutoConverge, Job: Job{AutoConverge: true}}, 400 * MiB, []ActionKind{R, P}, []int64{1000}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, got := drive(start(tc.policy, tc.plan), lab().samples(60, flat(tc.size)))
			if !slices.Equal(kinds(got), tc.want) {
				t.Fatalf("actions %v, want %v\n%v", kinds(got), tc.want, got)
			}
			var dts []int64
			for _, f := range got {
				if f.Kind == ActRaiseDowntime {
					dts = append(dts, f.DowntimeMS)
				}
				if f.Reason == "" {
					t.Errorf("%s without a reason", f.Kind)
				}
			}
			if !slices.Equal(dts, tc.downtimes) {
				t.Errorf("downtime steps %v, want %v", dts, tc.downtimes)
			}
			ceiling := st.Policy.DowntimeCeiling.Milliseconds()
			if st.DowntimeMS > ceiling {
				t.Errorf("final limit %d ms above the %d ms ceiling", st.DowntimeMS, ceiling)
			}
		})
	}
}

func TestStepDeadline(t *testing.T) {
	const deadline = 30 * time.Second
	quiet := 1000 // stall iterations: keep the ladder out of the way
	tests := []struct {
		name    string
		policy  Policy
		size    int64
		postAt  time.Duration // post-copy becomes active (0 = never)
		want    []ActionKind
		atOrAft bool // the action comes at the deadline, not before
	}{
		{"abort", Policy{OnTimeout: OnTimeoutAbort}, 400 * MiB, 0, []ActionKind{ActAbort}, true},
		{"default is abort", Policy{}, 400 * MiB, 0, []ActionKind{ActAbort}, true},
		{"postcopy", Policy{OnTimeout: OnTimeoutPostcopy}, 400 * MiB, 0, []ActionKind{ActStartPostcopy}, true},
		{"pause within the ceiling suspends", Policy{OnTimeout: OnTimeoutPause}, 20 * MiB, 0, []ActionKind{ActSuspend}, true},
		{"pause beyond the ceiling aborts", Policy{OnTimeout: OnTimeoutPause}, 400 * MiB, 0, []ActionKind{ActAbort}, true},
		{"post-copy active: nothing at the deadline", Policy{OnTimeout: OnTimeoutAbort}, 400 * MiB, 10 * time.Second, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.policy
			p.CompletionTimeout = deadline
			p.StallIterations = quiet
			g := lab()
			g.postcopyAt = tc.postAt
			st, got := drive(start(p, Plan{}), g.samples(100, flat(tc.size)))
			if !slices.Equal(kinds(got), tc.want) {
				t.Fatalf("actions %v, want %v", got, tc.want)
			}
			if tc.atOrAft {
				if got[0].at < deadline || got[0].at > deadline+250*time.Millisecond {
					t.Errorf("%s at %s, want at the %s deadline", got[0].Kind, got[0].at, deadline)
				}
				if !st.TimedOut {
					t.Error("state does not record the timeout")
				}
			}
		})
	}
}

func TestPolicyDeadline(t *testing.T) {
	tests := []struct {
		p      Policy
		memory int64
		want   time.Duration
	}{
		{Policy{}, 512 * MiB, DefaultCompletionMin},
		{Policy{}, 4 * GiB, 600 * time.Second},
		{Policy{CompletionPerGiB: 800 * time.Second}, 2 * GiB, 1600 * time.Second},
		{Policy{CompletionTimeout: 10 * time.Minute}, 64 * GiB, 10 * time.Minute},
		{Policy{CompletionMin: time.Second}, 512 * MiB, 75 * time.Second},
	}
	for _, tc := range tests {
		if got := tc.p.Deadline(tc.memory); got != tc.want {
			t.Errorf("Deadline(%s) with %+v = %s, want %s", fmtBytes(tc.memory), tc.p, got, tc.want)
		}
	}
}

// TestNeverAbortAfterPostcopy: once post-copy is requested or running, no
// policy emits anything, deadline or not.
func TestNeverAbortAfterPostcopy(t *testing.T) {
	for _, on := range []TimeoutAction{OnTimeoutAbort, OnTimeoutPostcopy, OnTimeoutPause} {
		for _, allow := range []bool{false, true} {
			p := Policy{OnTimeout: on, AllowPostcopy: allow, CompletionTimeout: 20 * time.Second}
			// Post-copy reported by the job (e.g. started by hand or by libvirt).
			g := lab()
			g.postcopyAt = 5 * time.Second
			if _, got := drive(start(p, Plan{}), g.samples(30, flat(400*MiB))); len(got) != 0 {
				t.Errorf("%s allow=%v: actions after post-copy started: %v", on, allow, got)
			}
			// Post-copy requested by the policy, samples still saying pre-copy.
			st := start(p, Plan{Strategy: StrategyPostcopy})
			st.PostcopyArmed = true
			st, got := drive(st, lab().samples(30, flat(400*MiB)))
			if len(got) != 1 || got[0].Kind != ActStartPostcopy || !st.PostcopyRequested {
				t.Fatalf("%s allow=%v: want exactly one StartPostcopy, got %v", on, allow, got)
			}
			if first := 10 * time.Second; got[0].at > first+500*time.Millisecond {
				t.Errorf("post-copy strategy switched at %s, want right after the first pass (%s)", got[0].at, first)
			}
		}
	}
}

func TestFailedActionMovesOn(t *testing.T) {
	p := Policy{AllowPostcopy: true, CompletionTimeout: time.Hour}
	st := start(p, Plan{})
	var all []fired
	for _, s := range lab().samples(40, flat(400*MiB)) {
		var acts []Action
		st, acts = Step(st, s, s.At)
		for _, a := range acts {
			all = append(all, fired{at: s.At.Sub(t0), Action: a})
			if a.Kind == ActSetAutoConverge || a.Kind == ActStartPostcopy {
				st = st.Failed(a) // the orchestrator could not apply it
			}
		}
	}
	want := []ActionKind{ActRaiseDowntime, ActStartPostcopy, ActSetAutoConverge, ActAbort}
	if !slices.Equal(kinds(all), want) {
		t.Fatalf("actions %v, want %v", kinds(all), want)
	}
}

func TestStepIsPureAndIgnoresStaleSamples(t *testing.T) {
	st := start(Policy{}, Plan{})
	samples := lab().samples(10, flat(400*MiB))
	st, _ = drive(st, samples[:len(samples)-1])
	before := st
	s := samples[len(samples)-1]
	a1, acts1 := Step(st, s, s.At)
	a2, acts2 := Step(st, s, s.At)
	if !reflect.DeepEqual(a1, a2) || !reflect.DeepEqual(acts1, acts2) {
		t.Fatal("Step gave different results for the same input")
	}
	if !reflect.DeepEqual(st, before) {
		t.Fatal("Step changed the state it was given")
	}
	stale := samples[0]
	stale.MemoryRemainingBytes = 0
	if got, acts := Step(st, stale, s.At); !reflect.DeepEqual(got, st) || acts != nil {
		t.Errorf("an out-of-order sample changed the state or acted: %v", acts)
	}
}

func TestPolicyValidate(t *testing.T) {
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatalf("default policy: %v", err)
	}
	for _, p := range []Policy{
		{InitialDowntime: 2 * time.Second, DowntimeCeiling: time.Second},
		{OnTimeout: "explode"},
		{ThrottleInitialPct: 120},
		{StallMarginPct: 100},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", p)
		}
	}
	d := DefaultPolicy()
	if d.InitialDowntime != 300*time.Millisecond || d.DowntimeCeiling != time.Second || d.ThrottleInitialPct != 20 ||
		d.ThrottleIncrementPct != 10 || d.StallIterations != 3 || d.StallMarginPct != 5 || d.OnTimeout != OnTimeoutAbort {
		t.Errorf("defaults drifted: %+v", d)
	}
}

// TestHopelessSkipsWaiting: when even the ceiling cannot hold the dirty set,
// the limit goes to the ceiling and the next remedy follows in the same tick,
// instead of one stall window per downtime step.
func TestHopelessSkipsWaiting(t *testing.T) {
	_, got := drive(start(Policy{CompletionTimeout: time.Hour}, Plan{}), lab().samples(10, flat(400*MiB)))
	if len(got) < 2 || got[0].Kind != ActRaiseDowntime || got[1].Kind != ActSetAutoConverge || got[0].at != got[1].at {
		t.Fatalf("want raise-downtime and set-auto-converge together, got %v", got)
	}
	if got[1].ThrottleInitialPct != 80 || got[1].ThrottleIncrementPct != 10 {
		t.Errorf("throttle %d %% + %d %%, want 80 %% (76 MB/s down to half of 40 MiB/s) + 10 %%", got[1].ThrottleInitialPct, got[1].ThrottleIncrementPct)
	}
}

func TestStepRobustness(t *testing.T) {
	t.Run("bare State uses the defaults", func(t *testing.T) {
		_, got := drive(State{}, lab().samples(20, flat(10*MiB)))
		if len(got) == 0 || got[0].Kind != ActRaiseDowntime || got[0].DowntimeMS > DefaultDowntimeCeiling.Milliseconds() {
			t.Errorf("got %v", got)
		}
	})
	t.Run("a failed suspend is not retried every tick", func(t *testing.T) {
		st := start(Policy{NoAutoConverge: true, OnTimeout: OnTimeoutPause, CompletionTimeout: time.Hour}, Plan{})
		suspends := 0
		for _, s := range lab().samples(40, flat(10*MiB)) {
			var acts []Action
			st, acts = Step(st, s, s.At)
			for _, a := range acts {
				if a.Kind == ActSuspend {
					suspends++
					st = st.Failed(a)
				}
			}
		}
		if suspends != 1 {
			t.Errorf("%d suspends, want 1", suspends)
		}
	})
	t.Run("no deadline action during switchover", func(t *testing.T) {
		st := start(Policy{CompletionTimeout: time.Second}, Plan{})
		s := lab().samples(1, flat(10*MiB))[0]
		s.At, s.Phase = t0.Add(2*time.Second), PhaseSwitchover
		if _, acts := Step(st, s, s.At); len(acts) != 0 {
			t.Errorf("acted during switchover: %v", acts)
		}
		s.Phase = PhasePrecopy
		if _, acts := Step(st, s, s.At); len(acts) != 1 || acts[0].Kind != ActAbort {
			t.Errorf("past the deadline in pre-copy: %v, want abort", acts)
		}
	})
	t.Run("a finished job ends the policy", func(t *testing.T) {
		st := start(Policy{CompletionTimeout: time.Second}, Plan{})
		s := Sample{At: t0.Add(time.Minute), Phase: PhaseCompleted}
		st, acts := Step(st, s, s.At)
		if !st.Done() || len(acts) != 0 {
			t.Errorf("done=%v acts=%v", st.Done(), acts)
		}
	})
}
