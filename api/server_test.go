package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/drain"
	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/sla"
	"github.com/ferryvm/ferry/virt"
	"github.com/ferryvm/ferry/virt/virttest"
)

const (
	uriA   = "qemu+tcp://127.0.10.1/system"
	uriB   = "qemu+tcp://127.0.10.2/system"
	token  = "s3cret-token-for-tests"
	vmUUID = "6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e6f"
)

// fixture: a Controller over two fake hosts, host-a running web-01, a real
// SQLite state file, and the API in an httptest server.
type fixture struct {
	t       *testing.T
	ctl     *orchestrator.Controller
	a, b    *virttest.Host
	vm      *virttest.Domain
	srv     *Server
	http    *httptest.Server
	slaLog  *sla.Log
	logs    *bytes.Buffer
	release chan struct{}
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	cl := virttest.NewCluster()
	capa := virt.Capacity{CPUs: 4, MemoryBytes: 8 << 30, FreeMemoryBytes: 4 << 30}
	f := &fixture{t: t, a: cl.AddHost(uriA, capa), b: cl.AddHost(uriB, capa), logs: &bytes.Buffer{}}
	f.vm = f.a.AddDomain("web-01", vmUUID, 512<<20, virt.StateRunning)
	ctx := context.Background()
	j, err := journal.Open(ctx, filepath.Join(t.TempDir(), "ferry.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	db := j.DB()
	if f.slaLog, err = sla.NewLog(ctx, db); err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(f.logs)
	log.SetLevel(logrus.DebugLevel)
	inv := &inventory.Inventory{Hosts: []inventory.Host{{Name: "host-a", URI: uriA}, {Name: "host-b", URI: uriB}}}
	f.ctl = &orchestrator.Controller{Inventory: inv, Journal: j, Dial: cl.Dial, HooksDir: t.TempDir(),
		Log: logrus.NewEntry(log), Events: orchestrator.SLAFeed{Log: f.slaLog}}
	f.srv, err = New(Config{Controller: f.ctl, SLA: f.slaLog, Metrics: sla.NewMetrics(), Token: token, Log: logrus.NewEntry(log)})
	if err != nil {
		t.Fatal(err)
	}
	f.http = httptest.NewServer(f.srv.Handler())
	t.Cleanup(func() {
		f.http.Close()
		f.srv.Abort()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if strings.Contains(f.logs.String(), token) {
			t.Errorf("the token appears in the log")
		}
	})
	return f
}

// blockMoves makes web-01's migration wait for f.release (or its context).
func (f *fixture) blockMoves() {
	f.release = make(chan struct{})
	f.vm.MigrateFn = func(ctx context.Context, d *virttest.Domain, p virt.MigrateParams) error {
		select {
		case <-f.release:
			return d.MoveTo(p.DestURI)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (f *fixture) do(method, path, body string, hdr ...string) response {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.http.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(data)}
	_ = json.Unmarshal(data, &r.body)
	return r
}

func (r response) str(k string) string { s, _ := r.body[k].(string); return s }

// expect checks status and error code.
func (f *fixture) expect(r response, status int, code string) {
	f.t.Helper()
	if r.status != status || (code != "" && r.str("code") != code) {
		f.t.Fatalf("got %d %s, want %d %s", r.status, r.raw, status, code)
	}
}

// waitState polls GET /v1/migrations/ID until the journal state is want.
func (f *fixture) waitState(id, want string) response {
	f.t.Helper()
	var r response
	waitFor(f.t, "migration "+id+" to be "+want, func() bool {
		r = f.do("GET", "/v1/migrations/"+id, "")
		// The journal row ends a moment before the server has the result.
		return r.status == http.StatusOK && r.str("state") == want && (r.body["managed"] != true || r.body["result"] != nil)
	})
	return r
}

func TestAuth(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, auth string
		status     int
		challenge  string
	}{
		{"missing", "", 401, `Bearer realm="ferry"`},
		{"wrong", "Bearer not-the-token", 401, `Bearer realm="ferry", error="invalid_token"`},
		{"prefix of the token", "Bearer " + token[:5], 401, `Bearer realm="ferry", error="invalid_token"`},
		{"basic", "Basic " + token, 401, `Bearer realm="ferry"`},
		{"right", "Bearer " + token, 200, ""},
		{"right, scheme in lower case", "bearer " + token, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/v1/migrations", "/metrics", "/v1/drains/x", "/nowhere"} {
				r := f.do("GET", path, "", "Authorization", tc.auth)
				if tc.status == 401 {
					f.expect(r, 401, "unauthorized")
					if got := r.header.Get("WWW-Authenticate"); got != tc.challenge {
						t.Fatalf("%s: WWW-Authenticate %q, want %q", path, got, tc.challenge)
					}
				} else if r.status == 401 {
					t.Fatalf("%s: refused with the right token: %s", path, r.raw)
				}
			}
		})
	}
	// Health needs no token.
	f.expect(f.do("GET", "/healthz", "", "Authorization", ""), 200, "")
	m := f.do("GET", "/metrics", "")
	if !strings.Contains(m.raw, "ferry_api_requests_total") || !strings.Contains(m.raw, `code="401"`) || !strings.Contains(m.raw, "ferry_sla_migration_downtime_seconds") {
		t.Fatalf("metrics lack the API counters:\n%s", m.raw)
	}
}

func TestMigrationValidation(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, body string
		status     int
		code, msg  string
		hdr        []string
	}{
		{"malformed JSON", `{"vm": "web-01",`, 400, "invalid_request", "ends in the middle", nil},
		{"syntax error", `{"vm" "web-01"}`, 400, "invalid_request", "malformed JSON", nil},
		{"not an object", `["web-01"]`, 400, "invalid_request", "must be a JSON object", nil},
		{"empty body", ``, 400, "invalid_request", "empty request body", nil},
		{"unknown field", `{"vm": "web-01", "to": "host-b", "max_downtim": "1s"}`, 400, "invalid_request", `unknown field "max_downtim"`, nil},
		{"wrong type", `{"vm": "web-01", "to": "host-b", "bandwidth_mibps": "fast"}`, 400, "invalid_request", `field "bandwidth_mibps": want a JSON number`, nil},
		{"two objects", `{"vm": "web-01", "to": "host-b"} {}`, 400, "invalid_request", "after the JSON object", nil},
		{"no vm", `{"to": "host-b"}`, 400, "invalid_request", "vm is required", nil},
		{"bad vm name", `{"vm": "web;rm -rf /", "to": "host-b"}`, 400, "invalid_request", "not a valid VM name", nil},
		{"no destination", `{"vm": "web-01"}`, 400, "invalid_request", "to is required", nil},
		{"URI as destination", `{"vm": "web-01", "to": "qemu+tcp://10.0.0.1/system"}`, 400, "invalid_request", "inventory names, not libvirt URIs", nil},
		{"unknown destination", `{"vm": "web-01", "to": "host-z"}`, 404, "unknown_host", "known hosts: host-a, host-b", nil},
		{"from equals to", `{"vm": "web-01", "to": "host-b", "from": "host-b"}`, 409, "same_host", "nothing to migrate", nil},
		{"bad duration", `{"vm": "web-01", "to": "host-b", "max_downtime": "fast"}`, 400, "invalid_request", `max_downtime "fast"`, nil},
		{"negative duration", `{"vm": "web-01", "to": "host-b", "timeout": "-1s"}`, 400, "invalid_request", "must not be negative", nil},
		{"ceiling under limit", `{"vm": "web-01", "to": "host-b", "max_downtime": "2s", "max_downtime_ceiling": "1s"}`, 400, "invalid_request", "below max_downtime", nil},
		{"postcopy timeout without postcopy", `{"vm": "web-01", "to": "host-b", "on_timeout": "postcopy"}`, 400, "invalid_request", "needs allow_postcopy", nil},
		{"bad on_timeout", `{"vm": "web-01", "to": "host-b", "on_timeout": "panic"}`, 400, "invalid_request", "use abort, postcopy or pause", nil},
		{"live option on a cold move", `{"vm": "web-01", "to": "host-b", "cold": true, "max_downtime": "1s"}`, 400, "invalid_request", "max_downtime: live-migration options", nil},
		{"cold option on a live move", `{"vm": "web-01", "to": "host-b", "shutdown": true}`, 400, "invalid_request", `shutdown: options of cold moves; add "cold": true`, nil},
		{"force without shutdown", `{"vm": "web-01", "to": "host-b", "cold": true, "force": true}`, 400, "invalid_request", "go with shutdown", nil},
		{"labels without auto", `{"vm": "web-01", "to": "host-b", "avoid_labels": ["rack=a"]}`, 400, "invalid_request", `go with "to": "auto"`, nil},
		{"bad label", `{"vm": "web-01", "to": "auto", "prefer_labels": ["rack"]}`, 400, "invalid_request", "use key=value", nil},
		{"wrong content type", `vm=web-01`, 415, "unsupported_media_type", "application/json", []string{"Content-Type", "multipart/form-data; boundary=x"}},
		{"form fields", `vm=web-01&to=host-b`, 400, "invalid_request", "not form fields", []string{"Content-Type", "application/x-www-form-urlencoded"}},
		{"body too large", `{"vm": "web-01", "to": "host-b", "avoid_labels": ["` + strings.Repeat("a", DefaultMaxBodyBytes) + `"]}`, 413, "body_too_large", "over", nil},
		// Refusals of the orchestrator.
		{"unknown VM", `{"vm": "nope", "to": "host-b"}`, 404, "unknown_vm", "not found on any inventory host", nil},
		{"already there", `{"vm": "web-01", "to": "host-a"}`, 409, "same_host", "already runs on host-a", nil},
		{"not running, live", `{"vm": "stopped-01", "to": "host-b"}`, 409, "not_running", "needs a running VM", nil},
		{"no host fits", `{"vm": "web-01", "to": "auto", "avoid_labels": ["rack=b"]}`, 422, "no_placement", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "not running, live" {
				f.a.AddDomain("stopped-01", "11111111-2222-3333-4444-555555555555", 64<<20, virt.StateShutoff)
			}
			if tc.name == "no host fits" {
				f.ctl.Inventory.Hosts[1].Labels = map[string]string{"rack": "b"}
				defer func() { f.ctl.Inventory.Hosts[1].Labels = nil }()
			}
			r := f.do("POST", "/v1/migrations", tc.body, tc.hdr...)
			f.expect(r, tc.status, tc.code)
			if !strings.Contains(r.str("error"), tc.msg) {
				t.Fatalf("error %q lacks %q", r.str("error"), tc.msg)
			}
		})
	}
	// A refusal of the orchestrator names its journal row.
	r := f.do("POST", "/v1/migrations", `{"vm": "nope", "to": "host-b"}`)
	g := f.do("GET", "/v1/migrations/"+r.str("id"), "")
	if g.status != 200 || g.str("state") != journal.StateRefused || !strings.Contains(g.str("error"), "not found") {
		t.Fatalf("refused row: %d %s", g.status, g.raw)
	}
	// The VM never moved.
	if info, _ := f.vm.Info(); info.State != virt.StateRunning {
		t.Fatalf("web-01 is %s", info.State)
	}
	f.expect(f.do("PUT", "/v1/migrations", `{}`), 405, "method_not_allowed")
	f.expect(f.do("GET", "/v1/migrations?limt=3", ""), 400, "invalid_request")
	f.expect(f.do("GET", "/v1/migrations?limit=0", ""), 400, "invalid_request")
	f.expect(f.do("GET", "/v1/migrations?state=gone", ""), 400, "invalid_request")
	f.expect(f.do("GET", "/v1/migrations/not_an%25id", ""), 400, "invalid_request")
}

func TestMigrateLive(t *testing.T) {
	f := newFixture(t)
	r := f.do("POST", "/v1/migrations", `{"vm": "web-01", "to": "host-b", "max_downtime": "500ms", "bandwidth_mibps": 100}`)
	f.expect(r, 202, "")
	id := r.str("id")
	if r.str("location") != "/v1/migrations/"+id {
		t.Fatalf("location %q", r.str("location"))
	}
	g := f.waitState(id, journal.StateCompleted)
	stages, _ := g.body["stage_times"].(map[string]any)
	for _, s := range []string{"pre-migration", "reservation", "pre-copy", "stop-and-copy", "commitment", "activation"} {
		if stages[s] == nil {
			t.Fatalf("no %s timestamp: %s", s, g.raw)
		}
	}
	if opts, _ := g.body["options"].(map[string]any); opts["max_downtime_ms"] != float64(500) || opts["bandwidth_mibps"] != float64(100) {
		t.Fatalf("options: %s", g.raw)
	}
	if g.body["downtime_ms"] != float64(20) || g.body["managed"] != true || g.body["result"] == nil {
		t.Fatalf("record: %s", g.raw)
	}
	if d, err := f.b.LookupDomain("web-01"); err != nil {
		t.Fatal(err)
	} else if info, _ := d.Info(); info.State != virt.StateRunning {
		t.Fatalf("destination copy is %s", info.State)
	}
	l := f.do("GET", "/v1/migrations?vm=web-01&limit=5", "")
	if list, _ := l.body["migrations"].([]any); l.status != 200 || len(list) != 1 {
		t.Fatalf("list: %s", l.raw)
	}
	// A second server over the same journal (another ferry serve) has no
	// memory of it: it answers from the journal.
	other, err := New(Config{Controller: f.ctl, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/v1/migrations/"+id[:8], nil)
	req.Header.Set("Authorization", "Bearer "+token)
	other.Handler().ServeHTTP(rec, req)
	var v map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &v)
	if rec.Code != 200 || v["id"] != id || v["managed"] != false || v["state"] != journal.StateCompleted || v["downtime_ms"] != float64(20) {
		t.Fatalf("journal fallback: %d %s", rec.Code, rec.Body)
	}
	if !strings.Contains(f.logs.String(), "migration="+id) {
		t.Fatalf("no log line with the migration id:\n%s", f.logs)
	}
	f.expect(f.do("DELETE", "/v1/migrations/"+id, ""), 409, "finished")
	f.expect(f.do("GET", "/v1/migrations/0000dead", ""), 404, "unknown_migration")
	f.expect(f.do("DELETE", "/v1/migrations/0000dead", ""), 404, "unknown_migration")
}

func TestMigrateAuto(t *testing.T) {
	f := newFixture(t)
	// As `curl -d` sends it: JSON labelled as a form.
	r := f.do("POST", "/v1/migrations", `{"vm": "web-01", "to": "auto"}`, "Content-Type", "application/x-www-form-urlencoded")
	f.expect(r, 202, "")
	if r.str("destination") != "host-b" || r.str("source") != "host-a" {
		t.Fatalf("placement: %s", r.raw)
	}
	g := f.waitState(r.str("id"), journal.StateCompleted)
	if p, _ := g.body["placement"].(map[string]any); p["host"] != "host-b" {
		t.Fatalf("view lacks the placement: %s", g.raw)
	}
}

func TestDedupAndCancel(t *testing.T) {
	f := newFixture(t)
	f.blockMoves()
	r := f.do("POST", "/v1/migrations", `{"vm": "web-01", "to": "host-b"}`)
	f.expect(r, 202, "")
	id := r.str("id")
	// Answered once the reservation is held: the move may be further on.
	if r.str("state") != journal.StateRunning || (r.str("stage") != "reservation" && r.str("stage") != "pre-copy") {
		t.Fatalf("accepted: %s", r.raw)
	}
	// The same VM again, by name and by UUID: the same migration.
	for _, vm := range []string{"web-01", vmUUID} {
		d := f.do("POST", "/v1/migrations", `{"vm": "`+vm+`", "to": "host-b"}`)
		f.expect(d, 200, "")
		if d.str("id") != id || d.body["existing"] != true {
			t.Fatalf("dedup by %s: %s", vm, d.raw)
		}
	}
	// Another server (as another ferry process would) gets it from the
	// orchestrator's busy refusal and the journal.
	other, err := New(Config{Controller: f.ctl, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/v1/migrations", strings.NewReader(`{"vm": "web-01", "to": "host-b"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	other.Handler().ServeHTTP(rec, req)
	var v map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &v)
	if rec.Code != 200 || v["id"] != id || v["existing"] != true || v["managed"] != false || v["owner_pid"] != float64(os.Getpid()) {
		t.Fatalf("dedup across servers: %d %s", rec.Code, rec.Body)
	}
	// That server cannot cancel it; this one can.
	rec = httptest.NewRecorder()
	req = httptest.NewRequest("DELETE", "/v1/migrations/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	other.Handler().ServeHTTP(rec, req)
	if rec.Code != 409 || !strings.Contains(rec.Body.String(), "other_process") {
		t.Fatalf("cancel from the other server: %d %s", rec.Code, rec.Body)
	}
	g := f.do("GET", "/v1/migrations/"+id, "")
	if g.body["managed"] != true || g.body["progress"] == nil {
		t.Fatalf("running view: %s", g.raw)
	}
	c := f.do("DELETE", "/v1/migrations/"+id, "")
	f.expect(c, 202, "")
	if c.str("state") != "cancelling" {
		t.Fatalf("cancel: %s", c.raw)
	}
	g = f.waitState(id, journal.StateRolledBack)
	if g.body["cancel_requested"] != true {
		t.Fatalf("rolled back view: %s", g.raw)
	}
	if info, _ := f.vm.Info(); info.State != virt.StateRunning {
		t.Fatalf("web-01 on the source is %s after the rollback", info.State)
	}
	if _, err := f.b.LookupDomain("web-01"); err == nil {
		t.Fatal("web-01 defined on the destination after the rollback")
	}
	f.expect(f.do("DELETE", "/v1/migrations/"+id, ""), 409, "finished")
	// Once it ended, a new request starts a new migration.
	close(f.release)
	n := f.do("POST", "/v1/migrations", `{"vm": "web-01", "to": "host-b"}`)
	f.expect(n, 202, "")
	if n.str("id") == id {
		t.Fatal("a finished migration was reused")
	}
	f.waitState(n.str("id"), journal.StateCompleted)
}

// procToken is a process's journal owner token (pid:start time), as the
// orchestrator writes it.
func procToken(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	s = s[strings.LastIndexByte(s, ')')+1:]
	return fmt.Sprintf("%d:%s", pid, strings.Fields(s)[19])
}

func TestCancelOtherProcess(t *testing.T) {
	f := newFixture(t)
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() }()
	ctx := context.Background()
	for id, owner := range map[string]string{
		"aaaaaaaa-0000-0000-0000-000000000001": procToken(t, sleeper.Process.Pid),
		"aaaaaaaa-0000-0000-0000-000000000002": "999999999:1",
	} {
		if err := f.ctl.Journal.Create(ctx, &journal.Record{ID: id, Kind: "live", VM: "db-01", State: journal.StateRunning, Owner: owner}); err != nil {
			t.Fatal(err)
		}
	}
	r := f.do("DELETE", "/v1/migrations/aaaaaaaa-0000-0000-0000-000000000001", "")
	f.expect(r, 409, "other_process")
	if r.body["owner_pid"] != float64(sleeper.Process.Pid) || !strings.Contains(r.str("error"), fmt.Sprintf("pid %d", sleeper.Process.Pid)) {
		t.Fatalf("other process: %s", r.raw)
	}
	r = f.do("DELETE", "/v1/migrations/aaaaaaaa-0000-0000-0000-000000000002", "")
	f.expect(r, 409, "other_process")
	if !strings.Contains(r.str("error"), "ferry recover") {
		t.Fatalf("dead owner: %s", r.raw)
	}
	g := f.do("GET", "/v1/migrations/aaaaaaaa-0000-0000-0000-000000000001", "")
	if g.status != 200 || g.body["managed"] != false || g.body["owner_pid"] != float64(sleeper.Process.Pid) {
		t.Fatalf("get: %s", g.raw)
	}
}

func TestDrains(t *testing.T) {
	f := newFixture(t)
	f.expect(f.do("POST", "/v1/hosts/host-z/drain", ""), 404, "unknown_host")
	f.expect(f.do("POST", "/v1/hosts/host-a/drain", `{"order": "random"}`), 400, "invalid_request")
	f.expect(f.do("POST", "/v1/hosts/host-a/drain", `{"parallel": -1}`), 400, "invalid_request")
	f.expect(f.do("POST", "/v1/hosts/host-a/drain", `{"targets": ["host-a"]}`), 400, "invalid_request")
	f.expect(f.do("POST", "/v1/hosts/host-a/drain", `{"paralel": 2}`), 400, "invalid_request")
	f.expect(f.do("GET", "/v1/hosts/host-a/drain", ""), 405, "method_not_allowed")
	f.expect(f.do("GET", "/v1/drains/0000dead", ""), 404, "unknown_drain")
	f.expect(f.do("DELETE", "/v1/drains/0000dead", ""), 404, "unknown_drain")

	// A dry run answers with the plan and moves nothing.
	r := f.do("POST", "/v1/hosts/host-a/drain", `{"dry_run": true}`)
	f.expect(r, 200, "")
	if vms, _ := r.body["vms"].([]any); len(vms) != 1 || r.body["dry_run"] != true {
		t.Fatalf("dry run: %s", r.raw)
	}
	if info, _ := f.vm.Info(); info.State != virt.StateRunning {
		t.Fatal("the dry run moved the VM")
	}

	f.blockMoves()
	r = f.do("POST", "/v1/hosts/host-a/drain", `{"parallel": 1, "max_downtime": "400ms"}`)
	f.expect(r, 202, "")
	id := r.str("id")
	again := f.do("POST", "/v1/hosts/host-a/drain", `{}`)
	if again.status != 200 || again.str("id") != id || again.body["existing"] != true {
		t.Fatalf("second drain of the host: %s", again.raw)
	}
	// Its migration cannot be cancelled on its own: the answer names the drain.
	var mig string
	waitFor(t, "the drain's move", func() bool {
		g := f.do("GET", "/v1/drains/"+id, "")
		vms, _ := g.body["vms"].([]any)
		if len(vms) == 1 {
			ms, _ := vms[0].(map[string]any)["migrations"].([]any)
			if len(ms) == 1 {
				mig, _ = ms[0].(string)
				rec, err := f.ctl.Journal.Get(context.Background(), mig)
				return err == nil && rec.Stage >= journal.StageReservation
			}
		}
		return false
	})
	c := f.do("DELETE", "/v1/migrations/"+mig, "")
	f.expect(c, 409, "other_process")
	if !strings.Contains(c.str("error"), "drain "+id) {
		t.Fatalf("cancel of a drain's move: %s", c.raw)
	}
	close(f.release)
	waitFor(t, "the drain to end", func() bool {
		g := f.do("GET", "/v1/drains/"+id, "")
		return g.str("state") == drain.StateDone
	})
	g := f.do("GET", "/v1/drains/"+id, "")
	if g.body["empty"] != true || g.body["moved"] != float64(1) || g.body["managed"] != true {
		t.Fatalf("drain report: %s", g.raw)
	}
	f.expect(f.do("DELETE", "/v1/drains/"+id, ""), 409, "finished")
}

func TestDrainCancel(t *testing.T) {
	f := newFixture(t)
	f.blockMoves()
	f.a.AddDomain("web-02", "6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e70", 1024<<20, virt.StateRunning)
	r := f.do("POST", "/v1/hosts/host-a/drain", `{"parallel": 1}`)
	f.expect(r, 202, "")
	id := r.str("id")
	f.expect(f.do("DELETE", "/v1/drains/"+id+"?abort=maybe", ""), 400, "invalid_request")
	c := f.do("DELETE", "/v1/drains/"+id+"?abort=true", "")
	f.expect(c, 202, "")
	waitFor(t, "the drain to stop", func() bool {
		g := f.do("GET", "/v1/drains/"+id, "")
		return g.str("state") == drain.StateCancelled
	})
	g := f.do("GET", "/v1/drains/"+id, "")
	if g.body["cancel_requested"] != true || g.body["abort_requested"] != true || g.body["empty"] != false {
		t.Fatalf("cancelled drain: %s", g.raw)
	}
	// The move in flight rolled back: both VMs still run on host-a.
	for _, name := range []string{"web-01", "web-02"} {
		d, err := f.a.LookupDomain(name)
		if err != nil {
			t.Fatal(err)
		}
		if info, _ := d.Info(); info.State != virt.StateRunning {
			t.Fatalf("%s is %s on host-a", name, info.State)
		}
	}
}

func TestSLAReport(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	at := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	if _, err := f.slaLog.Append(ctx,
		sla.Event{Kind: sla.VMFailure, Host: "host-a", VMName: "web-01", Source: sla.SourceManual, ObservedAt: at},
		sla.Event{Kind: sla.VMReachable, Host: "host-a", VMName: "web-01", Source: sla.SourceManual, ObservedAt: at.Add(90 * time.Second)},
	); err != nil {
		t.Fatal(err)
	}
	period := "&from=2025-06-01T00:00:00Z&to=2025-06-02T00:00:00Z"
	r := f.do("GET", "/v1/sla/report?vm=web-01"+period, "")
	f.expect(r, 200, "")
	vms, _ := r.body["vms"].([]any)
	evs, _ := r.body["events"].([]any)
	if len(vms) != 1 || len(evs) != 2 {
		t.Fatalf("report: %s", r.raw)
	}
	if e := vms[0].(map[string]any); e["downtime_ns"] != float64(90*time.Second) {
		t.Fatalf("downtime: %v", e["downtime_ns"])
	}
	f.expect(f.do("GET", "/v1/sla/report?target=120"+period, ""), 400, "invalid_request")
	f.expect(f.do("GET", "/v1/sla/report?from=yesterday", ""), 400, "invalid_request")
	f.expect(f.do("GET", "/v1/sla/report?from=2025-06-02&to=2025-06-01", ""), 400, "invalid_request")
	f.expect(f.do("GET", "/v1/sla/report?backdate=perhaps", ""), 400, "invalid_request")
	f.expect(f.do("GET", "/v1/sla/report?vms=web-01", ""), 400, "invalid_request")
	f.expect(f.do("GET", "/v1/sla/report?vm=nobody"+period, ""), 404, "not_in_sla_log")
	f.expect(f.do("POST", "/v1/sla/report", "{}"), 405, "method_not_allowed")
}

func TestHealthAndShutdown(t *testing.T) {
	f := newFixture(t)
	var monitorErr error
	f.srv.cfg.MonitorsHealthy = func() error { return monitorErr }
	h := f.do("GET", "/healthz", "", "Authorization", "")
	f.expect(h, 200, "")
	if checks, _ := h.body["checks"].(map[string]any); checks["state_db"] != "ok" || checks["sla_monitors"] != "running" {
		t.Fatalf("health: %s", h.raw)
	}
	monitorErr = fmt.Errorf("sla monitor stopped: boom")
	h = f.do("GET", "/healthz", "", "Authorization", "")
	if h.status != 503 || !strings.Contains(h.raw, "boom") {
		t.Fatalf("unhealthy: %d %s", h.status, h.raw)
	}
	monitorErr = nil

	// Shutdown waits for the move in flight, and starts nothing new.
	f.blockMoves()
	r := f.do("POST", "/v1/migrations", `{"vm": "web-01", "to": "host-b"}`)
	f.expect(r, 202, "")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := f.srv.Shutdown(ctx)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "1 migration(s)") {
		t.Fatalf("shutdown with a move in flight: %v", err)
	}
	f.expect(f.do("POST", "/v1/migrations", `{"vm": "web-01", "to": "host-b"}`), 200, "") // still the same move
	f.expect(f.do("POST", "/v1/hosts/host-a/drain", `{}`), 503, "shutting_down")
	f.expect(f.do("GET", "/healthz", ""), 503, "")
	close(f.release)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	g := f.do("GET", "/v1/migrations/"+r.str("id"), "")
	if g.str("state") != journal.StateCompleted {
		t.Fatalf("the move in flight did not finish: %s", g.raw)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
