package sla

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferryvm/ferry/journal"
)

// writeFleetEvents writes about n JSON-line events for a fleet of vms VMs on
// hosts hosts over a year starting at from: a sighting of every VM, then
// random episodes (false-positive timeouts, sightings, host outages, VM
// failures, migrations, owner stops). It returns the number of lines.
func writeFleetEvents(path string, n, vms, hosts int, from time.Time) (int, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.New(rand.NewPCG(42, 1))
	year := 365 * 24 * time.Hour
	on := make([]int, vms)
	lines := 0
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	emit := func(format string, args ...any) {
		fmt.Fprintf(w, format+"\n", args...)
		lines++
	}
	for v := range vms {
		on[v] = v % hosts
		emit(`{"kind":"VM_Reachable","host":"host-%02d","vm":"vm-%03d","observed_at":%q}`, on[v], v, ts(from.Add(-time.Hour)))
	}
	mig := 0
	for lines < n {
		t := from.Add(time.Duration(rng.Int64N(int64(year))))
		h := rng.IntN(hosts)
		v := rng.IntN(vms)
		switch p := rng.IntN(10000); {
		case p < 5000: // a lone timeout: false positive
			emit(`{"kind":"PS_Timeout","host":"host-%02d","observed_at":%q}`, h, ts(t))
		case p < 9400: // a sighting of a VM where it runs
			emit(`{"kind":"VM_Reachable","host":"host-%02d","vm":"vm-%03d","observed_at":%q}`, on[v], v, ts(t))
		case p < 9403: // host outage seen by the poller
			for i := range 3 {
				emit(`{"kind":"PS_Timeout","host":"host-%02d","observed_at":%q}`, h, ts(t.Add(time.Duration(i)*20*time.Second)))
			}
			emit(`{"kind":"PS_Unreachable","host":"host-%02d","observed_at":%q}`, h, ts(t.Add(40*time.Second)))
			emit(`{"kind":"PS_Reachable","host":"host-%02d","observed_at":%q}`, h, ts(t.Add(40*time.Second+time.Duration(rng.IntN(600))*time.Second)))
		case p < 9453: // VM crash and recovery
			emit(`{"kind":"VM_Failure","host":"host-%02d","vm":"vm-%03d","observed_at":%q}`, on[v], v, ts(t))
			emit(`{"kind":"VM_Reachable","host":"host-%02d","vm":"vm-%03d","observed_at":%q}`, on[v], v, ts(t.Add(time.Duration(1+rng.IntN(300))*time.Second)))
		case p < 9853: // live migration
			mig++
			dst := (on[v] + 1 + rng.IntN(hosts-1)) % hosts
			emit(`{"kind":"Migration_Planned","host":"host-%02d","vm":"vm-%03d","observed_at":%q,"correlation_id":"mig-%d"}`, on[v], v, ts(t), mig)
			emit(`{"kind":"Migration_Switchover","host":"host-%02d","vm":"vm-%03d","observed_at":%q,"correlation_id":"mig-%d"}`, on[v], v, ts(t.Add(time.Minute)), mig)
			emit(`{"kind":"Migration_Completed","host":"host-%02d","vm":"vm-%03d","observed_at":%q,"correlation_id":"mig-%d","payload":{"downtime_ms":%d,"source":"host-%02d","destination":"host-%02d"}}`,
				dst, v, ts(t.Add(time.Minute+time.Second)), mig, 20+rng.IntN(400), on[v], dst)
			on[v] = dst
		default: // owner stop and start
			emit(`{"kind":"VM_Stopped","host":"host-%02d","vm":"vm-%03d","observed_at":%q}`, on[v], v, ts(t))
			emit(`{"kind":"VM_Started","host":"host-%02d","vm":"vm-%03d","observed_at":%q}`, on[v], v, ts(t.Add(time.Duration(1+rng.IntN(86400))*time.Second)))
		}
	}
	if err := w.Flush(); err != nil {
		return 0, err
	}
	return lines, f.Close()
}

// BenchmarkImportAndReport imports a year of events for 200 VMs on 20 hosts
// (1 000 000 events) into a fresh SQLite file and computes the fleet report.
func BenchmarkImportAndReport(b *testing.B) {
	const (
		nEvents = 1_000_000
		nVMs    = 200
		nHosts  = 20
	)
	from := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	dir := b.TempDir()
	src := filepath.Join(dir, "events.jsonl")
	lines, err := writeFleetEvents(src, nEvents, nVMs, nHosts, from)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	p := Period{From: from, To: from.AddDate(1, 0, 0)}
	o := DefaultOptions()
	o.Now = func() time.Time { return p.To }
	var importTime, reportTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		db, err := journal.OpenDB(ctx, filepath.Join(dir, fmt.Sprintf("ferry-%d.db", i)))
		if err != nil {
			b.Fatal(err)
		}
		l, err := NewLog(ctx, db)
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(src)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		t0 := time.Now()
		n, err := l.Import(ctx, f, "bench")
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		r, err := l.Report(ctx, p, o)
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()

		b.StopTimer()
		importTime += t1.Sub(t0)
		reportTime += t2.Sub(t1)
		f.Close()
		db.Close()
		if n < lines*99/100 || len(r.VMs) != nVMs || len(r.Hosts) != nHosts {
			b.Fatalf("imported %d of %d lines; %d VM and %d host entries", n, lines, len(r.VMs), len(r.Hosts))
		}
		if i == 0 {
			met := 0
			for _, e := range r.VMs {
				if e.Met {
					met++
				}
			}
			b.Logf("%d events; %d/%d VMs met %.2f%%; import %v, report %v", n, met, len(r.VMs), o.Target, t1.Sub(t0), t2.Sub(t1))
		}
		b.StartTimer()
	}
	b.StopTimer()
	secs := (importTime + reportTime).Seconds()
	b.ReportMetric(float64(lines)*float64(b.N)/secs, "events/s")
	b.ReportMetric(float64(lines)*float64(b.N)/importTime.Seconds(), "import-events/s")
	b.ReportMetric(float64(lines)*float64(b.N)/reportTime.Seconds(), "report-events/s")
}
