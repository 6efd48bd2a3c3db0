package precopy

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestOverBandwidth is the lab's hard case: a 512 MiB guest writing 76 MB/s
// over 40 MiB/s, where plain pre-copy never converges. The plan is made as
// ferry would make it (working set unknown); the simulator knows the truth.
func TestOverBandwidth(t *testing.T) {
	m := float64(labMemory)
	twoPasses := time.Duration(2 * m / float64(labLink) * float64(time.Second)) // 2·M/B = 25.6 s
	worlds := []struct {
		name  string
		world World
		cap   int64 // the job's bandwidth cap (policy), 0 = none
		// Post-copy bound. When the guest rewrites all of its memory during
		// the first pass and the link itself is 40 MiB/s, post-copy must send
		// M twice: 2·M/B plus the switch is the best any strategy can do after
		// a full first pass, so that row allows the switch pause on top.
		postcopyMax time.Duration
	}{
		{"link 40 MiB/s, whole memory rewritten", World{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink}, 0, twoPasses + PostcopySwitchDowntime + qemuCheckEvery},
		{"link 40 MiB/s, 200 MiB working set", World{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink, WorkingSetBytes: 200 * MiB}, 0, twoPasses - time.Nanosecond},
		{"lab: fast link capped at 40 MiB/s", World{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: GiB}, labLink, twoPasses - time.Nanosecond},
	}
	for _, w := range worlds {
		in := Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: w.world.BandwidthBytesPerSec}
		t.Run(w.name+"/default policy", func(t *testing.T) {
			p := Policy{BandwidthBytesPerSec: w.cap}
			pl, err := p.Plan(in)
			if err != nil {
				t.Fatal(err)
			}
			if pl.Strategy != StrategyAutoConverge || !pl.Job.AutoConverge || !pl.Feasible {
				t.Fatalf("plan %s (feasible %v), want auto-converge: %s", pl.Strategy, pl.Feasible, pl.Reason)
			}
			r := Run(SimConfig{World: w.world}, p, pl)
			t.Logf("%+v", r)
			deadline := p.Deadline(labMemory)
			if r.Outcome != OutcomeCompleted || r.Postcopy {
				t.Fatalf("outcome %s postcopy=%v, want pre-copy completion", r.Outcome, r.Postcopy)
			}
			if r.Total() > deadline {
				t.Errorf("took %s, beyond the %s deadline", r.Total(), deadline)
			}
			if r.Downtime() > DefaultDowntimeCeiling {
				t.Errorf("pause %s above the 1 s ceiling", r.Downtime())
			}
			if r.MaxThrottlePct == 0 {
				t.Error("converged without throttling: the scenario is not over bandwidth")
			}
		})
		t.Run(w.name+"/post-copy allowed", func(t *testing.T) {
			p := Policy{BandwidthBytesPerSec: w.cap, AllowPostcopy: true}
			pl, err := p.Plan(in)
			if err != nil {
				t.Fatal(err)
			}
			if pl.Strategy != StrategyPostcopy || !pl.Job.Postcopy || pl.Job.AutoConverge {
				t.Fatalf("plan %s, job %+v, want post-copy armed: %s", pl.Strategy, pl.Job, pl.Reason)
			}
			r := Run(SimConfig{World: w.world}, p, pl)
			t.Logf("%+v", r)
			if r.Outcome != OutcomeCompleted || !r.Postcopy {
				t.Fatalf("outcome %s postcopy=%v, want completion through post-copy", r.Outcome, r.Postcopy)
			}
			if r.Total() > w.postcopyMax {
				t.Errorf("took %s, want at most %s (2·M/B = %s)", r.Total(), w.postcopyMax, twoPasses)
			}
			if r.Downtime() > DefaultDowntimeCeiling || r.Count(ActStartPostcopy) != 1 || r.Count(ActAbort) != 0 {
				t.Errorf("pause %s, actions %v", r.Downtime(), r.Actions)
			}
		})
	}
}

// TestLadderRescuesMisplannedRun: the plan underestimated the dirty rate and
// chose plain pre-copy; the policy notices the stall and escalates in order.
func TestLadderRescuesMisplannedRun(t *testing.T) {
	world := World{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink, WorkingSetBytes: 200 * MiB}
	p := Policy{}
	pl, err := p.Plan(Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: 5_000_000, BandwidthBytesPerSec: labLink})
	if err != nil {
		t.Fatal(err)
	}
	if pl.Strategy != StrategyPrecopy {
		t.Fatalf("plan %s, want pre-copy from the low estimate", pl.Strategy)
	}
	r := Run(SimConfig{World: world}, p, pl)
	t.Logf("%+v", r)
	if r.Outcome != OutcomeCompleted || r.Total() > p.Deadline(labMemory) {
		t.Fatalf("outcome %s after %s, want completion before the deadline", r.Outcome, r.Total())
	}
	if len(r.Actions) < 2 || r.Actions[0].Kind != ActRaiseDowntime || r.Actions[1].Kind != ActSetAutoConverge {
		t.Fatalf("actions %v, want raise-downtime then set-auto-converge", r.Actions)
	}
	if r.Actions[0].DowntimeMS != DefaultDowntimeCeiling.Milliseconds() {
		t.Errorf("limit raised to %d ms, want the ceiling at once (200 MiB needs 5 s)", r.Actions[0].DowntimeMS)
	}
	if r.Downtime() > DefaultDowntimeCeiling+SwitchoverOverhead {
		t.Errorf("pause %s above the ceiling", r.Downtime())
	}
}

// TestNoRemedyAborts: neither throttle nor post-copy allowed; the plan says so
// and the run gives up with the source still running.
func TestNoRemedyAborts(t *testing.T) {
	world := World{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink}
	for _, on := range []TimeoutAction{OnTimeoutAbort, OnTimeoutPause} {
		p := Policy{NoAutoConverge: true, OnTimeout: on}
		pl, err := p.Plan(world.Inputs())
		if err != nil {
			t.Fatal(err)
		}
		if pl.Strategy != StrategyNone || pl.Feasible || !strings.Contains(pl.Reason, "--allow-postcopy") || !strings.Contains(pl.Reason, "12.8 s") {
			t.Errorf("%s: plan %s feasible=%v: %s", on, pl.Strategy, pl.Feasible, pl.Reason)
		}
		r := Run(SimConfig{World: world}, p, pl)
		if r.Outcome != OutcomeAborted || r.Suspended || r.Total() > p.Deadline(labMemory)+time.Second {
			t.Errorf("%s: outcome %s suspended=%v after %s, want an abort by the deadline", on, r.Outcome, r.Suspended, r.Total())
		}
		if r.DowntimeLimitMS > DefaultDowntimeCeiling.Milliseconds() {
			t.Errorf("%s: limit %d ms above the ceiling", on, r.DowntimeLimitMS)
		}
	}
}

func TestPlanStrategies(t *testing.T) {
	tests := []struct {
		name     string
		policy   Policy
		in       Inputs
		want     Strategy
		feasible bool
		reason   string
	}{
		{"light guest", Policy{}, Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: 5_000_000, BandwidthBytesPerSec: labLink}, StrategyPrecopy, true, "pre-copy converges: 3 rounds"},
		{"converges only with a raised limit", Policy{}, Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink, WorkingSetBytes: 30 * MiB}, StrategyPrecopy, true, "raised towards the 1 s ceiling"},
		{"post-copy armed as a fallback", Policy{AllowPostcopy: true}, Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: 5_000_000, BandwidthBytesPerSec: labLink}, StrategyPrecopy, true, "post-copy armed as a fallback"},
		{"over bandwidth, post-copy allowed", Policy{AllowPostcopy: true}, Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink}, StrategyPostcopy, true, "post-copy after the first pass"},
		{"over bandwidth", Policy{}, Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink}, StrategyAutoConverge, true, "throttle 80 % + 10 %"},
		{"auto-converge too slow for a tight deadline", Policy{CompletionTimeout: 30 * time.Second}, Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink}, StrategyNone, false, "does not finish within the 30 s"},
		{"nothing allowed", Policy{NoAutoConverge: true}, Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink}, StrategyNone, false, "will not converge"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pl, err := tc.policy.Plan(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(pl.Reason)
			if pl.Strategy != tc.want || pl.Feasible != tc.feasible || !strings.Contains(pl.Reason, tc.reason) {
				t.Errorf("strategy %s feasible %v, want %s %v with %q in %q", pl.Strategy, pl.Feasible, tc.want, tc.feasible, tc.reason, pl.Reason)
			}
			if pl.Job.DowntimeMS != 300 || pl.Job.CompletionTimeoutMS != tc.policy.Deadline(tc.in.MemoryBytes).Milliseconds() {
				t.Errorf("job %+v", pl.Job)
			}
		})
	}
	if _, err := (Policy{}).Plan(Inputs{MemoryBytes: GiB}); !errors.Is(err, ErrBadInputs) {
		t.Errorf("plan without bandwidth: %v, want ErrBadInputs", err)
	}
}

func TestPlanJSON(t *testing.T) {
	pl, err := Policy{AllowPostcopy: true}.Plan(Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(pl)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"strategy", "reason", "job", "precopy", "at_ceiling", "expected"} {
		if _, ok := back[key]; !ok {
			t.Errorf("JSON lacks %q: %s", key, b)
		}
	}
	exp := back["expected"].(map[string]any)
	if exp["total_ms"].(float64) != float64(pl.Expected.TotalMS) || back["strategy"] != "post-copy" {
		t.Errorf("JSON values: %s", b)
	}
}

func TestSimActions(t *testing.T) {
	w := World{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink}

	s := NewSim(SimConfig{World: w})
	s.Advance(time.Second)
	if err := s.Apply(Action{Kind: ActStartPostcopy}); !errors.Is(err, ErrPostcopyNotArmed) {
		t.Errorf("post-copy without the flag: %v", err)
	}

	s = NewSim(SimConfig{World: w, Job: Job{Postcopy: true}})
	s.Advance(13 * time.Second)
	if err := s.Apply(Action{Kind: ActStartPostcopy}); err != nil {
		t.Fatal(err)
	}
	s.Advance(time.Second)
	if !s.Sample().Postcopy {
		t.Fatal("not in post-copy after the switch")
	}
	if err := s.Apply(Action{Kind: ActAbort}); !errors.Is(err, ErrAbortPostcopy) {
		t.Errorf("abort in post-copy: %v", err)
	}

	// Suspend: the guest stops dirtying, the pause lasts until the copy ends.
	// Mid-pass the bitmap shows only part of what is outstanding: this guest
	// has rewritten every page sent since the last sync, so the pause is M/B,
	// not remaining/B (which is why Step adds the pages dirtied since the sync).
	s = NewSim(SimConfig{World: w})
	s.Advance(20 * time.Second)
	if rem := s.Sample().MemoryRemainingBytes; rem > labMemory/2 {
		t.Fatalf("remaining %s: expected mid-pass", fmtBytes(rem))
	}
	if err := s.Apply(Action{Kind: ActSuspend}); err != nil {
		t.Fatal(err)
	}
	s.Advance(time.Minute)
	r := s.Result()
	want := time.Duration(float64(labMemory) / float64(labLink) * float64(time.Second))
	if r.Outcome != OutcomeCompleted || !r.Suspended || r.Downtime() < want || r.Downtime() > want+time.Second {
		t.Errorf("suspended run: %+v, want a pause of about %s", r, want)
	}

	// An idle guest goes in one pass with a short pause.
	r = Simulate(SimConfig{World: World{MemoryBytes: 128 * MiB, BandwidthBytesPerSec: GiB}})
	if r.Outcome != OutcomeCompleted || r.Rounds != 1 || r.Downtime() > 150*time.Millisecond {
		t.Errorf("idle guest: %+v", r)
	}
}

// With post-copy allowed, a pre-copy that would take more than twice M/B is
// not chosen: post-copy finishes near M/B.
func TestPlanPrefersPostcopyOverCrawl(t *testing.T) {
	in := Inputs{MemoryBytes: 512 * MiB, DirtyBytesPerSec: 32 * MiB, BandwidthBytesPerSec: 40 * MiB}
	crawl, err := Policy{}.Plan(in)
	if err != nil {
		t.Fatal(err)
	}
	if crawl.Strategy != StrategyPrecopy {
		t.Fatalf("without post-copy: strategy %s, want pre-copy (%s)", crawl.Strategy, crawl.Reason)
	}
	pc, err := Policy{AllowPostcopy: true}.Plan(in)
	if err != nil {
		t.Fatal(err)
	}
	if pc.Strategy != StrategyPostcopy {
		t.Fatalf("with post-copy: strategy %s, want post-copy (%s)", pc.Strategy, pc.Reason)
	}
	// A fast-converging guest keeps plain pre-copy even with post-copy allowed.
	calm, _ := Policy{AllowPostcopy: true}.Plan(Inputs{MemoryBytes: 512 * MiB, DirtyBytesPerSec: 2 * MiB, BandwidthBytesPerSec: 40 * MiB})
	if calm.Strategy != StrategyPrecopy {
		t.Fatalf("calm guest: strategy %s", calm.Strategy)
	}
}

// The first throttle step aims the dirty rate at half the link, also when the
// measured rate reads just below the link.
func TestThrottleFor(t *testing.T) {
	p := DefaultPolicy()
	for _, tc := range []struct {
		d, b int64
		want int
	}{
		{76 * 1000 * 1000, 40 * MiB, 80},
		{37 * MiB, 40 * MiB, 50},
		{15 * MiB, 40 * MiB, 20}, // below B/2: the policy's floor
		{400 * MiB, 40 * MiB, 99},
	} {
		if got := throttleFor(p, tc.d, tc.b); got != tc.want {
			t.Errorf("throttleFor(%d, %d) = %d, want %d", tc.d, tc.b, got, tc.want)
		}
	}
}

// A long link holds one migration stream to a window per round trip: the
// plan sees that bandwidth, not the link's, and says why.
func TestPlanLongLink(t *testing.T) {
	in := Inputs{MemoryBytes: labMemory, DirtyBytesPerSec: 5_000_000, BandwidthBytesPerSec: GiB}
	lan, err := Policy{}.Plan(in)
	if err != nil {
		t.Fatal(err)
	}
	in.LinkRTTMS = 100
	long, err := Policy{}.Plan(in)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(long.Reason)
	if !strings.Contains(long.Reason, "a 100 ms round trip holds one stream to 30 MiB/s") {
		t.Errorf("reason %q does not name the round trip's limit", long.Reason)
	}
	if strings.Contains(lan.Reason, "round trip") {
		t.Errorf("a LAN plan mentions a round trip: %q", lan.Reason)
	}
	if long.Precopy.Total() < 10*lan.Precopy.Total() || long.Expected.Total() < 10*lan.Expected.Total() {
		t.Errorf("over 100 ms the copy takes %s (simulated %s), on the LAN %s (%s): want ≥ 10× longer",
			long.Precopy.Total(), long.Expected.Total(), lan.Precopy.Total(), lan.Expected.Total())
	}
	in.LinkRTTMS = 10_001
	if _, err := (Policy{}).Plan(in); !errors.Is(err, ErrBadInputs) {
		t.Errorf("a 10001 ms round trip: %v, want ErrBadInputs", err)
	}
}
