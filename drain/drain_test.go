package drain

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/virt"
	"github.com/ferryvm/ferry/virt/virttest"
)

// drainFixture: host-a with VMs, host-b and host-c empty, moves that block
// until released so concurrency can be observed.
type drainFixture struct {
	c          *orchestrator.Controller
	a, b, cc   *virttest.Host
	mu         sync.Mutex
	inflight   map[string]int // by destination URI
	maxInto    map[string]int
	maxTotal   int
	total      int
	release    chan struct{}
	started    chan string    // a move's VM name as it starts copying
	failFirstN map[string]int // VM name -> failures left
}

func newDrainFixture(t *testing.T, vms map[string]uint64) *drainFixture {
	t.Helper()
	cl := virttest.NewCluster()
	capa := virt.Capacity{CPUs: 4, MemoryBytes: 8 << 30, FreeMemoryBytes: 4 << 30}
	f := &drainFixture{a: cl.AddHost(uriA, capa), b: cl.AddHost(uriB, capa), cc: cl.AddHost(uriC, capa),
		inflight: map[string]int{}, maxInto: map[string]int{}, release: make(chan struct{}, 100), started: make(chan string, 100), failFirstN: map[string]int{}}
	i := 0
	for name, mem := range vms {
		i++
		d := f.a.AddDomain(name, fmt.Sprintf("6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e%02d", i), mem, virt.StateRunning)
		d.MigrateFn = func(ctx context.Context, d *virttest.Domain, p virt.MigrateParams) error {
			f.mu.Lock()
			f.inflight[p.DestURI]++
			f.total++
			f.maxInto[p.DestURI] = max(f.maxInto[p.DestURI], f.inflight[p.DestURI])
			f.maxTotal = max(f.maxTotal, f.total)
			fail := f.failFirstN[name] > 0
			if fail {
				f.failFirstN[name]--
			}
			f.mu.Unlock()
			f.started <- name
			defer func() {
				f.mu.Lock()
				f.inflight[p.DestURI]--
				f.total--
				f.mu.Unlock()
			}()
			select {
			case <-f.release:
			case <-ctx.Done():
				return ctx.Err()
			}
			if fail {
				return errors.New("injected migration failure")
			}
			return d.MoveTo(p.DestURI)
		}
	}
	inv := &inventory.Inventory{Hosts: []inventory.Host{{Name: "host-a", URI: uriA}, {Name: "host-b", URI: uriB}, {Name: "host-c", URI: uriC}}}
	f.c = &orchestrator.Controller{Inventory: inv, Journal: openTestJournal(t, filepath.Join(t.TempDir(), "ferry.db")), Dial: cl.Dial, HooksDir: t.TempDir()}
	return f
}

// releaseAll lets every move finish as soon as it starts.
func (f *drainFixture) releaseAll(ctx context.Context) {
	go func() {
		for ctx.Err() == nil {
			select {
			case f.release <- struct{}{}:
			case <-ctx.Done():
			}
		}
	}()
}

func running(h *virttest.Host) []string {
	doms, _ := h.ListDomains()
	var out []string
	for _, d := range doms {
		if d.State == virt.StateRunning {
			out = append(out, d.Name)
		}
	}
	return out
}

func TestDrainEmptiesHostWithinLimits(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"v1": 256 << 20, "v2": 128 << 20, "v3": 512 << 20, "v4": 64 << 20})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.releaseAll(ctx)
	rep, err := Drain(ctx, f.c, Request{Host: "host-a", Parallel: 2, MaxPerTarget: 1})
	if err != nil {
		t.Fatalf("drain: %v", err)
	}
	if !rep.Empty || rep.State != StateDone || rep.Moved != 4 || len(rep.Remaining) != 0 {
		t.Fatalf("report %+v", rep)
	}
	if got := running(f.a); len(got) != 0 {
		t.Fatalf("still running on host-a: %v", got)
	}
	if len(running(f.b))+len(running(f.cc)) != 4 || len(running(f.b)) == 0 || len(running(f.cc)) == 0 {
		t.Fatalf("not spread: host-b %v host-c %v", running(f.b), running(f.cc))
	}
	if f.maxInto[uriB] > 1 || f.maxInto[uriC] > 1 || f.maxTotal > 2 {
		t.Fatalf("limits broken: into %v, total %d", f.maxInto, f.maxTotal)
	}
	// Smallest first.
	if rep.VMs[0].VM != "v4" || rep.VMs[3].VM != "v3" {
		t.Fatalf("order %v", []string{rep.VMs[0].VM, rep.VMs[1].VM, rep.VMs[2].VM, rep.VMs[3].VM})
	}
	marks, _ := f.c.Journal.Maintenance(context.Background())
	if len(marks) != 1 || marks[0].Host != "host-a" {
		t.Fatalf("maintenance marks %+v", marks)
	}
	stored, err := Get(context.Background(), f.c.Journal, rep.ID)
	if err != nil || stored.State != StateDone || stored.Moved != 4 {
		t.Fatalf("stored report %+v, %v", stored, err)
	}
}

func TestDrainReportsVMThatFitsNowhere(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"small": 128 << 20, "huge": 6 << 30})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.releaseAll(ctx)
	rep, err := Drain(ctx, f.c, Request{Host: "host-a"})
	if !errors.Is(err, ErrIncomplete) {
		t.Fatalf("err = %v, want ErrIncomplete", err)
	}
	if !strings.Contains(err.Error(), "huge") || !strings.Contains(err.Error(), "not enough memory") {
		t.Fatalf("error does not name the VM and why: %v", err)
	}
	if rep.Empty || rep.Moved != 1 || rep.Failed != 1 || len(rep.Remaining) != 1 {
		t.Fatalf("report %+v", rep)
	}
	if got := running(f.a); len(got) != 1 || got[0] != "huge" {
		t.Fatalf("host-a runs %v, want [huge]", got)
	}
}

func TestDrainRetriesAFailedMove(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"flaky": 128 << 20})
	f.failFirstN["flaky"] = 1
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.releaseAll(ctx)
	rep, err := Drain(ctx, f.c, Request{Host: "host-a", Retries: 1, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("drain: %v", err)
	}
	if v := rep.VMs[0]; v.State != VMMoved || v.Attempts != 2 || len(v.Migrations) != 2 {
		t.Fatalf("vm %+v", v)
	}
}

func TestDrainCancelThenRerun(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"v1": 64 << 20, "v2": 128 << 20, "v3": 256 << 20})
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	req := Request{Host: "host-a", Parallel: 1, Progress: func(r Report) {
		// Cancel once the first move is under way; it must still finish.
		if r.VMs[0].State == VMMoving {
			once.Do(func() {
				cancel()
				f.release <- struct{}{}
			})
		}
	}}
	rep, err := Drain(ctx, f.c, req)
	if !errors.Is(err, ErrCancelled) {
		t.Fatalf("err = %v, want ErrCancelled", err)
	}
	if rep.Moved != 1 || rep.VMs[0].State != VMMoved || rep.VMs[1].State != VMNotStarted {
		t.Fatalf("report %+v", rep.VMs)
	}
	if len(running(f.a)) != 2 {
		t.Fatalf("host-a runs %v", running(f.a))
	}
	// A re-run continues with what is left.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	f.releaseAll(ctx2)
	req.Progress = nil
	rep, err = Drain(ctx2, f.c, req)
	if err != nil || rep.Moved != 2 || !rep.Empty {
		t.Fatalf("re-run: %v %+v", err, rep)
	}
}

func TestDrainCancelFromAnotherProcess(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"v1": 64 << 20, "v2": 128 << 20})
	var once sync.Once
	var id string
	req := Request{ID: "d-1", Host: "host-a", Parallel: 1, Progress: func(r Report) {
		if r.VMs[0].State == VMMoving {
			once.Do(func() {
				go func() {
					// Another process would do this through the shared store.
					r, err := Cancel(context.Background(), f.c.Journal, "host-a")
					if err == nil {
						id = r.ID
					}
					f.release <- struct{}{}
				}()
			})
		}
	}}
	rep, err := Drain(context.Background(), f.c, req)
	if !errors.Is(err, ErrCancelled) || rep.Moved != 1 || id != "d-1" {
		t.Fatalf("err %v, moved %d, cancelled id %q", err, rep.Moved, id)
	}
}

func TestDrainRefusals(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"v1": 64 << 20})
	for _, tt := range []struct {
		req  Request
		want error
		msg  string
	}{
		{Request{Host: "nope"}, orchestrator.ErrUnknownHost, "nope"},
		{Request{Host: "bad name!"}, orchestrator.ErrInvalidRequest, "not a valid"},
		{Request{Host: "host-a", Parallel: -1}, orchestrator.ErrInvalidRequest, "--parallel"},
		{Request{Host: "host-a", Order: "random"}, orchestrator.ErrInvalidRequest, "--order"},
		// makechan: size out of range, the panic of issue 11.
		{Request{Host: "host-a", Parallel: math.MaxInt}, orchestrator.ErrInvalidRequest, "--parallel"},
		{Request{Host: "host-a", MaxPerTarget: 1 << 40}, orchestrator.ErrInvalidRequest, "--max-per-target"},
		{Request{Host: "host-a", Retries: 1 << 30}, orchestrator.ErrInvalidRequest, "--retries"},
		{Request{Host: "host-a", Backoff: math.MaxInt64}, orchestrator.ErrInvalidRequest, "--backoff"},
		{Request{Host: "host-a", BandwidthMiBps: 1 << 44}, orchestrator.ErrInvalidRequest, "--bandwidth"},
		{Request{Host: "host-a", Targets: []string{"host-a"}}, orchestrator.ErrSameHost, "being drained"},
	} {
		_, err := Drain(context.Background(), f.c, tt.req)
		if !errors.Is(err, tt.want) || !errors.Is(err, orchestrator.ErrRefused) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%+v: err = %v, want %v containing %q", tt.req, err, tt.want, tt.msg)
		}
	}
	if marks, _ := f.c.Journal.Maintenance(context.Background()); len(marks) != 0 {
		t.Fatalf("a refused drain left maintenance marks: %+v", marks)
	}
}

func TestDrainDryRunSpreads(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"v1": 1 << 30, "v2": 1 << 30, "v3": 2 << 30})
	rep, err := Drain(context.Background(), f.c, Request{Host: "host-a", DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, v := range rep.VMs {
		got[v.VM] = v.Dest
	}
	// 3.75 GiB available on each: v1 -> b (tie by name), v2 -> c (b now
	// has 1 GiB planned), v3 -> b (tie again).
	if got["v1"] != "host-b" || got["v2"] != "host-c" || got["v3"] != "host-b" {
		t.Fatalf("dry run did not spread: %v", got)
	}
	if len(running(f.a)) != 3 {
		t.Fatal("dry run moved something")
	}
	if marks, _ := f.c.Journal.Maintenance(context.Background()); len(marks) != 0 {
		t.Fatalf("dry run set maintenance: %+v", marks)
	}
}

func TestClassifyAndBackoff(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want outcome
	}{
		{nil, outMoved},
		{orchestrator.NewRefusal(orchestrator.ErrLimit, nil, "x"), outRequeue},
		{orchestrator.NewRefusal(orchestrator.ErrInsufficientMemory, nil, "x"), outRequeue},
		{orchestrator.NewRefusal(orchestrator.ErrNameClash, nil, "x"), outFail},
		{orchestrator.NewRefusal(orchestrator.ErrBusy, nil, "x"), outRetry},
		{fmt.Errorf("%w: boom", orchestrator.ErrRolledBack), outRetry},
		{fmt.Errorf("%w: boom", orchestrator.ErrNeedsRecovery), outFail},
		{errors.New("surprise"), outRetry},
	} {
		if got := outcomeOf(tt.err); got != tt.want {
			t.Errorf("outcomeOf(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
	for _, tt := range []struct {
		n    int
		want time.Duration
	}{{1, 5 * time.Second}, {2, 10 * time.Second}, {3, 20 * time.Second}, {20, 320 * time.Second}} {
		if got := backoffFor(5*time.Second, tt.n); got != tt.want {
			t.Errorf("backoffFor(5s, %d) = %s, want %s", tt.n, got, tt.want)
		}
	}
}

// A VM undefined by someone else during the drain is skipped, not waited
// for forever; the host still ends empty.
func TestDrainSkipsVMThatVanished(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"v1": 64 << 20, "v2": 128 << 20})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	rep, err := Drain(ctx, f.c, Request{Host: "host-a", Parallel: 1, Progress: func(r Report) {
		if r.VMs[0].State == VMMoving {
			once.Do(func() {
				d, _ := f.a.LookupDomain("v2")
				d.(*virttest.Domain).SetState(virt.StateShutoff, "destroyed")
				_ = d.Undefine(false)
				f.releaseAll(ctx)
			})
		}
	}})
	if err != nil || !rep.Empty || rep.VMs[1].State != VMSkipped || !strings.Contains(rep.VMs[1].Reason, "no longer on host-a") {
		t.Fatalf("err %v, report %+v", err, rep.VMs)
	}
}

// awaitStart returns the next move to start, failing after 10 s.
func (f *drainFixture) awaitStart(t *testing.T) string {
	t.Helper()
	select {
	case name := <-f.started:
		return name
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a move to start")
		return ""
	}
}

// Moves are held until the limit is reached: exactly Parallel run at once,
// the next starts only when one ends, and never more than the limits.
func TestDrainParallelismIsExact(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"v1": 64 << 20, "v2": 64 << 20, "v3": 64 << 20, "v4": 64 << 20, "v5": 64 << 20})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		rep *Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := Drain(ctx, f.c, Request{Host: "host-a", Parallel: 3, MaxPerTarget: 2})
		done <- result{rep, err}
	}()
	for range 3 {
		f.awaitStart(t)
	}
	f.mu.Lock()
	total := f.total
	f.mu.Unlock()
	if total != 3 {
		t.Fatalf("%d moves in flight with --parallel 3 and room for 4 on the targets", total)
	}
	// One ends: exactly one more starts.
	f.release <- struct{}{}
	f.awaitStart(t)
	f.mu.Lock()
	maxTotal := f.maxTotal
	f.mu.Unlock()
	if maxTotal != 3 {
		t.Fatalf("%d moves were in flight at once, want 3", maxTotal)
	}
	f.releaseAll(ctx)
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the drain did not end")
	}
	if r.err != nil || r.rep.Moved != 5 || !r.rep.Empty {
		t.Fatalf("drain: %v %+v", r.err, r.rep)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maxTotal != 3 || f.maxInto[uriB] > 2 || f.maxInto[uriC] > 2 {
		t.Fatalf("concurrency: %d overall (want 3), into %v (at most 2 each)", f.maxTotal, f.maxInto)
	}
}
