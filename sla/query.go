package sla

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ReportQuery is a report request as people and programs phrase it: the
// flags of `ferry sla report` and the query parameters of ferry serve's
// GET /v1/sla/report. Both go through Resolve and Select, so they accept the
// same values and select the same entries.
type ReportQuery struct {
	// VM keeps that VM (name or UUID); Host keeps that host and the VMs
	// that ran on it. Both set: that VM and that host.
	VM, Host string
	// From and To as ParseTime reads them; empty: -30d and now.
	From, To string
	// Target in percent, above 0 and at most 100.
	Target                float64
	Backdate              bool
	ChargeMigrationPauses bool
	// PollInterval of the poller (timeouts further than two intervals apart
	// are separate runs); positive.
	PollInterval time.Duration
}

// DefaultReportQuery is the last 30 days against the standard SLA.
func DefaultReportQuery() ReportQuery {
	return ReportQuery{From: "-30d", To: "now", Target: DefaultTarget, ChargeMigrationPauses: true, PollInterval: DefaultPollInterval}
}

// ErrNoEntry: the log has no events of the VM or host a query asks for.
var ErrNoEntry = errors.New("not in the SLA log")

// MaxPollInterval bounds a poller interval (the report's and the agents'):
// beyond a day a poller no longer observes outages.
const MaxPollInterval = 24 * time.Hour

// QueryError is a bad value in a ReportQuery; Field names it (from, to,
// target, poll_interval) so each front end can say it in its own terms
// (--from, ?from=).
type QueryError struct {
	Field string
	Msg   string
}

func (e *QueryError) Error() string { return e.Field + ": " + e.Msg }

// Resolve turns the query into the period and the options of Log.Report.
// Start from DefaultReportQuery: zero Target and PollInterval are refused.
func (q ReportQuery) Resolve(now time.Time) (Period, Options, error) {
	from, to := q.From, q.To
	if from == "" {
		from = "-30d"
	}
	if to == "" {
		to = "now"
	}
	f, err := ParseTime(from, now)
	if err != nil {
		return Period{}, Options{}, &QueryError{"from", err.Error()}
	}
	t, err := ParseTime(to, now)
	if err != nil {
		return Period{}, Options{}, &QueryError{"to", err.Error()}
	}
	if !t.After(f) {
		return Period{}, Options{}, &QueryError{"to", fmt.Sprintf("%s is not after the start of the period (%s)", t.UTC().Format(time.RFC3339Nano), f.UTC().Format(time.RFC3339Nano))}
	}
	// Written so that NaN fails too (every comparison with it is false).
	if !(q.Target > 0 && q.Target <= 100) {
		return Period{}, Options{}, &QueryError{"target", fmt.Sprintf("%v: a percentage above 0 and at most 100, e.g. 99.95", q.Target)}
	}
	if q.PollInterval <= 0 || q.PollInterval > MaxPollInterval {
		return Period{}, Options{}, &QueryError{"poll_interval", fmt.Sprintf("%s: must be above 0 and at most %s", q.PollInterval, MaxPollInterval)}
	}
	opts := DefaultOptions()
	opts.Target, opts.Backdate, opts.ChargeMigrationPause, opts.PollInterval = q.Target, q.Backdate, q.ChargeMigrationPauses, q.PollInterval
	return Period{From: f.UTC(), To: t.UTC()}, opts, nil
}

// Select keeps the entries the query asks for: VM keeps that VM, Host that
// host and the VMs that ran on it. Asking for a VM or host the report does
// not know is ErrNoEntry.
func (q ReportQuery) Select(r *Report) error {
	if q.VM == "" && q.Host == "" {
		return nil
	}
	var vms, hosts []Entry
	for _, e := range r.VMs {
		match := q.VM != "" && (e.Name == q.VM || (e.UUID != "" && e.UUID == q.VM))
		if q.VM == "" {
			for _, h := range e.Hosts {
				match = match || h == q.Host
			}
		}
		if match {
			vms = append(vms, e)
		}
	}
	for _, e := range r.Hosts {
		if q.Host != "" && e.Name == q.Host {
			hosts = append(hosts, e)
		}
	}
	end := r.Period.To.UTC().Format("2006-01-02T15:04:05.000Z")
	switch {
	case q.VM != "" && len(vms) == 0:
		return fmt.Errorf("%w: no SLA events of VM %q before %s", ErrNoEntry, q.VM, end)
	case q.Host != "" && len(hosts) == 0:
		return fmt.Errorf("%w: no SLA events of host %q before %s", ErrNoEntry, q.Host, end)
	}
	r.VMs, r.Hosts = vms, hosts
	if r.VMs == nil {
		r.VMs = []Entry{}
	}
	if r.Hosts == nil {
		r.Hosts = []Entry{}
	}
	return nil
}

// Run resolves, computes and selects: the report a query asks for.
func (q ReportQuery) Run(ctx context.Context, l *Log, now time.Time) (Report, error) {
	p, opts, err := q.Resolve(now)
	if err != nil {
		return Report{}, err
	}
	r, err := l.Report(ctx, p, opts)
	if err != nil {
		return Report{}, err
	}
	if err := q.Select(&r); err != nil {
		return Report{}, err
	}
	return r, nil
}

// CitedEvents returns the events the report's intervals cite, in the order
// they were observed (never nil).
func (l *Log) CitedEvents(ctx context.Context, r Report) ([]Event, error) {
	var ids []int64
	for _, es := range [][]Entry{r.VMs, r.Hosts} {
		for _, e := range es {
			for _, iv := range e.Intervals {
				ids = append(ids, iv.EventIDs...)
			}
		}
	}
	evs, err := l.ByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	if evs == nil {
		evs = []Event{}
	}
	return evs, nil
}
