package orchestrator

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferryvm/ferry/sla"
)

func TestSLAEventMapping(t *testing.T) {
	at := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	base := MigrationEvent{MigrationID: "m-1", VM: "web-01", VMUUID: "6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e6f", Source: "host-a", Dest: "host-b", At: at}
	cases := []struct {
		kind     string
		want     sla.Kind
		host     string
		downtime *int64
	}{
		{"planned", sla.MigrationPlanned, "host-a", nil},
		{"switchover", sla.MigrationSwitchover, "host-a", nil},
		{"completed", sla.MigrationCompleted, "host-b", ptr(int64(41))},
		{"failed", sla.MigrationFailed, "host-a", nil},
		{"rolled_back", sla.MigrationRolledBack, "host-a", nil},
	}
	for _, c := range cases {
		ev := base
		ev.Kind, ev.Downtime = c.kind, 41*time.Millisecond
		e, err := SLAEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("%s: %v", c.kind, err)
		}
		pl, _ := e.DecodePayload()
		if e.Kind != c.want || e.Host != c.host || e.CorrelationID != "m-1" || e.Source != sla.SourceOrchestrator ||
			pl.Source != "host-a" || pl.Destination != "host-b" || !e.ObservedAt.Equal(at) {
			t.Errorf("%s: %+v (payload %+v)", c.kind, e, pl)
		}
		if (c.downtime == nil) != (pl.DowntimeMS == nil) || (c.downtime != nil && *c.downtime != *pl.DowntimeMS) {
			t.Errorf("%s: downtime_ms %v", c.kind, pl.DowntimeMS)
		}
	}
	ev := base
	ev.Kind, ev.Postcopy = "switchover", true
	if e, _ := SLAEvent(ev); !mustPayload(t, e).Postcopy {
		t.Errorf("post-copy switchover without postcopy: %s", e.Payload)
	}
	if _, err := SLAEvent(MigrationEvent{Kind: "exploded"}); err == nil {
		t.Error("unknown kind accepted")
	}
}

func ptr[T any](v T) *T { return &v }

func mustPayload(t *testing.T, e sla.Event) sla.Payload {
	t.Helper()
	pl, err := e.DecodePayload()
	if err != nil {
		t.Fatal(err)
	}
	return pl
}

// A migration run by the controller lands in the SLA log with its journal
// id as correlation id and libvirt's downtime, and the report charges it.
func TestMigrationFeedsSLALog(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "ferry.db")
	f.c.Journal = openTestJournal(t, path)
	log, err := sla.NewLog(ctx, f.c.Journal.DB())
	if err != nil {
		t.Fatal(err)
	}
	f.c.Events = SLAFeed{Log: log}
	before := time.Now().Add(-time.Second)
	res, err := f.c.Migrate(ctx, Request{VM: "web-01", To: "host-b"})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := log.Query(ctx, sla.Filter{CorrelationID: res.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) < 2 || evs[0].Kind != sla.MigrationPlanned || evs[len(evs)-1].Kind != sla.MigrationCompleted {
		t.Fatalf("events %+v", evs)
	}
	done := evs[len(evs)-1]
	if pl := mustPayload(t, done); done.Host != "host-b" || pl.DowntimeMS == nil || *pl.DowntimeMS != 20 {
		t.Fatalf("completed event %+v", done)
	}
	// Delivered again (a retry): stored once.
	if err := (SLAFeed{Log: log}).MigrationEvent(ctx, MigrationEvent{Kind: "completed", MigrationID: res.ID, VM: "web-01",
		Source: "host-a", Dest: "host-b", At: time.Now(), Downtime: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if again, _ := log.Query(ctx, sla.Filter{CorrelationID: res.ID}); len(again) != len(evs) {
		t.Fatalf("re-delivery stored a new row: %d events, had %d", len(again), len(evs))
	}
	r, err := log.Report(ctx, sla.Period{From: before, To: time.Now().Add(time.Second)}, sla.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	vm, ok := r.VM("web-01")
	if !ok || vm.Downtime != 20*time.Millisecond || len(vm.Hosts) != 2 {
		t.Fatalf("report entry %+v", vm)
	}
}
