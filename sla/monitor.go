package sla

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Monitor runs both agents against a set of hosts, writes what they see to
// the log, follows the log (so that it also sees the migration events other
// ferry processes write) and keeps the Prometheus metrics current.
type Monitor struct {
	Log   *Log
	Hosts []Target
	// Dial defaults to virt.Dial; Probe to a LibvirtProbe over Dial.
	Dial  DialFunc
	Probe Prober
	// Polling agent settings; zero takes the defaults.
	PollInterval     time.Duration
	PollTimeout      time.Duration
	UnreachableAfter int
	// Metrics, when set, are kept current.
	Metrics *Metrics
	// OnEvent is called for every event that enters the log while the
	// monitor runs, whoever wrote it, in the order the log stored them.
	OnEvent func(Event)
	// OnError is told about failures that do not stop the monitor.
	OnError func(error)
	// TailInterval is how often the log is followed (default 1 s);
	// RefreshInterval how often the per-VM counters are recomputed (default
	// 15 s, or ten times as long as the last computation took).
	TailInterval    time.Duration
	RefreshInterval time.Duration
	// OnConnect is passed to the monitoring agent.
	OnConnect func(host string)
}

// Record implements Sink: the agents' events go to the log.
func (m *Monitor) Record(ctx context.Context, evs ...Event) error {
	_, err := m.Log.Append(ctx, evs...)
	return err
}

func (m *Monitor) fail(err error) {
	if err != nil && m.OnError != nil && !errors.Is(err, context.Canceled) {
		m.OnError(err)
	}
}

// Run monitors until ctx ends, then records that the agents stopped and
// returns.
func (m *Monitor) Run(ctx context.Context) error {
	if m.Log == nil {
		return errors.New("sla monitor: no log")
	}
	if len(m.Hosts) == 0 {
		return errors.New("sla monitor: no hosts to monitor")
	}
	start := time.Now()
	lastID, err := m.Log.LastID(ctx)
	if err != nil {
		return err
	}
	unreachable, err := m.lastUnreachable(ctx)
	if err != nil {
		return err
	}
	poller, lp := m.newPoller(unreachable)
	agent := &Agent{Hosts: m.Hosts, Dial: m.Dial, Sink: m, History: m.Log, OnError: m.OnError, OnConnect: m.OnConnect}

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = poller.Run(ctx) }()
	go func() { defer wg.Done(); _ = agent.Run(ctx) }()

	opts := DefaultOptions()
	opts.PollInterval = poller.Interval
	lastID = m.loop(ctx, start, lastID, opts)
	wg.Wait()
	if lp != nil {
		lp.Close()
	}
	// What the agents recorded as they stopped.
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	m.follow(bg, lastID)
	return nil
}

// lastUnreachable returns, per host, whether the log last saw it unreachable,
// so that the poller resumes where an earlier monitor left off.
func (m *Monitor) lastUnreachable(ctx context.Context) (map[string]bool, error) {
	unreachable := map[string]bool{}
	for _, h := range m.Hosts {
		e, ok, err := m.Log.Last(ctx, Filter{Host: h.Name, Kinds: []Kind{PSUnreachable, PSReachable}})
		if err != nil {
			return nil, err
		}
		unreachable[h.Name] = ok && e.Kind == PSUnreachable
	}
	return unreachable, nil
}

// newPoller returns the polling agent, starting from the hosts' last known
// reachability, and the LibvirtProbe it uses if Run created one (nil if
// m.Probe was set), which Run must close. It sets the host-up metrics.
func (m *Monitor) newPoller(unreachable map[string]bool) (*Poller, *LibvirtProbe) {
	probe := m.Probe
	var lp *LibvirtProbe
	if probe == nil {
		lp = &LibvirtProbe{Dial: m.Dial}
		probe = lp
	}
	poller := &Poller{
		Hosts: m.Hosts, Probe: probe, Sink: m,
		Interval: m.PollInterval, Timeout: m.PollTimeout, UnreachableAfter: m.UnreachableAfter,
		Unreachable: unreachable, OnError: m.OnError,
	}
	if m.Metrics != nil {
		for _, h := range m.Hosts {
			m.Metrics.SetHostUp(h.Name, !unreachable[h.Name])
		}
		poller.OnPoll = func(host string, _ time.Time, _ error, unreachable bool) {
			m.Metrics.SetHostUp(host, !unreachable)
		}
	}
	return poller, lp
}

// loop follows the log and refreshes the metrics until ctx ends; it returns
// the id of the last event it followed.
func (m *Monitor) loop(ctx context.Context, start time.Time, lastID int64, opts Options) int64 {
	tailEvery, refreshEvery := m.TailInterval, m.RefreshInterval
	if tailEvery <= 0 {
		tailEvery = time.Second
	}
	if refreshEvery <= 0 {
		refreshEvery = 15 * time.Second
	}
	tail := time.NewTicker(tailEvery)
	defer tail.Stop()
	refresh := time.NewTimer(refreshEvery)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			return lastID
		case <-tail.C:
			lastID = m.follow(ctx, lastID)
		case now := <-refresh.C:
			m.refreshMetrics(ctx, refresh, refreshEvery, Period{From: start, To: now}, opts)
		}
	}
}

// follow hands the events stored after lastID to the metrics and OnEvent,
// and returns the id of the last one.
func (m *Monitor) follow(ctx context.Context, lastID int64) int64 {
	for {
		evs, err := m.Log.Tail(ctx, lastID, 1000)
		if err != nil {
			m.fail(err)
			return lastID
		}
		for _, e := range evs {
			lastID = e.ID
			if m.Metrics != nil {
				m.Metrics.Observe(e)
			}
			if m.OnEvent != nil {
				m.OnEvent(e)
			}
		}
		if len(evs) < 1000 {
			return lastID
		}
	}
}

// refreshMetrics recomputes the per-VM counters from a report over p and
// re-arms timer t. The report costs seconds on a large log, so it runs at
// most every ten times its own duration.
func (m *Monitor) refreshMetrics(ctx context.Context, t *time.Timer, every time.Duration, p Period, opts Options) {
	if m.Metrics == nil || !p.To.After(p.From) {
		t.Reset(every)
		return
	}
	r, err := m.Log.Report(ctx, p, opts)
	t.Reset(max(every, 10*time.Since(p.To)))
	if err != nil {
		m.fail(err)
		return
	}
	m.Metrics.Update(r)
}
