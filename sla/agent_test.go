package sla

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryvm/ferry/virt"
	"github.com/ferryvm/ferry/virt/virttest"
)

const (
	uriA  = "qemu+tcp://127.0.0.1/system"
	uriB  = "qemu+tcp://127.0.0.2/system"
	uuid1 = "11111111-1111-4111-8111-111111111111"
	uuid2 = "22222222-2222-4222-8222-222222222222"
	uuid3 = "33333333-3333-4333-8333-333333333333"
	uuid4 = "44444444-4444-4444-8444-444444444444"
)

type agentFixture struct {
	cl        *virttest.Cluster
	a, b      *virttest.Host
	vm1, vm2  *virttest.Domain
	log       *Log
	sink      *memSink
	agent     *Agent
	connected chan string
	cancel    context.CancelFunc
	done      chan struct{}
}

func newAgentFixture(t *testing.T) *agentFixture {
	t.Helper()
	cl := virttest.NewCluster()
	f := &agentFixture{cl: cl, a: cl.AddHost(uriA, virt.Capacity{CPUs: 2}), b: cl.AddHost(uriB, virt.Capacity{CPUs: 2})}
	f.vm1 = f.a.AddDomain("vm1", uuid1, 1<<30, virt.StateRunning)
	f.vm2 = f.a.AddDomain("vm2", uuid2, 1<<30, virt.StateRunning)
	f.a.AddDomain("vm3", uuid3, 1<<30, virt.StateShutoff)
	f.log = newTestLog(t)
	f.sink = newMemSink(f.log)
	f.connected = make(chan string, 16)
	f.agent = &Agent{
		Hosts: []Target{{Name: "host-a", URI: uriA}, {Name: "host-b", URI: uriB}},
		Dial:  cl.Dial, Sink: f.sink, History: f.log,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		OnError:   func(err error) { t.Errorf("agent: %v", err) },
		OnConnect: func(h string) { f.connected <- h },
	}
	return f
}

func (f *agentFixture) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	go func() { defer close(f.done); _ = f.agent.Run(ctx) }()
	t.Cleanup(f.stop)
}

func (f *agentFixture) stop() {
	if f.cancel != nil {
		f.cancel()
		<-f.done
		f.cancel = nil
	}
}

func (f *agentFixture) waitConnected(t *testing.T, hosts ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, h := range hosts {
		want[h] = true
	}
	deadline := time.After(5 * time.Second)
	for len(want) > 0 {
		select {
		case h := <-f.connected:
			delete(want, h)
		case <-deadline:
			t.Fatalf("agent did not connect to %v", want)
		}
	}
}

func lifecycle(vm, uuid, event, detail string) virt.Event {
	return virt.Event{Kind: virt.EventLifecycle, Domain: vm, UUID: uuid, Lifecycle: event, Detail: detail}
}

// has reports whether evs holds an event of kind for vm (or the host, when
// vm is "") on host.
func has(evs []Event, kind Kind, host, vm string) bool {
	return slices.ContainsFunc(evs, func(e Event) bool { return e.Kind == kind && e.Host == host && e.VMName == vm })
}

func TestAgentConnectAndLifecycle(t *testing.T) {
	f := newAgentFixture(t)
	f.start(t)
	f.waitConnected(t, "host-a", "host-b")
	evs := f.sink.events()
	// On connect every running domain is placed on its host; a shut-off
	// domain with no history records nothing.
	if got := kindsOf(evs); !slices.Equal(got, []Kind{VMReachable, VMReachable}) || !has(evs, VMReachable, "host-a", "vm1") || !has(evs, VMReachable, "host-a", "vm2") {
		t.Fatalf("on connect:\n%s", dump(evs))
	}
	steps := []struct {
		ev   virt.Event
		want Kind // "" = nothing recorded
	}{
		{lifecycle("vm1", uuid1, "stopped", "failed"), VMFailure},     // QEMU killed
		{lifecycle("vm1", uuid1, "started", "booted"), VMReachable},   // restarted after the failure: recovery
		{lifecycle("vm2", uuid2, "stopped", "destroyed"), VMStopped},  // virsh destroy: the owner
		{lifecycle("vm2", uuid2, "started", "booted"), VMStarted},     // the owner starts it again
		{lifecycle("vm1", uuid1, "suspended", "migrated"), ""},        // switchover pause: the orchestrator's
		{lifecycle("vm1", uuid1, "suspended", "ioerror"), VMFailure},  // I/O error pause
		{lifecycle("vm1", uuid1, "resumed", "unpaused"), VMReachable}, // resumed after the failure
		{lifecycle("vm2", uuid2, "crashed", "panicked"), VMFailure},   // guest panic
		{lifecycle("vm2", uuid2, "shutdown", "finished"), ""},         // the stopped event follows
		{lifecycle("vm1", uuid1, "suspended", "postcopy-failed"), VMFailure},
	}
	n := len(evs)
	for _, s := range steps {
		f.a.Emit(s.ev)
		if s.want == "" {
			continue
		}
		n++
		evs = f.sink.waitFor(t, string(s.want), func(evs []Event) bool { return len(evs) >= n })
		last := evs[len(evs)-1]
		if len(evs) != n || last.Kind != s.want || last.VMName != s.ev.Domain || last.Host != "host-a" || last.Source != SourceLibvirt {
			t.Fatalf("%s/%s: recorded\n%s\nwant %s last", s.ev.Lifecycle, s.ev.Detail, dump(evs), s.want)
		}
	}
	if pl, _ := evs[len(evs)-1].DecodePayload(); !pl.Postcopy {
		t.Fatalf("post-copy failure without postcopy in its payload: %s", evs[len(evs)-1].Payload)
	}
	f.stop()
	evs = f.sink.events()
	for _, h := range []string{"host-a", "host-b"} {
		if !slices.ContainsFunc(evs, func(e Event) bool { return e.Kind == MonitorBlind && e.Host == h && e.Detail == "monitor stopped" }) {
			t.Fatalf("no Monitor_Blind for %s on stop:\n%s", h, dump(evs))
		}
	}
}

// A lost connection is recorded (Monitor_Blind, VM_Unreachable per VM), the
// agent reconnects with backoff (Monitor_Sight) and re-reads every domain, so
// a crash it missed while blind is recorded as VM_Failure.
func TestAgentReconnectRereadsDomains(t *testing.T) {
	f := newAgentFixture(t)
	var failedDials atomic.Int32
	f.agent.Dial = func(ctx context.Context, uri string) (virt.Host, error) {
		h, err := f.cl.Dial(ctx, uri)
		if err != nil && uri == uriA {
			failedDials.Add(1)
		}
		return h, err
	}
	f.start(t)
	f.waitConnected(t, "host-a", "host-b")

	f.a.SetDown(true)
	f.vm1.SetState(virt.StateShutoff, "crashed") // while nobody watches
	f.a.Disconnect("keepalive")
	evs := f.sink.waitFor(t, "blind", func(evs []Event) bool { return has(evs, MonitorBlind, "host-a", "") })
	if !has(evs, VMUnreachable, "host-a", "vm1") || !has(evs, VMUnreachable, "host-a", "vm2") {
		t.Fatalf("no VM_Unreachable per VM:\n%s", dump(evs))
	}
	// Redials fail while the host is down; each must not record another blind interval.
	n0 := failedDials.Load()
	eventually(t, "three failed redials of host-a", func() bool { return failedDials.Load() >= n0+3 })
	if n := strings.Count(dump(f.sink.events()), "Monitor_Blind"); n != 1 {
		t.Fatalf("%d Monitor_Blind while down, want 1 per blind interval", n)
	}
	f.a.SetDown(false)
	f.waitConnected(t, "host-a")
	evs = f.sink.waitFor(t, "sight", func(evs []Event) bool { return has(evs, MonitorSight, "host-a", "") })
	var after []Event
	for i, e := range evs {
		if e.Kind == MonitorSight {
			after = evs[i:]
		}
	}
	if !has(after, VMFailure, "host-a", "vm1") || !has(after, VMReachable, "host-a", "vm2") {
		t.Fatalf("after reconnect:\n%s", dump(after))
	}
	if f.a.Subscribers() != 1 {
		t.Fatalf("%d event streams open on host-a, want 1", f.a.Subscribers())
	}

	// The report lists the blind interval and charges vm1 from the re-read.
	f.stop()
	stored, err := f.log.Query(context.Background(), Filter{})
	if err != nil {
		t.Fatal(err)
	}
	p := Period{From: stored[0].ObservedAt.Add(-time.Minute), To: time.Now().Add(time.Minute)}
	r, err := Compute(stored, nil, p, Options{Target: DefaultTarget, ChargeMigrationPause: true, Now: func() time.Time { return p.To }})
	if err != nil {
		t.Fatal(err)
	}
	vm1, _ := r.VM("vm1")
	vm2, _ := r.VM("vm2")
	rules := func(e Entry) (out []Rule) {
		for _, iv := range e.Intervals {
			out = append(out, iv.Rule)
		}
		return out
	}
	if !slices.Contains(rules(vm1), RuleVMFailure) || !slices.Contains(rules(vm1), RuleMonitorBlind) || vm1.Downtime == 0 {
		t.Fatalf("vm1 intervals %v, downtime %v", rules(vm1), vm1.Downtime)
	}
	if vm2.Downtime != 0 {
		t.Fatalf("vm2 charged %v for the agent's blindness", vm2.Downtime)
	}
}

// Lifecycle events of a VM with a migration in the log carry its id, and the
// report counts none of them as a failure or a move.
func TestAgentAttributesMigrationEvents(t *testing.T) {
	f := newAgentFixture(t)
	ctx := context.Background()
	f.start(t)
	f.waitConnected(t, "host-a", "host-b")
	if _, err := f.log.Append(ctx, Event{Kind: MigrationPlanned, Host: "host-a", VMName: "vm1", VMUUID: uuid1,
		Source: SourceOrchestrator, ObservedAt: time.Now(), CorrelationID: "mig-1",
		Payload: json.RawMessage(`{"source":"host-a","destination":"host-b"}`)}); err != nil {
		t.Fatal(err)
	}
	f.b.Emit(lifecycle("vm1", uuid1, "started", "migrated"))
	f.b.Emit(lifecycle("vm1", uuid1, "stopped", "failed")) // the incoming copy died
	evs := f.sink.waitFor(t, "destination events", func(evs []Event) bool { return has(evs, VMFailure, "host-b", "vm1") })
	for _, e := range evs {
		if e.Host == "host-b" && e.CorrelationID != "mig-1" {
			t.Fatalf("destination event without the migration id:\n%s", dump(evs))
		}
	}
	if _, err := f.log.Append(ctx, Event{Kind: MigrationRolledBack, Host: "host-a", VMName: "vm1", VMUUID: uuid1,
		Source: SourceOrchestrator, ObservedAt: time.Now(), CorrelationID: "mig-1"}); err != nil {
		t.Fatal(err)
	}
	f.stop()
	stored, _ := f.log.Query(ctx, Filter{VM: "vm1"})
	p := Period{From: stored[0].ObservedAt.Add(-time.Minute), To: time.Now().Add(time.Minute)}
	r, err := Compute(stored, nil, p, Options{Target: DefaultTarget, Now: func() time.Time { return p.To }})
	if err != nil {
		t.Fatal(err)
	}
	vm1, _ := r.VM("vm1")
	if vm1.Downtime != 0 || !slices.Equal(vm1.Hosts, []string{"host-a"}) {
		t.Fatalf("vm1: downtime %v on %v; intervals %+v", vm1.Downtime, vm1.Hosts, vm1.Intervals)
	}
	// After the migration has ended (and its grace period), a failure is one.
	if id, err := f.log.MigrationAt(ctx, "vm1", uuid1, time.Now().Add(MigrationGrace+time.Second)); err != nil || id != "" {
		t.Fatalf("migration still attributed after it ended: %q %v", id, err)
	}
}

// A restarted agent ends the blind interval its last stop opened and
// records what changed while no monitor ran, comparing with the log.
func TestAgentRestartReconcilesWithLog(t *testing.T) {
	f := newAgentFixture(t)
	ctx := context.Background()
	f.a.AddDomain("vm4", uuid4, 1<<30, virt.StateShutoff).SetState(virt.StateShutoff, "destroyed")
	f.cl.Hosts[uriA].Domains["vm3"].SetState(virt.StateShutoff, "crashed")
	earlier := time.Now().Add(-time.Hour)
	if _, err := f.log.Append(ctx,
		Event{Kind: VMReachable, Host: "host-a", VMName: "vm3", VMUUID: uuid3, Source: SourceLibvirt, ObservedAt: earlier},
		Event{Kind: MonitorBlind, Host: "host-a", Source: SourceLibvirt, ObservedAt: earlier.Add(time.Minute), Detail: "monitor stopped"},
	); err != nil {
		t.Fatal(err)
	}
	f.start(t)
	f.waitConnected(t, "host-a", "host-b")
	evs := f.sink.events()
	if !has(evs, MonitorSight, "host-a", "") || has(evs, MonitorSight, "host-b", "") {
		t.Fatalf("Monitor_Sight must end host-a's blind interval only:\n%s", dump(evs))
	}
	if !has(evs, VMFailure, "host-a", "vm3") || slices.ContainsFunc(evs, func(e Event) bool { return e.VMName == "vm4" }) {
		t.Fatalf("want VM_Failure for vm3 (crashed while unwatched) and nothing for vm4 (never seen):\n%s", dump(evs))
	}
}

func TestAgentBlindWhileHostCannotBeReached(t *testing.T) {
	f := newAgentFixture(t)
	f.b.SetDown(true)
	f.start(t)
	f.waitConnected(t, "host-a")
	f.sink.waitFor(t, "blind host-b", func(evs []Event) bool { return has(evs, MonitorBlind, "host-b", "") })
	f.b.SetDown(false)
	f.waitConnected(t, "host-b")
	f.sink.waitFor(t, "sight host-b", func(evs []Event) bool { return has(evs, MonitorSight, "host-b", "") })
}

func TestStateKindTable(t *testing.T) {
	cases := []struct {
		state, reason string
		want          Kind
		postcopy      bool
	}{
		{"running", "booted", VMReachable, false},
		{"running", "migrated", VMReachable, false},
		{"running", "postcopy-failed", VMFailure, true},
		{"blocked", "", VMReachable, false},
		{"paused", "user", VMStopped, false},
		{"paused", "ioerror", VMFailure, false},
		{"paused", "migration", "", false},
		{"paused", "postcopy-failed", VMFailure, true},
		{"shutoff", "crashed", VMFailure, false},
		{"shutoff", "failed", VMFailure, false},
		{"shutoff", "daemon", VMFailure, false},
		{"shutoff", "destroyed", VMStopped, false},
		{"shutoff", "shutdown", VMStopped, false},
		{"shutoff", "migrated", "", false},
		{"shutoff", "", "", false},
		{"crashed", "panicked", VMFailure, false},
		{"pmsuspended", "", VMStopped, false},
		{"shutdown", "user", "", false},
	}
	for _, c := range cases {
		k, pc, ok := StateKind(c.state, c.reason)
		if k != c.want || pc != c.postcopy || ok != (c.want != "") {
			t.Errorf("StateKind(%s, %s) = %q, %v, %v; want %q, %v", c.state, c.reason, k, pc, ok, c.want, c.postcopy)
		}
	}
}
