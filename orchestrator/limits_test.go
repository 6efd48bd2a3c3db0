package orchestrator

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/virt"
)

func TestRanges(t *testing.T) {
	for _, tt := range []struct {
		rng  Range
		v    int64
		want bool
	}{
		{RangeListLimit, 0, true}, // all
		{RangeListLimit, 1, true},
		{RangeListLimit, 100000, true},
		{RangeListLimit, 100001, false},
		{RangeListLimit, -1, false},
		{RangeListLimit, math.MaxInt64, false},
		{RangeBandwidthMiBps, 0, true}, // no cap
		{RangeBandwidthMiBps, 1 << 20, true},
		{RangeBandwidthMiBps, 1<<20 + 1, false},
	} {
		err := tt.rng.Check("--x", tt.v)
		if (err == nil) != tt.want {
			t.Errorf("%+v.Check(%d) = %v, want ok=%v", tt.rng, tt.v, err, tt.want)
		}
		var re *RangeError
		if err != nil && (!errors.As(err, &re) || !errors.Is(err, ErrInvalidRequest) || !errors.Is(err, ErrRefused) || !strings.HasPrefix(err.Error(), "--x ")) {
			t.Errorf("error %v: want a *RangeError naming --x, an invalid request", err)
		}
	}
	if err := RangeBandwidthMiBps.CheckUint("b", math.MaxUint64); err == nil || !strings.Contains(err.Error(), "18446744073709551615") {
		t.Errorf("CheckUint(MaxUint64) = %v", err)
	}
	for _, tt := range []struct {
		d    time.Duration
		want bool
	}{{0, true}, {time.Millisecond, true}, {2000 * time.Second, true}, {2001 * time.Second, false}, {time.Microsecond, false}, {-time.Second, false}} {
		if err := RangeMaxDowntime.Check("d", tt.d); (err == nil) != tt.want {
			t.Errorf("RangeMaxDowntime.Check(%s) = %v, want ok=%v", tt.d, err, tt.want)
		}
	}
}

// The MiB/s to bytes/s conversion saturates: 2^44 MiB/s used to wrap to 0,
// which means "no cap".
func TestBandwidthBytesPerSecSaturates(t *testing.T) {
	for _, tt := range []struct {
		mibps uint64
		want  int64
	}{
		{0, 0}, {1, 1 << 20}, {1 << 20, 1 << 40},
		{1 << 43, math.MaxInt64}, {1 << 44, math.MaxInt64}, {math.MaxUint64, math.MaxInt64},
		{math.MaxInt64 >> 20, (math.MaxInt64 >> 20) << 20},
	} {
		if got := BandwidthBytesPerSec(tt.mibps); got != tt.want || got < 0 {
			t.Errorf("BandwidthBytesPerSec(%d) = %d, want %d", tt.mibps, got, tt.want)
		}
	}
	if p := (Request{BandwidthMiBps: 1 << 44}).precopyPolicy(); p.BandwidthBytesPerSec <= 0 {
		t.Errorf("policy of a 2^44 MiB/s cap: %d bytes/s", p.BandwidthBytesPerSec)
	}
}

// The library refuses out-of-range numbers itself, whoever calls it, and
// journals the refusal; nothing is moved.
func TestMigrateRefusesOutOfRange(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct {
		req  Request
		flag string
	}{
		{Request{VM: "web-01", To: "host-b", BandwidthMiBps: 1 << 44}, "--bandwidth"},
		{Request{VM: "web-01", To: "host-b", Live: LiveOptions{MaxDowntime: time.Hour}}, "--max-downtime"},
		{Request{VM: "web-01", To: "host-b", Live: LiveOptions{DowntimeCeiling: time.Hour}}, "--max-downtime-ceiling"},
		{Request{VM: "web-01", To: "host-b", Live: LiveOptions{Timeout: math.MaxInt64}}, "--timeout"},
		{Request{VM: "web-01", To: "host-b", Live: LiveOptions{CompletionTimeout: time.Nanosecond}}, "--completion-timeout"},
	} {
		res, err := f.c.Migrate(context.Background(), tt.req)
		var re *RangeError
		if !errors.As(err, &re) || re.Field != tt.flag || !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%+v: err = %v, want a range error on %s", tt.req, err, tt.flag)
			continue
		}
		if r, err := f.c.Journal.Get(context.Background(), res.ID); err != nil || r.State != journal.StateRefused || !strings.Contains(r.Error, tt.flag) {
			t.Errorf("journal row %+v, %v", r, err)
		}
	}
	_, err := f.c.Migrate(context.Background(), Request{Kind: KindCold, VM: "web-01", To: "host-b", BandwidthMiBps: 1 << 44})
	if !errors.Is(err, ErrInvalidRequest) || !strings.Contains(err.Error(), "--bandwidth") {
		t.Errorf("cold: err = %v", err)
	}
	if info, _ := f.vm.Info(); info.State != virt.StateRunning {
		t.Fatal("a refused move touched the VM")
	}
	if _, err := f.b.LookupDomain("web-01"); !errors.Is(err, virt.ErrNotFound) {
		t.Fatal("a refused move reached the destination")
	}
}

// The controller's limits (from the inventory) apply to plain migrations:
// refused while a slot is taken, or waited for with WaitForSlot.
func TestMigrateHonoursLimits(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.c.Limits = inventory.Limits{MaxIncoming: 1}
	other := journal.SlotHost{Key: "elsewhere", Name: "host-x"}
	if err := f.c.Journal.AcquireSlot(ctx, "other-move", other, journal.SlotHost{Key: f.b.UUID, Name: "host-b"}, 0, 0); err != nil {
		t.Fatal(err)
	}
	_, err := f.c.Migrate(ctx, Request{VM: "web-01", To: "host-b"})
	if !errors.Is(err, ErrLimit) || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "host-b already has 1 incoming") {
		t.Fatalf("err = %v, want a limit refusal", err)
	}
	if r := f.lastRecord(t); r.State != journal.StateRefused {
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
	if err != nil || res.State != journal.StateCompleted || !waited {
		t.Fatalf("with WaitForSlot: %v, %+v, waited %v", err, res, waited)
	}
}
