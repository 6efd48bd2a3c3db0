package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/drain"
	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/sla"
)

var fuzzInv = &inventory.Inventory{Hosts: []inventory.Host{{Name: "host-a", URI: uriA}, {Name: "host-b", URI: uriB}}}

func fuzzRequest(body []byte) (*httptest.ResponseRecorder, *http.Request) {
	r := httptest.NewRequest(http.MethodPost, "/v1/migrations", strings.NewReader(string(body)))
	r.Header.Set("Content-Type", "application/json")
	return httptest.NewRecorder(), r
}

// checkLive asserts what validation promises about a live request's numbers.
func checkLive(t *testing.T, bandwidthMiBps uint64, r orchestrator.LiveOptions) {
	t.Helper()
	for _, err := range []error{
		orchestrator.RangeBandwidthMiBps.CheckUint("bandwidth", bandwidthMiBps),
		orchestrator.RangeMaxDowntime.Check("max_downtime", r.MaxDowntime),
		orchestrator.RangeDowntimeCeiling.Check("ceiling", r.DowntimeCeiling),
		orchestrator.RangeCompletionTimeout.Check("completion", r.CompletionTimeout),
		orchestrator.RangeTimeout.Check("timeout", r.Timeout),
	} {
		if err != nil {
			t.Fatalf("validated request out of range: %v", err)
		}
	}
	if bandwidthMiBps > 0 && orchestrator.BandwidthBytesPerSec(bandwidthMiBps) <= 0 {
		t.Fatalf("bandwidth %d MiB/s converts to no cap", bandwidthMiBps)
	}
}

// FuzzMigrationRequest: no body crashes the decoder or the validation, and
// what validates is within range.
func FuzzMigrationRequest(f *testing.F) {
	for _, s := range []string{
		`{"vm": "web-01", "to": "host-b"}`,
		`{"vm": "web-01", "to": "auto", "avoid_labels": ["rack=1"], "bandwidth_mibps": 100}`,
		`{"vm": "web-01", "to": "host-b", "max_downtime": "300ms", "max_downtime_ceiling": "1s", "completion_timeout": "2m", "on_timeout": "pause", "timeout": "10m"}`,
		`{"vm": "web-01", "to": "host-b", "cold": true, "shutdown": true, "shutdown_timeout": "1m", "force": true}`,
		`{"vm": "web-01", "to": "host-b", "bandwidth_mibps": 17592186044416}`,
		`{"vm": "web-01", "to": "host-b", "bandwidth_mibps": 1e400}`,
		`{"vm": 1}`, `[]`, `{"vm": "a"} {}`, ``, `{"max_downtime": "-9223372036854775808ns"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w, r := fuzzRequest(body)
		var m MigrationRequest
		if err := decodeBody(w, r, DefaultMaxBodyBytes, &m, false); err != nil {
			if toError(err).status >= 500 {
				t.Fatalf("decode answered %v", err)
			}
			return
		}
		p, err := m.validate(fuzzInv)
		if err != nil {
			if toError(err).status >= 500 {
				t.Fatalf("validate answered %v", err)
			}
			return
		}
		if !m.Cold {
			checkLive(t, p.req.BandwidthMiBps, p.req.Live)
		} else if err := orchestrator.RangeBandwidthMiBps.CheckUint("b", p.req.BandwidthMiBps); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzDrainRequest: as FuzzMigrationRequest for drains; what validates can
// size the drain's channels.
func FuzzDrainRequest(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"parallel": 2, "max_per_target": 1, "order": "largest", "retries": 3, "backoff": "5s"}`,
		`{"parallel": 9223372036854775807}`, `{"parallel": -1}`, `{"retries": null}`,
		`{"targets": ["host-b"], "reason": "BIOS", "bandwidth_mibps": 40, "dry_run": true}`,
	} {
		f.Add([]byte(s), "host-a")
	}
	f.Fuzz(func(t *testing.T, body []byte, host string) {
		w, r := fuzzRequest(body)
		var d DrainRequest
		if err := decodeBody(w, r, DefaultMaxBodyBytes, &d, true); err != nil {
			return
		}
		req, err := d.validate(fuzzInv, host)
		if err != nil {
			if toError(err).status >= 500 {
				t.Fatalf("validate answered %v", err)
			}
			return
		}
		if req.Parallel < 0 || req.Parallel > drain.MaxParallel || req.MaxPerTarget < 0 || req.MaxPerTarget > drain.MaxParallel ||
			req.Retries < 0 || req.Retries > 100 || req.Backoff < 0 {
			t.Fatalf("validated drain out of range: %+v", req)
		}
		checkLive(t, req.BandwidthMiBps, req.Live)
	})
}

// FuzzSLAReportQuery: no query string makes GET /v1/sla/report answer 5xx
// (target=NaN did).
func FuzzSLAReportQuery(f *testing.F) {
	ctx := context.Background()
	j, err := journal.Open(ctx, filepath.Join(f.TempDir(), "ferry.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { j.Close() })
	db := j.DB()
	slaLog, err := sla.NewLog(ctx, db)
	if err != nil {
		f.Fatal(err)
	}
	log := logrus.New()
	log.SetLevel(logrus.PanicLevel)
	srv, err := New(Config{Controller: &orchestrator.Controller{Inventory: fuzzInv, Journal: j}, SLA: slaLog, Token: token, Log: logrus.NewEntry(log)})
	if err != nil {
		f.Fatal(err)
	}
	for _, q := range []string{
		"target=99.9&from=-7d&to=now", "target=NaN", "target=Inf", "poll_interval=20s&backdate=true",
		"from=2025-06-01&to=2025-06-02&vm=web-01", "from=-106751d", "to=+9999999h", "host=h1&charge_migration_pauses=false",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		if _, err := url.ParseQuery(rawQuery); err != nil {
			return
		}
		r := httptest.NewRequest(http.MethodGet, "/v1/sla/report", nil)
		r.URL.RawQuery = rawQuery
		r.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		srv.Handler().ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("?%s: %d %s", rawQuery, w.Code, w.Body)
		}
	})
}
