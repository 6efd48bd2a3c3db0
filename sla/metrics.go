package sla

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the SLA figures for Prometheus:
//
//	ferry_sla_vm_unavailable_seconds_total{vm}   charged downtime since the monitor started (counter)
//	ferry_sla_vm_eligible_seconds_total{vm}      eligible time since the monitor started (counter)
//	ferry_sla_migration_downtime_seconds         switchover pause of each completed migration (histogram)
//	ferry_sla_host_up{host}                      1 while the poller reaches the host, 0 once it is unreachable
//	ferry_sla_events_total{kind}                 events entering the log
//
// Availability over any range is then
// 1 − increase(unavailable[30d]) / increase(eligible[30d]). The two counters
// come from the same correlation as `ferry sla report` (Compute over the
// monitor's lifetime, refreshed by the monitor); a figure that a later event
// revises downwards (an outage turned into a monitoring partition) holds its
// highest value, so the counters never go back.
type Metrics struct {
	reg       *prometheus.Registry
	hostUp    *prometheus.GaugeVec
	downtime  prometheus.Histogram
	events    *prometheus.CounterVec
	unavDesc  *prometheus.Desc
	eligDesc  *prometheus.Desc
	mu        sync.Mutex
	unavail   map[string]float64
	eligible  map[string]float64
	refreshed time.Time
}

// NewMetrics creates the metrics in a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		hostUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_sla_host_up", Help: "1 while the SLA poller reaches the host, 0 once it declared it unreachable.",
		}, []string{"host"}),
		downtime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "ferry_sla_migration_downtime_seconds",
			Help:    "Switchover pause of completed migrations, as libvirt measured it.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30},
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_sla_events_total", Help: "SLA events that entered the log while the monitor ran, by kind.",
		}, []string{"kind"}),
		unavDesc: prometheus.NewDesc("ferry_sla_vm_unavailable_seconds_total",
			"Downtime charged to the VM by the SLA correlation rules since the monitor started.", []string{"vm"}, nil),
		eligDesc: prometheus.NewDesc("ferry_sla_vm_eligible_seconds_total",
			"Eligible time of the VM (not in declared maintenance, not stopped by its owner) since the monitor started.", []string{"vm"}, nil),
		unavail:  map[string]float64{},
		eligible: map[string]float64{},
	}
	m.reg.MustRegister(m.hostUp, m.downtime, m.events, vmCollector{m})
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry is where the metrics live (to add more, or to gather in tests).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetHostUp sets a host's gauge.
func (m *Metrics) SetHostUp(host string, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.hostUp.WithLabelValues(host).Set(v)
}

// Observe counts an event that entered the log, and a completed migration's
// pause in the histogram.
func (m *Metrics) Observe(e Event) {
	m.events.WithLabelValues(string(e.Kind)).Inc()
	switch e.Kind {
	case MigrationCompleted:
		if pl, err := e.DecodePayload(); err == nil && pl.DowntimeMS != nil {
			m.downtime.Observe(float64(*pl.DowntimeMS) / 1000)
		}
	case PSUnreachable:
		m.SetHostUp(e.Host, false)
	case PSReachable:
		m.SetHostUp(e.Host, true)
	}
}

// Update takes the per-VM figures of a report covering the monitor's
// lifetime so far. Each counter keeps the highest value it has had.
func (m *Metrics) Update(r Report) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range r.VMs {
		if v := e.Downtime.Seconds(); v > m.unavail[e.Name] {
			m.unavail[e.Name] = v
		}
		if v := e.Eligible.Seconds(); v > m.eligible[e.Name] {
			m.eligible[e.Name] = v
		}
	}
	m.refreshed = r.End
}

// vmCollector exposes the per-VM counters from the last Update.
type vmCollector struct{ m *Metrics }

func (c vmCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.m.unavDesc
	ch <- c.m.eligDesc
}

func (c vmCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	for vm, v := range c.m.unavail {
		ch <- prometheus.MustNewConstMetric(c.m.unavDesc, prometheus.CounterValue, v, vm)
	}
	for vm, v := range c.m.eligible {
		ch <- prometheus.MustNewConstMetric(c.m.eligDesc, prometheus.CounterValue, v, vm)
	}
}
