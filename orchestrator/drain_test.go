package orchestrator

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

	"github.com/ferryvm/ferry/virt"
	"github.com/ferryvm/ferry/virt/virttest"
)

// drainFixture: host-a with VMs, host-b and host-c empty, moves that block
// until released so concurrency can be observed.
type drainFixture struct {
	c          *Controller
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
	inv := &Inventory{Hosts: []HostEntry{{Name: "host-a", URI: uriA}, {Name: "host-b", URI: uriB}, {Name: "host-c", URI: uriC}}}
	f.c = &Controller{Inventory: inv, Journal: openTestJournal(t, filepath.Join(t.TempDir(), "ferry.db")), Dial: cl.Dial, HooksDir: t.TempDir()}
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
	rep, err := f.c.Drain(ctx, DrainRequest{Host: "host-a", Parallel: 2, MaxPerTarget: 1})
	if err != nil {
		t.Fatalf("drain: %v", err)
	}
	if !rep.Empty || rep.State != DrainDone || rep.Moved != 4 || len(rep.Remaining) != 0 {
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
	marks, _ := mustMaint(t, f.c).List(context.Background())
	if len(marks) != 1 || marks[0].Host != "host-a" {
		t.Fatalf("maintenance marks %+v", marks)
	}
	stored, err := f.c.Journal.GetDrain(context.Background(), rep.ID)
	if err != nil || stored.State != DrainDone || stored.Moved != 4 {
		t.Fatalf("stored report %+v, %v", stored, err)
	}
}

func mustMaint(t *testing.T, c *Controller) *Maintenance {
	m, err := OpenMaintenance(context.Background(), c.Journal.db)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDrainReportsVMThatFitsNowhere(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"small": 128 << 20, "huge": 6 << 30})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.releaseAll(ctx)
	rep, err := f.c.Drain(ctx, DrainRequest{Host: "host-a"})
	if !errors.Is(err, ErrDrainIncomplete) {
		t.Fatalf("err = %v, want ErrDrainIncomplete", err)
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
	rep, err := f.c.Drain(ctx, DrainRequest{Host: "host-a", Retries: 1, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatalf("drain: %v", err)
	}
	if v := rep.VMs[0]; v.State != DrainVMMoved || v.Attempts != 2 || len(v.Migrations) != 2 {
		t.Fatalf("vm %+v", v)
	}
}

func TestDrainCancelThenRerun(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"v1": 64 << 20, "v2": 128 << 20, "v3": 256 << 20})
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	req := DrainRequest{Host: "host-a", Parallel: 1, Progress: func(r DrainReport) {
		// Cancel once the first move is under way; it must still finish.
		if r.VMs[0].State == DrainVMMoving {
			once.Do(func() {
				cancel()
				f.release <- struct{}{}
			})
		}
	}}
	rep, err := f.c.Drain(ctx, req)
	if !errors.Is(err, ErrDrainCancelled) {
		t.Fatalf("err = %v, want ErrDrainCancelled", err)
	}
	if rep.Moved != 1 || rep.VMs[0].State != DrainVMMoved || rep.VMs[1].State != DrainVMNotStarted {
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
	rep, err = f.c.Drain(ctx2, req)
	if err != nil || rep.Moved != 2 || !rep.Empty {
		t.Fatalf("re-run: %v %+v", err, rep)
	}
}

func TestDrainCancelFromAnotherProcess(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"v1": 64 << 20, "v2": 128 << 20})
	var once sync.Once
	var id string
	req := DrainRequest{ID: "d-1", Host: "host-a", Parallel: 1, Progress: func(r DrainReport) {
		if r.VMs[0].State == DrainVMMoving {
			once.Do(func() {
				go func() {
					// Another process would do this through the shared store.
					r, err := f.c.Journal.CancelDrain(context.Background(), "host-a")
					if err == nil {
						id = r.ID
					}
					f.release <- struct{}{}
				}()
			})
		}
	}}
	rep, err := f.c.Drain(context.Background(), req)
	if !errors.Is(err, ErrDrainCancelled) || rep.Moved != 1 || id != "d-1" {
		t.Fatalf("err %v, moved %d, cancelled id %q", err, rep.Moved, id)
	}
}

func TestDrainRefusals(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"v1": 64 << 20})
	for _, tt := range []struct {
		req  DrainRequest
		want error
		msg  string
	}{
		{DrainRequest{Host: "nope"}, ErrUnknownHost, "nope"},
		{DrainRequest{Host: "bad name!"}, ErrInvalidRequest, "not a valid"},
		{DrainRequest{Host: "host-a", Parallel: -1}, ErrInvalidRequest, "--parallel"},
		{DrainRequest{Host: "host-a", Order: "random"}, ErrInvalidRequest, "--order"},
		// makechan: size out of range, the panic of issue 11.
		{DrainRequest{Host: "host-a", Parallel: math.MaxInt}, ErrInvalidRequest, "--parallel"},
		{DrainRequest{Host: "host-a", MaxPerTarget: 1 << 40}, ErrInvalidRequest, "--max-per-target"},
		{DrainRequest{Host: "host-a", Retries: 1 << 30}, ErrInvalidRequest, "--retries"},
		{DrainRequest{Host: "host-a", Backoff: math.MaxInt64}, ErrInvalidRequest, "--backoff"},
		{DrainRequest{Host: "host-a", Live: Request{BandwidthMiBps: 1 << 44}}, ErrInvalidRequest, "--bandwidth"},
		{DrainRequest{Host: "host-a", Targets: []string{"host-a"}}, ErrSameHost, "being drained"},
	} {
		_, err := f.c.Drain(context.Background(), tt.req)
		if !errors.Is(err, tt.want) || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%+v: err = %v, want %v containing %q", tt.req, err, tt.want, tt.msg)
		}
	}
	if marks, _ := mustMaint(t, f.c).List(context.Background()); len(marks) != 0 {
		t.Fatalf("a refused drain left maintenance marks: %+v", marks)
	}
}

func TestDrainDryRunSpreads(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"v1": 1 << 30, "v2": 1 << 30, "v3": 2 << 30})
	rep, err := f.c.Drain(context.Background(), DrainRequest{Host: "host-a", DryRun: true})
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
	if marks, _ := mustMaint(t, f.c).List(context.Background()); len(marks) != 0 {
		t.Fatalf("dry run set maintenance: %+v", marks)
	}
}

func TestClassifyAndBackoff(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{nil, outMoved},
		{refuse(ErrLimit, nil, "x"), outRequeue},
		{refuse(ErrInsufficientMemory, nil, "x"), outRequeue},
		{refuse(ErrNameClash, nil, "x"), outFail},
		{refuse(ErrBusy, nil, "x"), outRetry},
		{fmt.Errorf("%w: boom", ErrRolledBack), outRetry},
		{fmt.Errorf("%w: boom", ErrNeedsRecovery), outFail},
		{errors.New("surprise"), outRetry},
	} {
		if got := classify(tt.err); got != tt.want {
			t.Errorf("classify(%v) = %d, want %d", tt.err, got, tt.want)
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

// The controller's limits (from the inventory) apply to plain migrations:
// refused while a slot is taken, or waited for with WaitForSlot.
func TestMigrateHonoursLimits(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.c.Limits = Limits{MaxIncoming: 1}
	other := SlotHost{Key: "elsewhere", Name: "host-x"}
	if err := f.c.Journal.AcquireSlot(ctx, "other-move", other, SlotHost{Key: f.b.UUID, Name: "host-b"}, Limits{}); err != nil {
		t.Fatal(err)
	}
	_, err := f.c.Migrate(ctx, Request{VM: "web-01", To: "host-b"})
	if !errors.Is(err, ErrLimit) || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "host-b already has 1 incoming") {
		t.Fatalf("err = %v, want a limit refusal", err)
	}
	if r := f.lastRecord(t); r.State != StateRefused {
		t.Fatalf("row %s", r.State)
	}
	// The other move ends once this one says it waits for the slot.
	var waited bool
	res, err := f.c.Migrate(ctx, Request{VM: "web-01", To: "host-b", WaitForSlot: true, Progress: func(p Progress) {
		if strings.Contains(p.Message, "waiting for a move slot") && !waited {
			waited = true
			if err := f.c.Journal.Release(ctx, "other-move"); err != nil {
				t.Errorf("release: %v", err)
			}
		}
	}})
	if err != nil || res.State != StateCompleted || !waited {
		t.Fatalf("with WaitForSlot: %v, %+v, waited %v", err, res, waited)
	}
}

func TestInventoryLimits(t *testing.T) {
	inv, err := ParseInventory([]byte("hosts:\n  - {name: h1, uri: 'qemu+tcp://127.0.0.1/system'}\nlimits: {max_incoming: 2, max_outgoing: 3}\n"))
	if err != nil || inv.Limits != (Limits{MaxIncoming: 2, MaxOutgoing: 3}) {
		t.Fatalf("%+v, %v", inv, err)
	}
	if _, err := ParseInventory([]byte("limits: {max_incoming: -1}\n")); err == nil || !strings.Contains(err.Error(), "limits") {
		t.Fatalf("negative limit: %v", err)
	}
}

// A VM undefined by someone else during the drain is skipped, not waited
// for forever; the host still ends empty.
func TestDrainSkipsVMThatVanished(t *testing.T) {
	f := newDrainFixture(t, map[string]uint64{"v1": 64 << 20, "v2": 128 << 20})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	rep, err := f.c.Drain(ctx, DrainRequest{Host: "host-a", Parallel: 1, Progress: func(r DrainReport) {
		if r.VMs[0].State == DrainVMMoving {
			once.Do(func() {
				d, _ := f.a.LookupDomain("v2")
				d.(*virttest.Domain).SetState(virt.StateShutoff, "destroyed")
				_ = d.Undefine(false)
				f.releaseAll(ctx)
			})
		}
	}})
	if err != nil || !rep.Empty || rep.VMs[1].State != DrainVMSkipped || !strings.Contains(rep.VMs[1].Reason, "no longer on host-a") {
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
		rep *DrainReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := f.c.Drain(ctx, DrainRequest{Host: "host-a", Parallel: 3, MaxPerTarget: 2})
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
