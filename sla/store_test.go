package sla

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	ok := mk(VMFailure, "host-a", "vm1", at(0))
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid event: %v", err)
	}
	for _, tc := range []struct {
		name  string
		mod   func(*Event)
		field string
	}{
		{"no kind", func(e *Event) { e.Kind = "" }, "kind"},
		{"unknown kind", func(e *Event) { e.Kind = "VM_Exploded" }, "kind"},
		{"no time", func(e *Event) { e.ObservedAt = time.Time{} }, "observed_at"},
		{"time out of range", func(e *Event) { e.ObservedAt = time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC) }, "observed_at"},
		{"no source", func(e *Event) { e.Source = "" }, "source"},
		{"bad source", func(e *Event) { e.Source = "nagios" }, "source"},
		{"empty import source", func(e *Event) { e.Source = "import:" }, "source"},
		{"VM event without VM", func(e *Event) { e.VMName = "" }, "vm"},
		{"bad uuid", func(e *Event) { e.VMUUID = "not-a-uuid" }, "vm_uuid"},
		{"poller event without host", func(e *Event) { e.Kind, e.Source, e.Host = PSTimeout, SourcePoller, "" }, "host"},
		{"blind without host", func(e *Event) { e.Kind, e.Host = MonitorBlind, "" }, "host"},
		{"migration without correlation", func(e *Event) { e.Kind = MigrationPlanned }, "correlation_id"},
		{"completed without downtime", func(e *Event) { e.Kind, e.CorrelationID = MigrationCompleted, "m1" }, "payload"},
		{"negative downtime", func(e *Event) {
			e.Kind, e.CorrelationID, e.Payload = MigrationCompleted, "m1", []byte(`{"downtime_ms": -1}`)
		}, "payload"},
		{"string downtime", func(e *Event) {
			e.Kind, e.CorrelationID, e.Payload = MigrationCompleted, "m1", []byte(`{"downtime_ms": "5"}`)
		}, "payload"},
		{"payload not an object", func(e *Event) { e.Payload = []byte(`[1]`) }, "payload"},
		{"postcopy not a bool", func(e *Event) { e.Payload = []byte(`{"postcopy": "yes"}`) }, "payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := ok
			tc.mod(&e)
			err := e.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("err = %v, want a FieldError on %s", err, tc.field)
			}
			if !strings.Contains(err.Error(), tc.field+": ") {
				t.Errorf("message %q does not name %s", err, tc.field)
			}
		})
	}
	// Several problems are all reported.
	err := (&Event{Kind: PSTimeout}).Validate()
	for _, f := range []string{"observed_at", "source", "host"} {
		if err == nil || !strings.Contains(err.Error(), f+": ") {
			t.Errorf("%v does not name %s", err, f)
		}
	}
}

func TestDefaultDedupKey(t *testing.T) {
	a := mk(PSTimeout, "host-a", "", at(0))
	b := a
	b.Detail, b.ReceivedAt = "re-sent", at(time.Hour)
	if a.Key() != b.Key() {
		t.Error("same observation, different keys")
	}
	c := a
	c.ObservedAt = c.ObservedAt.Add(time.Nanosecond)
	if a.Key() == c.Key() {
		t.Error("different observations, same key")
	}
	c = a
	c.DedupKey = "explicit"
	if c.Key() != "explicit" {
		t.Error("explicit key ignored")
	}
}

func TestLifecycleKind(t *testing.T) {
	for _, tc := range []struct {
		lifecycle, detail string
		kind              Kind
		postcopy, ok      bool
	}{
		{"started", "booted", VMStarted, false, true},
		{"started", "migrated", VMReachable, false, true},
		{"resumed", "unpaused", VMStarted, false, true},
		{"resumed", "postcopy-failed", VMFailure, true, true},
		{"suspended", "paused", VMStopped, false, true},
		{"suspended", "ioerror", VMFailure, false, true},
		{"suspended", "postcopy-failed", VMFailure, true, true},
		{"suspended", "migrated", "", false, false},
		{"stopped", "shutdown", VMStopped, false, true},
		{"stopped", "destroyed", VMStopped, false, true},
		{"stopped", "crashed", VMFailure, false, true},
		{"stopped", "failed", VMFailure, false, true},
		{"stopped", "migrated", "", false, false},
		{"crashed", "panicked", VMFailure, false, true},
		{"pmsuspended", "memory", VMStopped, false, true},
		{"shutdown", "guest", "", false, false},
		{"defined", "added", "", false, false},
		{"mystery", "", "", false, false},
	} {
		k, pc, ok := LifecycleKind(tc.lifecycle, tc.detail)
		if k != tc.kind || pc != tc.postcopy || ok != tc.ok {
			t.Errorf("%s/%s: got %q %v %v, want %q %v %v", tc.lifecycle, tc.detail, k, pc, ok, tc.kind, tc.postcopy, tc.ok)
		}
	}
	if h, v, ok := ConnectionClosedKinds("keepalive"); !ok || h != MonitorBlind || v != VMUnreachable {
		t.Error("keepalive close")
	}
	if _, _, ok := ConnectionClosedKinds("client"); ok {
		t.Error("client close emits events")
	}
}

func TestAppendAndQuery(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	l.Now = func() time.Time { return at(time.Hour) }
	if _, err := NewLog(ctx, l.db); err != nil { // idempotent schema
		t.Fatal(err)
	}
	evs := []Event{
		mk(VMReachable, "host-a", "vm1", at(3*time.Minute)),
		mk(PSTimeout, "host-a", "", at(time.Minute)),
		mk(MigrationCompleted, "host-b", "vm2", at(2*time.Minute), corr("m1"), payload(`{"downtime_ms":12}`)),
		mk(VMFailure, "host-b", "vm1", at(4*time.Minute), func(e *Event) { e.VMUUID = "6c1f0a8e-1f0e-4d43-9a70-2f8f3c1d2b11" }),
	}
	n, err := l.Append(ctx, evs...)
	if err != nil || n != 4 {
		t.Fatalf("append: %d, %v", n, err)
	}
	// Re-delivery of the same keys is a no-op, also within one call.
	n, err = l.Append(ctx, evs[0], evs[0], evs[1])
	if err != nil || n != 0 {
		t.Fatalf("re-append: %d, %v", n, err)
	}
	all, err := l.Query(ctx, Filter{})
	if err != nil || len(all) != 4 {
		t.Fatalf("query: %d, %v", len(all), err)
	}
	// Ordered by observed_at, not by insertion.
	if all[0].Kind != PSTimeout || all[1].Kind != MigrationCompleted || all[3].Kind != VMFailure {
		t.Errorf("order: %v %v %v %v", all[0].Kind, all[1].Kind, all[2].Kind, all[3].Kind)
	}
	got := all[1]
	if got.ID == 0 || got.DedupKey == "" || got.Source != SourceOrchestrator || got.CorrelationID != "m1" ||
		string(got.Payload) != `{"downtime_ms":12}` || !got.ObservedAt.Equal(at(2*time.Minute)) ||
		!got.ReceivedAt.Equal(at(time.Hour)) || got.Host != "host-b" || got.VMName != "vm2" {
		t.Errorf("round trip: %+v", got)
	}
	for _, tc := range []struct {
		f    Filter
		want []Kind
	}{
		{Filter{VM: "vm1"}, []Kind{VMReachable, VMFailure}},
		{Filter{VM: "6c1f0a8e-1f0e-4d43-9a70-2f8f3c1d2b11"}, []Kind{VMFailure}},
		{Filter{Host: "host-b"}, []Kind{MigrationCompleted, VMFailure}},
		{Filter{Kinds: []Kind{PSTimeout, VMFailure}}, []Kind{PSTimeout, VMFailure}},
		{Filter{From: at(2 * time.Minute), To: at(4 * time.Minute)}, []Kind{MigrationCompleted, VMReachable}},
		{Filter{CorrelationID: "m1"}, []Kind{MigrationCompleted}},
		{Filter{Limit: 2}, []Kind{PSTimeout, MigrationCompleted}},
	} {
		evs, err := l.Query(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		var kinds []Kind
		for _, e := range evs {
			kinds = append(kinds, e.Kind)
		}
		if !reflect.DeepEqual(kinds, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.f, kinds, tc.want)
		}
	}
}

func TestAppendIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	bad := mk(PSTimeout, "", "", at(0))
	_, err := l.Append(ctx, mk(PSTimeout, "host-a", "", at(0)), bad)
	if !errors.Is(err, ErrInvalidEvent) || !strings.Contains(err.Error(), "event 1") || !strings.Contains(err.Error(), "host: ") {
		t.Fatalf("err = %v", err)
	}
	if evs, _ := l.Query(ctx, Filter{}); len(evs) != 0 {
		t.Fatalf("%d events stored", len(evs))
	}
	// Many events (several batches plus a remainder) in one call.
	var many []Event
	for i := range 1000 {
		many = append(many, mk(PSTimeout, fmt.Sprintf("host-%d", i%7), "", at(time.Duration(i)*time.Second)))
	}
	n, err := l.Append(ctx, many...)
	if err != nil || n != 1000 {
		t.Fatalf("append 1000: %d, %v", n, err)
	}
}

func TestMaintenance(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	l.Now = func() time.Time { return at(0) }
	id1, err := l.AddMaintenance(ctx, Maintenance{Host: "host-a", From: at(time.Hour), To: at(2 * time.Hour), Reason: "bios"})
	if err != nil {
		t.Fatal(err)
	}
	id2, err := l.AddMaintenance(ctx, Maintenance{VM: "vm1", From: at(10 * time.Hour), To: at(11 * time.Hour), DeclaredAt: at(10*time.Hour + time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := l.ListMaintenance(ctx, time.Time{}, time.Time{})
	if err != nil || len(ms) != 2 {
		t.Fatalf("list: %v %v", ms, err)
	}
	if ms[0].ID != id1 || ms[0].Host != "host-a" || !ms[0].DeclaredAt.Equal(at(0)) || !ms[0].InAdvance() || ms[1].InAdvance() {
		t.Errorf("list: %+v", ms)
	}
	if ms, _ := l.ListMaintenance(ctx, at(90*time.Minute), at(3*time.Hour)); len(ms) != 1 || ms[0].ID != id1 {
		t.Errorf("overlap query: %+v", ms)
	}
	if ms, _ := l.ListMaintenance(ctx, at(2*time.Hour), at(10*time.Hour)); len(ms) != 0 {
		t.Errorf("half-open bounds: %+v", ms)
	}
	for _, bad := range []Maintenance{
		{From: at(0), To: at(time.Hour)},
		{Host: "h", VM: "v", From: at(0), To: at(time.Hour)},
		{Host: "h", From: at(time.Hour), To: at(time.Hour)},
		{Host: "h", To: at(time.Hour)},
	} {
		if _, err := l.AddMaintenance(ctx, bad); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%+v: err = %v", bad, err)
		}
	}
	if err := l.RemoveMaintenance(ctx, id2); err != nil {
		t.Fatal(err)
	}
	if err := l.RemoveMaintenance(ctx, id2); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
}

func TestLogReportEndToEnd(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	evs := hostFailure()
	// Delivered backwards and twice, as a flaky agent might.
	rev := slices.Clone(evs)
	slices.Reverse(rev)
	for _, batch := range [][]Event{rev, evs} {
		for i := range batch {
			batch[i].ID = 0
		}
		if _, err := l.Append(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	stored, _ := l.Query(ctx, Filter{})
	if len(stored) != len(evs) {
		t.Fatalf("%d rows for %d events", len(stored), len(evs))
	}
	if _, err := l.AddMaintenance(ctx, Maintenance{Host: "host-b", From: at(20 * time.Hour), To: at(21 * time.Hour), DeclaredAt: at(0)}); err != nil {
		t.Fatal(err)
	}
	r, err := l.Report(ctx, period30, opts())
	if err != nil {
		t.Fatal(err)
	}
	want := mustCompute(t, hostFailure(), nil, period30, opts())
	for _, vm := range threeVMs {
		e, w := mustVM(t, r, vm), mustVM(t, want, vm)
		checkConsistent(t, r, e)
		if e.Downtime != w.Downtime || e.Downtime != hfT6.Sub(hfT2) || e.Eligible != 30*24*time.Hour-time.Hour {
			t.Errorf("%s: downtime %v eligible %v", vm, e.Downtime, e.Eligible)
		}
	}
}
