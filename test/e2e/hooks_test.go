//go:build e2e

package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ferryvm/ferry/hooks"
	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
)

// hooksEnv is an env whose inventory is the lab's plus a hooks directory and
// webhooks: a copy in the test's temp dir, so the lab's file stays as it is.
func hooksEnv(t *testing.T, hooksDir string, webhooks ...hooks.Webhook) *env {
	t.Helper()
	inv, err := inventory.Load(labConfig)
	if err != nil {
		t.Fatal(err)
	}
	inv.HooksDir, inv.Webhooks = hooksDir, webhooks
	data, err := yaml.Marshal(inv)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	e.config = filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(e.config, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// A pre-migration hook that exits 1 refuses `ferry migrate` (exit 2): the VM
// keeps running on the source, untouched, and the journal keeps the refusal
// with the hook's reason.
func TestHooksVetoRefusesMigrate(t *testing.T) {
	const vm = "e2e-hooks-veto"
	dir, out := t.TempDir(), t.TempDir()
	script := `#!/bin/sh
cat > "` + out + `/$1.json"
if [ "$1" = pre-migration ]; then
	echo "checking the change calendar"
	echo "change freeze until 18:00" >&2
	exit 1
fi
`
	if err := os.WriteFile(filepath.Join(dir, "10-freeze-check"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	e := hooksEnv(t, dir)
	newGuest(t, vm, guestSpec{host: "1", wssMiB: 16, rate: 1000})
	before := heartbeat(t, vm)

	r := e.ferry("migrate", vm, "--to", "host2")
	const reason = `vetoed by hook 10-freeze-check: exit status 1: "change freeze until 18:00"`
	if r.code != 2 || !strings.Contains(r.stderr, reason) {
		t.Fatalf("exit %d, stderr %q: want 2 and %q", r.code, r.stderr, reason)
	}
	runsExactlyOn(t, vm, "1")
	if st := domstate(t, "2", vm); st != "" {
		t.Fatalf("host2 has %s (%s) after a veto", vm, st)
	}
	heartbeatAbove(t, vm, before+2, 30*time.Second)

	rows := e.history(vm)
	if len(rows) != 1 {
		t.Fatalf("%d journal rows, want 1", len(rows))
	}
	row := rows[0]
	if row.State != journal.StateRefused || row.Error != reason || row.Source != "host1" || row.Dest != "host2" {
		t.Fatalf("journal row %s %q (%s -> %s), want refused with %q", row.State, row.Error, row.Source, row.Dest, reason)
	}
	hist := e.ferry("history", "--vm", vm)
	if !strings.Contains(hist.stdout, "refused") || !strings.Contains(hist.stdout, "vetoed by hook 10-freeze-check") {
		t.Fatalf("ferry history does not show the veto:\n%s", hist.stdout)
	}

	// The hook saw the move it refused, and nothing after.
	data, err := os.ReadFile(filepath.Join(out, "pre-migration.json"))
	if err != nil {
		t.Fatal(err)
	}
	var p hooks.Payload
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatalf("payload %s: %v", data, err)
	}
	if p.Event != "pre-migration" || p.Stage != "pre-migration" || p.Kind != "live" || p.MigrationID != row.ID || p.VM != vm ||
		p.Source != "host1" || p.Destination != "host2" || p.SourceURI != labURI("1") || p.Timestamp.IsZero() {
		t.Fatalf("pre-migration payload %+v", p)
	}
	if files, _ := filepath.Glob(filepath.Join(out, "*.json")); len(files) != 1 {
		t.Fatalf("hook ran for more than pre-migration: %v", files)
	}
}

// A webhook receiver gets reservation, switchover and activation of a live
// move, in order, with the migration's id and hosts; activation carries
// libvirt's measured downtime, the one the journal holds.
func TestHooksWebhooksOfALiveMove(t *testing.T) {
	const vm = "e2e-hooks-webhook"
	type call struct {
		header http.Header
		p      hooks.Payload
	}
	var mu sync.Mutex
	var calls []call
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p hooks.Payload
		if r.Method != http.MethodPost || json.Unmarshal(body, &p) != nil {
			http.Error(w, "want a POSTed JSON payload", http.StatusBadRequest)
			return
		}
		mu.Lock()
		calls = append(calls, call{r.Header.Clone(), p})
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("receiver on %s, want loopback", srv.URL)
	}
	token := filepath.Join(t.TempDir(), "webhook.token")
	if err := os.WriteFile(token, []byte("e2e-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := hooksEnv(t, t.TempDir(), hooks.Webhook{URL: srv.URL + "/ferry", Timeout: 5 * time.Second, TokenFile: token})
	newGuest(t, vm, guestSpec{host: "1", memMiB: 128, wssMiB: 32, rate: 2000})

	r := e.ferry("migrate", vm, "--to", "host2", "-o", "json")
	if r.code != 0 {
		t.Fatalf("migrate: exit %d: %s", r.code, r.stderr)
	}
	var res orchestrator.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("result json: %v", err)
	}
	if res.State != journal.StateCompleted || len(res.HookErrors) != 0 {
		t.Fatalf("result %s, hook errors %v", res.State, res.HookErrors)
	}
	runsExactlyOn(t, vm, "2")

	// ferry has exited: every call it made has been answered.
	mu.Lock()
	defer mu.Unlock()
	var events []string
	for _, c := range calls {
		events = append(events, c.p.Event)
	}
	if got := strings.Join(events, ","); got != "reservation,switchover,activation" {
		t.Fatalf("webhook events %s, want reservation,switchover,activation", got)
	}
	stages := map[string]string{"reservation": "reservation", "switchover": "stop-and-copy", "activation": "activation"}
	for _, c := range calls {
		p := c.p
		if p.MigrationID != res.ID || p.VM != vm || p.Source != "host1" || p.Destination != "host2" || p.Kind != "live" ||
			p.Stage != stages[p.Event] || p.DestinationURI != labURI("2") || p.Timestamp.IsZero() {
			t.Errorf("%s payload %+v (migration %s)", p.Event, p, res.ID)
		}
		if c.header.Get("X-Ferry-Event") != p.Event || c.header.Get("Content-Type") != "application/json" ||
			c.header.Get("User-Agent") != "ferry" || c.header.Get("Authorization") != "Bearer e2e-token" {
			t.Errorf("%s headers %v", p.Event, c.header)
		}
	}
	sw, act := calls[1].p, calls[2].p
	if act.Timestamp.Before(sw.Timestamp) {
		t.Errorf("activation dated %s, before the switchover %s", act.Timestamp, sw.Timestamp)
	}

	show := e.ferry("show", res.ID, "-o", "json")
	var rec journal.Record
	if err := json.Unmarshal([]byte(show.stdout), &rec); err != nil {
		t.Fatalf("show json: %v", err)
	}
	if rec.DowntimeMS == nil || act.DowntimeMS <= 0 || act.DowntimeMS != *rec.DowntimeMS {
		t.Fatalf("activation downtime_ms %d, journal %v: want the same, > 0", act.DowntimeMS, rec.DowntimeMS)
	}
	// The switchover is dated when the source paused, as the journal's stop-and-copy.
	if st, err := time.Parse(time.RFC3339Nano, rec.Stages["stop-and-copy"]); err != nil || st.UnixMilli() != sw.Timestamp.UnixMilli() {
		t.Errorf("switchover dated %s, journal's stop-and-copy %s (%v)", sw.Timestamp, rec.Stages["stop-and-copy"], err)
	}
}
