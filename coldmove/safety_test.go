package coldmove

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ferryvm/ferry/virt"
	"github.com/ferryvm/ferry/virt/virttest"
)

func TestDecideRemovals(t *testing.T) {
	const me = "uuid-a"
	pools := []virt.PoolInfo{{Name: "default", Path: "/img", Active: true}, {Name: "ferry-1234", Path: "/var/log/libvirt/qemu", Active: true}}
	disk := func(i int, kind Kind, path string) Artifact {
		return Artifact{Index: i, Kind: kind, SrcPath: path, State: StateVerified}
	}
	vol := func(path, backing string) virt.VolumeInfo {
		return virt.VolumeInfo{Path: path, Pool: "default", BackingPath: backing}
	}
	dom := func(name, uuid string, st virt.State, files ...virt.FileRef) virt.DomainFiles {
		return virt.DomainFiles{Name: name, UUID: uuid, State: st, Persistent: true, Files: files}
	}
	ref := func(path, use string) virt.FileRef { return virt.FileRef{Path: path, Use: use} }
	cases := []struct {
		name   string
		in     RemovalInput
		delete []bool
		keptBy [][]string
		reason []string // substrings, "" for deleted ones
	}{
		{
			name: "nobody else: disk, log and nvram go",
			in: RemovalInput{VMUUID: me, Artifacts: []Artifact{disk(0, KindDisk, "/img/a.qcow2"), disk(1, KindLog, "/var/log/libvirt/qemu/a.log"),
				disk(2, KindNVRAM, "/nvram/a_VARS.fd")},
				Usage: virt.HostUsage{Pools: pools, Volumes: []virt.VolumeInfo{vol("/img/a.qcow2", "")},
					Domains: []virt.DomainFiles{dom("a", me, virt.StateShutoff, ref("/img/a.qcow2", "disk vda"))}}},
			delete: []bool{true, true, true},
		},
		{
			name: "the VM's disk is the base of another VM's overlay",
			in: RemovalInput{VMUUID: me, Artifacts: []Artifact{disk(0, KindDisk, "/img/base.qcow2")},
				Usage: virt.HostUsage{Pools: pools, Volumes: []virt.VolumeInfo{vol("/img/base.qcow2", ""), vol("/img/b.qcow2", "/img/base.qcow2")},
					Domains: []virt.DomainFiles{dom("a", me, virt.StateShutoff, ref("/img/base.qcow2", "disk vda")),
						dom("b", "uuid-b", virt.StateShutoff, ref("/img/b.qcow2", "disk vda"))}}},
			delete: []bool{false},
			keptBy: [][]string{{"domain b (shutoff, disk vda)", "volume /img/b.qcow2 (pool default) has it in its backing chain"}},
			reason: []string{"used by domain b"},
		},
		{
			name: "moving the overlay: the base stays for the other VM, the overlay goes",
			in: RemovalInput{VMUUID: "uuid-b", Artifacts: []Artifact{disk(0, KindBacking, "/img/base.qcow2"), disk(1, KindDisk, "/img/b.qcow2")},
				Usage: virt.HostUsage{Pools: pools, Volumes: []virt.VolumeInfo{vol("/img/base.qcow2", ""), vol("/img/b.qcow2", "/img/base.qcow2")},
					Domains: []virt.DomainFiles{dom("a", me, virt.StateRunning, ref("/img/base.qcow2", "disk vda")),
						dom("b", "uuid-b", virt.StateShutoff, ref("/img/b.qcow2", "disk vda"))}}},
			delete: []bool{false, true},
			keptBy: [][]string{{"domain a (running, disk vda)"}, nil},
			reason: []string{"used by domain a", ""},
		},
		{
			name: "a base only the moved overlay uses goes with it",
			in: RemovalInput{VMUUID: "uuid-b", Artifacts: []Artifact{disk(0, KindBacking, "/img/base.qcow2"), disk(1, KindDisk, "/img/b.qcow2")},
				Usage: virt.HostUsage{Pools: pools, Volumes: []virt.VolumeInfo{vol("/img/base.qcow2", ""), vol("/img/b.qcow2", "/img/base.qcow2")}}},
			delete: []bool{true, true},
		},
		{
			name: "an overlay volume no domain uses still holds its base (and the base's base)",
			in: RemovalInput{VMUUID: me, Artifacts: []Artifact{disk(0, KindBacking, "/img/base0.qcow2"), disk(1, KindBacking, "/img/base1.qcow2"), disk(2, KindDisk, "/img/a.qcow2")},
				Usage: virt.HostUsage{Pools: pools, Volumes: []virt.VolumeInfo{vol("/img/base0.qcow2", ""), vol("/img/base1.qcow2", "/img/base0.qcow2"),
					vol("/img/a.qcow2", "/img/base1.qcow2"), vol("/img/clone.qcow2", "/img/base1.qcow2")}}},
			delete: []bool{false, false, true},
			reason: []string{"volume /img/clone.qcow2", "volume /img/clone.qcow2", ""},
		},
		{
			name: "the same disk in two VMs without <shareable/>",
			in: RemovalInput{VMUUID: me, Artifacts: []Artifact{disk(0, KindDisk, "/img/data.img")},
				Usage: virt.HostUsage{Pools: pools, Volumes: []virt.VolumeInfo{vol("/img/data.img", "")},
					Domains: []virt.DomainFiles{dom("a", me, virt.StateShutoff, ref("/img/data.img", "disk vdb")),
						dom("c", "uuid-c", virt.StateShutoff, ref("/img/data.img", "disk vdc"))}}},
			delete: []bool{false},
			keptBy: [][]string{{"domain c (shutoff, disk vdc)"}},
		},
		{
			name: "a file kept on the source keeps its backing chain",
			in: RemovalInput{VMUUID: me, Artifacts: []Artifact{disk(0, KindBacking, "/img/base.qcow2"),
				{Index: 1, Kind: KindDisk, SrcPath: "/img/cd.qcow2", State: StateVerified, KeepOnSource: true, Note: "read-only or shared image"}},
				Usage: virt.HostUsage{Pools: pools, Volumes: []virt.VolumeInfo{vol("/img/base.qcow2", ""), vol("/img/cd.qcow2", "/img/base.qcow2")}}},
			delete: []bool{false, false},
			reason: []string{"kept file /img/cd.qcow2", "read-only"},
		},
		{
			name: "outside the source's pools, --keep-source, not copied",
			in: RemovalInput{VMUUID: me, Artifacts: []Artifact{disk(0, KindDisk, "/srv/x.img"), {Index: 1, Kind: KindDisk, SrcPath: "/img/y.img", State: StateRemoved}},
				Usage: virt.HostUsage{Pools: pools}},
			delete: []bool{false, false},
			reason: []string{"not in a storage pool", "not copied"},
		},
		{
			name: "an unreadable chain elsewhere keeps disks, not logs",
			in: RemovalInput{VMUUID: me, Artifacts: []Artifact{disk(0, KindDisk, "/img/a.qcow2"), disk(1, KindLog, "/var/log/libvirt/qemu/a.log")},
				Usage: virt.HostUsage{Pools: pools, Unresolved: []string{"/mnt/gone/z.qcow2"}}},
			delete: []bool{false, true},
			reason: []string{"/mnt/gone/z.qcow2 could not be read", ""},
		},
		{
			name: "another domain's NVRAM path",
			in: RemovalInput{VMUUID: me, Artifacts: []Artifact{disk(0, KindNVRAM, "/nvram/a_VARS.fd")},
				Usage: virt.HostUsage{Pools: pools, Domains: []virt.DomainFiles{dom("clone", "uuid-d", virt.StateShutoff, ref("/nvram/a_VARS.fd", "nvram"))}}},
			delete: []bool{false},
			keptBy: [][]string{{"domain clone (shutoff, nvram)"}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := DecideRemovals(c.in)
			if len(got) != len(c.delete) {
				t.Fatalf("%d decisions, want %d: %+v", len(got), len(c.delete), got)
			}
			for i, r := range got {
				if r.Delete != c.delete[i] {
					t.Errorf("%s: delete %v (%s), want %v", r.Path, r.Delete, r.Reason, c.delete[i])
				}
				if c.keptBy != nil && !reflect.DeepEqual(r.KeptBy, c.keptBy[i]) {
					t.Errorf("%s: kept by %q, want %q", r.Path, r.KeptBy, c.keptBy[i])
				}
				if c.reason != nil && !strings.Contains(r.Reason, c.reason[i]) {
					t.Errorf("%s: reason %q, want it to contain %q", r.Path, r.Reason, c.reason[i])
				}
			}
		})
	}
	// --keep-source keeps everything.
	for _, r := range DecideRemovals(RemovalInput{KeepSource: true, Artifacts: []Artifact{disk(0, KindDisk, "/img/a.qcow2")}, Usage: virt.HostUsage{Pools: pools}}) {
		if r.Delete || r.Reason != "--keep-source" {
			t.Fatalf("%+v", r)
		}
	}
}

func TestSourceChanges(t *testing.T) {
	sealed := SourceState{State: "shutoff", Persistent: true, XML: "<domain/>", Stamps: map[string]string{"/img/a": "len=1 mtime=1.0 ctime=1.0", "/img/b": "len=2 mtime=1.0 ctime=1.0"}}
	with := func(f func(*SourceState)) SourceState {
		s := sealed
		s.Stamps = map[string]string{}
		for k, v := range sealed.Stamps {
			s.Stamps[k] = v
		}
		f(&s)
		return s
	}
	cases := []struct {
		name string
		now  SourceState
		want []string // substrings, one per change
	}{
		{"unchanged", with(func(*SourceState) {}), nil},
		{"running", with(func(s *SourceState) { s.Active, s.State = true, "running" }), []string{"running on the source"}},
		{"started and stopped again: only the events tell", with(func(s *SourceState) {
			s.Events = []string{"the VM was started (booted)", "the VM was stopped (destroyed)"}
		}), []string{"started", "stopped"}},
		{"a file written (ctime moved)", with(func(s *SourceState) { s.Stamps["/img/b"] = "len=2 mtime=1.0 ctime=2.0" }), []string{"/img/b changed"}},
		{"a file gone", with(func(s *SourceState) { s.Stamps["/img/a"] = "" }), []string{"/img/a is gone"}},
		{"redefined", with(func(s *SourceState) { s.XML = "<domain><disk/></domain>" }), []string{"definition on the source changed"}},
		{"undefined", with(func(s *SourceState) { s.Persistent = false }), []string{"persistent definition is gone"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := SourceChanges(sealed, c.now)
			if len(got) != len(c.want) {
				t.Fatalf("changes %q, want %d", got, len(c.want))
			}
			for i := range got {
				if !strings.Contains(got[i], c.want[i]) {
					t.Fatalf("change %q, want %q", got[i], c.want[i])
				}
			}
		})
	}
}

// A start during the copy (seen as an event), or a file changed with no
// event at all: the move rolls back, the source is untouched.
func TestMoveRollsBackWhenTheSourceChanges(t *testing.T) {
	for _, how := range []string{"started", "file written"} {
		t.Run(how, func(t *testing.T) {
			src, dst, srcHost, dstHost, dom := lab(t, 1<<30)
			dstBefore := len(dst.Files())
			mv, rec := newMove(t, src, dst, srcHost, dstHost, dom, nil)
			first := mv.Plan.Artifacts[0].SrcPath
			fired := false
			src.CallFn = func(c virttest.StorageCall) error {
				if c.Op != virttest.OpDownload || fired || c.Path != first {
					return nil
				}
				fired = true
				if how == "started" {
					srcHost.emit(testUUID, "started")
				} else {
					src.Touch(first)
				}
				return nil
			}
			_, err := mv.Run(context.Background())
			rb, ok := IsRollback(err)
			if !ok || !rb.Complete() || !errors.Is(err, ErrSourceChanged) {
				t.Fatalf("err %v", err)
			}
			var sc *SourceChangedError
			if !errors.As(err, &sc) || sc.When != "before defining on the destination" {
				t.Fatalf("err %v", err)
			}
			if dstFiles := dst.Files(); len(dstFiles) != dstBefore {
				t.Fatalf("destination keeps copies: %v", dstFiles)
			}
			if _, err := dstHost.LookupDomain(testUUID); err == nil {
				t.Fatal("defined on the destination")
			}
			if len(dom.calls) != 0 || src.Files()[first] == nil {
				t.Fatalf("source touched: %v", dom.calls)
			}
			for _, s := range rec.stages {
				if s == StageCommitted {
					t.Fatal("committed")
				}
			}
		})
	}
}

// A verified copy of an interrupted run is not reused when the source file
// changed since: it is copied again.
func TestResumeRecopiesAChangedSource(t *testing.T) {
	src, dst, srcHost, dstHost, dom := lab(t, 1<<30)
	first, _ := newMove(t, src, dst, srcHost, dstHost, dom, nil)
	a0 := first.Plan.Artifacts[0]
	sum, _, _ := Checksum(context.Background(), mustVol(t, src, a0.SrcPath), true)
	dst.Put(a0.DstPath, src.Files()[a0.SrcPath], "")
	vi, _ := mustVol(t, src, a0.SrcPath).Info()
	a0.State, a0.Checksum, a0.SourceStamp = StateVerified, sum, StampOf(vi)
	src.Touch(a0.SrcPath)
	mv, _ := newMove(t, src, dst, srcHost, dstHost, dom, map[string]Artifact{a0.Key(): a0})
	out, err := mv.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if out.Artifacts[0].Skipped {
		t.Fatal("a copy of a since-changed source file was reused")
	}
}

// The VM is started in the instant between the last check and the
// undefine: it lives on as a transient domain. Nothing is deleted under it,
// its definition is restored and the destination's copies are removed.
func TestMoveStartedRightBeforeTheUndefine(t *testing.T) {
	src, dst, srcHost, dstHost, dom := lab(t, 1<<30)
	before := src.Files()
	dstBefore := len(dst.Files())
	dom.startedBeforeUndefine = true
	mv, _ := newMove(t, src, dst, srcHost, dstHost, dom, nil)
	_, err := mv.Run(context.Background())
	rb, ok := IsRollback(err)
	var sc *SourceChangedError
	if !ok || !rb.Complete() || !errors.As(err, &sc) || sc.When != "after undefining the source" {
		t.Fatalf("err %v", err)
	}
	if !reflect.DeepEqual(src.Files(), before) {
		t.Fatal("source files deleted")
	}
	if dstFiles := dst.Files(); len(dstFiles) != dstBefore {
		t.Fatalf("destination keeps copies: %v", dstFiles)
	}
	if _, err := dstHost.LookupDomain(testUUID); err == nil {
		t.Fatal("destination definition left")
	}
	d, err := srcHost.LookupDomain(testUUID)
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := d.Info(); !info.Persistent {
		t.Fatal("the source definition was not restored")
	}
}
