// Report types and the entry point, Compute. The correlation itself lives in
// correlator.go (shared state), correlate_load.go (indexing the events),
// correlate_hosts.go (host outages), correlate_vms.go (VM intervals) and
// figures.go (an entry's figures).

package sla

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// DefaultTarget is the availability target of the standard SLA, in percent.
const DefaultTarget = 99.95

// DefaultPollInterval is the polling agent's period.
const DefaultPollInterval = 20 * time.Second

// Period is the reporting period [From, To).
type Period struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// Options is the reporting policy. Use DefaultOptions: the zero value does not
// charge migration pauses.
type Options struct {
	// Target availability in percent; 0 means DefaultTarget.
	Target float64 `json:"target"`
	// Backdate starts a poller-detected outage at the first PS_Timeout of its
	// sequence instead of at PS_Unreachable. Reports show both bounds anyway.
	Backdate bool `json:"backdate"`
	// ChargeMigrationPause charges a completed migration's switchover pause
	// (payload downtime_ms) as downtime. On by default.
	ChargeMigrationPause bool `json:"charge_migration_pause"`
	// PollInterval is the polling agent's period (0 means DefaultPollInterval).
	// Timeouts more than two intervals apart belong to different sequences.
	PollInterval time.Duration `json:"poll_interval_ns"`
	// Now is the clock (nil means time.Now). A report never counts time after
	// now: open intervals and eligible time end at min(period end, now).
	Now func() time.Time `json:"-"`
}

// DefaultOptions is the standard policy: 99.95 %, no backdating, migration
// pauses charged, 20 s polling.
func DefaultOptions() Options {
	return Options{Target: DefaultTarget, ChargeMigrationPause: true, PollInterval: DefaultPollInterval}
}

// Class says how an interval counts.
type Class string

// Interval classes.
const (
	// ClassDowntime counts as downtime (after merging and exclusions).
	ClassDowntime Class = "downtime"
	// ClassExcluded is not eligible time: maintenance declared in advance,
	// owner-stopped time.
	ClassExcluded Class = "excluded"
	// ClassPartition is a poller outage contradicted by live hypervisor
	// events: a monitoring partition, not downtime.
	ClassPartition Class = "partition"
	// ClassInfo is shown for audit and counts for nothing: false-positive
	// timeouts, blind monitors, uncharged pauses, late maintenance.
	ClassInfo Class = "info"
)

// Rule names the correlation rule that produced an interval.
type Rule string

// Rules.
const (
	RuleVMFailure          Rule = "vm-failure"           // VM_Failure → VM_Reachable/VM_Started/VM_Stopped
	RuleHostUnreachable    Rule = "host-unreachable"     // PS_Unreachable → PS_Reachable, not contradicted
	RulePartition          Rule = "monitoring-partition" // PS_Unreachable → PS_Reachable with live hypervisor events inside
	RuleTimeoutRecovered   Rule = "timeout-recovered"    // PS_Timeout run without PS_Unreachable
	RuleMigrationPause     Rule = "migration-pause"      // Migration_Completed downtime_ms
	RulePostcopyFailure    Rule = "postcopy-failure"     // Migration_Failed{postcopy} or VM_Failure during post-copy
	RuleMaintenance        Rule = "maintenance"          // window declared in advance
	RuleMaintenanceLate    Rule = "maintenance-late"     // window declared after its start: not excluded
	RuleOwnerStopped       Rule = "owner-stopped"        // VM_Stopped → VM_Started
	RuleMonitorBlind       Rule = "monitor-blind"        // Monitor_Blind → Monitor_Sight
	RuleMigrationLifecycle Rule = "migration-lifecycle"  // VM_Failure of a known migration: not a failure
)

// Interval is one interval behind a figure, clipped to the report's window.
type Interval struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Class Class     `json:"class"`
	Rule  Rule      `json:"rule"`
	Cause string    `json:"cause"`
	// Host the interval is about (the VM's host for host-derived intervals).
	Host          string `json:"host,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	// EventIDs are the events behind the interval.
	EventIDs []int64 `json:"event_ids"`
	// Open: no closing event yet; the interval runs to the report's end.
	Open bool `json:"open,omitempty"`
	// Both readings of a host-unreachable start: PS_Unreachable and the first
	// PS_Timeout of its sequence. Start is one of them, per Options.Backdate.
	Unreachable  time.Time `json:"unreachable,omitzero"`
	FirstTimeout time.Time `json:"first_timeout,omitzero"`
	// MaintenanceID is the window behind a maintenance interval.
	MaintenanceID int64 `json:"maintenance_id,omitempty"`
}

// Duration of the interval.
func (iv Interval) Duration() time.Duration { return Span{iv.Start, iv.End}.Duration() }

// Entry is the availability of one VM or one host over the report's window.
//
// Eligible = window − ∪(excluded); Charged = ∪(downtime) − ∪(excluded), whose
// total is Downtime; Availability = 100 × (1 − Downtime/Eligible) (100 when
// nothing was eligible); Budget = Eligible × (100 − Target)/100; Met when
// Downtime ≤ Budget.
type Entry struct {
	Scope string `json:"scope"` // "vm" or "host"
	Name  string `json:"name"`
	UUID  string `json:"uuid,omitempty"`
	// Hosts the VM ran on during the window; VMs seen on the host.
	Hosts []string `json:"hosts,omitempty"`
	VMs   []string `json:"vms,omitempty"`

	Eligible time.Duration `json:"eligible_ns"`
	Downtime time.Duration `json:"downtime_ns"`
	// The two bounds of Downtime: host-unreachable intervals read from
	// PS_Unreachable (low) or from the first PS_Timeout (high).
	DowntimeLow  time.Duration `json:"downtime_low_ns"`
	DowntimeHigh time.Duration `json:"downtime_high_ns"`

	Availability float64       `json:"availability"`
	Target       float64       `json:"target"`
	Budget       time.Duration `json:"budget_ns"`
	BudgetUsed   time.Duration `json:"budget_used_ns"`
	BudgetLeft   time.Duration `json:"budget_left_ns"`
	Met          bool          `json:"met"`

	Charged   []Span     `json:"charged"`
	Intervals []Interval `json:"intervals"`
}

// Report is the availability of every VM and host over a period.
type Report struct {
	Period Period `json:"period"`
	// End is min(Period.To, now): the window is [Period.From, End).
	End     time.Time `json:"end"`
	Options Options   `json:"options"`
	VMs     []Entry   `json:"vms"`
	Hosts   []Entry   `json:"hosts"`
}

// VM returns the entry of the named VM.
func (r *Report) VM(name string) (Entry, bool) { return find(r.VMs, name) }

// Host returns the entry of the named host.
func (r *Report) Host(name string) (Entry, bool) { return find(r.Hosts, name) }

func find(es []Entry, name string) (Entry, bool) {
	for _, e := range es {
		if e.Name == name || (e.UUID != "" && e.UUID == name) {
			return e, true
		}
	}
	return Entry{}, false
}

// Compute correlates events into per-VM and per-host availability over p.
// It is a pure function of its arguments (and opts.Now): event order and
// duplicates (same dedup key) do not change the result. Events before p.From
// carry the state the period starts in. See the package documentation for
// the rules.
func Compute(events []Event, maintenance []Maintenance, p Period, opts Options) (Report, error) {
	opts, err := resolveOptions(p, opts)
	if err != nil {
		return Report{}, err
	}
	end := reportEnd(p, opts.Now)
	c := newCorrelator(Span{p.From, end}, opts)
	c.load(events)
	c.correlateHosts()
	r := Report{Period: p, End: end, Options: opts}
	for _, name := range sortedKeys(c.vms) {
		r.VMs = append(r.VMs, c.vmEntry(c.vms[name], maintenance))
	}
	for _, name := range sortedKeys(c.hosts) {
		r.Hosts = append(r.Hosts, c.hostEntry(name, c.hosts[name], maintenance))
	}
	return r, nil
}

// resolveOptions checks p and opts and fills in opts' defaults.
func resolveOptions(p Period, opts Options) (Options, error) {
	if p.From.IsZero() || p.To.IsZero() {
		return opts, errors.New("sla: report: period needs from and to")
	}
	if !p.To.After(p.From) {
		return opts, fmt.Errorf("sla: report: period end %s is not after its start %s", p.To, p.From)
	}
	if opts.Target == 0 {
		opts.Target = DefaultTarget
	}
	if opts.Target < 0 || opts.Target > 100 || math.IsNaN(opts.Target) {
		return opts, fmt.Errorf("sla: report: target %v%% is not a percentage", opts.Target)
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	return opts, nil
}

// reportEnd is min(p.To, now), but not before p.From: a report never counts
// time that has not happened yet.
func reportEnd(p Period, now func() time.Time) time.Time {
	if now == nil {
		now = time.Now
	}
	end := p.To
	if t := now(); t.Before(end) {
		end = t
	}
	if end.Before(p.From) {
		end = p.From
	}
	return end
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
