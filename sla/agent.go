package sla

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/ferryvm/ferry/virt"
)

// Monitoring agent defaults.
const (
	// DefaultAgentDialTimeout bounds one connection attempt of the agent.
	DefaultAgentDialTimeout = 10 * time.Second
	// Reconnect backoff: doubles from the minimum up to the maximum and
	// starts over after a successful connection.
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 30 * time.Second
)

// History is what the agent reads back from the log: which migration a
// lifecycle event belongs to, and what was last recorded (so a restart or a
// reconnect records only what changed). *Log implements it.
type History interface {
	MigrationAt(ctx context.Context, vm, vmUUID string, t time.Time) (string, error)
	Last(ctx context.Context, f Filter) (Event, bool, error)
}

// availabilityKinds are the VM events that say whether a VM is up; the last
// one recorded is what the agent compares a re-read state with.
var availabilityKinds = []Kind{VMReachable, VMStarted, VMFailure, VMStopped}

// Agent is the monitoring agent. Per host it holds a libvirt connection,
// subscribes to domain events and records:
//
//   - each lifecycle event mapped by LifecycleKind, with the migration's
//     correlation id when the VM has a migration under way in the log
//     (History.MigrationAt), so that the report does not count it as a
//     failure or an owner stop; a VM_Started of a VM whose last recorded
//     event is VM_Failure is recorded as VM_Reachable: it is the recovery;
//   - on connect, after subscribing, every domain's state mapped by
//     StateKind: VM_Reachable for each running domain (every time: it places
//     the VM on the host for the report), and any other mapped state that
//     differs from the VM's last recorded event (a crash or a stop that
//     happened while the agent was blind or not running);
//   - when the connection closes (libvirt's keepalive, EOF, error):
//     Monitor_Blind for the host and VM_Unreachable for each VM running there,
//     then it reconnects with backoff; Monitor_Sight when it is back. A
//     connection that cannot be made at all also starts a blind interval, and
//     so does stopping the agent (detail "monitor stopped"); the next start
//     ends it with Monitor_Sight.
//
// Migration iteration and job-completed events are not recorded: the
// orchestrator writes each migration's outcome with libvirt's measured
// downtime (Migration_Completed), and a migration ferry did not run shows up
// as its lifecycle events only (the VM's arrival, started/migrated, places it
// on the destination).
type Agent struct {
	Hosts []Target
	// Dial defaults to virt.Dial.
	Dial DialFunc
	Sink Sink
	// History, when set, attributes events to migrations and seeds the last
	// recorded state of each VM and host.
	History History
	// DialTimeout, MinBackoff and MaxBackoff: zero takes the defaults.
	DialTimeout            time.Duration
	MinBackoff, MaxBackoff time.Duration
	// Now stamps events that libvirt does not time (re-read states, blind
	// intervals); nil means time.Now.
	Now func() time.Time
	// OnError is told about failed lookups and sink errors; nil ignores them.
	OnError func(error)
	// OnConnect, when set, is called each time a host's events are flowing
	// and its domains have been re-read (tests wait on it).
	OnConnect func(host string)

	mu   sync.Mutex
	last map[string]Kind // VM name or UUID → last availability kind recorded
}

func (a *Agent) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Agent) fail(err error) {
	// Errors of calls cut short by the agent's own stop are not failures.
	if err != nil && a.OnError != nil && !errors.Is(err, context.Canceled) {
		a.OnError(err)
	}
}

func (a *Agent) record(ctx context.Context, evs ...Event) {
	if len(evs) == 0 {
		return
	}
	if err := a.Sink.Record(ctx, evs...); err != nil {
		a.fail(fmt.Errorf("monitoring agent: %w", err))
	}
}

// Run watches every host until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if len(a.Hosts) == 0 {
		return errors.New("monitoring agent: no hosts")
	}
	var wg sync.WaitGroup
	for _, h := range a.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.watch(ctx, h)
		}()
	}
	wg.Wait()
	return nil
}

// hostWatch is the agent's view of one host.
type hostWatch struct {
	t       Target
	running map[string]string // domains running there: name → UUID
	blind   bool
}

// watch keeps one host under watch until ctx ends.
func (a *Agent) watch(ctx context.Context, t Target) {
	hw := &hostWatch{t: t, running: map[string]string{}}
	if a.History != nil {
		last, ok, err := a.History.Last(ctx, Filter{Host: t.Name, Kinds: []Kind{MonitorBlind, MonitorSight}})
		a.fail(err)
		hw.blind = ok && last.Kind == MonitorBlind
	}
	lo, hi := a.MinBackoff, a.MaxBackoff
	if lo <= 0 {
		lo = DefaultMinBackoff
	}
	if hi < lo {
		hi = max(DefaultMaxBackoff, lo)
	}
	backoff := lo
	for ctx.Err() == nil {
		conn, events, err := a.connect(ctx, t)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			if !hw.blind {
				hw.blind = true
				a.record(ctx, Event{Kind: MonitorBlind, Host: t.Name, Source: SourceLibvirt, ObservedAt: a.now(),
					Detail: "cannot connect: " + err.Error()})
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, hi)
			continue
		}
		backoff = lo
		if hw.blind {
			hw.blind = false
			a.record(ctx, Event{Kind: MonitorSight, Host: t.Name, Source: SourceLibvirt, ObservedAt: a.now(),
				Detail: "connected to " + t.URI})
		}
		a.reread(ctx, hw, conn)
		if a.OnConnect != nil {
			a.OnConnect(t.Name)
		}
		reason, at := a.consume(ctx, hw, events)
		if ctx.Err() != nil {
			// Closing talks to the daemon: a hung one must not hold up the stop.
			go conn.Close()
			break
		}
		_ = conn.Close()
		a.lost(ctx, hw, reason, at)
	}
	if !hw.blind {
		// Stopping leaves the host unwatched until the next start.
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		a.record(bg, Event{Kind: MonitorBlind, Host: t.Name, Source: SourceLibvirt, ObservedAt: a.now(), Detail: "monitor stopped"})
		cancel()
	}
}

// connect dials the host and subscribes to its events.
func (a *Agent) connect(ctx context.Context, t Target) (virt.Host, <-chan virt.Event, error) {
	dial := a.Dial
	if dial == nil {
		dial = virt.Dial
	}
	timeout := a.DialTimeout
	if timeout <= 0 {
		timeout = DefaultAgentDialTimeout
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	conn, err := dial(dctx, t.URI)
	cancel()
	if err != nil {
		return nil, nil, err
	}
	events, err := conn.Subscribe(ctx)
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, events, nil
}

// consume handles the host's events until the stream ends; it returns why
// (libvirt's close reason) and when.
func (a *Agent) consume(ctx context.Context, hw *hostWatch, events <-chan virt.Event) (reason string, at time.Time) {
	for {
		select {
		case <-ctx.Done():
			return "", time.Time{}
		case ev, ok := <-events:
			if !ok {
				return "event stream ended", a.now()
			}
			switch ev.Kind {
			case virt.EventLifecycle:
				a.lifecycle(ctx, hw, ev)
			case virt.EventClosed:
				at := ev.At
				if at.IsZero() {
					at = a.now()
				}
				return ev.Reason, at
			}
		}
	}
}

// lost records the end of a connection: the blind interval starts.
func (a *Agent) lost(ctx context.Context, hw *hostWatch, reason string, at time.Time) {
	hostKind, vmKind, ok := ConnectionClosedKinds(reason)
	if !ok {
		// A close ferry asked for: nothing was lost, but the agent is
		// blind until it reconnects all the same.
		hostKind, vmKind = MonitorBlind, ""
	}
	hw.blind = true
	evs := []Event{{Kind: hostKind, Host: hw.t.Name, Source: SourceLibvirt, ObservedAt: at,
		Detail: "libvirt connection closed: " + reason}}
	if vmKind != "" {
		for _, name := range sortedKeys(hw.running) {
			evs = append(evs, Event{Kind: vmKind, Host: hw.t.Name, VMName: name, VMUUID: hw.running[name],
				Source: SourceLibvirt, ObservedAt: at, Detail: "libvirt connection to its host closed: " + reason})
		}
	}
	a.record(ctx, evs...)
}

// lifecycle records one lifecycle event.
func (a *Agent) lifecycle(ctx context.Context, hw *hostWatch, ev virt.Event) {
	switch ev.Lifecycle {
	case "started", "resumed":
		hw.running[ev.Domain] = ev.UUID
	case "stopped", "crashed":
		delete(hw.running, ev.Domain)
	}
	kind, postcopy, ok := LifecycleKind(ev.Lifecycle, ev.Detail)
	if !ok {
		return
	}
	at := ev.At
	if at.IsZero() {
		at = a.now()
	}
	e := Event{Kind: kind, Host: hw.t.Name, VMName: ev.Domain, VMUUID: ev.UUID, Source: SourceLibvirt,
		ObservedAt: at, Detail: "libvirt " + ev.Lifecycle + "/" + ev.Detail}
	e.CorrelationID = a.migrationAt(ctx, ev.Domain, ev.UUID, at)
	if e.CorrelationID == "" {
		if kind == VMStarted && a.lastKind(ctx, ev.Domain, ev.UUID) == VMFailure {
			e.Kind = VMReachable
			e.Detail += " after a failure"
		}
	}
	if postcopy {
		e.Payload = json.RawMessage(`{"postcopy":true}`)
	}
	a.record(ctx, e)
	if e.CorrelationID == "" {
		a.setLast(ev.Domain, ev.UUID, e.Kind)
	}
}

// reread records every domain's current state after a (re)connection.
func (a *Agent) reread(ctx context.Context, hw *hostWatch, conn virt.Host) {
	doms, err := conn.ListDomains()
	if err != nil {
		a.fail(fmt.Errorf("monitoring agent: %s: %w", hw.t.Name, err))
		return
	}
	sort.Slice(doms, func(i, j int) bool { return doms[i].Name < doms[j].Name })
	at := a.now()
	hw.running = map[string]string{}
	var evs []Event
	for _, d := range doms {
		if d.State == virt.StateRunning || d.State == virt.StateBlocked {
			hw.running[d.Name] = d.UUID
		}
		kind, postcopy, ok := StateKind(string(d.State), d.Reason)
		if !ok {
			continue
		}
		// A state read now belongs to a migration only while it is under
		// way: MigrationAt's grace is for events libvirt delivers late.
		corr := a.migrationAt(ctx, d.Name, d.UUID, at.Add(MigrationGrace))
		if kind != VMReachable {
			// Only what changed since the last record: a VM that has been
			// shut off for a month is not stopped again at every reconnect.
			last := a.lastKind(ctx, d.Name, d.UUID)
			if last == "" || last == kind || corr != "" {
				continue
			}
		}
		e := Event{Kind: kind, Host: hw.t.Name, VMName: d.Name, VMUUID: d.UUID, Source: SourceLibvirt,
			ObservedAt: at, CorrelationID: corr, Detail: "state re-read on connect: " + string(d.State)}
		if d.Reason != "" {
			e.Detail += "/" + d.Reason
		}
		if postcopy {
			e.Payload = json.RawMessage(`{"postcopy":true}`)
		}
		evs = append(evs, e)
		if corr == "" {
			a.setLast(d.Name, d.UUID, kind)
		}
	}
	a.record(ctx, evs...)
}

func (a *Agent) migrationAt(ctx context.Context, vm, vmUUID string, at time.Time) string {
	if a.History == nil {
		return ""
	}
	id, err := a.History.MigrationAt(ctx, vm, vmUUID, at)
	a.fail(err)
	return id
}

// lastKind is the last availability event recorded for the VM: by this agent,
// or else in the log.
func (a *Agent) lastKind(ctx context.Context, vm, vmUUID string) Kind {
	key := vm
	if key == "" {
		key = vmUUID
	}
	a.mu.Lock()
	k, ok := a.last[key]
	a.mu.Unlock()
	if ok || a.History == nil {
		return k
	}
	e, found, err := a.History.Last(ctx, Filter{VM: key, Kinds: availabilityKinds})
	a.fail(err)
	if found {
		k = e.Kind
	}
	a.setLast(vm, vmUUID, k)
	return k
}

func (a *Agent) setLast(vm, vmUUID string, k Kind) {
	key := vm
	if key == "" {
		key = vmUUID
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.last == nil {
		a.last = map[string]Kind{}
	}
	a.last[key] = k
}
