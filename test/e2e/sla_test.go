//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryvm/ferry/sla"
)

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// slaEvents reads the SLA log through the CLI, quietly (it is polled).
func slaEvents(t *testing.T, e *env, args ...string) []sla.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := e.cmd(ctx, append([]string{"sla", "events", "--limit", "0", "-o", "json"}, args...)...).Output()
	if err != nil {
		t.Fatalf("ferry sla events %v: %v", args, err)
	}
	var evs []sla.Event
	if err := json.Unmarshal(out, &evs); err != nil {
		t.Fatalf("sla events json: %v\n%s", err, out)
	}
	return evs
}

// waitEvent waits until the log holds an event matching match (among those
// the filter args select) and returns all of them.
func waitEvent(t *testing.T, e *env, what string, within time.Duration, match func(sla.Event) bool, args ...string) []sla.Event {
	t.Helper()
	var evs []sla.Event
	waitFor(t, what, within, func() bool {
		evs = slaEvents(t, e, args...)
		return slices.ContainsFunc(evs, match)
	})
	return evs
}

func kinds(evs []sla.Event) []sla.Kind {
	out := make([]sla.Kind, len(evs))
	for i, ev := range evs {
		out[i] = ev.Kind
	}
	return out
}

// The SLA monitors against real hosts: a libvirtd stopped for longer than
// three polls gives PS_Timeout x3, PS_Unreachable, then PS_Reachable after it
// resumes; a killed QEMU gives VM_Failure and its restart VM_Reachable; a
// live migration by `ferry migrate` while the monitor runs lands in the same
// log with libvirt's downtime, which `ferry sla report` charges to the VM;
// and the report's figures add up from the intervals it lists.
func TestSLAMonitors(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-sla"
	newGuest(t, vm, guestSpec{host: "1", memMiB: 128, wssMiB: 16, rate: 500})
	start := time.Now()

	// The monitor, as a background process on this test's state database.
	monOut, monErr, stopMonitor := startMonitor(t, e, "127.0.0.1:0")

	// 1. On connect the agent places every running VM on its host.
	waitEvent(t, e, "VM_Reachable of the guest on host1", 30*time.Second, func(ev sla.Event) bool {
		return ev.Kind == sla.VMReachable && ev.Host == "host1"
	}, "--vm", vm)

	// 2. host2's libvirtd stops answering for longer than three polls.
	pid := libvirtdPID(t, "2")
	var stopped sync.Once
	cont := func() { stopped.Do(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) }
	t.Cleanup(cont) // never leave the lab's daemon stopped
	kill(t, pid, syscall.SIGSTOP)
	evs := waitEvent(t, e, "PS_Unreachable for host2", 30*time.Second, func(ev sla.Event) bool {
		return ev.Kind == sla.PSUnreachable
	}, "--host", "host2")
	cont()
	i := slices.IndexFunc(evs, func(ev sla.Event) bool { return ev.Kind == sla.PSUnreachable })
	if i < 3 || !slices.Equal(kinds(evs[i-3:i+1]), []sla.Kind{sla.PSTimeout, sla.PSTimeout, sla.PSTimeout, sla.PSUnreachable}) {
		t.Fatalf("host2 events before PS_Unreachable: %v, want PS_Timeout x3 then PS_Unreachable", kinds(evs[:i+1]))
	}
	for j, ev := range evs[i-3 : i] {
		if pl, _ := ev.DecodePayload(); pl.Consecutive != j+1 {
			t.Fatalf("timeout %d says consecutive=%d", j+1, pl.Consecutive)
		}
	}
	unreachableAt := evs[i].ObservedAt
	evs = waitEvent(t, e, "PS_Reachable for host2 after SIGCONT", 60*time.Second, func(ev sla.Event) bool {
		return ev.Kind == sla.PSReachable && ev.ObservedAt.After(unreachableAt)
	}, "--host", "host2")
	// (A lone PS_Timeout of host1 on a loaded machine is allowed: it is
	// recorded and is no outage.)
	if host1 := slaEvents(t, e, "--host", "host1", "--kind", "PS_Unreachable"); len(host1) > 0 {
		t.Fatalf("host1 was never stopped but has %v", kinds(host1))
	}

	// 3. The guest's QEMU is killed, then the guest is started again.
	kill(t, qemuPID(t, "1", vm), syscall.SIGKILL)
	evs = waitEvent(t, e, "VM_Failure of the killed guest", 30*time.Second, func(ev sla.Event) bool {
		return ev.Kind == sla.VMFailure
	}, "--vm", vm)
	failure := evs[slices.IndexFunc(evs, func(ev sla.Event) bool { return ev.Kind == sla.VMFailure })]
	if failure.Host != "host1" || failure.Source != sla.SourceLibvirt {
		t.Fatalf("failure event %+v", failure)
	}
	waitFor(t, "libvirt to see the guest shut off", 30*time.Second, func() bool { return domstate(t, "1", vm) == "shut off" })
	virshOK(t, "1", "start", vm)
	waitEvent(t, e, "VM_Reachable after the restart", 30*time.Second, func(ev sla.Event) bool {
		return ev.Kind == sla.VMReachable && ev.ObservedAt.After(failure.ObservedAt)
	}, "--vm", vm)
	heartbeatAbove(t, vm, 0, 60*time.Second)

	// 4. A live migration by ferry migrate, sharing the state database.
	if r := e.ferry("migrate", vm, "--to", "host2"); r.code != 0 {
		t.Fatalf("migrate: exit %d", r.code)
	}
	rows := e.history(vm)
	if len(rows) != 1 || rows[0].DowntimeMS == nil {
		t.Fatalf("journal %+v", rows)
	}
	mig := rows[0]
	migEvs := slaEvents(t, e, "--migration", mig.ID)
	if ks := kinds(migEvs); len(ks) < 2 || ks[0] != sla.MigrationPlanned || !slices.Contains(ks, sla.MigrationCompleted) {
		t.Fatalf("migration events %v", ks)
	}
	var completed sla.Event
	for _, ev := range migEvs {
		if ev.Kind == sla.MigrationCompleted {
			completed = ev
		}
	}
	pl, _ := completed.DecodePayload()
	if completed.Host != "host2" || pl.DowntimeMS == nil || *pl.DowntimeMS != *mig.DowntimeMS {
		t.Fatalf("Migration_Completed %+v (payload %s), journal downtime %d ms", completed, completed.Payload, *mig.DowntimeMS)
	}
	// The destination's lifecycle events carry the migration id: no failure.
	waitEvent(t, e, "the guest seen on host2", 30*time.Second, func(ev sla.Event) bool {
		return ev.Kind == sla.VMReachable && ev.Host == "host2" && ev.CorrelationID == mig.ID
	}, "--vm", vm)

	// 5. The report charges the pause and the failure, and adds up.
	rep, entry := vmReport(t, e, vm, start)
	var pause, crash *sla.Interval
	for i, iv := range entry.Intervals {
		switch iv.Rule {
		case sla.RuleMigrationPause:
			pause = &entry.Intervals[i]
		case sla.RuleVMFailure:
			crash = &entry.Intervals[i]
		}
	}
	if pause == nil || pause.CorrelationID != mig.ID || pause.Class != sla.ClassDowntime ||
		pause.Duration() != time.Duration(*mig.DowntimeMS)*time.Millisecond {
		t.Fatalf("no migration-pause interval of %d ms for %s: %+v", *mig.DowntimeMS, mig.ID, entry.Intervals)
	}
	if crash == nil || crash.Open || crash.Duration() <= 0 || !crash.Start.Equal(failure.ObservedAt) {
		t.Fatalf("no closed vm-failure interval from %s: %+v", failure.ObservedAt, entry.Intervals)
	}
	if !slices.Equal(entry.Hosts, []string{"host1", "host2"}) {
		t.Fatalf("hosts %v", entry.Hosts)
	}
	checkFiguresAddUp(t, rep.Report, entry, rep.Events)

	// 6. Prometheus saw the migration's pause.
	m := regexp.MustCompile(`metrics (http://\S+/metrics)`).FindStringSubmatch(monErr.String())
	if m == nil {
		t.Fatalf("monitor did not say where its metrics are: %s", monErr.String())
	}
	waitFor(t, "the migration in the metrics", 30*time.Second, func() bool {
		resp, err := http.Get(m[1])
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), "ferry_sla_migration_downtime_seconds_count 1") &&
			strings.Contains(string(body), `ferry_sla_host_up{host="host2"} 1`)
	})

	// 7. The monitor stops cleanly on SIGTERM, and it printed what it recorded.
	if err := stopMonitor(); err != nil {
		t.Fatalf("monitor exit: %v\n%s", err, monErr.String())
	}
	for _, want := range []string{"PS_Unreachable", "PS_Reachable", "VM_Failure", "Migration_Completed", "monitor stopped"} {
		if !strings.Contains(monOut.String(), want) {
			t.Errorf("monitor output lacks %s", want)
		}
	}
}

// startMonitor runs `ferry sla monitor` (1 s polls, unreachable after 3) in
// the background on e's state database until stop or the test's end; metrics
// is its --metrics-addr.
func startMonitor(t *testing.T, e *env, metrics string) (out, errb *syncBuffer, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	mon := e.cmd(ctx, "sla", "monitor", "--poll-interval", "1s", "--poll-timeout", "1s", "--unreachable-after", "3",
		"--metrics-addr", metrics)
	out, errb = &syncBuffer{}, &syncBuffer{}
	mon.Stdout, mon.Stderr = out, errb
	if err := mon.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mon.Wait() }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			defer cancel()
			_ = syscall.Kill(mon.Process.Pid, syscall.SIGTERM)
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				_ = mon.Process.Kill()
				err = fmt.Errorf("ferry sla monitor did not stop on SIGTERM within 30 s")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("monitor: %v", err)
		}
		t.Logf("ferry sla monitor output:\n%s%s", out.String(), errb.String())
	})
	return out, errb, stop
}

// slaReport is `ferry sla report -o json`: the report and the events it cites.
type slaReport struct {
	sla.Report
	Events []sla.Event `json:"events"`
}

// vmReport is the SLA report of vm since a minute before start, and its one
// entry; extra are more flags.
func vmReport(t *testing.T, e *env, vm string, start time.Time, extra ...string) (slaReport, sla.Entry) {
	t.Helper()
	args := append([]string{"sla", "report", "--vm", vm, "--from", start.Add(-time.Minute).UTC().Format(time.RFC3339Nano), "-o", "json"}, extra...)
	r := e.ferry(args...)
	if r.code != 0 {
		t.Fatalf("report: exit %d", r.code)
	}
	var rep slaReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("report json: %v", err)
	}
	if len(rep.VMs) != 1 || rep.VMs[0].Name != vm {
		t.Fatalf("report entries %+v", rep.VMs)
	}
	return rep, rep.VMs[0]
}

// checkFiguresAddUp recomputes an entry's figures from the intervals the
// report lists: downtime is the union of the downtime intervals minus the
// union of the excluded ones, eligible the window minus the excluded time,
// availability and budget follow, and every event cited is in the report.
func checkFiguresAddUp(t *testing.T, r sla.Report, e sla.Entry, evs []sla.Event) {
	t.Helper()
	type span struct{ s, e time.Time }
	union := func(in []span) []span {
		slices.SortFunc(in, func(a, b span) int { return a.s.Compare(b.s) })
		var out []span
		for _, x := range in {
			if !x.e.After(x.s) {
				continue
			}
			if n := len(out); n > 0 && !x.s.After(out[n-1].e) {
				if x.e.After(out[n-1].e) {
					out[n-1].e = x.e
				}
				continue
			}
			out = append(out, x)
		}
		return out
	}
	var down, excl []span
	for _, iv := range e.Intervals {
		switch iv.Class {
		case sla.ClassDowntime:
			down = append(down, span{iv.Start, iv.End})
		case sla.ClassExcluded:
			excl = append(excl, span{iv.Start, iv.End})
		}
	}
	down, excl = union(down), union(excl)
	var downtime, excluded time.Duration
	for _, d := range down {
		downtime += d.e.Sub(d.s)
		for _, x := range excl { // overlap with excluded time
			lo, hi := d.s, d.e
			if x.s.After(lo) {
				lo = x.s
			}
			if x.e.Before(hi) {
				hi = x.e
			}
			if hi.After(lo) {
				downtime -= hi.Sub(lo)
			}
		}
	}
	for _, x := range excl {
		excluded += x.e.Sub(x.s)
	}
	var charged time.Duration
	for _, s := range e.Charged {
		charged += s.End.Sub(s.Start)
	}
	eligible := r.End.Sub(r.Period.From) - excluded
	if downtime != e.Downtime || charged != e.Downtime || eligible != e.Eligible {
		t.Fatalf("figures do not add up: intervals give downtime %v (charged spans %v), eligible %v; report says %v, %v",
			downtime, charged, eligible, e.Downtime, e.Eligible)
	}
	if want := 100 * (1 - float64(e.Downtime)/float64(e.Eligible)); math.Abs(want-e.Availability) > 1e-9 {
		t.Fatalf("availability %v, intervals give %v", e.Availability, want)
	}
	budget := time.Duration(math.Round(float64(e.Eligible) * (100 - e.Target) / 100))
	if e.Budget != budget || e.BudgetLeft != budget-e.Downtime || e.Met != (e.Downtime <= budget) {
		t.Fatalf("budget %v left %v met %v; want %v, %v, %v", e.Budget, e.BudgetLeft, e.Met, budget, budget-e.Downtime, e.Downtime <= budget)
	}
	ids := map[int64]bool{}
	for _, ev := range evs {
		ids[ev.ID] = true
	}
	for _, iv := range e.Intervals {
		for _, id := range iv.EventIDs {
			if !ids[id] {
				t.Fatalf("interval %s %s cites event #%d, which the report does not list", iv.Rule, iv.Start, id)
			}
		}
	}
}
