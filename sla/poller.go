package sla

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ferryvm/ferry/virt"
)

// Polling agent defaults (DESIGN.md §5).
const (
	// DefaultPollTimeout bounds one poll of one host.
	DefaultPollTimeout = 5 * time.Second
	// DefaultUnreachableAfter is the number of consecutive failed polls that
	// make a host unreachable.
	DefaultUnreachableAfter = 3
	// probeDialTimeout bounds a probe's connect, which runs in the background
	// and may outlive the poll that started it.
	probeDialTimeout = time.Minute
)

// Target is one monitored host: its inventory name, used in every event, and
// its libvirt URI.
type Target struct {
	Name string `json:"name"`
	URI  string `json:"uri"`
}

// DialFunc opens a connection to a libvirt host; virt.Dial in production.
type DialFunc func(ctx context.Context, uri string) (virt.Host, error)

// Prober checks that a host answers. Probe must return by the time ctx ends;
// any error counts as a failed poll.
type Prober interface {
	Probe(ctx context.Context, t Target) error
}

// ProbeFunc adapts a function to Prober.
type ProbeFunc func(ctx context.Context, t Target) error

// Probe calls f.
func (f ProbeFunc) Probe(ctx context.Context, t Target) error { return f(ctx, t) }

// Sink stores the events the agents produce (the Log, or a Monitor that also
// counts them). Record is called from several goroutines.
type Sink interface {
	Record(ctx context.Context, evs ...Event) error
}

// Poller is the polling agent: every Interval it probes every host, each
// probe bounded by Timeout, and records PS_Timeout for each failed poll,
// PS_Unreachable when UnreachableAfter polls in a row have failed, and
// PS_Reachable on the first successful poll after that. A run of failures
// that ends before the threshold leaves its PS_Timeout rows (the report lists
// them as a false positive) and no outage. Every event of a poll carries the
// time the poll was sent.
type Poller struct {
	Hosts []Target
	Probe Prober
	Sink  Sink
	// Interval, Timeout and UnreachableAfter: zero takes the defaults.
	Interval         time.Duration
	Timeout          time.Duration
	UnreachableAfter int
	// Unreachable names hosts that start in the unreachable state (an outage
	// the log holds open from an earlier run): their first successful poll
	// records PS_Reachable.
	Unreachable map[string]bool
	// OnPoll, when set, is told the outcome of every poll and whether the
	// host is now considered unreachable (for the host-up gauge).
	OnPoll func(host string, at time.Time, err error, unreachable bool)
	// OnError is told when the sink fails; nil ignores it.
	OnError func(error)

	once  sync.Once
	mu    sync.Mutex
	state map[string]*pollState
}

// pollState is one host's run of failed polls.
type pollState struct {
	failures    int
	unreachable bool
}

// observe advances the state with one poll's outcome and returns the events
// it produces.
func (s *pollState) observe(host string, at time.Time, err error, after int) []Event {
	if err == nil {
		s.failures = 0
		if !s.unreachable {
			return nil
		}
		s.unreachable = false
		return []Event{{Kind: PSReachable, Host: host, Source: SourcePoller, ObservedAt: at, Detail: "poll answered"}}
	}
	s.failures++
	pl, _ := json.Marshal(map[string]int{"consecutive": s.failures})
	out := []Event{{Kind: PSTimeout, Host: host, Source: SourcePoller, ObservedAt: at, Detail: err.Error(), Payload: pl}}
	if !s.unreachable && s.failures >= after {
		s.unreachable = true
		out = append(out, Event{Kind: PSUnreachable, Host: host, Source: SourcePoller, ObservedAt: at,
			Detail: fmt.Sprintf("%d consecutive polls failed", s.failures)})
	}
	return out
}

func (p *Poller) init() {
	p.once.Do(func() {
		if p.Interval <= 0 {
			p.Interval = DefaultPollInterval
		}
		if p.Timeout <= 0 {
			p.Timeout = DefaultPollTimeout
		}
		if p.UnreachableAfter <= 0 {
			p.UnreachableAfter = DefaultUnreachableAfter
		}
		p.state = map[string]*pollState{}
		for _, h := range p.Hosts {
			p.state[h.Name] = &pollState{unreachable: p.Unreachable[h.Name]}
		}
	})
}

// Round polls every host once, concurrently, as of at, records the events
// and returns them (in host order). It returns within Timeout (plus the
// sink's time) whatever the hosts do, provided the Prober honours its ctx.
func (p *Poller) Round(ctx context.Context, at time.Time) []Event {
	p.init()
	errs := make([]error, len(p.Hosts))
	var wg sync.WaitGroup
	for i, h := range p.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, p.Timeout)
			defer cancel()
			errs[i] = p.probe(pctx, h)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil // stopping: an interrupted poll says nothing about the host
	}
	var out []Event
	p.mu.Lock()
	for i, h := range p.Hosts {
		st := p.state[h.Name]
		out = append(out, st.observe(h.Name, at, errs[i], p.UnreachableAfter)...)
		if p.OnPoll != nil {
			p.OnPoll(h.Name, at, errs[i], st.unreachable)
		}
	}
	p.mu.Unlock()
	if len(out) > 0 {
		if err := p.Sink.Record(ctx, out...); err != nil && p.OnError != nil {
			p.OnError(fmt.Errorf("poller: %w", err))
		}
	}
	return out
}

// probe runs one probe and turns a probe that overstays its deadline into a
// timeout, so that a Prober ignoring ctx cannot stall the round for long.
func (p *Poller) probe(ctx context.Context, h Target) error {
	done := make(chan error, 1)
	go func() { done <- p.Probe.Probe(ctx, h) }()
	select {
	case err := <-done:
		if err != nil && ctx.Err() != nil && !errors.Is(err, ErrPollTimeout) {
			return fmt.Errorf("%w after %s: %w", ErrPollTimeout, p.Timeout, err)
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w after %s", ErrPollTimeout, p.Timeout)
	}
}

// Run polls every Interval until ctx ends, the first round at once.
func (p *Poller) Run(ctx context.Context) error {
	p.init()
	if len(p.Hosts) == 0 {
		return errors.New("poller: no hosts")
	}
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	at := time.Now()
	for {
		p.Round(ctx, at)
		select {
		case <-ctx.Done():
			return nil
		case at = <-t.C:
		}
	}
}

// ErrPollTimeout is wrapped by the error of a poll that got no answer in time.
var ErrPollTimeout = errors.New("no answer")

// LibvirtProbe probes hosts over libvirt: it keeps one connection per host
// and calls Capacity (node info, free memory, versions) on it, redialling
// when the connection is gone. At most one call per host is outstanding: a
// poll that finds the previous one still blocked (a stopped daemon holds it
// until libvirt's keepalive gives up) waits for that one instead of piling up
// another, and reports a timeout when its own deadline passes.
type LibvirtProbe struct {
	// Dial defaults to virt.Dial.
	Dial DialFunc

	mu    sync.Mutex
	hosts map[string]*probeHost
}

type probeHost struct {
	conn     virt.Host
	inflight *probeCall
}

type probeCall struct {
	done chan struct{}
	err  error
}

// Probe implements Prober.
func (lp *LibvirtProbe) Probe(ctx context.Context, t Target) error {
	lp.mu.Lock()
	if lp.hosts == nil {
		lp.hosts = map[string]*probeHost{}
	}
	ph := lp.hosts[t.URI]
	if ph == nil {
		ph = &probeHost{}
		lp.hosts[t.URI] = ph
	}
	call := ph.inflight
	if call == nil {
		call = &probeCall{done: make(chan struct{})}
		ph.inflight = call
		go lp.call(ph, call, t.URI)
	}
	lp.mu.Unlock()
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return fmt.Errorf("%w from %s: %w", ErrPollTimeout, t.URI, ctx.Err())
	}
}

// call connects if needed and asks the host for its capacity.
func (lp *LibvirtProbe) call(ph *probeHost, call *probeCall, uri string) {
	defer func() {
		lp.mu.Lock()
		ph.inflight = nil
		lp.mu.Unlock()
		close(call.done)
	}()
	lp.mu.Lock()
	conn := ph.conn
	lp.mu.Unlock()
	if conn == nil {
		dial := lp.Dial
		if dial == nil {
			dial = virt.Dial
		}
		ctx, cancel := context.WithTimeout(context.Background(), probeDialTimeout)
		c, err := dial(ctx, uri)
		cancel()
		if err != nil {
			call.err = err
			return
		}
		conn = c
		lp.mu.Lock()
		ph.conn = conn
		lp.mu.Unlock()
	}
	if _, err := conn.Capacity(); err != nil {
		call.err = err
		lp.mu.Lock()
		ph.conn = nil
		lp.mu.Unlock()
		_ = conn.Close()
	}
}

// Close closes the probe's connections (outstanding calls finish on their own).
func (lp *LibvirtProbe) Close() {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	for _, ph := range lp.hosts {
		if ph.conn != nil && ph.inflight == nil {
			go ph.conn.Close() // a hung daemon must not hold up the stop
			ph.conn = nil
		}
	}
}
