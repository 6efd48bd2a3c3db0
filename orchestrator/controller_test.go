package orchestrator

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/virt"
	"github.com/ferryvm/ferry/virt/virttest"
)

const (
	uriA = "qemu+tcp://127.0.10.1/system"
	uriB = "qemu+tcp://127.0.10.2/system"
)

type fixture struct {
	c       *Controller
	cluster *virttest.Cluster
	a, b    *virttest.Host
	vm      *virttest.Domain
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	cl := virttest.NewCluster()
	capa := virt.Capacity{CPUs: 4, MemoryBytes: 8 << 30, FreeMemoryBytes: 4 << 30}
	f := &fixture{cluster: cl, a: cl.AddHost(uriA, capa), b: cl.AddHost(uriB, capa)}
	f.vm = f.a.AddDomain("web-01", "6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e6f", 512<<20, virt.StateRunning)
	inv := &inventory.Inventory{Hosts: []inventory.Host{{Name: "host-a", URI: uriA, MigrationAddress: "127.0.10.1"}, {Name: "host-b", URI: uriB, MigrationAddress: "127.0.10.2"}}}
	f.c = &Controller{Inventory: inv, Journal: openTestJournal(t, filepath.Join(t.TempDir(), "ferry.db")), Dial: cl.Dial, HooksDir: t.TempDir()}
	return f
}

func (f *fixture) lastRecord(t *testing.T) *journal.Record {
	t.Helper()
	rs, err := f.c.Journal.List(context.Background(), journal.ListFilter{})
	if err != nil || len(rs) == 0 {
		t.Fatalf("journal: %v (%d rows)", err, len(rs))
	}
	return rs[0]
}

func TestMigrateCompletes(t *testing.T) {
	f := newFixture(t)
	var stages []journal.Stage
	res, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b", Progress: func(p Progress) { stages = append(stages, p.Stage) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.State != journal.StateCompleted || res.Source != "host-a" || res.Dest != "host-b" {
		t.Fatalf("result %+v", res)
	}
	if _, err := f.a.LookupDomain("web-01"); !errors.Is(err, virt.ErrNotFound) {
		t.Fatalf("source still defines the VM: %v", err)
	}
	d, err := f.b.LookupDomain("web-01")
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := d.Info(); info.State != virt.StateRunning {
		t.Fatalf("destination state %s", info.State)
	}
	r := f.lastRecord(t)
	if r.State != journal.StateCompleted || r.DowntimeMS == nil || *r.DowntimeMS != 20 {
		t.Fatalf("journal row %+v", r)
	}
	for i, ts := range r.StageTimes {
		if ts == nil {
			t.Fatalf("stage %s has no timestamp", journal.Stage(i))
		}
	}
	if n, _ := f.c.Journal.Reserved(context.Background(), f.b.UUID); n != 0 {
		t.Fatalf("reservation not released: %d bytes", n)
	}
	if len(stages) == 0 || stages[len(stages)-1] != journal.StageActivation {
		t.Fatalf("progress stages %v", stages)
	}
}

func TestMigrateRefusals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(f *fixture) Request
		want  error
	}{
		{"unknown VM", func(f *fixture) Request { return Request{VM: "nope", To: "host-b"} }, ErrUnknownVM},
		{"unknown destination", func(f *fixture) Request { return Request{VM: "web-01", To: "host-z"} }, ErrUnknownHost},
		{"malformed URI", func(f *fixture) Request { return Request{VM: "web-01", To: "qemu+tcp:///sys"} }, ErrInvalidRequest},
		{"bad VM name", func(f *fixture) Request { return Request{VM: "web;rm -rf", To: "host-b"} }, ErrInvalidRequest},
		{"same host", func(f *fixture) Request { return Request{VM: "web-01", To: "host-a"} }, ErrSameHost},
		{"same host by from", func(f *fixture) Request { return Request{VM: "web-01", From: "host-a", To: uriA} }, ErrSameHost},
		{"unreachable destination", func(f *fixture) Request { f.b.Down = true; return Request{VM: "web-01", From: "host-a", To: "host-b"} }, ErrUnreachable},
		{"not running", func(f *fixture) Request {
			f.vm.SetState(virt.StateShutoff, "shutdown")
			return Request{VM: "web-01", To: "host-b"}
		}, ErrNotRunning},
		{"name clash", func(f *fixture) Request {
			f.b.AddDomain("web-01", "11111111-2222-3333-4444-555555555555", 1<<20, virt.StateShutoff)
			return Request{VM: "web-01", From: "host-a", To: "host-b"}
		}, ErrNameClash},
		{"UUID clash", func(f *fixture) Request {
			f.b.AddDomain("other", "6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e6f", 1<<20, virt.StateShutoff)
			return Request{VM: "web-01", From: "host-a", To: "host-b"}
		}, ErrNameClash},
		{"not enough memory", func(f *fixture) Request {
			f.b.Cap.FreeMemoryBytes = 600 << 20
			return Request{VM: "web-01", To: "host-b"}
		}, ErrInsufficientMemory},
		{"memory held by another migration", func(f *fixture) Request {
			if err := f.c.Journal.Reserve(context.Background(), "other", f.b.UUID, "host-b", 3800<<20, 4<<30); err != nil {
				panic(err)
			}
			return Request{VM: "web-01", To: "host-b"}
		}, ErrInsufficientMemory},
		{"incompatible CPU", func(f *fixture) Request {
			f.b.CPUFn = func(virt.DomainSpec) error {
				return &virt.Error{Op: "cpu", Sentinel: virt.ErrCPUIncompatible, Message: "missing avx512f"}
			}
			return Request{VM: "web-01", To: "host-b"}
		}, ErrCPUIncompatible},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			req := tc.setup(f)
			res, err := f.c.Migrate(context.Background(), req)
			if !errors.Is(err, ErrRefused) || !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want a refusal wrapping %v", err, tc.want)
			}
			if res.State != journal.StateRefused {
				t.Fatalf("state %s", res.State)
			}
			r := f.lastRecord(t)
			if r.State != journal.StateRefused || r.Error != err.Error() {
				t.Fatalf("journal row state=%s error=%q, want refused with %q", r.State, r.Error, err)
			}
			if len(f.vm.Calls) != 0 {
				t.Fatalf("the VM was touched: %v", f.vm.Calls)
			}
		})
	}
}

func TestMigrateFailureRollsBack(t *testing.T) {
	f := newFixture(t)
	f.vm.MigrateFn = func(ctx context.Context, d *virttest.Domain, p virt.MigrateParams) error {
		d.SetState(virt.StatePaused, "migration") // failed right at switchover
		return &virt.Error{Op: "migrate", Sentinel: virt.ErrFailed, Message: "destination QEMU died"}
	}
	res, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b"})
	if !errors.Is(err, ErrRolledBack) {
		t.Fatalf("err = %v, want ErrRolledBack", err)
	}
	if info, _ := f.vm.Info(); info.State != virt.StateRunning {
		t.Fatalf("source state %s after rollback, want running", info.State)
	}
	if r := f.lastRecord(t); r.State != journal.StateRolledBack || r.Error == "" {
		t.Fatalf("journal %s %q", r.State, r.Error)
	}
	if res.State != journal.StateRolledBack {
		t.Fatalf("result state %s", res.State)
	}
	if n, _ := f.c.Journal.Reserved(context.Background(), f.b.UUID); n != 0 {
		t.Fatalf("reservation not released")
	}
}

func TestRecoverAfterCrash(t *testing.T) {
	f := newFixture(t)
	// A migration that completed on the hosts while ferry was killed before
	// commitment: the journal row is still running, owned by a dead process.
	f.vm.MigrateFn = func(ctx context.Context, d *virttest.Domain, p virt.MigrateParams) error {
		return d.MoveTo(p.DestURI)
	}
	ctx := context.Background()
	rec := &journal.Record{ID: "crashed-1", Kind: "live", VM: "web-01", VMUUID: "6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e6f",
		Source: "host-a", SourceURI: uriA, Dest: "host-b", DestURI: uriB, State: journal.StateRunning, Owner: "999999:1"}
	if err := f.c.Journal.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	_ = f.c.Journal.EnterStage(ctx, rec.ID, journal.StagePreCopy, f.c.now(), nil)
	if err := f.vm.MoveTo(uriB); err != nil {
		t.Fatal(err)
	}
	out, err := f.c.Recover(ctx, RecoverOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].After != journal.StateCompleted || out[0].RunsOn != "host-b" {
		t.Fatalf("recover %+v", out)
	}
	if _, err := f.a.LookupDomain("web-01"); !errors.Is(err, virt.ErrNotFound) {
		t.Fatalf("source definition left behind: %v", err)
	}
	r, _ := f.c.Journal.Get(ctx, "crashed-1")
	if r.State != journal.StateCompleted || r.FinishedAt == nil {
		t.Fatalf("journal after recover: %+v", r)
	}
	// Running it again changes nothing.
	out, err = f.c.Recover(ctx, RecoverOptions{})
	if err != nil || len(out) != 0 {
		t.Fatalf("second recover: %v %+v", err, out)
	}
}

// The destination dies after the source paused for the switchover: it may
// already run the guest, so the source stays paused and the row waits for
// recover, which decides once the destination answers (issue 11, part 3).
func TestDestinationDownAtSwitchoverKeepsSourcePaused(t *testing.T) {
	for _, tc := range []struct {
		name      string
		dstRan    bool // the destination had started the guest before it went away
		wantRunOn string
	}{
		{"destination never started", false, "host-a"},
		{"destination had started", true, "host-b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			f.vm.MigrateFn = func(ctx context.Context, d *virttest.Domain, p virt.MigrateParams) error {
				d.SetState(virt.StatePaused, "migration")
				if tc.dstRan {
					f.b.AddDomain("web-01", "6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e6f", 512<<20, virt.StateRunning)
				}
				f.b.SetDown(true) // the destination daemon died at the switchover
				return &virt.Error{Op: "migrate", Sentinel: virt.ErrUnreachable, Message: "client socket is closed"}
			}
			res, err := f.c.Migrate(ctx, Request{VM: "web-01", To: "host-b"})
			if !errors.Is(err, ErrNeedsRecovery) {
				t.Fatalf("err = %v, want ErrNeedsRecovery", err)
			}
			if info, _ := f.vm.Info(); info.State != virt.StatePaused {
				t.Fatalf("source %s, want still paused", info.State)
			}
			if res.State != journal.StateFailed {
				t.Fatalf("state %s", res.State)
			}
			// Recover with the destination still down: waits, keeps the row.
			out, err := f.c.Recover(ctx, RecoverOptions{})
			if !errors.Is(err, ErrNeedsRecovery) || errors.Is(err, ErrRefused) || len(out) != 1 || out[0].WaitingFor == "" {
				t.Fatalf("recover with the destination down: %v %+v", err, out)
			}
			if info, _ := f.vm.Info(); info.State != virt.StatePaused {
				t.Fatalf("recover touched the source: %s", info.State)
			}
			if r := f.lastRecord(t); r.State != journal.StateFailed {
				t.Fatalf("row %s after a waiting recover", r.State)
			}
			if held, _ := f.c.Journal.Reserved(ctx, f.b.UUID); held == 0 {
				t.Fatal("the reservation was released while the outcome is open")
			}
			f.b.SetDown(false)
			out, err = f.c.Recover(ctx, RecoverOptions{})
			if err != nil || len(out) != 1 || out[0].RunsOn != tc.wantRunOn {
				t.Fatalf("recover: %v %+v, want runs on %s", err, out, tc.wantRunOn)
			}
			running := 0
			for _, h := range []*virttest.Host{f.a, f.b} {
				if d, err := h.LookupDomain("web-01"); err == nil {
					if info, _ := d.Info(); info.State == virt.StateRunning {
						running++
					}
				}
			}
			if running != 1 {
				t.Fatalf("%d running copies after recover", running)
			}
		})
	}
}

// Before the switchover a running source proves the destination never ran
// the guest: rollback needs no answer from it.
func TestRollbackWithDestinationDownBeforeSwitchover(t *testing.T) {
	f := newFixture(t)
	f.vm.MigrateFn = func(ctx context.Context, d *virttest.Domain, p virt.MigrateParams) error {
		f.b.Down = true // the destination daemon died mid-copy
		return &virt.Error{Op: "migrate", Sentinel: virt.ErrUnreachable, Message: "client socket is closed"}
	}
	res, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b"})
	if !errors.Is(err, ErrRolledBack) {
		t.Fatalf("err = %v, want ErrRolledBack", err)
	}
	if info, _ := f.vm.Info(); info.State != virt.StateRunning {
		t.Fatalf("source %s, want running", info.State)
	}
	if res.State != journal.StateRolledBack {
		t.Fatalf("state %s", res.State)
	}
}
