// The correlator's state: the indexed events, migrations, hosts and VMs that
// Compute builds once and then reads into entries, and helpers shared by the
// host and VM rules.

package sla

import (
	"time"
)

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

type correlator struct {
	w     Span
	opts  Options
	tol   time.Duration
	migs  map[string]*migration
	hosts map[string]*hostState
	vms   map[string]*vmState
}

// newCorrelator returns an empty correlator over window w.
func newCorrelator(w Span, opts Options) *correlator {
	return &correlator{
		w:     w,
		opts:  opts,
		tol:   2 * opts.PollInterval,
		migs:  map[string]*migration{},
		hosts: map[string]*hostState{},
		vms:   map[string]*vmState{},
	}
}

func (c *correlator) host(name string) *hostState {
	h := c.hosts[name]
	if h == nil {
		h = &hostState{vms: map[string]bool{}}
		c.hosts[name] = h
	}
	return h
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

// stay is a VM's residency on one host: [Start, End) is from the event that
// placed it there to the next move (or the window's end).
type stay struct {
	host string
	Span
}

// stays returns the VM's stays, in order, that overlap window w.
func stays(res []residency, w Span) []stay {
	var out []stay
	for i, seg := range res {
		end := w.End
		if i+1 < len(res) {
			end = res[i+1].from
		}
		s := stay{host: seg.host, Span: Span{seg.from, end}}
		if !s.clip(w).empty() {
			out = append(out, s)
		}
	}
	return out
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

// clipAll clips each interval to the window, in order, dropping those that
// are left empty.
func (c *correlator) clipAll(ivs []Interval) []Interval {
	var out []Interval
	for _, iv := range ivs {
		if iv, ok := c.clipInterval(iv); ok {
			out = append(out, iv)
		}
	}
	return out
}
