package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/virt"
)

// Every number of a request has a range; outside it the answer is 400
// naming the field and its range, and nothing starts.
func TestNumbersOutOfRange(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		method, path, body string
		field, want        string
	}{
		// The panic of issue 11: makechan: size out of range.
		{"POST", "/v1/hosts/host-a/drain", `{"parallel": 9223372036854775807}`, "parallel", "1 to 64"},
		{"POST", "/v1/hosts/host-a/drain", `{"parallel": 65}`, "parallel", "1 to 64"},
		{"POST", "/v1/hosts/host-a/drain", `{"max_per_target": 100000}`, "max_per_target", "1 to 64"},
		{"POST", "/v1/hosts/host-a/drain", `{"retries": 1000000}`, "retries", "0 to 100"},
		{"POST", "/v1/hosts/host-a/drain", `{"backoff": "2h"}`, "backoff", "1ms to 1h0m0s"},
		// 2^44 MiB/s is 2^64 bytes/s: it wrapped to 0, "no cap".
		{"POST", "/v1/hosts/host-a/drain", `{"bandwidth_mibps": 17592186044416}`, "bandwidth_mibps", "1 to 1048576"},
		{"POST", "/v1/migrations", `{"vm": "web-01", "to": "host-b", "bandwidth_mibps": 17592186044416}`, "bandwidth_mibps", "1 to 1048576"},
		{"POST", "/v1/migrations", `{"vm": "web-01", "to": "host-b", "bandwidth_mibps": 18446744073709551615}`, "bandwidth_mibps", "1 to 1048576"},
		{"POST", "/v1/migrations", `{"vm": "web-01", "to": "host-b", "max_downtime": "3000s"}`, "max_downtime", "1ms to 33m20s"},
		{"POST", "/v1/migrations", `{"vm": "web-01", "to": "host-b", "max_downtime_ceiling": "1h"}`, "max_downtime_ceiling", "1ms to 33m20s"},
		{"POST", "/v1/migrations", `{"vm": "web-01", "to": "host-b", "timeout": "2000000h"}`, "timeout", "1s to 168h0m0s"},
		{"POST", "/v1/migrations", `{"vm": "web-01", "to": "host-b", "completion_timeout": "1ms"}`, "completion_timeout", "1s to 168h0m0s"},
		{"POST", "/v1/migrations", `{"vm": "web-01", "to": "host-b", "cold": true, "bandwidth_mibps": 17592186044416}`, "bandwidth_mibps", "1 to 1048576"},
		{"POST", "/v1/migrations", `{"vm": "web-01", "to": "host-b", "cold": true, "shutdown": true, "shutdown_timeout": "100h"}`, "shutdown_timeout", "1s to 24h0m0s"},
		// NaN and the infinities fail every comparison: target=NaN gave 500.
		{"GET", "/v1/sla/report?target=NaN", "", "target", "at most 100"},
		{"GET", "/v1/sla/report?target=Inf", "", "target", "at most 100"},
		{"GET", "/v1/sla/report?target=-Inf", "", "target", "at most 100"},
		{"GET", "/v1/sla/report?poll_interval=1000h", "", "poll_interval", "at most 24h"},
		{"GET", "/v1/migrations?limit=1001", "", "limit", "1 to 1000"},
	} {
		r := f.do(tc.method, tc.path, tc.body)
		if r.status != http.StatusBadRequest || r.str("code") != "invalid_request" ||
			!strings.Contains(r.str("error"), tc.field) || !strings.Contains(r.str("error"), tc.want) {
			t.Errorf("%s %s %s: got %d %s, want 400 naming %s and %q", tc.method, tc.path, tc.body, r.status, r.raw, tc.field, tc.want)
		}
	}
	if info, _ := f.vm.Info(); info.State != virt.StateRunning {
		t.Fatal("a refused request moved the VM")
	}
	if l, _ := f.ctl.Journal.Maintenance(context.Background()); len(l) != 0 {
		t.Fatalf("a refused drain left maintenance marks: %+v", l)
	}
	f.expect(f.do("GET", "/healthz", ""), 200, "")
}

// A handler that panics is answered 500 with a request id (header and
// body), logged with it, and the server keeps serving.
func TestPanicInHandlerIsAnswered(t *testing.T) {
	f := newFixture(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/boom", func(http.ResponseWriter, *http.Request) { panic("handler bug") })
	mux.Handle("/", f.srv.Handler())
	srv := httptest.NewServer(f.srv.observe(mux))
	defer srv.Close()
	f.http.Close()
	f.http = srv

	r := f.do("GET", "/boom", "")
	f.expect(r, http.StatusInternalServerError, "internal")
	rid := r.header.Get(RequestIDHeader)
	if rid == "" || r.str("request_id") != rid || !strings.Contains(r.str("error"), rid) {
		t.Fatalf("request id: header %q, body %s", rid, r.raw)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "api handler panicked") || !strings.Contains(logs, "request_id="+rid) || !strings.Contains(logs, "handler bug") {
		t.Fatalf("the panic is not logged with its request id:\n%s", logs)
	}
	ok := f.do("GET", "/v1/migrations", "")
	f.expect(ok, 200, "")
	if got := ok.header.Get(RequestIDHeader); got == "" || got == rid {
		t.Fatalf("second request id %q (first %q)", got, rid)
	}
}

// A panic in the goroutine of a drain or a move (here: dialling a host)
// fails that drain or move; the server goes on, and the move's journal row
// says what happened.
func TestPanicInBackgroundWorkIsContained(t *testing.T) {
	f := newFixture(t)
	dial := f.ctl.Dial
	f.ctl.Dial = func(ctx context.Context, uri string) (virt.Host, error) { panic("dial bug") }

	d := f.do("POST", "/v1/hosts/host-a/drain", `{}`)
	if d.status != http.StatusInternalServerError || !strings.Contains(d.str("error"), "dial bug") {
		t.Fatalf("drain: %d %s", d.status, d.raw)
	}
	m := f.do("POST", "/v1/migrations", `{"vm": "web-01", "from": "host-a", "to": "host-b"}`)
	if m.status != http.StatusInternalServerError || !strings.Contains(m.str("error"), "ferry recover") || m.str("id") == "" {
		t.Fatalf("migration: %d %s", m.status, m.raw)
	}
	rec, err := f.ctl.Journal.Get(context.Background(), m.str("id"))
	if err != nil || rec.State != journal.StateFailed || !strings.Contains(rec.Error, "dial bug") {
		t.Fatalf("journal row %+v, %v", rec, err)
	}
	f.ctl.Dial = dial
	f.expect(f.do("GET", "/healthz", ""), 200, "")
	f.expect(f.do("POST", "/v1/migrations", `{"vm": "web-01", "to": "host-b"}`), 202, "")
}
