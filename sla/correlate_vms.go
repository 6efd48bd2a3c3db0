// VM correlation: a VM's own events become failure, owner-stop and migration
// intervals, and each stay on a host adds that host's outages, blind
// intervals and maintenance windows.

package sla

import (
	"cmp"
	"fmt"
	"sort"
	"time"
)

// vmEntry is the entry of one VM. Its intervals come in a fixed order (the
// VM's own events, then each stay on a host, then VM maintenance windows),
// which entry's stable sort keeps among equal keys.
func (c *correlator) vmEntry(v *vmState, maintenance []Maintenance) Entry {
	ivs := c.vmEventIntervals(v)
	hosts := map[string]bool{}
	for _, s := range stays(v.res, c.w) {
		hosts[s.host] = true
		ivs = append(ivs, c.stayIntervals(s, maintenance)...)
	}
	for _, mw := range maintenance {
		if mw.VM != "" && (mw.VM == v.name || (v.uuid != "" && mw.VM == v.uuid)) {
			ivs = append(ivs, maintenanceInterval(mw))
		}
	}
	e := c.entry("vm", v.name, c.clipAll(ivs))
	e.UUID = v.uuid
	e.Hosts = sortedKeys(hosts)
	return e
}

// vmTimeline reads one VM's events, in order, into intervals: failures (open
// until the VM is seen again), owner stops (until it starts), migration
// pauses and migration-lifecycle notes.
type vmTimeline struct {
	migs        []*migration // the VM's migrations
	chargePause bool         // Options.ChargeMigrationPause
	fail, stop  *Interval    // under way
	out         []Interval
}

// vmEventIntervals returns the intervals of v's own events, unclipped; those
// still under way at the window's end are open.
func (c *correlator) vmEventIntervals(v *vmState) []Interval {
	tl := vmTimeline{migs: v.migs, chargePause: c.opts.ChargeMigrationPause}
	for _, r := range v.events {
		tl.read(r, c.knownMigration(r))
	}
	for _, iv := range []*Interval{tl.fail, tl.stop} {
		if iv != nil {
			iv.End, iv.Open = c.w.End, true
			tl.out = append(tl.out, *iv)
		}
	}
	return tl.out
}

// read applies event r, which belongs to migration m (nil if none).
func (tl *vmTimeline) read(r *rec, m *migration) {
	switch r.Kind {
	case VMFailure:
		tl.failure(r, m)
	case MigrationFailed:
		pl, _ := r.DecodePayload()
		if tl.stop == nil && postcopyFailed(pl, m, r.ObservedAt) {
			tl.openFail(r, RulePostcopyFailure, "post-copy migration failed")
		}
	case VMReachable:
		tl.closeFail(r)
		tl.closeStop(r)
	case VMStarted:
		tl.closeFail(r)
		if m == nil {
			tl.closeStop(r)
		}
	case VMStopped:
		if m != nil {
			return // the source domain of a migration going away
		}
		tl.closeFail(r)
		if tl.stop == nil {
			tl.stop = &Interval{Start: r.ObservedAt, Class: ClassExcluded, Rule: RuleOwnerStopped,
				Cause: "stopped by its owner: not eligible", Host: r.Host, EventIDs: []int64{r.ID}}
		}
	case MigrationCompleted:
		if iv, ok := migrationPause(r, tl.chargePause); ok {
			tl.out = append(tl.out, iv)
		}
	}
}

// failure applies a VM_Failure: during post-copy it is downtime, as part of
// a known migration it is not a failure, else the VM failed.
func (tl *vmTimeline) failure(r *rec, m *migration) {
	if tl.stop != nil {
		return // not eligible anyway
	}
	pl, _ := r.DecodePayload()
	switch {
	case pl.Postcopy || inPostcopy(m, tl.migs, r.ObservedAt):
		tl.openFail(r, RulePostcopyFailure, "VM failed during post-copy migration")
	case m != nil:
		tl.out = append(tl.out, migrationLifecycle(r))
	default:
		tl.openFail(r, RuleVMFailure, "VM failed")
	}
}

// migrationLifecycle notes a VM_Failure that belongs to a known migration:
// the source domain going away, not a failure.
func migrationLifecycle(r *rec) Interval {
	return Interval{Start: r.ObservedAt, End: r.ObservedAt, Class: ClassInfo, Rule: RuleMigrationLifecycle,
		Cause: "VM_Failure belongs to migration " + r.CorrelationID + ": not a failure",
		Host:  r.Host, CorrelationID: r.CorrelationID, EventIDs: []int64{r.ID}}
}

// openFail starts a failure at r, or adds r to the one under way.
func (tl *vmTimeline) openFail(r *rec, rule Rule, cause string) {
	if tl.fail != nil {
		tl.fail.EventIDs = append(tl.fail.EventIDs, r.ID)
		return
	}
	tl.fail = &Interval{Start: r.ObservedAt, Class: ClassDowntime, Rule: rule, Cause: cause,
		Host: r.Host, CorrelationID: r.CorrelationID, EventIDs: []int64{r.ID}}
}

// closeFail ends the failure under way, if any, at r.
func (tl *vmTimeline) closeFail(r *rec) {
	tl.fail = tl.closeAt(tl.fail, r)
}

// closeStop ends the owner stop under way, if any, at r.
func (tl *vmTimeline) closeStop(r *rec) {
	tl.stop = tl.closeAt(tl.stop, r)
}

// closeAt ends iv (if not nil) at r and keeps it; it returns nil, what is
// now under way.
func (tl *vmTimeline) closeAt(iv *Interval, r *rec) *Interval {
	if iv != nil {
		iv.End = r.ObservedAt
		iv.EventIDs = append(iv.EventIDs, r.ID)
		tl.out = append(tl.out, *iv)
	}
	return nil
}

// inPostcopy reports whether, at t, migration m (nil if none) or any other
// of the VM's migrations was in its post-copy phase.
func inPostcopy(m *migration, migs []*migration, t time.Time) bool {
	if m != nil && m.inPostcopy(t) {
		return true
	}
	for _, mm := range migs {
		if mm.inPostcopy(t) {
			return true
		}
	}
	return false
}

// postcopyFailed reports whether a Migration_Failed of migration m (nil if
// none), observed at t with payload pl, failed a migration in post-copy.
func postcopyFailed(pl Payload, m *migration, t time.Time) bool {
	return pl.Postcopy || (m != nil && m.postcopy && !t.Before(m.postcopyFrom))
}

// migrationPause renders the switchover pause of a Migration_Completed; false
// when it reports none. Uncharged by policy, it is shown for information.
func migrationPause(r *rec, charge bool) (Interval, bool) {
	pl, _ := r.DecodePayload()
	if pl.DowntimeMS == nil || *pl.DowntimeMS <= 0 {
		return Interval{}, false
	}
	t := r.ObservedAt
	d := time.Duration(*pl.DowntimeMS) * time.Millisecond
	iv := Interval{Start: t.Add(-d), End: t, Class: ClassDowntime, Rule: RuleMigrationPause,
		Cause: fmt.Sprintf("migration switchover pause %d ms", *pl.DowntimeMS),
		Host:  cmp.Or(pl.Destination, r.Host), CorrelationID: r.CorrelationID, EventIDs: []int64{r.ID}}
	if !charge {
		iv.Class, iv.Cause = ClassInfo, iv.Cause+" (not charged by policy)"
	}
	return iv, true
}

// stayIntervals returns what the host did during the VM's stay s: its
// outages, blind intervals and maintenance windows, restricted to the stay.
func (c *correlator) stayIntervals(s stay, maintenance []Maintenance) []Interval {
	var out []Interval
	h := c.host(s.host)
	// Outages and blind intervals of a host are sorted and disjoint.
	first := sort.Search(len(h.outages), func(i int) bool { return h.outages[i].end.After(s.Start) })
	for _, o := range h.outages[first:] {
		if !s.End.After(o.firstTimeout) {
			break
		}
		if iv, ok := c.outageInterval(s.host, o, s.Start, s.End); ok {
			out = append(out, iv)
		}
	}
	first = sort.Search(len(h.blind), func(i int) bool { return h.blind[i].End.After(s.Start) })
	for _, b := range h.blind[first:] {
		if !s.End.After(b.Start) {
			break
		}
		b.Host = s.host
		if sp := (Span{b.Start, b.End}).clip(s.Span); !sp.empty() {
			b.Start, b.End = sp.Start, sp.End
			out = append(out, b)
		}
	}
	for _, mw := range maintenance {
		if mw.Host != s.host {
			continue
		}
		if sp := (Span{mw.From, mw.To}).clip(s.Span); !sp.empty() {
			iv := maintenanceInterval(mw)
			iv.Start, iv.End = sp.Start, sp.End
			out = append(out, iv)
		}
	}
	return out
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
