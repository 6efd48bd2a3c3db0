package precopy

import (
	"testing"
	"time"
)

// BenchmarkStep measures one policy decision on a stream of flat samples
// (the costly path: stall detection, escalation, reasons).
func BenchmarkStep(b *testing.B) {
	samples := lab().samples(60, flat(400*MiB))
	p := Policy{AllowPostcopy: true, CompletionTimeout: time.Hour}
	st0 := start(p, Plan{})
	st := st0
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if i == len(samples) || st.Done() {
			st, i = st0, 0
		}
		st, _ = Step(st, samples[i], samples[i].At)
		i++
	}
}

// BenchmarkSimulate runs the over-bandwidth scenario end to end: the simulator
// with the default policy stepping every 250 ms (about 220 samples, 1 100 steps).
func BenchmarkSimulate(b *testing.B) {
	world := World{MemoryBytes: labMemory, DirtyBytesPerSec: labDirty, BandwidthBytesPerSec: labLink}
	p := Policy{}
	pl, err := p.Plan(world.Inputs())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if r := Run(SimConfig{World: world}, p, pl); r.Outcome != OutcomeCompleted {
			b.Fatal(r.Outcome)
		}
	}
}

// BenchmarkPlan is what `ferry migrate --plan` costs: two predictions and one
// simulated run.
func BenchmarkPlan(b *testing.B) {
	in := Inputs{MemoryBytes: 16 * GiB, DirtyBytesPerSec: 200_000_000, BandwidthBytesPerSec: 1 * GiB}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := (Policy{AllowPostcopy: true}).Plan(in); err != nil {
			b.Fatal(err)
		}
	}
}
