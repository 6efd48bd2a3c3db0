package orchestrator

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/placement"
	"github.com/ferryvm/ferry/virt"
	"github.com/ferryvm/ferry/virt/virttest"
)

const (
	uriC = "qemu+tcp://127.0.10.3/system"
	uriD = "qemu+tcp://127.0.10.4/system"
	uriE = "qemu+tcp://127.0.10.5/system"
)

func TestControllerPlace(t *testing.T) {
	ctx := context.Background()
	cl := virttest.NewCluster()
	capa := func(freeGiB uint64) virt.Capacity {
		return virt.Capacity{CPUs: 4, MemoryBytes: 16 << 30, FreeMemoryBytes: freeGiB << 30}
	}
	a := cl.AddHost(uriA, capa(8))
	cl.AddHost(uriB, capa(4))
	c := cl.AddHost(uriC, capa(6))
	d := cl.AddHost(uriD, capa(12))
	e := cl.AddHost(uriE, capa(10))
	a.AddDomain("web-01", "6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e6f", 1<<30, virt.StateRunning)
	d.CPUFn = func(virt.DomainSpec) error {
		return &virt.Error{Op: "compare cpu", Sentinel: virt.ErrCPUIncompatible, Message: "host CPU lacks avx512f"}
	}
	e.SetDown(true)
	stale := cl.AddHost("qemu+tcp://127.0.10.6/system", capa(64))
	stale.AddDomain("web-01", "6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e6f", 1<<30, virt.StateShutoff)
	inv := &inventory.Inventory{Hosts: []inventory.Host{
		{Name: "host-a", URI: uriA},
		{Name: "host-b", URI: uriB, Labels: map[string]string{"rack": "r2"}},
		{Name: "host-c", URI: uriC, Labels: map[string]string{"rack": "r1"}},
		{Name: "host-d", URI: uriD},
		{Name: "host-e", URI: uriE},
		{Name: "host-f", URI: "qemu+tcp://127.0.10.6/system"},
	}}
	ctl := &Controller{Inventory: inv, Journal: openTestJournal(t, filepath.Join(t.TempDir(), "ferry.db")), Dial: cl.Dial}

	verdict := func(p *placement.Placement, h string) placement.Verdict {
		for _, v := range p.Verdicts {
			if v.Host == h {
				return v
			}
		}
		t.Fatalf("no verdict for %s in %+v", h, p.Verdicts)
		return placement.Verdict{}
	}

	p, err := ctl.PlaceVM(ctx, "web-01", placement.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Host != "host-c" || p.Source != "host-a" || len(p.Verdicts) != 6 {
		t.Fatalf("placement %+v", p)
	}
	for h, want := range map[string]string{"host-a": "source", "host-d": "avx512f", "host-e": "unreachable", "host-f": "name clash"} {
		if v := verdict(p, h); v.Fits || !strings.Contains(v.Reason, want) {
			t.Errorf("%s: %+v, want rejection with %q", h, v, want)
		}
	}

	if v := verdict(p, "host-b"); !v.Fits || v.AvailableBytes != 4<<30-inventory.DefaultReservedMemoryMiB<<20 {
		t.Errorf("host-b: %+v", v)
	}

	// A migration in flight towards host-c makes host-b the roomiest.
	if err := ctl.Journal.Reserve(ctx, "m1", c.UUID, "host-c", 3<<30, 100<<30); err != nil {
		t.Fatal(err)
	}
	if p, _ = ctl.PlaceVM(ctx, "web-01", placement.Options{}); p.Host != "host-b" {
		t.Fatalf("with reservation: %s (%s)", p.Host, p.Reason)
	}
	// Labels.
	if p, _ = ctl.PlaceVM(ctx, "web-01", placement.Options{Prefer: []placement.Label{{Key: "rack", Value: "r1"}}}); p.Host != "host-c" {
		t.Fatalf("prefer rack=r1: %s (%s)", p.Host, p.Reason)
	}
	if p, _ = ctl.PlaceVM(ctx, "web-01", placement.Options{Avoid: []placement.Label{{Key: "rack", Value: "r2"}}}); p.Host != "host-c" {
		t.Fatalf("avoid rack=r2: %s (%s)", p.Host, p.Reason)
	}

	// Maintenance marks in the state DB are honoured.
	for _, h := range []string{"host-b", "host-c"} {
		if err := ctl.Journal.SetMaintenance(ctx, h, "drain"); err != nil {
			t.Fatal(err)
		}
	}
	p, err = ctl.PlaceVM(ctx, "web-01", placement.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Host != "" || !strings.Contains(verdict(p, "host-b").Reason, "in maintenance: drain") {
		t.Fatalf("maintenance: %+v", p)
	}
	if err := PlacementRefusal(p); !errors.Is(err, ErrNoPlacement) || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "host-d: CPU incompatible") {
		t.Fatalf("Err() = %v", err)
	}

	if _, err := ctl.PlaceVM(ctx, "nope", placement.Options{}); !errors.Is(err, ErrUnknownVM) {
		t.Fatalf("unknown VM: %v", err)
	}
	if _, err := ctl.PlaceVM(ctx, "bad name!", placement.Options{}); !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("bad name: %v", err)
	}
}
