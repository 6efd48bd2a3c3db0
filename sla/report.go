package sla

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
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

// rec is an event with what the correlation needs precomputed.
type rec struct {
	*Event
	t    int64 // ObservedAt in Unix ns, for sorting
	rank int
	key  string // dedup key
	vm   string // resolved VM identity ("" if none)
}

type migration struct {
	vm           string
	postcopy     bool
	postcopyFrom time.Time
	end          time.Time
	ended        bool
}

func (m *migration) inPostcopy(t time.Time) bool {
	return m.postcopy && !t.Before(m.postcopyFrom) && (!m.ended || !t.After(m.end))
}

type residency struct {
	from time.Time
	host string
}

type outage struct {
	unreachable, firstTimeout, end time.Time
	open                           bool
	ids                            []int64
	live                           []int64 // contradicting events
}

type hostState struct {
	poller  []*rec
	monitor []*rec
	live    []*rec
	outages []outage
	runs    []Interval // false-positive timeout runs
	blind   []Interval
	vms     map[string]bool
}

type vmState struct {
	name, uuid string
	events     []*rec
	res        []residency
	migs       []*migration
}

// Compute correlates events into per-VM and per-host availability over p.
// It is a pure function of its arguments (and opts.Now): event order and
// duplicates (same dedup key) do not change the result. Events before p.From
// carry the state the period starts in. See the package documentation for
// the rules.
func Compute(events []Event, maintenance []Maintenance, p Period, opts Options) (Report, error) {
	if p.From.IsZero() || p.To.IsZero() {
		return Report{}, errors.New("sla: report: period needs from and to")
	}
	if !p.To.After(p.From) {
		return Report{}, fmt.Errorf("sla: report: period end %s is not after its start %s", p.To, p.From)
	}
	if opts.Target == 0 {
		opts.Target = DefaultTarget
	}
	if opts.Target < 0 || opts.Target > 100 || math.IsNaN(opts.Target) {
		return Report{}, fmt.Errorf("sla: report: target %v%% is not a percentage", opts.Target)
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	end := p.To
	if t := now(); t.Before(end) {
		end = t
	}
	if end.Before(p.From) {
		end = p.From
	}
	c := &correlator{
		w:     Span{p.From, end},
		opts:  opts,
		tol:   2 * opts.PollInterval,
		migs:  map[string]*migration{},
		hosts: map[string]*hostState{},
		vms:   map[string]*vmState{},
	}
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

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

type correlator struct {
	w     Span
	opts  Options
	tol   time.Duration
	migs  map[string]*migration
	hosts map[string]*hostState
	vms   map[string]*vmState
}

func (c *correlator) host(name string) *hostState {
	h := c.hosts[name]
	if h == nil {
		h = &hostState{vms: map[string]bool{}}
		c.hosts[name] = h
	}
	return h
}

func compareRecs(a, b rec) int {
	if a.t != b.t {
		return cmp.Compare(a.t, b.t)
	}
	return cmp.Or(
		cmp.Compare(a.rank, b.rank),
		cmp.Compare(a.Host, b.Host),
		cmp.Compare(a.VMName, b.VMName),
		cmp.Compare(a.VMUUID, b.VMUUID),
		cmp.Compare(a.Source, b.Source),
		cmp.Compare(a.CorrelationID, b.CorrelationID),
		cmp.Compare(a.key, b.key),
		cmp.Compare(a.ID, b.ID),
	)
}

// load sorts and dedups the events, resolves VM identities, and indexes
// migrations, per-host and per-VM event lists and VM residency.
func (c *correlator) load(events []Event) {
	all := make([]rec, 0, len(events))
	for i := range events {
		e := &events[i]
		if !e.Kind.Known() || e.ObservedAt.IsZero() || !e.ObservedAt.Before(c.w.End) {
			continue
		}
		all = append(all, rec{Event: e, t: e.ObservedAt.UnixNano(), key: e.Key(), rank: kindRank[e.Kind]})
	}
	slices.SortFunc(all, compareRecs)
	seen := make(map[string]struct{}, len(all))
	uuidName := map[string]string{}
	recs := make([]*rec, 0, len(all))
	for i := range all {
		r := &all[i]
		if _, dup := seen[r.key]; dup {
			continue
		}
		seen[r.key] = struct{}{}
		recs = append(recs, r)
		if r.VMName != "" && r.VMUUID != "" {
			uuidName[r.VMUUID] = r.VMName
		}
	}

	for _, r := range recs {
		switch {
		case r.VMName != "":
			r.vm = r.VMName
		case r.VMUUID != "":
			r.vm = cmp.Or(uuidName[r.VMUUID], r.VMUUID)
		}
		if r.Kind.isMigration() {
			m := c.migs[r.CorrelationID]
			if m == nil {
				m = &migration{vm: r.vm}
				c.migs[r.CorrelationID] = m
			}
			pl, _ := r.DecodePayload()
			switch r.Kind {
			case MigrationSwitchover:
				if pl.Postcopy && !m.postcopy {
					m.postcopy, m.postcopyFrom = true, r.ObservedAt
				}
			case MigrationCompleted, MigrationFailed, MigrationRolledBack:
				if !m.ended {
					m.ended, m.end = true, r.ObservedAt
				}
			}
		}
		if r.Host != "" {
			h := c.host(r.Host)
			switch {
			case r.Kind.isPoller():
				h.poller = append(h.poller, r)
			case r.Kind.isMonitor():
				h.monitor = append(h.monitor, r)
			}
			if r.Source != SourcePoller && isLive(r.Kind) {
				h.live = append(h.live, r)
			}
		}
		if r.vm != "" {
			v := c.vms[r.vm]
			if v == nil {
				v = &vmState{name: r.vm}
				c.vms[r.vm] = v
			}
			if r.VMUUID != "" {
				v.uuid = r.VMUUID
			}
			v.events = append(v.events, r)
		}
	}
	// Residency: the last event naming the VM and a host places it there.
	// During a known migration only the orchestrator moves it (on
	// Migration_Completed, to the destination): the source domain's teardown
	// events must not move it back.
	for _, m := range c.migs {
		if v := c.vms[m.vm]; v != nil {
			v.migs = append(v.migs, m)
		}
	}
	for _, v := range c.vms {
		for _, r := range v.events {
			host := r.Host
			if r.Kind == MigrationCompleted {
				if pl, _ := r.DecodePayload(); pl.Destination != "" {
					host = pl.Destination
				}
			} else if r.Kind.isVMLifecycle() && c.knownMigration(r) != nil {
				continue
			}
			if host == "" {
				continue
			}
			if n := len(v.res); n == 0 || v.res[n-1].host != host {
				v.res = append(v.res, residency{from: r.ObservedAt, host: host})
			}
		}
		for i, seg := range v.res {
			segEnd := c.w.End
			if i+1 < len(v.res) {
				segEnd = v.res[i+1].from
			}
			if !(Span{seg.from, segEnd}).clip(c.w).empty() {
				c.host(seg.host).vms[v.name] = true
			}
		}
	}
}

// isLive reports whether an event of kind k, from a monitor other than the
// poller, proves the hypervisor was answering when it was observed.
func isLive(k Kind) bool {
	switch k {
	case VMReachable, VMStarted, VMStopped, MonitorSight, MigrationSwitchover, MigrationCompleted:
		return true
	}
	return false
}

// knownMigration returns the migration r belongs to, if r carries the
// correlation id of a migration of the same VM that the log knows about.
func (c *correlator) knownMigration(r *rec) *migration {
	if r.CorrelationID == "" {
		return nil
	}
	if m := c.migs[r.CorrelationID]; m != nil && m.vm == r.vm {
		return m
	}
	return nil
}

func ids(rs ...*rec) []int64 {
	out := make([]int64, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

// correlateHosts reads each host's poller events into outages and
// false-positive timeout runs, its monitor events into blind intervals, and
// marks outages contradicted by live hypervisor events.
func (c *correlator) correlateHosts() {
	for _, h := range c.hosts {
		var (
			cur    *outage
			run    []*rec
			closeR = func() {
				if len(run) > 0 {
					last := run[len(run)-1].ObservedAt
					cause := fmt.Sprintf("%d PS_Timeout without PS_Unreachable: false positive", len(run))
					if c.w.End.Sub(last) <= c.tol {
						cause = fmt.Sprintf("%d PS_Timeout, no PS_Unreachable yet", len(run))
					}
					h.runs = append(h.runs, Interval{
						Start: run[0].ObservedAt, End: last, Class: ClassInfo, Rule: RuleTimeoutRecovered,
						Cause: cause, EventIDs: ids(run...),
					})
				}
				run = nil
			}
		)
		for _, r := range h.poller {
			t := r.ObservedAt
			switch r.Kind {
			case PSTimeout:
				if cur != nil {
					continue
				}
				if len(run) > 0 && (t.Sub(run[len(run)-1].ObservedAt) > c.tol || startsRun(r)) {
					closeR()
				}
				run = append(run, r)
			case PSUnreachable:
				if cur != nil {
					cur.ids = append(cur.ids, r.ID)
					continue
				}
				o := outage{unreachable: t, firstTimeout: t}
				if len(run) > 0 && t.Sub(run[len(run)-1].ObservedAt) <= c.tol {
					o.firstTimeout = run[0].ObservedAt
					o.ids = ids(run...)
					run = nil
				} else {
					closeR()
				}
				o.ids = append(o.ids, r.ID)
				cur = &o
			case PSReachable:
				if cur == nil {
					closeR()
					continue
				}
				cur.end = r.ObservedAt
				cur.ids = append(cur.ids, r.ID)
				h.outages = append(h.outages, *cur)
				cur = nil
			}
		}
		closeR()
		if cur != nil {
			cur.end, cur.open = c.w.End, true
			h.outages = append(h.outages, *cur)
		}
		// A live event strictly inside the outage contradicts it, unless it
		// falls in the last two poll intervals before PS_Reachable: there the
		// hypervisor agent merely saw the recovery before the next poll did.
		for i := range h.outages {
			o := &h.outages[i]
			last := o.end
			if !o.open {
				last = o.end.Add(-c.tol)
			}
			j, _ := slices.BinarySearchFunc(h.live, o.unreachable, func(r *rec, t time.Time) int {
				if r.ObservedAt.After(t) {
					return 1
				}
				return -1
			})
			for _, r := range h.live[j:] {
				if !r.ObservedAt.Before(last) {
					break
				}
				o.live = append(o.live, r.ID)
			}
		}
		var blind *Interval
		for _, r := range h.monitor {
			switch {
			case r.Kind == MonitorBlind && blind == nil:
				blind = &Interval{Start: r.ObservedAt, Class: ClassInfo, Rule: RuleMonitorBlind,
					Cause: "monitoring agent lost its libvirt connection: failures could not be seen", EventIDs: []int64{r.ID}}
			case r.Kind == MonitorSight && blind != nil:
				blind.End = r.ObservedAt
				blind.EventIDs = append(blind.EventIDs, r.ID)
				h.blind = append(h.blind, *blind)
				blind = nil
			}
		}
		if blind != nil {
			blind.End, blind.Open = c.w.End, true
			h.blind = append(h.blind, *blind)
		}
	}
}

// startsRun reports whether a PS_Timeout says it is the first of its run
// (payload consecutive = 1): the poll before it succeeded.
func startsRun(r *rec) bool {
	if len(r.Payload) == 0 {
		return false
	}
	pl, err := r.DecodePayload()
	return err == nil && pl.Consecutive == 1
}

// outageInterval renders outage o, restricted to [from, to) (the VM's stay on
// the host), as an interval.
func (c *correlator) outageInterval(host string, o outage, from, to time.Time) (Interval, bool) {
	iv := Interval{
		End: o.end, Host: host, EventIDs: o.ids, Open: o.open,
		Unreachable: o.unreachable, FirstTimeout: o.firstTimeout,
	}
	if len(o.live) > 0 {
		iv.Class, iv.Rule = ClassPartition, RulePartition
		iv.Cause = fmt.Sprintf("poller lost host %s but its hypervisor kept reporting: monitoring partition, not downtime", host)
		iv.EventIDs = append(slices.Clone(o.ids), o.live...)
	} else {
		iv.Class, iv.Rule = ClassDowntime, RuleHostUnreachable
		iv.Cause = fmt.Sprintf("host %s unreachable (poller)", host)
	}
	lo := latest(from, c.w.Start)
	hi := to
	if c.w.End.Before(hi) {
		hi = c.w.End
	}
	iv.Unreachable = latest(iv.Unreachable, lo)
	iv.FirstTimeout = latest(iv.FirstTimeout, lo)
	if iv.End.After(hi) {
		iv.End = hi
		if to.Before(c.w.End) {
			iv.Open = false
		}
	}
	iv.Start = iv.Unreachable
	if c.opts.Backdate {
		iv.Start = iv.FirstTimeout
	}
	return iv, iv.End.After(iv.FirstTimeout)
}

func latest(a, b time.Time) time.Time {
	if a.Before(b) {
		return b
	}
	return a
}

// clipInterval clips iv to the window; false when nothing is left.
func (c *correlator) clipInterval(iv Interval) (Interval, bool) {
	s := Span{iv.Start, iv.End}.clip(c.w)
	if s.empty() && !(iv.Start.Equal(iv.End) && !iv.Start.Before(c.w.Start) && iv.Start.Before(c.w.End)) {
		return iv, false
	}
	iv.Start, iv.End = s.Start, s.End
	return iv, true
}

func (c *correlator) vmEntry(v *vmState, maintenance []Maintenance) Entry {
	var out []Interval
	add := func(iv Interval) {
		if iv, ok := c.clipInterval(iv); ok {
			out = append(out, iv)
		}
	}
	var (
		fail, stop *Interval
	)
	closeFail := func(r *rec) {
		if fail != nil {
			fail.End = r.ObservedAt
			fail.EventIDs = append(fail.EventIDs, r.ID)
			add(*fail)
			fail = nil
		}
	}
	openFail := func(r *rec, rule Rule, cause string) {
		if fail != nil {
			fail.EventIDs = append(fail.EventIDs, r.ID)
			return
		}
		fail = &Interval{Start: r.ObservedAt, Class: ClassDowntime, Rule: rule, Cause: cause,
			Host: r.Host, CorrelationID: r.CorrelationID, EventIDs: []int64{r.ID}}
	}
	hosts := map[string]bool{}
	for _, r := range v.events {
		m := c.knownMigration(r)
		t := r.ObservedAt
		switch r.Kind {
		case VMFailure:
			if stop != nil {
				continue // not eligible anyway
			}
			pl, _ := r.DecodePayload()
			postcopy := pl.Postcopy || (m != nil && m.inPostcopy(t))
			if !postcopy {
				for _, mm := range v.migs {
					if mm.inPostcopy(t) {
						postcopy = true
						break
					}
				}
			}
			switch {
			case postcopy:
				openFail(r, RulePostcopyFailure, "VM failed during post-copy migration")
			case m != nil:
				add(Interval{Start: t, End: t, Class: ClassInfo, Rule: RuleMigrationLifecycle,
					Cause: "VM_Failure belongs to migration " + r.CorrelationID + ": not a failure",
					Host:  r.Host, CorrelationID: r.CorrelationID, EventIDs: []int64{r.ID}})
			default:
				openFail(r, RuleVMFailure, "VM failed")
			}
		case MigrationFailed:
			pl, _ := r.DecodePayload()
			if stop == nil && (pl.Postcopy || (m != nil && m.postcopy && !t.Before(m.postcopyFrom))) {
				openFail(r, RulePostcopyFailure, "post-copy migration failed")
			}
		case VMReachable:
			closeFail(r)
			if stop != nil {
				stop.End = t
				stop.EventIDs = append(stop.EventIDs, r.ID)
				add(*stop)
				stop = nil
			}
		case VMStarted:
			closeFail(r)
			if stop != nil && m == nil {
				stop.End = t
				stop.EventIDs = append(stop.EventIDs, r.ID)
				add(*stop)
				stop = nil
			}
		case VMStopped:
			if m != nil {
				continue // the source domain of a migration going away
			}
			closeFail(r)
			if stop == nil {
				stop = &Interval{Start: t, Class: ClassExcluded, Rule: RuleOwnerStopped,
					Cause: "stopped by its owner: not eligible", Host: r.Host, EventIDs: []int64{r.ID}}
			}
		case MigrationCompleted:
			pl, _ := r.DecodePayload()
			if pl.DowntimeMS == nil || *pl.DowntimeMS <= 0 {
				continue
			}
			d := time.Duration(*pl.DowntimeMS) * time.Millisecond
			iv := Interval{Start: t.Add(-d), End: t, Class: ClassDowntime, Rule: RuleMigrationPause,
				Cause: fmt.Sprintf("migration switchover pause %d ms", *pl.DowntimeMS),
				Host:  cmp.Or(pl.Destination, r.Host), CorrelationID: r.CorrelationID, EventIDs: []int64{r.ID}}
			if !c.opts.ChargeMigrationPause {
				iv.Class, iv.Cause = ClassInfo, iv.Cause+" (not charged by policy)"
			}
			add(iv)
		}
	}
	for _, iv := range []*Interval{fail, stop} {
		if iv != nil {
			iv.End, iv.Open = c.w.End, true
			add(*iv)
		}
	}

	// Host-derived intervals over each stay of the VM on a host.
	for i, seg := range v.res {
		segEnd := c.w.End
		if i+1 < len(v.res) {
			segEnd = v.res[i+1].from
		}
		stay := Span{seg.from, segEnd}
		if stay.clip(c.w).empty() {
			continue
		}
		hosts[seg.host] = true
		h := c.host(seg.host)
		// Outages and blind intervals of a host are sorted and disjoint.
		first := sort.Search(len(h.outages), func(i int) bool { return h.outages[i].end.After(stay.Start) })
		for _, o := range h.outages[first:] {
			if !stay.End.After(o.firstTimeout) {
				break
			}
			if iv, ok := c.outageInterval(seg.host, o, stay.Start, stay.End); ok {
				add(iv)
			}
		}
		first = sort.Search(len(h.blind), func(i int) bool { return h.blind[i].End.After(stay.Start) })
		for _, b := range h.blind[first:] {
			if !stay.End.After(b.Start) {
				break
			}
			b.Host = seg.host
			if s := (Span{b.Start, b.End}).clip(stay); !s.empty() {
				b.Start, b.End = s.Start, s.End
				add(b)
			}
		}
		for _, mw := range maintenance {
			if mw.Host != seg.host {
				continue
			}
			if s := (Span{mw.From, mw.To}).clip(stay); !s.empty() {
				iv := maintenanceInterval(mw)
				iv.Start, iv.End = s.Start, s.End
				add(iv)
			}
		}
	}
	for _, mw := range maintenance {
		if mw.VM != "" && (mw.VM == v.name || (v.uuid != "" && mw.VM == v.uuid)) {
			add(maintenanceInterval(mw))
		}
	}
	e := c.entry("vm", v.name, out)
	e.UUID = v.uuid
	e.Hosts = sortedKeys(hosts)
	return e
}

func maintenanceInterval(mw Maintenance) Interval {
	iv := Interval{Start: mw.From, End: mw.To, Host: mw.Host, MaintenanceID: mw.ID, EventIDs: []int64{}}
	if mw.InAdvance() {
		iv.Class, iv.Rule = ClassExcluded, RuleMaintenance
		iv.Cause = "maintenance declared in advance: " + mw.Reason
	} else {
		iv.Class, iv.Rule = ClassInfo, RuleMaintenanceLate
		iv.Cause = fmt.Sprintf("maintenance declared %s after its start, not excluded: %s",
			mw.DeclaredAt.Sub(mw.From), mw.Reason)
	}
	return iv
}

func (c *correlator) hostEntry(name string, h *hostState, maintenance []Maintenance) Entry {
	var out []Interval
	add := func(iv Interval) {
		if iv, ok := c.clipInterval(iv); ok {
			out = append(out, iv)
		}
	}
	for _, o := range h.outages {
		if iv, ok := c.outageInterval(name, o, c.w.Start, c.w.End); ok {
			add(iv)
		}
	}
	for _, iv := range h.runs {
		iv.Host = name
		add(iv)
	}
	for _, iv := range h.blind {
		iv.Host = name
		add(iv)
	}
	for _, mw := range maintenance {
		if mw.Host == name {
			add(maintenanceInterval(mw))
		}
	}
	e := c.entry("host", name, out)
	e.VMs = sortedKeys(h.vms)
	return e
}

// entry computes the figures of one VM or host from its intervals.
func (c *correlator) entry(scope, name string, ivs []Interval) Entry {
	slices.SortStableFunc(ivs, func(a, b Interval) int {
		return cmp.Or(a.Start.Compare(b.Start), a.End.Compare(b.End), cmp.Compare(a.Rule, b.Rule),
			cmp.Compare(a.Host, b.Host), cmp.Compare(a.MaintenanceID, b.MaintenanceID))
	})
	var excl []Span
	for _, iv := range ivs {
		if iv.Class == ClassExcluded {
			excl = append(excl, Span{iv.Start, iv.End})
		}
	}
	excl = union(excl)
	charged := func(start func(Interval) time.Time) []Span {
		var d []Span
		for _, iv := range ivs {
			if iv.Class == ClassDowntime {
				d = append(d, Span{start(iv), iv.End}.clip(c.w))
			}
		}
		return subtract(union(d), excl)
	}
	reading := func(pick func(Interval) time.Time) func(Interval) time.Time {
		return func(iv Interval) time.Time {
			if iv.Rule == RuleHostUnreachable {
				return pick(iv)
			}
			return iv.Start
		}
	}
	e := Entry{
		Scope: scope, Name: name, Target: c.opts.Target,
		Eligible:  c.w.Duration() - total(excl),
		Charged:   charged(func(iv Interval) time.Time { return iv.Start }),
		Intervals: ivs,
	}
	if e.Charged == nil {
		e.Charged = []Span{}
	}
	if e.Intervals == nil {
		e.Intervals = []Interval{}
	}
	e.Downtime = total(e.Charged)
	e.DowntimeLow = total(charged(reading(func(iv Interval) time.Time { return iv.Unreachable })))
	e.DowntimeHigh = total(charged(reading(func(iv Interval) time.Time { return iv.FirstTimeout })))
	e.Availability = 100
	if e.Eligible > 0 {
		e.Availability = 100 * (1 - float64(e.Downtime)/float64(e.Eligible))
	}
	e.Budget = time.Duration(math.Round(float64(e.Eligible) * (100 - c.opts.Target) / 100))
	e.BudgetUsed = e.Downtime
	e.BudgetLeft = e.Budget - e.Downtime
	e.Met = e.Downtime <= e.Budget
	return e
}
