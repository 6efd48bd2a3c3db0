// Host correlation: poller events become outages and false-positive timeout
// runs, monitor events become blind intervals, and live hypervisor events
// mark outages as monitoring partitions.

package sla

import (
	"fmt"
	"slices"
	"time"
)

// correlateHosts reads each host's poller events into outages and
// false-positive timeout runs, its monitor events into blind intervals, and
// marks outages contradicted by live hypervisor events.
func (c *correlator) correlateHosts() {
	for _, h := range c.hosts {
		h.outages, h.runs = readPoller(h.poller, c.w.End, c.tol)
		for i := range h.outages {
			h.outages[i].live = contradicting(h.outages[i], h.live, c.tol)
		}
		h.blind = blindIntervals(h.monitor, c.w.End)
	}
}

// pollerReader reads one host's poller events, in order, into outages
// (PS_Unreachable → PS_Reachable, backdated to the PS_Timeout run just before)
// and PS_Timeout runs that no PS_Unreachable followed.
type pollerReader struct {
	end     time.Time     // the window's end
	tol     time.Duration // the widest gap within a run of timeouts
	cur     *outage       // the outage under way
	run     []*rec        // the current run of PS_Timeout
	outages []outage
	runs    []Interval
}

// readPoller returns the outages and the timeout runs of a host's poller
// events; an outage still under way at end is open.
func readPoller(poller []*rec, end time.Time, tol time.Duration) ([]outage, []Interval) {
	rd := pollerReader{end: end, tol: tol}
	for _, r := range poller {
		switch r.Kind {
		case PSTimeout:
			rd.timeout(r)
		case PSUnreachable:
			rd.unreachable(r)
		case PSReachable:
			rd.reachable(r)
		}
	}
	rd.closeRun()
	if rd.cur != nil {
		rd.cur.end, rd.cur.open = end, true
		rd.outages = append(rd.outages, *rd.cur)
	}
	return rd.outages, rd.runs
}

// follows reports whether t is close enough to the current run of timeouts
// to belong to it.
func (rd *pollerReader) follows(t time.Time) bool {
	return len(rd.run) > 0 && t.Sub(rd.run[len(rd.run)-1].ObservedAt) <= rd.tol
}

func (rd *pollerReader) timeout(r *rec) {
	if rd.cur != nil {
		return
	}
	if len(rd.run) > 0 && (!rd.follows(r.ObservedAt) || startsRun(r)) {
		rd.closeRun()
	}
	rd.run = append(rd.run, r)
}

func (rd *pollerReader) unreachable(r *rec) {
	if rd.cur != nil {
		rd.cur.ids = append(rd.cur.ids, r.ID)
		return
	}
	t := r.ObservedAt
	o := outage{unreachable: t, firstTimeout: t}
	if rd.follows(t) {
		o.firstTimeout = rd.run[0].ObservedAt
		o.ids = ids(rd.run...)
		rd.run = nil
	} else {
		rd.closeRun()
	}
	o.ids = append(o.ids, r.ID)
	rd.cur = &o
}

func (rd *pollerReader) reachable(r *rec) {
	if rd.cur == nil {
		rd.closeRun()
		return
	}
	rd.cur.end = r.ObservedAt
	rd.cur.ids = append(rd.cur.ids, r.ID)
	rd.outages = append(rd.outages, *rd.cur)
	rd.cur = nil
}

// closeRun ends the current run of timeouts, which no PS_Unreachable followed.
func (rd *pollerReader) closeRun() {
	if len(rd.run) > 0 {
		rd.runs = append(rd.runs, timeoutRun(rd.run, rd.end, rd.tol))
	}
	rd.run = nil
}

// timeoutRun renders a run of PS_Timeout without PS_Unreachable: a false
// positive, unless it is so recent that PS_Unreachable may still come.
func timeoutRun(run []*rec, end time.Time, tol time.Duration) Interval {
	last := run[len(run)-1].ObservedAt
	cause := fmt.Sprintf("%d PS_Timeout without PS_Unreachable: false positive", len(run))
	if end.Sub(last) <= tol {
		cause = fmt.Sprintf("%d PS_Timeout, no PS_Unreachable yet", len(run))
	}
	return Interval{
		Start: run[0].ObservedAt, End: last, Class: ClassInfo, Rule: RuleTimeoutRecovered,
		Cause: cause, EventIDs: ids(run...),
	}
}

// contradicting returns the ids of the live events (sorted) that contradict
// outage o. A live event strictly inside the outage contradicts it, unless it
// falls in the last two poll intervals before PS_Reachable: there the
// hypervisor agent merely saw the recovery before the next poll did.
func contradicting(o outage, live []*rec, tol time.Duration) []int64 {
	last := o.end
	if !o.open {
		last = o.end.Add(-tol)
	}
	j, _ := slices.BinarySearchFunc(live, o.unreachable, func(r *rec, t time.Time) int {
		if r.ObservedAt.After(t) {
			return 1
		}
		return -1
	})
	var out []int64
	for _, r := range live[j:] {
		if !r.ObservedAt.Before(last) {
			break
		}
		out = append(out, r.ID)
	}
	return out
}

// blindIntervals reads a host's monitor events into the intervals the
// monitoring agent could not see (Monitor_Blind → Monitor_Sight); one still
// under way at end is open.
func blindIntervals(monitor []*rec, end time.Time) []Interval {
	var (
		out   []Interval
		blind *Interval
	)
	for _, r := range monitor {
		switch {
		case r.Kind == MonitorBlind && blind == nil:
			blind = &Interval{Start: r.ObservedAt, Class: ClassInfo, Rule: RuleMonitorBlind,
				Cause: "monitoring agent lost its libvirt connection: failures could not be seen", EventIDs: []int64{r.ID}}
		case r.Kind == MonitorSight && blind != nil:
			blind.End = r.ObservedAt
			blind.EventIDs = append(blind.EventIDs, r.ID)
			out = append(out, *blind)
			blind = nil
		}
	}
	if blind != nil {
		blind.End, blind.Open = end, true
		out = append(out, *blind)
	}
	return out
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

// hostEntry is the entry of one host: its outages, timeout runs, blind
// intervals and maintenance windows.
func (c *correlator) hostEntry(name string, h *hostState, maintenance []Maintenance) Entry {
	var ivs []Interval
	for _, o := range h.outages {
		if iv, ok := c.outageInterval(name, o, c.w.Start, c.w.End); ok {
			ivs = append(ivs, iv)
		}
	}
	for _, iv := range h.runs {
		iv.Host = name
		ivs = append(ivs, iv)
	}
	for _, iv := range h.blind {
		iv.Host = name
		ivs = append(ivs, iv)
	}
	for _, mw := range maintenance {
		if mw.Host == name {
			ivs = append(ivs, maintenanceInterval(mw))
		}
	}
	e := c.entry("host", name, c.clipAll(ivs))
	e.VMs = sortedKeys(h.vms)
	return e
}
