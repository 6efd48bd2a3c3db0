// An entry's figures (eligible time, downtime and its bounds, availability,
// budget) from its intervals.

package sla

import (
	"cmp"
	"math"
	"slices"
	"time"
)

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
