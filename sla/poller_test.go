package sla

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryvm/ferry/virt"
	"github.com/ferryvm/ferry/virt/virttest"
)

// memSink keeps recorded events in memory and, when log is set, appends them
// there too (the agent reads its history back from the log).
type memSink struct {
	mu   sync.Mutex
	evs  []Event
	log  *Log
	wake chan struct{}
}

func newMemSink(log *Log) *memSink { return &memSink{log: log, wake: make(chan struct{}, 1)} }

func (s *memSink) Record(ctx context.Context, evs ...Event) error {
	if s.log != nil {
		if _, err := s.log.Append(ctx, evs...); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.evs = append(s.evs, evs...)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

func (s *memSink) events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.evs)
}

// waitFor waits until cond holds on the recorded events.
func (s *memSink) waitFor(t *testing.T, what string, cond func([]Event) bool) []Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		evs := s.events()
		if cond(evs) {
			return evs
		}
		select {
		case <-s.wake:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s; recorded:\n%s", what, dump(evs))
		}
	}
}

func dump(evs []Event) string {
	out := ""
	for _, e := range evs {
		out += string(e.Kind) + " host=" + e.Host + " vm=" + e.VMName + " corr=" + e.CorrelationID + " " + e.Detail + "\n"
	}
	return out
}

func kindsOf(evs []Event) []Kind {
	out := make([]Kind, len(evs))
	for i, e := range evs {
		out[i] = e.Kind
	}
	return out
}

// scriptProbe answers each host's polls from a script: true = answered.
type scriptProbe struct {
	mu     sync.Mutex
	script map[string][]bool
}

func (p *scriptProbe) Probe(_ context.Context, t Target) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.script[t.Name]
	if len(s) == 0 {
		return nil
	}
	ok := s[0]
	p.script[t.Name] = s[1:]
	if ok {
		return nil
	}
	return errors.New("connection timed out")
}

func TestPollerSequences(t *testing.T) {
	const (
		ok   = true
		fail = false
	)
	cases := []struct {
		name   string
		script []bool
		seed   bool // starts unreachable
		want   []Kind
	}{
		{"healthy", []bool{ok, ok, ok}, false, nil},
		{"two timeouts then success: recorded, no outage", []bool{fail, fail, ok, ok}, false,
			[]Kind{PSTimeout, PSTimeout}},
		{"three timeouts: unreachable, then reachable", []bool{fail, fail, fail, fail, ok, ok}, false,
			[]Kind{PSTimeout, PSTimeout, PSTimeout, PSUnreachable, PSTimeout, PSReachable}},
		{"a success resets the count", []bool{fail, fail, ok, fail, fail, ok}, false,
			[]Kind{PSTimeout, PSTimeout, PSTimeout, PSTimeout}},
		{"an outage left open by an earlier run closes on the first success", []bool{ok, ok}, true,
			[]Kind{PSReachable}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sink := newMemSink(nil)
			p := &Poller{
				Hosts: []Target{{Name: "host-a", URI: "qemu+tcp://a/system"}},
				Probe: &scriptProbe{script: map[string][]bool{"host-a": tc.script}},
				Sink:  sink, Interval: 20 * time.Second, Timeout: time.Second,
				Unreachable: map[string]bool{"host-a": tc.seed},
			}
			for i := range tc.script {
				p.Round(context.Background(), at(time.Duration(i)*20*time.Second))
			}
			if got := kindsOf(sink.events()); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// The poller's events, fed to Compute, give the network-failure figure:
// unavailable from PS_Unreachable to PS_Reachable, the first PS_Timeout as
// the early bound; a recovered run is listed as a false positive.
func TestPollerEventsMakeTheReport(t *testing.T) {
	sink := newMemSink(nil)
	script := []bool{true, false, true, false, false, false, false, true, true}
	p := &Poller{
		Hosts: []Target{{Name: "host-a"}},
		Probe: &scriptProbe{script: map[string][]bool{"host-a": script}},
		Sink:  sink, Interval: 20 * time.Second, Timeout: time.Second,
	}
	for i := range script {
		p.Round(context.Background(), at(time.Duration(i)*20*time.Second))
	}
	evs := seq(placed("host-a", "vm1"), sink.events())
	r, err := Compute(evs, nil, period30, Options{Target: DefaultTarget, Now: fixedNow})
	if err != nil {
		t.Fatal(err)
	}
	vm, _ := r.VM("vm1")
	// timeouts at 60, 80, 100, 120 s: unreachable at 100 s, reachable at 140 s.
	if vm.DowntimeLow != 40*time.Second || vm.DowntimeHigh != 80*time.Second || vm.Downtime != vm.DowntimeLow {
		t.Fatalf("downtime %v (low %v, high %v), want 40s (40s, 80s)", vm.Downtime, vm.DowntimeLow, vm.DowntimeHigh)
	}
	h, _ := r.Host("host-a")
	var rules []Rule
	for _, iv := range h.Intervals {
		rules = append(rules, iv.Rule)
	}
	if !slices.Equal(rules, []Rule{RuleTimeoutRecovered, RuleHostUnreachable}) {
		t.Fatalf("host intervals %v", rules)
	}
}

// A probe that ignores its context (a hung libvirt call) still yields a
// timeout once the poll's deadline passes, and other hosts are not delayed.
func TestPollerTimeoutOnHungProbe(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	probe := ProbeFunc(func(_ context.Context, h Target) error {
		if h.Name == "stopped" {
			<-release
		}
		return nil
	})
	sink := newMemSink(nil)
	var polls atomic.Int32
	p := &Poller{
		Hosts: []Target{{Name: "stopped"}, {Name: "fine"}},
		Probe: probe, Sink: sink, Timeout: 50 * time.Millisecond, UnreachableAfter: 2,
		OnPoll: func(string, time.Time, error, bool) { polls.Add(1) },
	}
	start := time.Now()
	p.Round(context.Background(), at(0))
	p.Round(context.Background(), at(time.Second))
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("two rounds took %v", d)
	}
	evs := sink.events()
	if got := kindsOf(evs); !slices.Equal(got, []Kind{PSTimeout, PSTimeout, PSUnreachable}) {
		t.Fatalf("events %v", got)
	}
	for _, e := range evs {
		if e.Host != "stopped" {
			t.Fatalf("event for %s", e.Host)
		}
	}
	if evs[0].Detail == "" {
		t.Fatal("PS_Timeout without a detail")
	}
	if polls.Load() != 4 {
		t.Fatalf("OnPoll called %d times, want 4", polls.Load())
	}
}

// blockingHost is a fake host whose Capacity blocks until released, like a
// libvirtd stopped with SIGSTOP.
type blockingHost struct {
	*virttest.Host
	gate  chan struct{}
	calls *atomic.Int32
}

func (h blockingHost) Capacity() (virt.Capacity, error) {
	h.calls.Add(1)
	<-h.gate
	return h.Host.Capacity()
}

func TestLibvirtProbeDoesNotPileUpCalls(t *testing.T) {
	cl := virttest.NewCluster()
	fh := cl.AddHost("qemu+tcp://127.0.0.1/system", virt.Capacity{CPUs: 1})
	gate := make(chan struct{})
	var calls, dials atomic.Int32
	lp := &LibvirtProbe{Dial: func(ctx context.Context, uri string) (virt.Host, error) {
		dials.Add(1)
		if _, err := cl.Dial(ctx, uri); err != nil {
			return nil, err
		}
		return blockingHost{Host: fh, gate: gate, calls: &calls}, nil
	}}
	target := Target{Name: "h", URI: fh.URI()}
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		err := lp.Probe(ctx, target)
		cancel()
		if !errors.Is(err, ErrPollTimeout) {
			t.Fatalf("probe of a stopped host: %v, want a timeout", err)
		}
	}
	if calls.Load() != 1 || dials.Load() != 1 {
		t.Fatalf("%d calls, %d dials while stopped, want 1 and 1", calls.Load(), dials.Load())
	}
	close(gate) // SIGCONT
	if err := lp.Probe(context.Background(), target); err != nil {
		t.Fatalf("probe after the host resumed: %v", err)
	}
	if err := lp.Probe(context.Background(), target); err != nil {
		t.Fatalf("probe on the kept connection: %v", err)
	}
	if dials.Load() != 1 {
		t.Fatalf("redialled a working connection (%d dials)", dials.Load())
	}
	fh.SetDown(true)
	lp.Close()
}

func TestLibvirtProbeRedialsAfterFailure(t *testing.T) {
	cl := virttest.NewCluster()
	fh := cl.AddHost("qemu+tcp://127.0.0.1/system", virt.Capacity{CPUs: 1})
	lp := &LibvirtProbe{Dial: cl.Dial}
	target := Target{Name: "h", URI: fh.URI()}
	if err := lp.Probe(context.Background(), target); err != nil {
		t.Fatal(err)
	}
	fh.SetDown(true)
	lp.mu.Lock()
	lp.hosts[target.URI].conn = nil // the connection died with the daemon
	lp.mu.Unlock()
	if err := lp.Probe(context.Background(), target); !errors.Is(err, virt.ErrUnreachable) {
		t.Fatalf("probe of a down host: %v", err)
	}
	fh.SetDown(false)
	if err := lp.Probe(context.Background(), target); err != nil {
		t.Fatalf("probe after restart: %v", err)
	}
}
