package orchestrator

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferryvm/ferry/coldmove"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/virt"
	"github.com/ferryvm/ferry/virt/virttest"
)

// Tests of failures that only the fakes' hooks can inject: a host that
// answers the connection but not the calls after it, storage that fails in
// the middle of a cold move.

// errInjected is the failure the hooks inject; tests find it again in the
// error chain to tell it from a failure of something else.
var errInjected = &virt.Error{Op: "injected by the test", Sentinel: virt.ErrUnreachable, Message: "connection reset by peer"}

// A host that accepts the connection and then fails to tell who it is or
// what it has is unreachable: the live move is refused and nothing moves.
func TestUnansweringHostRefusesTheMove(t *testing.T) {
	for _, tc := range []struct {
		name      string
		breakHost func(f *fixture)
	}{
		{"destination identity", func(f *fixture) {
			f.b.IdentityFn = func(virt.Identity) (virt.Identity, error) { return virt.Identity{}, errInjected }
		}},
		{"destination capacity", func(f *fixture) {
			f.b.CapacityFn = func(virt.Capacity) (virt.Capacity, error) { return virt.Capacity{}, errInjected }
		}},
		{"source identity", func(f *fixture) {
			f.a.IdentityFn = func(virt.Identity) (virt.Identity, error) { return virt.Identity{}, errInjected }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tc.breakHost(f)
			res, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b"})
			if !errors.Is(err, ErrRefused) || !errors.Is(err, ErrUnreachable) {
				t.Fatalf("err = %v, want a refusal wrapping ErrUnreachable", err)
			}
			if !strings.Contains(err.Error(), "connection reset by peer") {
				t.Fatalf("err = %v, want it to name the host's failure", err)
			}
			if res.State != journal.StateRefused {
				t.Fatalf("result state %s", res.State)
			}
			if r := f.lastRecord(t); r.State != journal.StateRefused || r.Error != err.Error() {
				t.Fatalf("journal row state=%s error=%q", r.State, r.Error)
			}
			if len(f.vm.Calls) != 0 {
				t.Fatalf("the VM was touched: %v", f.vm.Calls)
			}
			if info, _ := f.vm.Info(); info.State != virt.StateRunning {
				t.Fatalf("source state %s, want running", info.State)
			}
			if _, err := f.b.LookupDomain("web-01"); !errors.Is(err, virt.ErrNotFound) {
				t.Fatalf("the destination has the VM: %v", err)
			}
			if n, _ := f.c.Journal.Reserved(context.Background(), f.b.UUID); n != 0 {
				t.Fatalf("%d bytes left reserved on the destination", n)
			}
		})
	}
}

const (
	coldImages = "/var/lib/libvirt/images"
	coldDisk   = coldImages + "/web-01.qcow2"
)

// coldLab turns the fixture into a cold move's: web-01 shut off with one
// disk in the source's default pool, an empty default pool on host-b, both
// hosts with a storage API.
func coldLab(t *testing.T) (f *fixture, src, dst *virttest.Storage) {
	t.Helper()
	f = newFixture(t)
	f.vm.SetState(virt.StateShutoff, "shutdown")
	def := `<domain type='qemu'><name>web-01</name><uuid>6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e6f</uuid><memory unit='MiB'>512</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='` + coldDisk + `'/><target dev='vda' bus='virtio'/></disk></devices>
</domain>`
	f.vm.XMLFn = func(bool) (string, error) { return def, nil }
	src, dst = virttest.NewStorage(true), virttest.NewStorage(true)
	src.AddPool("default", coldImages, 1<<40)
	dst.AddPool("default", coldImages, 1<<30)
	data := make([]byte, 1<<20)
	copy(data, bytes.Repeat([]byte("qcow"), 2048))
	copy(data[600<<10:], bytes.Repeat([]byte("data"), 1024))
	src.Put(coldDisk, data, "qcow2")
	f.a.AttachStorage(src)
	f.b.AttachStorage(dst)
	return f, src, dst
}

// checkColdRolledBack asserts a cold move rolled back at step, because of
// the injected failure, and left both hosts as they were.
func checkColdRolledBack(t *testing.T, f *fixture, src, dst *virttest.Storage, srcBefore map[string][]byte, res *Result, err error, step string) {
	t.Helper()
	if !errors.Is(err, ErrRolledBack) || !errors.Is(err, errInjected) {
		t.Fatalf("err = %v, want ErrRolledBack caused by the injected failure", err)
	}
	if rb, ok := coldmove.IsRollback(err); !ok || rb.Step != step || !rb.Complete() {
		t.Fatalf("rollback %+v, want a complete one at %q", rb, step)
	}
	if res.State != journal.StateRolledBack {
		t.Fatalf("result state %s", res.State)
	}
	r := f.lastRecord(t)
	if r.State != journal.StateRolledBack || r.Kind != KindCold {
		t.Fatalf("journal row kind=%s state=%s", r.Kind, r.State)
	}
	// The source: untouched.
	if !reflect.DeepEqual(src.Files(), srcBefore) {
		t.Fatal("the source's files changed")
	}
	if len(f.vm.Calls) != 0 {
		t.Fatalf("the VM was touched: %v", f.vm.Calls)
	}
	if info, _ := f.vm.Info(); info.State != virt.StateShutoff || !info.Persistent {
		t.Fatalf("source %s, persistent %v", info.State, info.Persistent)
	}
	// The destination: nothing of the VM left.
	if _, ok := dst.Files()[coldDisk]; ok {
		t.Fatal("the copy was left on the destination")
	}
	if _, err := f.b.LookupDomain("web-01"); !errors.Is(err, virt.ErrNotFound) {
		t.Fatalf("the destination defines the VM: %v", err)
	}
	if src.Transient() != 0 || dst.Transient() != 0 {
		t.Fatal("transient pools left behind")
	}
	arts, jerr := f.c.Journal.Artifacts(context.Background(), r.ID)
	if jerr != nil || len(arts) != 1 {
		t.Fatalf("artifacts %+v %v", arts, jerr)
	}
	if s := arts[0].State; s == coldmove.StateCopying || s == coldmove.StateVerified {
		t.Fatalf("the journal still has the copy as %s", s)
	}
}

// The destination's storage fails while the disk is copied: the cold move
// rolls back, removing what it had made there, and the source is untouched.
func TestColdMoveRollsBackWhenDestinationStorageFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(virttest.StorageCall) error
	}{
		{"creating the volume", virttest.FailCall(virttest.OpCreateVolume, coldDisk, errInjected)},
		{"halfway through the upload", func(c virttest.StorageCall) error {
			if c.Op == virttest.OpWrite && c.Path == coldDisk && c.Offset > 0 {
				return errInjected
			}
			return nil
		}},
		{"finishing the upload", virttest.FailCall(virttest.OpClose, coldDisk, errInjected)},
		{"reading the copy back", virttest.FailCall(virttest.OpDownload, coldDisk, errInjected)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, src, dst := coldLab(t)
			srcBefore := src.Files()
			dst.CallFn = tc.fail
			res, err := f.c.Migrate(context.Background(), Request{Kind: KindCold, VM: "web-01", To: "host-b"})
			checkColdRolledBack(t, f, src, dst, srcBefore, res, err, "copy disk vda")
		})
	}
}

// The source VM stops answering once its disk is copied: the check before
// defining it on the destination cannot tell it unchanged, so the move
// rolls back and the verified copy is removed again.
func TestColdMoveRollsBackWhenTheSourceStopsAnswering(t *testing.T) {
	f, src, dst := coldLab(t)
	srcBefore := src.Files()
	var copied atomic.Bool
	dst.CallFn = func(c virttest.StorageCall) error {
		if c.Op == virttest.OpClose && c.Path == coldDisk {
			copied.Store(true)
		}
		return nil
	}
	f.vm.InfoFn = func(info virt.DomainInfo) (virt.DomainInfo, error) {
		if copied.Load() {
			return virt.DomainInfo{}, errInjected
		}
		return info, nil
	}
	res, err := f.c.Migrate(context.Background(), Request{Kind: KindCold, VM: "web-01", To: "host-b"})
	if !copied.Load() {
		t.Fatalf("the disk was never copied: %v", err)
	}
	f.vm.InfoFn = nil // answer again, for the checks
	checkColdRolledBack(t, f, src, dst, srcBefore, res, err, "check the source before defining on the destination")
}
