package sla

import (
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"
)

var threeVMs = []string{"vm1", "vm2", "vm3"}

// placed puts the VMs on host at T0 − 1 h (the agent's sighting on connect).
func placed(host string, vms ...string) []Event {
	var out []Event
	for _, vm := range vms {
		out = append(out, mk(VMReachable, host, vm, at(-time.Hour)))
	}
	return out
}

// Figures 8.8–8.9: a firewall fails at t1; the poller times out three
// times 20 s apart and declares PS_Unreachable at t2; the network recovers at
// t3 and the poller sees it at t4. The monitoring agent sees nothing.
var (
	nfTimeout1 = at(2 * time.Hour)
	nfT2       = nfTimeout1.Add(40 * time.Second)
	nfT4       = nfT2.Add(10 * time.Minute)
)

func networkFailure() []Event {
	return seq(placed("host-a", threeVMs...), []Event{
		mk(PSTimeout, "host-a", "", nfTimeout1),
		mk(PSTimeout, "host-a", "", nfTimeout1.Add(20*time.Second)),
		mk(PSTimeout, "host-a", "", nfTimeout1.Add(40*time.Second)),
		mk(PSUnreachable, "host-a", "", nfT2),
		mk(PSReachable, "host-a", "", nfT4),
	})
}

// Figures 8.10–8.11: the host fails at t1 (VM_Unreachable for each VM,
// PS_Timeouts), VM_Failure at t2, PS_Unreachable at t3, the host is back at
// t4, PS_Reachable at t5, VM_Reachable at t6.
var (
	hfT1 = at(5 * time.Hour)
	hfT2 = hfT1.Add(30 * time.Second)
	hfT3 = hfT1.Add(45 * time.Second)
	hfT5 = hfT1.Add(8 * time.Minute)
	hfT6 = hfT1.Add(9 * time.Minute)
)

func hostFailure() []Event {
	var evs []Event
	for _, vm := range threeVMs {
		evs = append(evs, mk(VMUnreachable, "host-b", vm, hfT1))
	}
	evs = append(evs,
		mk(PSTimeout, "host-b", "", hfT1.Add(5*time.Second)),
		mk(PSTimeout, "host-b", "", hfT1.Add(25*time.Second)),
		mk(PSTimeout, "host-b", "", hfT1.Add(45*time.Second)))
	for _, vm := range threeVMs {
		evs = append(evs, mk(VMFailure, "host-b", vm, hfT2))
	}
	evs = append(evs, mk(PSUnreachable, "host-b", "", hfT3), mk(PSReachable, "host-b", "", hfT5))
	for _, vm := range threeVMs {
		evs = append(evs, mk(VMReachable, "host-b", vm, hfT6))
	}
	return seq(placed("host-b", threeVMs...), evs)
}

func TestSeedNetworkFailure(t *testing.T) {
	for _, tc := range []struct {
		name     string
		backdate bool
		want     time.Duration
	}{
		{"t4-t2", false, nfT4.Sub(nfT2)},
		{"backdated to first timeout", true, nfT4.Sub(nfTimeout1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := opts()
			o.Backdate = tc.backdate
			r := mustCompute(t, networkFailure(), nil, period30, o)
			for _, vm := range threeVMs {
				e := mustVM(t, r, vm)
				checkConsistent(t, r, e)
				if e.Downtime != tc.want {
					t.Errorf("%s: downtime %v, want %v", vm, e.Downtime, tc.want)
				}
				if e.DowntimeLow != 10*time.Minute || e.DowntimeHigh != 10*time.Minute+40*time.Second {
					t.Errorf("%s: bounds [%v, %v], want [10m, 10m40s]", vm, e.DowntimeLow, e.DowntimeHigh)
				}
				if len(e.Intervals) != 1 {
					t.Fatalf("%s: intervals %+v", vm, e.Intervals)
				}
				iv := e.Intervals[0]
				if iv.Rule != RuleHostUnreachable || !iv.Unreachable.Equal(nfT2) || !iv.FirstTimeout.Equal(nfTimeout1) ||
					!iv.End.Equal(nfT4) || iv.Host != "host-a" || !reflect.DeepEqual(iv.EventIDs, []int64{4, 5, 6, 7, 8}) {
					t.Errorf("%s: interval %+v", vm, iv)
				}
			}
			h := mustHost(t, r, "host-a")
			checkConsistent(t, r, h)
			if h.Downtime != tc.want || !reflect.DeepEqual(h.VMs, threeVMs) {
				t.Errorf("host: downtime %v VMs %v", h.Downtime, h.VMs)
			}
		})
	}
}

func TestSeedHostFailure(t *testing.T) {
	r := mustCompute(t, hostFailure(), nil, period30, opts())
	for _, vm := range threeVMs {
		e := mustVM(t, r, vm)
		checkConsistent(t, r, e)
		if want := hfT6.Sub(hfT2); e.Downtime != want {
			t.Errorf("%s: downtime %v, want t6−t2 = %v", vm, e.Downtime, want)
		}
		// The poller interval t3..t5 lies inside t2..t6: one charged span.
		if len(e.Charged) != 1 || !e.Charged[0].Start.Equal(hfT2) || !e.Charged[0].End.Equal(hfT6) {
			t.Errorf("%s: charged %+v, want one span t2..t6", vm, e.Charged)
		}
		var rules []Rule
		for _, iv := range e.Intervals {
			rules = append(rules, iv.Rule)
		}
		if !reflect.DeepEqual(rules, []Rule{RuleVMFailure, RuleHostUnreachable}) {
			t.Errorf("%s: rules %v", vm, rules)
		}
	}
	h := mustHost(t, r, "host-b")
	checkConsistent(t, r, h)
	if want := hfT5.Sub(hfT3); h.Downtime != want {
		t.Errorf("host: downtime %v, want t5−t3 = %v", h.Downtime, want)
	}

	// Backdating reaches the first timeout, before t2.
	r = mustCompute(t, hostFailure(), nil, period30, opts(backdate))
	if e := mustVM(t, r, "vm2"); e.Downtime != hfT6.Sub(hfT1.Add(5*time.Second)) {
		t.Errorf("backdated: downtime %v", e.Downtime)
	}
}

func TestAvailabilityFigure(t *testing.T) {
	// 10 min down in 30 days → 99.9769 %, met; budget 21.6 min.
	r := mustCompute(t, networkFailure(), nil, period30, opts())
	e := mustVM(t, r, "vm1")
	if e.Eligible != 30*24*time.Hour || e.Downtime != 10*time.Minute {
		t.Fatalf("eligible %v downtime %v", e.Eligible, e.Downtime)
	}
	if math.Abs(e.Availability-99.9769) > 0.00005 {
		t.Errorf("availability %.6f, want 99.9769", e.Availability)
	}
	if e.Target != 99.95 || e.Budget != 21*time.Minute+36*time.Second ||
		e.BudgetUsed != 10*time.Minute || e.BudgetLeft != 11*time.Minute+36*time.Second || !e.Met {
		t.Errorf("budget: %+v", e)
	}

	// 25 min in 30 days misses it.
	evs := seq(placed("host-a", "vm1"), []Event{
		mk(PSUnreachable, "host-a", "", at(time.Hour)),
		mk(PSReachable, "host-a", "", at(time.Hour+25*time.Minute)),
	})
	e = mustVM(t, mustCompute(t, evs, nil, period30, opts()), "vm1")
	if e.Met || e.BudgetLeft != -3*time.Minute-24*time.Second {
		t.Errorf("25 min: met %v left %v availability %.4f", e.Met, e.BudgetLeft, e.Availability)
	}
}

// scenario checks the downtime of VMs and hosts for one event history.
type scenario struct {
	name   string
	events []Event
	maint  []Maintenance
	opts   Options
	vms    map[string]time.Duration
	hosts  map[string]time.Duration
	// eligible, when set, is checked for every VM in vms.
	eligible time.Duration
	check    func(t *testing.T, r Report)
}

func hasRule(e Entry, rule Rule, class Class) bool {
	for _, iv := range e.Intervals {
		if iv.Rule == rule && iv.Class == class {
			return true
		}
	}
	return false
}

func TestScenarios(t *testing.T) {
	day := 24 * time.Hour
	t1 := at(3 * time.Hour)
	scenarios := []scenario{
		{
			name: "two timeouts then success: no outage",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(PSTimeout, "host-a", "", t1),
				mk(PSTimeout, "host-a", "", t1.Add(20*time.Second)),
				// An hour later a real outage: its backdate must not reach the old run.
				mk(PSTimeout, "host-a", "", t1.Add(time.Hour)),
				mk(PSTimeout, "host-a", "", t1.Add(time.Hour+20*time.Second)),
				mk(PSTimeout, "host-a", "", t1.Add(time.Hour+40*time.Second)),
				mk(PSUnreachable, "host-a", "", t1.Add(time.Hour+40*time.Second)),
				mk(PSReachable, "host-a", "", t1.Add(time.Hour+2*time.Minute)),
			}),
			opts:  opts(backdate),
			vms:   map[string]time.Duration{"vm1": 2 * time.Minute},
			hosts: map[string]time.Duration{"host-a": 2 * time.Minute},
			check: func(t *testing.T, r Report) {
				h := mustHost(t, r, "host-a")
				if !hasRule(h, RuleTimeoutRecovered, ClassInfo) {
					t.Errorf("false positive not listed: %+v", h.Intervals)
				}
			},
		},
		{
			name: "timeouts only",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(PSTimeout, "host-a", "", t1),
				mk(PSTimeout, "host-a", "", t1.Add(20*time.Second)),
			}),
			opts:  opts(backdate),
			vms:   map[string]time.Duration{"vm1": 0},
			hosts: map[string]time.Duration{"host-a": 0},
		},
		{
			name: "monitoring partition: hypervisor events during the poller outage",
			events: seq(placed("host-a", "vm1", "vm2"), []Event{
				mk(PSUnreachable, "host-a", "", t1),
				mk(VMReachable, "host-a", "vm2", t1.Add(3*time.Minute)),
				mk(PSReachable, "host-a", "", t1.Add(10*time.Minute)),
			}),
			opts:  opts(),
			vms:   map[string]time.Duration{"vm1": 0, "vm2": 0},
			hosts: map[string]time.Duration{"host-a": 0},
			check: func(t *testing.T, r Report) {
				for _, e := range []Entry{mustHost(t, r, "host-a"), mustVM(t, r, "vm1")} {
					if !hasRule(e, RulePartition, ClassPartition) {
						t.Errorf("%s: partition not reported: %+v", e.Name, e.Intervals)
					}
				}
			},
		},
		{
			name: "hypervisor sees the recovery just before the poller: still an outage",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(PSUnreachable, "host-a", "", t1),
				mk(VMReachable, "host-a", "vm1", t1.Add(10*time.Minute-15*time.Second)),
				mk(PSReachable, "host-a", "", t1.Add(10*time.Minute)),
			}),
			opts:  opts(),
			vms:   map[string]time.Duration{"vm1": 10 * time.Minute},
			hosts: map[string]time.Duration{"host-a": 10 * time.Minute},
		},
		{
			name: "poller events from another host do not contradict",
			events: seq(placed("host-a", "vm1"), placed("host-c", "vm9"), []Event{
				mk(PSUnreachable, "host-a", "", t1),
				mk(VMStarted, "host-c", "vm9", t1.Add(time.Minute)),
				mk(PSReachable, "host-a", "", t1.Add(10*time.Minute)),
			}),
			opts:  opts(),
			vms:   map[string]time.Duration{"vm1": 10 * time.Minute, "vm9": 0},
			hosts: map[string]time.Duration{"host-a": 10 * time.Minute, "host-c": 0},
		},
		{
			name: "overlapping outages are merged",
			events: seq(placed("host-a", "vm1", "vm2"), []Event{
				mk(VMFailure, "host-a", "vm1", t1),
				// A migration pause inside the failure adds nothing.
				mk(MigrationPlanned, "host-a", "vm1", t1.Add(2*time.Minute), corr("m1")),
				mk(MigrationCompleted, "host-a", "vm1", t1.Add(3*time.Minute), corr("m1"), payload(`{"downtime_ms": 500}`)),
				mk(PSUnreachable, "host-a", "", t1.Add(5*time.Minute)),
				// Seen by the agent just before the poller: recovery, not contradiction.
				mk(VMReachable, "host-a", "vm1", t1.Add(19*time.Minute+40*time.Second)),
				mk(PSReachable, "host-a", "", t1.Add(20*time.Minute)),
			}),
			opts:  opts(),
			vms:   map[string]time.Duration{"vm1": 20 * time.Minute, "vm2": 15 * time.Minute},
			hosts: map[string]time.Duration{"host-a": 15 * time.Minute},
			check: func(t *testing.T, r Report) {
				if e := mustVM(t, r, "vm1"); len(e.Charged) != 1 {
					t.Errorf("charged %+v", e.Charged)
				}
			},
		},
		{
			name: "maintenance declared in advance is excluded",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(PSUnreachable, "host-a", "", t1.Add(10*time.Minute)),
				mk(PSReachable, "host-a", "", t1.Add(20*time.Minute)),
				// Half inside the window: only the outside half counts.
				mk(VMFailure, "host-a", "vm1", t1.Add(50*time.Minute)),
				mk(VMReachable, "host-a", "vm1", t1.Add(70*time.Minute)),
			}),
			maint: []Maintenance{{ID: 7, Host: "host-a", From: t1, To: t1.Add(time.Hour),
				Reason: "kernel update", DeclaredAt: t1.Add(-day)}},
			opts:     opts(),
			vms:      map[string]time.Duration{"vm1": 10 * time.Minute},
			hosts:    map[string]time.Duration{"host-a": 0},
			eligible: 30*day - time.Hour,
			check: func(t *testing.T, r Report) {
				if h := mustHost(t, r, "host-a"); h.Eligible != 30*day-time.Hour {
					t.Errorf("host eligible %v", h.Eligible)
				}
			},
		},
		{
			name: "maintenance declared after the fact is not excluded",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(PSUnreachable, "host-a", "", t1.Add(10*time.Minute)),
				mk(PSReachable, "host-a", "", t1.Add(20*time.Minute)),
			}),
			maint: []Maintenance{{ID: 8, Host: "host-a", From: t1, To: t1.Add(time.Hour),
				Reason: "oops", DeclaredAt: t1.Add(30 * time.Minute)}},
			opts:     opts(),
			vms:      map[string]time.Duration{"vm1": 10 * time.Minute},
			hosts:    map[string]time.Duration{"host-a": 10 * time.Minute},
			eligible: 30 * day,
			check: func(t *testing.T, r Report) {
				if !hasRule(mustVM(t, r, "vm1"), RuleMaintenanceLate, ClassInfo) {
					t.Error("late window not listed")
				}
			},
		},
		{
			name: "VM-scoped maintenance",
			events: seq(placed("host-a", "vm1", "vm2"), []Event{
				mk(VMFailure, "host-a", "vm1", t1),
				mk(VMReachable, "host-a", "vm1", t1.Add(30*time.Minute)),
				mk(VMFailure, "host-a", "vm2", t1),
				mk(VMReachable, "host-a", "vm2", t1.Add(30*time.Minute)),
			}),
			maint: []Maintenance{{ID: 9, VM: "vm1", From: t1, To: t1.Add(time.Hour), DeclaredAt: t1}},
			opts:  opts(),
			vms:   map[string]time.Duration{"vm1": 0, "vm2": 30 * time.Minute},
		},
		{
			name: "migration pause charged by default",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(MigrationPlanned, "host-a", "vm1", t1, corr("m1")),
				mk(MigrationSwitchover, "host-a", "vm1", t1.Add(time.Minute), corr("m1")),
				mk(VMReachable, "host-b", "vm1", t1.Add(time.Minute+time.Second), corr("m1")),
				mk(VMStopped, "host-a", "vm1", t1.Add(time.Minute+2*time.Second), corr("m1")),
				mk(MigrationCompleted, "host-b", "vm1", t1.Add(time.Minute+3*time.Second), corr("m1"),
					payload(`{"downtime_ms": 350, "source": "host-a", "destination": "host-b"}`)),
				// Later outages: host-a no longer matters to vm1, host-b does.
				mk(PSUnreachable, "host-a", "", t1.Add(time.Hour)),
				mk(PSReachable, "host-a", "", t1.Add(2*time.Hour)),
				mk(PSUnreachable, "host-b", "", t1.Add(3*time.Hour)),
				mk(PSReachable, "host-b", "", t1.Add(3*time.Hour+time.Minute)),
			}),
			opts:     opts(),
			vms:      map[string]time.Duration{"vm1": 350*time.Millisecond + time.Minute},
			eligible: 30 * day, // the source's VM_Stopped is migration teardown
			check: func(t *testing.T, r Report) {
				e := mustVM(t, r, "vm1")
				if !reflect.DeepEqual(e.Hosts, []string{"host-a", "host-b"}) {
					t.Errorf("hosts %v", e.Hosts)
				}
				if h := mustHost(t, r, "host-b"); !slices.Contains(h.VMs, "vm1") {
					t.Errorf("host-b VMs %v", h.VMs)
				}
			},
		},
		{
			name: "migration pause not charged by option",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(MigrationPlanned, "host-a", "vm1", t1, corr("m1")),
				mk(MigrationCompleted, "host-b", "vm1", t1.Add(time.Minute), corr("m1"), payload(`{"downtime_ms": 350}`)),
			}),
			opts: opts(func(o *Options) { o.ChargeMigrationPause = false }),
			vms:  map[string]time.Duration{"vm1": 0},
			check: func(t *testing.T, r Report) {
				if !hasRule(mustVM(t, r, "vm1"), RuleMigrationPause, ClassInfo) {
					t.Error("uncharged pause not listed")
				}
			},
		},
		{
			name: "lifecycle failure of a pre-copy migration is not a failure",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(MigrationPlanned, "host-a", "vm1", t1, corr("m1")),
				mk(VMFailure, "host-b", "vm1", t1.Add(time.Minute), corr("m1")),
				mk(MigrationFailed, "host-a", "vm1", t1.Add(2*time.Minute), corr("m1")),
				mk(MigrationRolledBack, "host-a", "vm1", t1.Add(3*time.Minute), corr("m1")),
			}),
			opts: opts(),
			vms:  map[string]time.Duration{"vm1": 0},
			check: func(t *testing.T, r Report) {
				if !hasRule(mustVM(t, r, "vm1"), RuleMigrationLifecycle, ClassInfo) {
					t.Error("suppressed failure not listed")
				}
			},
		},
		{
			name: "correlation id of an unknown migration does not hide a failure",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(VMFailure, "host-a", "vm1", t1, corr("nope")),
				mk(VMReachable, "host-a", "vm1", t1.Add(time.Minute)),
			}),
			opts: opts(),
			vms:  map[string]time.Duration{"vm1": time.Minute},
		},
		{
			name: "failed post-copy is a failure",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(MigrationPlanned, "host-a", "vm1", t1, corr("m1")),
				mk(MigrationSwitchover, "host-a", "vm1", t1.Add(time.Minute), corr("m1"), payload(`{"postcopy": true}`)),
				mk(MigrationFailed, "host-a", "vm1", t1.Add(2*time.Minute), corr("m1"), payload(`{"postcopy": true}`)),
				mk(VMReachable, "host-a", "vm1", t1.Add(7*time.Minute)),
			}),
			opts: opts(),
			vms:  map[string]time.Duration{"vm1": 5 * time.Minute},
			check: func(t *testing.T, r Report) {
				if !hasRule(mustVM(t, r, "vm1"), RulePostcopyFailure, ClassDowntime) {
					t.Error("post-copy failure rule missing")
				}
			},
		},
		{
			name: "VM_Failure during post-copy is a failure even when correlated",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(MigrationPlanned, "host-a", "vm1", t1, corr("m1")),
				mk(MigrationSwitchover, "host-a", "vm1", t1.Add(time.Minute), corr("m1"), payload(`{"postcopy": true}`)),
				mk(VMFailure, "host-b", "vm1", t1.Add(90*time.Second), corr("m1")),
				mk(MigrationFailed, "host-a", "vm1", t1.Add(2*time.Minute), corr("m1")),
				mk(VMReachable, "host-a", "vm1", t1.Add(7*time.Minute)),
			}),
			opts: opts(),
			vms:  map[string]time.Duration{"vm1": 5*time.Minute + 30*time.Second},
		},
		{
			name: "owner-stopped time is not eligible",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(VMStopped, "host-a", "vm1", t1),
				mk(PSUnreachable, "host-a", "", t1.Add(time.Hour)),
				mk(PSReachable, "host-a", "", t1.Add(2*time.Hour)),
				mk(VMStarted, "host-a", "vm1", t1.Add(day)),
				mk(VMFailure, "host-a", "vm1", t1.Add(2*day)),
				mk(VMStopped, "host-a", "vm1", t1.Add(2*day+time.Minute)), // owner gives up
			}),
			opts:     opts(),
			vms:      map[string]time.Duration{"vm1": time.Minute},
			hosts:    map[string]time.Duration{"host-a": time.Hour},
			eligible: 3*time.Hour + day + time.Minute, // T0..t1 plus t1+1d..t1+2d+1m
		},
		{
			name: "open outage runs to the period end",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(VMFailure, "host-a", "vm1", period30.To.Add(-time.Hour)),
			}),
			opts: opts(),
			vms:  map[string]time.Duration{"vm1": time.Hour},
			check: func(t *testing.T, r Report) {
				if e := mustVM(t, r, "vm1"); !e.Intervals[0].Open {
					t.Errorf("interval not marked open: %+v", e.Intervals[0])
				}
			},
		},
		{
			name: "open outage runs to now when the period is not over",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(PSUnreachable, "host-a", "", at(9*day)),
				mk(PSReachable, "host-a", "", at(12*day)), // not yet observed: after now
			}),
			opts:     opts(func(o *Options) { o.Now = func() time.Time { return at(10 * day) } }),
			vms:      map[string]time.Duration{"vm1": day},
			hosts:    map[string]time.Duration{"host-a": day},
			eligible: 10 * day,
		},
		{
			name: "outage that began before the period is clipped",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(PSUnreachable, "host-a", "", at(-30*time.Minute)),
				mk(PSReachable, "host-a", "", at(15*time.Minute)),
			}),
			opts:  opts(backdate),
			vms:   map[string]time.Duration{"vm1": 15 * time.Minute},
			hosts: map[string]time.Duration{"host-a": 15 * time.Minute},
		},
		{
			name: "VM_Unreachable alone is not downtime",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(VMUnreachable, "host-a", "vm1", t1),
				mk(VMReachable, "host-a", "vm1", t1.Add(5*time.Minute)),
			}),
			opts: opts(),
			vms:  map[string]time.Duration{"vm1": 0},
		},
		{
			name: "a VM is affected only while it is on the host",
			events: seq(placed("host-b", "vm1"), []Event{
				mk(PSUnreachable, "host-b", "", t1),
				// Evacuated to host-a (the destination names the host).
				mk(MigrationCompleted, "host-a", "vm1", t1.Add(10*time.Minute), corr("m1"), payload(`{"downtime_ms": 0}`)),
				mk(PSReachable, "host-b", "", t1.Add(30*time.Minute)),
			}),
			opts:  opts(),
			vms:   map[string]time.Duration{"vm1": 10 * time.Minute},
			hosts: map[string]time.Duration{"host-b": 30 * time.Minute},
		},
		{
			name: "monitor blind interval is listed, not charged",
			events: seq(placed("host-a", "vm1"), []Event{
				mk(MonitorBlind, "host-a", "", t1),
				mk(MonitorSight, "host-a", "", t1.Add(time.Hour)),
			}),
			opts:  opts(),
			vms:   map[string]time.Duration{"vm1": 0},
			hosts: map[string]time.Duration{"host-a": 0},
			check: func(t *testing.T, r Report) {
				if !hasRule(mustVM(t, r, "vm1"), RuleMonitorBlind, ClassInfo) || !hasRule(mustHost(t, r, "host-a"), RuleMonitorBlind, ClassInfo) {
					t.Error("blind interval not listed")
				}
			},
		},
		{
			name: "VM known by UUID only in some events",
			events: seq([]Event{
				{Kind: VMReachable, Host: "host-a", VMName: "vm1", VMUUID: "6c1f0a8e-1f0e-4d43-9a70-2f8f3c1d2b11", Source: SourceLibvirt, ObservedAt: at(-time.Hour)},
				{Kind: VMFailure, Host: "host-a", VMUUID: "6c1f0a8e-1f0e-4d43-9a70-2f8f3c1d2b11", Source: SourceLibvirt, ObservedAt: t1},
				{Kind: VMReachable, Host: "host-a", VMUUID: "6c1f0a8e-1f0e-4d43-9a70-2f8f3c1d2b11", Source: SourceLibvirt, ObservedAt: t1.Add(time.Minute)},
			}),
			opts: opts(),
			vms:  map[string]time.Duration{"vm1": time.Minute},
		},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			r := mustCompute(t, sc.events, sc.maint, period30, sc.opts)
			for name, want := range sc.vms {
				e := mustVM(t, r, name)
				checkConsistent(t, r, e)
				if e.Downtime != want {
					t.Errorf("VM %s: downtime %v, want %v; intervals %+v", name, e.Downtime, want, e.Intervals)
				}
				if sc.eligible != 0 && e.Eligible != sc.eligible {
					t.Errorf("VM %s: eligible %v, want %v", name, e.Eligible, sc.eligible)
				}
			}
			for name, want := range sc.hosts {
				e := mustHost(t, r, name)
				checkConsistent(t, r, e)
				if e.Downtime != want {
					t.Errorf("host %s: downtime %v, want %v; intervals %+v", name, e.Downtime, want, e.Intervals)
				}
			}
			if len(r.VMs) != len(sc.vms) {
				var names []string
				for _, e := range r.VMs {
					names = append(names, e.Name)
				}
				t.Errorf("VM entries %v, want %d", names, len(sc.vms))
			}
			if sc.check != nil {
				sc.check(t, r)
			}
			// Every scenario must give the same report whatever the delivery order.
			shuffled := slices.Clone(sc.events)
			rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if r2 := mustCompute(t, shuffled, sc.maint, period30, sc.opts); !reflect.DeepEqual(stripFuncs(r), stripFuncs(r2)) {
				t.Error("shuffled delivery changed the report")
			}
		})
	}
}

func stripFuncs(r Report) Report { r.Options.Now = nil; return r }

func TestOutOfOrderAndDuplicateDelivery(t *testing.T) {
	base := hostFailure()
	want := mustCompute(t, base, nil, period30, opts())

	// Reversed delivery, numbered in delivery order as the log would: the
	// figures and intervals are the same, only event ids differ.
	rev := slices.Clone(base)
	slices.Reverse(rev)
	rev = seq(rev)
	got := mustCompute(t, rev, nil, period30, opts())
	if !reflect.DeepEqual(figures(want), figures(got)) {
		t.Errorf("reversed delivery:\n got %+v\nwant %+v", figures(got), figures(want))
	}

	// Every event delivered twice (re-delivery gets a new id): no change.
	dup := seq(base, base)
	got = mustCompute(t, dup, nil, period30, opts())
	if !reflect.DeepEqual(stripFuncs(want), stripFuncs(got)) {
		t.Errorf("duplicate delivery changed the report:\n got %+v\nwant %+v", figures(got), figures(want))
	}
}

// figures drops event ids from a report.
func figures(r Report) Report {
	r.Options.Now = nil
	r.VMs, r.Hosts = slices.Clone(r.VMs), slices.Clone(r.Hosts)
	for _, es := range [][]Entry{r.VMs, r.Hosts} {
		for i := range es {
			ivs := slices.Clone(es[i].Intervals)
			for j := range ivs {
				ivs[j].EventIDs = nil
			}
			es[i].Intervals = ivs
		}
	}
	return r
}

func TestComputeRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		p Period
		o Options
	}{
		{Period{}, opts()},
		{Period{From: T0, To: T0}, opts()},
		{period30, opts(func(o *Options) { o.Target = 120 })},
		{period30, opts(func(o *Options) { o.Target = -1 })},
	} {
		if _, err := Compute(nil, nil, tc.p, tc.o); err == nil {
			t.Errorf("Compute(%+v, target %v): no error", tc.p, tc.o.Target)
		}
	}
}

func TestSpans(t *testing.T) {
	s := func(a, b int) Span {
		return Span{at(time.Duration(a) * time.Minute), at(time.Duration(b) * time.Minute)}
	}
	u := union([]Span{s(5, 10), s(0, 2), s(1, 3), s(10, 12), s(20, 20)})
	if want := []Span{s(0, 3), s(5, 12)}; !reflect.DeepEqual(u, want) {
		t.Errorf("union %v", u)
	}
	d := subtract([]Span{s(0, 10), s(20, 30)}, []Span{s(2, 4), s(6, 22), s(25, 40)})
	if want := []Span{s(0, 2), s(4, 6), s(22, 25)}; !reflect.DeepEqual(d, want) {
		t.Errorf("subtract %v", d)
	}
}
