// Loading: the events are sorted, deduplicated and given their VM identity,
// then indexed by migration, host and VM, and each VM's residency is derived.

package sla

import (
	"cmp"
	"slices"
	"time"
)

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
	for _, r := range sortedRecs(events, c.w.End) {
		c.indexMigration(r)
		c.indexHost(r)
		c.indexVM(r)
	}
	for _, m := range c.migs {
		if v := c.vms[m.vm]; v != nil {
			v.migs = append(v.migs, m)
		}
	}
	for _, v := range c.vms {
		v.res = c.residencies(v)
		for _, s := range stays(v.res, c.w) {
			c.host(s.host).vms[v.name] = true
		}
	}
}

// sortedRecs returns the events of a known kind observed before end, in
// correlation order, without duplicates (same dedup key), each with its VM
// identity resolved: the VM's name, or else the name some other event gives
// its UUID, or else the UUID.
func sortedRecs(events []Event, end time.Time) []*rec {
	all := make([]rec, 0, len(events))
	for i := range events {
		e := &events[i]
		if !e.Kind.Known() || e.ObservedAt.IsZero() || !e.ObservedAt.Before(end) {
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
	}
	return recs
}

// indexMigration records what a migration event says about its migration:
// the VM (from its first event), post-copy, and the end.
func (c *correlator) indexMigration(r *rec) {
	if !r.Kind.isMigration() {
		return
	}
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

// indexHost files r under its host: poller, monitor and live events.
func (c *correlator) indexHost(r *rec) {
	if r.Host == "" {
		return
	}
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

// indexVM files r under its VM.
func (c *correlator) indexVM(r *rec) {
	if r.vm == "" {
		return
	}
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

// residencies places the VM over time: the last event naming the VM and a
// host places it there. During a known migration only the orchestrator moves
// it (on Migration_Completed, to the destination): the source domain's
// teardown events must not move it back.
func (c *correlator) residencies(v *vmState) []residency {
	var res []residency
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
		if n := len(res); n == 0 || res[n-1].host != host {
			res = append(res, residency{from: r.ObservedAt, host: host})
		}
	}
	return res
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
