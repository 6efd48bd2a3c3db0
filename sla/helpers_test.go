package sla

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferryvm/ferry/journal"
)

// T0 is the start of the 30-day test period.
var T0 = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

var period30 = Period{From: T0, To: T0.Add(30 * 24 * time.Hour)}

// at returns T0 + d.
func at(d time.Duration) time.Time { return T0.Add(d) }

type evOpt func(*Event)

func corr(id string) evOpt { return func(e *Event) { e.CorrelationID = id } }

func payload(s string) evOpt { return func(e *Event) { e.Payload = json.RawMessage(s) } }

func src(s string) evOpt { return func(e *Event) { e.Source = s } }

// mk builds an event with the usual source for its kind.
func mk(kind Kind, host, vm string, t time.Time, opts ...evOpt) Event {
	e := Event{Kind: kind, Host: host, VMName: vm, ObservedAt: t}
	switch {
	case kind.isPoller():
		e.Source = SourcePoller
	case kind.isMigration():
		e.Source = SourceOrchestrator
	default:
		e.Source = SourceLibvirt
	}
	for _, o := range opts {
		o(&e)
	}
	return e
}

// seq numbers events 1..n in slice order, as the log would.
func seq(evs ...[]Event) []Event {
	var out []Event
	for _, group := range evs {
		out = append(out, group...)
	}
	for i := range out {
		out[i].ID = int64(i + 1)
	}
	return out
}

// fixedNow is a clock far after every test period.
func fixedNow() time.Time { return T0.Add(365 * 24 * time.Hour) }

func opts(mod ...func(*Options)) Options {
	o := DefaultOptions()
	o.Now = fixedNow
	for _, m := range mod {
		m(&o)
	}
	return o
}

func backdate(o *Options) { o.Backdate = true }

func newTestLog(t testing.TB) *Log {
	t.Helper()
	db, err := journal.OpenDB(context.Background(), filepath.Join(t.TempDir(), "ferry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	l, err := NewLog(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustCompute(t *testing.T, evs []Event, ms []Maintenance, p Period, o Options) Report {
	t.Helper()
	r, err := Compute(evs, ms, p, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustVM(t *testing.T, r Report, name string) Entry {
	t.Helper()
	e, ok := r.VM(name)
	if !ok {
		t.Fatalf("no entry for VM %s", name)
	}
	return e
}

func mustHost(t *testing.T, r Report, name string) Entry {
	t.Helper()
	e, ok := r.Host(name)
	if !ok {
		t.Fatalf("no entry for host %s", name)
	}
	return e
}

// checkConsistent verifies that an entry's figures follow from its intervals.
func checkConsistent(t *testing.T, r Report, e Entry) {
	t.Helper()
	w := Span{r.Period.From, r.End}
	var excl, down []Span
	for _, iv := range e.Intervals {
		if iv.Start.Before(w.Start) || iv.End.After(w.End) || iv.End.Before(iv.Start) {
			t.Errorf("%s %s: interval %v..%v outside the window", e.Scope, e.Name, iv.Start, iv.End)
		}
		switch iv.Class {
		case ClassExcluded:
			excl = append(excl, Span{iv.Start, iv.End})
		case ClassDowntime:
			down = append(down, Span{iv.Start, iv.End})
		}
	}
	excl = union(excl)
	if got, want := e.Eligible, w.Duration()-total(excl); got != want {
		t.Errorf("%s %s: eligible %v, intervals say %v", e.Scope, e.Name, got, want)
	}
	if got, want := e.Downtime, total(subtract(union(down), excl)); got != want {
		t.Errorf("%s %s: downtime %v, intervals say %v", e.Scope, e.Name, got, want)
	}
	if got := total(e.Charged); got != e.Downtime {
		t.Errorf("%s %s: charged spans total %v, downtime %v", e.Scope, e.Name, got, e.Downtime)
	}
	if e.BudgetLeft != e.Budget-e.Downtime || e.Met != (e.Downtime <= e.Budget) {
		t.Errorf("%s %s: budget figures inconsistent: %+v", e.Scope, e.Name, e)
	}
	if !(e.DowntimeLow <= e.Downtime && e.Downtime <= e.DowntimeHigh) {
		t.Errorf("%s %s: downtime %v outside its bounds [%v, %v]", e.Scope, e.Name, e.Downtime, e.DowntimeLow, e.DowntimeHigh)
	}
}

// eventually polls cond until it holds, failing the test after 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
