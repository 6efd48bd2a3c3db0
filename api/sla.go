package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/sla"
)

// SLAReport is the answer of GET /v1/sla/report: the report and the events
// its intervals cite (as `ferry sla report -o json`).
type SLAReport struct {
	sla.Report
	Events []sla.Event `json:"events"`
}

// slaReport serves GET /v1/sla/report with the parameters of `ferry sla
// report`: vm, host, from, to, target, backdate, charge_migration_pauses,
// poll_interval.
func (s *Server) slaReport(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	if s.cfg.SLA == nil {
		writeError(w, r, apiErr(http.StatusServiceUnavailable, "no_sla_log", "this server has no SLA log"))
		return
	}
	p := r.URL.Query()
	if err := onlyParams(p, "vm", "host", "from", "to", "target", "backdate", "charge_migration_pauses", "poll_interval"); err != nil {
		writeError(w, r, err)
		return
	}
	q := sla.DefaultReportQuery()
	q.VM, q.Host = p.Get("vm"), p.Get("host")
	if q.VM != "" {
		if err := validVM("vm", q.VM); err != nil {
			writeError(w, r, err)
			return
		}
	}
	if q.Host != "" && !inventory.ValidName(q.Host) {
		writeError(w, r, invalid("host %q is not a valid host name", q.Host))
		return
	}
	if v := p.Get("from"); v != "" {
		q.From = v
	}
	if v := p.Get("to"); v != "" {
		q.To = v
	}
	var err error
	if v := p.Get("target"); v != "" {
		if q.Target, err = strconv.ParseFloat(v, 64); err != nil {
			writeError(w, r, invalid("target %q: a percentage, e.g. 99.95", v))
			return
		}
	}
	for name, dst := range map[string]*bool{"backdate": &q.Backdate, "charge_migration_pauses": &q.ChargeMigrationPauses} {
		if v := p.Get(name); v != "" {
			if *dst, err = strconv.ParseBool(v); err != nil {
				writeError(w, r, invalid("%s %q: true or false", name, v))
				return
			}
		}
	}
	if v := p.Get("poll_interval"); v != "" {
		if q.PollInterval, err = time.ParseDuration(v); err != nil {
			writeError(w, r, invalid("poll_interval %q: a duration such as 20s", v))
			return
		}
	}
	rep, err := q.Run(r.Context(), s.cfg.SLA, s.cfg.Now())
	if err != nil {
		var qe *sla.QueryError
		if errors.As(err, &qe) {
			err = invalid("%s", qe.Error())
		}
		writeError(w, r, err)
		return
	}
	evs, err := s.cfg.SLA.CitedEvents(r.Context(), rep)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, SLAReport{Report: rep, Events: evs})
}

// Health is the answer of GET /healthz.
type Health struct {
	Status string            `json:"status"` // ok or unavailable
	Checks map[string]string `json:"checks"`
}

// healthz reports whether the state database answers and the SLA monitors
// run: 200 when both hold, 503 otherwise (and while shutting down).
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	h := Health{Status: "ok", Checks: map[string]string{}}
	fail := func(name string, err error) {
		h.Status, h.Checks[name] = "unavailable", err.Error()
	}
	if _, err := s.ctl.Journal.List(ctx, journal.ListFilter{Limit: 1}); err != nil {
		fail("state_db", fmt.Errorf("journal: %w", err))
	} else {
		h.Checks["state_db"] = "ok"
	}
	if s.cfg.MonitorsHealthy != nil {
		if err := s.cfg.MonitorsHealthy(); err != nil {
			fail("sla_monitors", err)
		} else {
			h.Checks["sla_monitors"] = "running"
		}
	}
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		fail("server", errors.New("shutting down"))
	}
	status := http.StatusOK
	if h.Status != "ok" {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, h)
}

// apiMetrics are the API's own series, next to the SLA monitor's.
type apiMetrics struct {
	requests *prometheus.CounterVec
	started  *prometheus.CounterVec
	finished *prometheus.CounterVec
	drains   prometheus.Counter
}

func newAPIMetrics(reg prometheus.Registerer, s *Server) (*apiMetrics, error) {
	m := &apiMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_api_requests_total", Help: "HTTP requests served by the ferry API, by method, route and status code.",
		}, []string{"method", "route", "code"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_api_migrations_started_total", Help: "Migrations started over the API, by kind (live, cold).",
		}, []string{"kind"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_api_migrations_finished_total", Help: "Migrations started over the API that ended, by kind and journal state.",
		}, []string{"kind", "state"}),
		drains: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_api_drains_started_total", Help: "Drains started over the API.",
		}),
	}
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ferry_api_migrations_in_flight", Help: "Migrations this server runs right now.",
	}, func() float64 { return float64(s.inFlightMoves()) })
	drainsInFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ferry_api_drains_in_flight", Help: "Drains this server runs right now.",
	}, func() float64 { return float64(s.inFlightDrains()) })
	for _, c := range []prometheus.Collector{m.requests, m.started, m.finished, m.drains, inflight, drainsInFlight} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("api metrics: %w", err)
		}
	}
	return m, nil
}
