package sla

import (
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferryvm/ferry/virt"
	"github.com/ferryvm/ferry/virt/virttest"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2025, 6, 10, 12, 0, 0, 0, time.UTC)
	cases := map[string]time.Time{
		"now":                       now,
		"NOW":                       now,
		"-24h":                      now.Add(-24 * time.Hour),
		"-30d":                      now.Add(-30 * 24 * time.Hour),
		"-1d12h":                    now.Add(-36 * time.Hour),
		"+15m":                      now.Add(15 * time.Minute),
		"2025-06-01T10:00:00Z":      time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC),
		"2025-06-01T12:00:00+02:00": time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC),
		"2025-06-01T10:00:00.5Z":    time.Date(2025, 6, 1, 10, 0, 0, 5e8, time.UTC),
		"2025-06-01":                time.Date(2025, 6, 1, 0, 0, 0, 0, time.Local),
	}
	for in, want := range cases {
		got, err := ParseTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "yesterday", "-", "-xd", "-1d-2h", "2025-13-01", "-24"} {
		if _, err := ParseTime(bad, now); err == nil {
			t.Errorf("ParseTime(%q) accepted", bad)
		}
	}
}

// The monitor writes both agents' events to the log, follows the log (it
// sees what other processes append, such as the orchestrator's migration
// events) and serves the metrics.
func TestMonitorEndToEndWithFakes(t *testing.T) {
	cl := virttest.NewCluster()
	ha := cl.AddHost(uriA, virt.Capacity{CPUs: 2})
	cl.AddHost(uriB, virt.Capacity{CPUs: 2})
	ha.AddDomain("vm1", uuid1, 1<<30, virt.StateRunning)
	log := newTestLog(t)

	var (
		mu   sync.Mutex
		seen []Event
		down = map[string]bool{}
	)
	probe := ProbeFunc(func(ctx context.Context, h Target) error {
		mu.Lock()
		d := down[h.Name]
		mu.Unlock()
		if d {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	connected := make(chan string, 4)
	m := &Monitor{
		Log: log, Hosts: []Target{{Name: "host-a", URI: uriA}, {Name: "host-b", URI: uriB}},
		Dial: cl.Dial, Probe: probe,
		PollInterval: 20 * time.Millisecond, PollTimeout: 10 * time.Millisecond, UnreachableAfter: 3,
		Metrics: NewMetrics(), TailInterval: 5 * time.Millisecond, RefreshInterval: 20 * time.Millisecond,
		OnEvent:   func(e Event) { mu.Lock(); seen = append(seen, e); mu.Unlock() },
		OnError:   func(err error) { t.Errorf("monitor: %v", err) },
		OnConnect: func(h string) { connected <- h },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	<-connected
	<-connected

	wait := func(what string, cond func([]Event) bool) {
		t.Helper()
		eventually(t, what, func() bool {
			mu.Lock()
			evs := append([]Event(nil), seen...)
			mu.Unlock()
			return cond(evs)
		})
	}
	wait("vm1 placed", func(evs []Event) bool { return has(evs, VMReachable, "host-a", "vm1") })

	mu.Lock()
	down["host-b"] = true
	mu.Unlock()
	wait("host-b unreachable", func(evs []Event) bool { return has(evs, PSUnreachable, "host-b", "") })
	mu.Lock()
	down["host-b"] = false
	mu.Unlock()
	wait("host-b reachable", func(evs []Event) bool { return has(evs, PSReachable, "host-b", "") })

	// Another process (ferry migrate) writes a migration's outcome.
	if _, err := log.Append(context.Background(), Event{Kind: MigrationCompleted, Host: "host-b", VMName: "vm1",
		Source: SourceOrchestrator, ObservedAt: time.Now(), CorrelationID: "mig-9",
		Payload: json.RawMessage(`{"downtime_ms":42,"source":"host-a","destination":"host-b"}`)}); err != nil {
		t.Fatal(err)
	}
	wait("the migration event", func(evs []Event) bool { return has(evs, MigrationCompleted, "host-b", "vm1") })
	wants := []string{
		`ferry_sla_host_up{host="host-a"} 1`,
		`ferry_sla_host_up{host="host-b"} 1`,
		`ferry_sla_migration_downtime_seconds_count 1`,
		`ferry_sla_migration_downtime_seconds_sum 0.042`,
		`ferry_sla_events_total{kind="PS_Unreachable"} 1`,
		`ferry_sla_vm_eligible_seconds_total{vm="vm1"}`,
		`ferry_sla_vm_unavailable_seconds_total{vm="vm1"}`,
	}
	// The metrics follow the log at the next refresh: poll for it.
	var body []byte
	missing := func() []string {
		rec := httptest.NewRecorder()
		m.Metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		body, _ = io.ReadAll(rec.Body)
		var out []string
		for _, want := range wants {
			if !strings.Contains(string(body), want) {
				out = append(out, want)
			}
		}
		return out
	}
	var miss []string
	defer func() {
		if len(miss) > 0 {
			t.Logf("metrics lack %q:\n%s", miss, body)
		}
	}()
	eventually(t, "the metrics to follow the log", func() bool { miss = missing(); return len(miss) == 0 })

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !has(seen, MonitorBlind, "host-a", "") {
		t.Fatalf("the stop was not followed to the end:\n%s", dump(seen))
	}
}

func TestMetricsCountersNeverGoBack(t *testing.T) {
	m := NewMetrics()
	m.Update(Report{VMs: []Entry{{Name: "vm1", Downtime: 10 * time.Second, Eligible: time.Hour}}})
	m.Update(Report{VMs: []Entry{{Name: "vm1", Downtime: 5 * time.Second, Eligible: 2 * time.Hour}}})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{`ferry_sla_vm_unavailable_seconds_total{vm="vm1"} 10`, `ferry_sla_vm_eligible_seconds_total{vm="vm1"} 7200`} {
		if !strings.Contains(body, want) {
			t.Errorf("want %q in\n%s", want, body)
		}
	}
}
