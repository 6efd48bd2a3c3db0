package orchestrator

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ferryvm/ferry/coldmove"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/virt"
)

func TestColdRefusesARunningVMWithoutShutdown(t *testing.T) {
	f := newFixture(t)
	res, err := f.c.Migrate(context.Background(), Request{Kind: KindCold, VM: "web-01", To: "host-b"})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "--shutdown") || !strings.Contains(err.Error(), "live") {
		t.Fatalf("err %v", err)
	}
	r := f.lastRecord(t)
	if res.State != journal.StateRefused || r.Kind != "cold" || r.State != journal.StateRefused {
		t.Fatalf("result %+v row %+v", res, r)
	}
}

func TestColdRefusesAHostWithoutStorageAPI(t *testing.T) {
	f := newFixture(t)
	f.vm.SetState(virt.StateShutoff, "")
	_, err := f.c.Migrate(context.Background(), Request{Kind: KindCold, VM: "web-01", To: "host-b"})
	if !errors.Is(err, ErrRefused) || !errors.Is(err, virt.ErrNoSupport) {
		t.Fatalf("err %v", err)
	}
}

func TestArtifactsRoundTrip(t *testing.T) {
	j := openTestJournal(t, filepath.Join(t.TempDir(), "ferry.db"))
	ctx := context.Background()
	a := coldmove.Artifact{Index: 1, Kind: coldmove.KindDisk, Target: "vda", SrcPath: "/a/x.qcow2", DstPool: "default", DstPath: "/b/x.qcow2",
		Format: "qcow2", CapacityBytes: 4 << 30, AllocatedBytes: 100 << 20, PhysicalBytes: 101 << 20, State: coldmove.StateCopying}
	if err := j.SaveArtifact(ctx, "m1", a); err != nil {
		t.Fatal(err)
	}
	a.State, a.Checksum, a.SentBytes, a.Sparse = coldmove.StateVerified, "sha256-1m:ab", 100<<20, true
	a.SourceStamp = "len=1 alloc=1 mtime=1.5 ctime=1.5"
	if err := j.SaveArtifact(ctx, "m1", a); err != nil {
		t.Fatal(err)
	}
	// The commit point's decision: kept, and by whom.
	a.KeepOnSource, a.KeepReason, a.KeptBy = true, "used by domain b", []string{"domain b (shut off, disk vda)"}
	if err := j.SaveArtifact(ctx, "m1", a); err != nil {
		t.Fatal(err)
	}
	got, err := j.Artifacts(ctx, "m1")
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], a) {
		t.Fatalf("%v %+v", err, got)
	}
}
