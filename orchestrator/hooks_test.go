package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/ferryvm/ferry/hooks"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/virt"
	"github.com/ferryvm/ferry/virt/virttest"
)

// writeHook puts a /bin/sh program into the hooks directory.
func writeHook(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

// receiver is a webhook endpoint that records what it is sent.
type receiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []received
	// answer, when set, replies to one request; nil: 204.
	answer func(w http.ResponseWriter, r *http.Request, p hooks.Payload)
}

type received struct {
	header  http.Header
	payload hooks.Payload
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p hooks.Payload
		if err := json.Unmarshal(body, &p); err != nil || r.Method != http.MethodPost {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		rc.got = append(rc.got, received{header: r.Header.Clone(), payload: p})
		answer := rc.answer
		rc.mu.Unlock()
		if answer != nil {
			answer(w, r, p)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) events() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []string
	for _, g := range rc.got {
		out = append(out, g.payload.Event)
	}
	return out
}

func (rc *receiver) find(event string) *received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for i := range rc.got {
		if rc.got[i].payload.Event == event {
			g := rc.got[i]
			return &g
		}
	}
	return nil
}

// logged captures the controller's log lines, formatted with their fields.
func logged(f *fixture) func() string {
	logger, hook := logtest.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	f.c.Log = logrus.NewEntry(logger)
	return func() string {
		var b strings.Builder
		for _, e := range hook.AllEntries() {
			s, _ := e.String()
			b.WriteString(s)
		}
		return b.String()
	}
}

// switchoverAt makes the fake migration pause the source the way libvirt
// reports it, then waits for the switchover webhook before finishing, so
// the watch loop sees the event before the call returns.
func switchoverAt(f *fixture, seen <-chan struct{}) {
	f.vm.MigrateFn = func(ctx context.Context, d *virttest.Domain, p virt.MigrateParams) error {
		f.a.Emit(virt.Event{Kind: virt.EventLifecycle, UUID: testVMUUID, Lifecycle: "suspended", Detail: "migrated"})
		select {
		case <-seen:
		case <-time.After(10 * time.Second):
			return errors.New("test: the switchover webhook never came")
		}
		return d.MoveTo(p.DestURI)
	}
}

func TestHookEventsOfALiveMove(t *testing.T) {
	f := newFixture(t)
	logs := logged(f)
	rc := newReceiver(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	seen := make(chan struct{})
	var once sync.Once
	rc.answer = func(w http.ResponseWriter, r *http.Request, p hooks.Payload) {
		if p.Event == hooks.Switchover {
			once.Do(func() { close(seen) })
		}
		w.WriteHeader(http.StatusOK)
	}
	f.c.Inventory.Webhooks = []hooks.Webhook{{URL: rc.srv.URL + "/ferry", TokenFile: tokenFile}}
	out := t.TempDir()
	writeHook(t, f.c.HooksDir, "10-record", `cat > "`+out+`/$1.json"; env > "`+out+`/$1.env"`)
	switchoverAt(f, seen)

	res, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.HookErrors) != 0 {
		t.Fatalf("hook errors %v", res.HookErrors)
	}
	// Webhooks default to every event but pre-migration.
	if got, want := strings.Join(rc.events(), ","), "reservation,switchover,activation"; got != want {
		t.Fatalf("webhook events %s, want %s", got, want)
	}
	r := f.lastRecord(t)
	for _, tc := range []struct{ event, stage string }{
		{hooks.Reservation, "reservation"}, {hooks.Switchover, "stop-and-copy"}, {hooks.Activation, "activation"},
	} {
		g := rc.find(tc.event)
		p := g.payload
		if p.MigrationID != res.ID || p.VM != "web-01" || p.VMUUID != testVMUUID || p.Source != "host-a" || p.Destination != "host-b" ||
			p.SourceURI != uriA || p.DestinationURI != uriB || p.Kind != "live" || p.Stage != tc.stage || p.Timestamp.IsZero() {
			t.Errorf("%s payload %+v", tc.event, p)
		}
		h := g.header
		if h.Get("Content-Type") != "application/json" || h.Get("User-Agent") != "ferry" || h.Get("X-Ferry-Event") != tc.event ||
			h.Get("Authorization") != "Bearer s3cret-token" {
			t.Errorf("%s headers %v", tc.event, h)
		}
	}
	if act := rc.find(hooks.Activation).payload; act.DowntimeMS != 20 || r.DowntimeMS == nil || act.DowntimeMS != *r.DowntimeMS {
		t.Errorf("activation downtime_ms %d, journal %v", act.DowntimeMS, r.DowntimeMS)
	}
	if sw := rc.find(hooks.Switchover).payload; sw.Timestamp.UnixMilli() != r.StageTimes[journal.StageStopAndCopy].UnixMilli() {
		t.Errorf("switchover dated %s, journal's stop-and-copy %s", sw.Timestamp, r.StageTimes[journal.StageStopAndCopy])
	}
	// The executable got every event, pre-migration included, on stdin and in its environment.
	for _, ev := range []string{hooks.PreMigration, hooks.Reservation, hooks.Switchover, hooks.Activation} {
		data, err := os.ReadFile(filepath.Join(out, ev+".json"))
		if err != nil {
			t.Fatalf("hook did not run for %s: %v", ev, err)
		}
		var p hooks.Payload
		if err := json.Unmarshal(data, &p); err != nil || p.Event != ev || p.MigrationID != res.ID {
			t.Fatalf("%s stdin %s (%v)", ev, data, err)
		}
		env, _ := os.ReadFile(filepath.Join(out, ev+".env"))
		for _, want := range []string{"FERRY_EVENT=" + ev, "FERRY_MIGRATION_ID=" + res.ID, "FERRY_VM=web-01", "FERRY_SOURCE=host-a",
			"FERRY_DESTINATION=host-b", "FERRY_KIND=live", "FERRY_STAGE=" + p.Stage} {
			if !strings.Contains(string(env), want+"\n") {
				t.Errorf("%s environment lacks %s:\n%s", ev, want, env)
			}
		}
	}
	if strings.Contains(logs(), "s3cret-token") {
		t.Fatal("the bearer token was logged")
	}
}

// A slow switchover hook runs beside the job watch: the watch still sees
// the call return and commits while the hook is busy.
func TestSwitchoverHooksDoNotBlockTheWatch(t *testing.T) {
	f := newFixture(t)
	rc := newReceiver(t)
	started, committed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	rc.answer = func(w http.ResponseWriter, r *http.Request, p hooks.Payload) {
		if p.Event != hooks.Switchover {
			w.WriteHeader(http.StatusOK)
			return
		}
		close(started)
		select {
		case <-committed:
			w.WriteHeader(http.StatusOK)
		case <-time.After(5 * time.Second):
			http.Error(w, "the watch did not commit while this hook ran", http.StatusInternalServerError)
		}
	}
	f.c.Inventory.Webhooks = []hooks.Webhook{{URL: rc.srv.URL, Timeout: 10 * time.Second}}
	switchoverAt(f, started)
	res, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b", Progress: func(p Progress) {
		if p.Stage == journal.StageCommitment {
			once.Do(func() { close(committed) })
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.HookErrors) != 0 {
		t.Fatalf("hook errors %v", res.HookErrors)
	}
	// Activation waits for the switchover hooks, so receivers see them in order.
	if got := strings.Join(rc.events(), ","); got != "reservation,switchover,activation" {
		t.Fatalf("events %s", got)
	}
}

// Without libvirt's pause event the switchover is announced at commitment.
func TestSwitchoverAnnouncedWhenNotSeen(t *testing.T) {
	f := newFixture(t)
	rc := newReceiver(t)
	f.c.Inventory.Webhooks = []hooks.Webhook{{URL: rc.srv.URL}}
	if _, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b"}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rc.events(), ","); got != "reservation,switchover,activation" {
		t.Fatalf("events %s", got)
	}
}

func TestPreMigrationVeto(t *testing.T) {
	const freeze = `if [ "$1" = pre-migration ]; then echo checking; echo "change freeze until 18:00" >&2; exit 1; fi`
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, f *fixture, rc *receiver)
		want    string // the refusal, %s: the receiver's URL
		webhook bool   // the gating webhook was asked
	}{
		{"executable exits 1", func(t *testing.T, f *fixture, rc *receiver) {
			writeHook(t, f.c.HooksDir, "10-freeze-check", freeze)
			writeHook(t, f.c.HooksDir, "20-never", `echo ran >> "`+f.c.HooksDir+`/20.out"`)
		}, `vetoed by hook 10-freeze-check: exit status 1: "change freeze until 18:00"`, false},
		{"executable times out", func(t *testing.T, f *fixture, rc *receiver) {
			f.c.HookTimeout = 300 * time.Millisecond
			writeHook(t, f.c.HooksDir, "10-slow", "echo asking the CAB\nsleep 30\n")
		}, `vetoed by hook 10-slow: timed out after 300ms: "asking the CAB"`, false},
		{"webhook answers 409", func(t *testing.T, f *fixture, rc *receiver) {
			rc.answer = func(w http.ResponseWriter, r *http.Request, p hooks.Payload) {
				http.Error(w, "change freeze until 18:00", http.StatusConflict)
			}
		}, `vetoed by webhook %s/gate: HTTP 409 Conflict: "change freeze until 18:00"`, true},
		{"webhook times out", func(t *testing.T, f *fixture, rc *receiver) {
			f.c.Inventory.Webhooks[0].Timeout = 200 * time.Millisecond
			rc.answer = func(w http.ResponseWriter, r *http.Request, p hooks.Payload) { <-r.Context().Done() }
		}, `vetoed by webhook %s/gate: timed out after 200ms`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			rc := newReceiver(t)
			f.c.Inventory.Webhooks = []hooks.Webhook{{URL: rc.srv.URL + "/gate", Events: []string{hooks.PreMigration}}}
			tc.setup(t, f, rc)
			start := time.Now()
			res, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b"})
			want := tc.want
			if strings.Contains(want, "%s") {
				want = strings.ReplaceAll(want, "%s", rc.srv.URL)
			}
			if !errors.Is(err, ErrRefused) || !errors.Is(err, ErrVetoed) || err.Error() != want {
				t.Fatalf("err = %v\nwant a refusal %q", err, want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("the veto took %s: the hook's timeout did not end it", d)
			}
			if res.State != journal.StateRefused {
				t.Fatalf("state %s", res.State)
			}
			r := f.lastRecord(t)
			if r.State != journal.StateRefused || r.Error != want || r.Source != "host-a" || r.Dest != "host-b" {
				t.Fatalf("journal row %s %q (%s -> %s)", r.State, r.Error, r.Source, r.Dest)
			}
			if len(f.vm.Calls) != 0 {
				t.Fatalf("the VM was touched: %v", f.vm.Calls)
			}
			if n, _ := f.c.Journal.Reserved(context.Background(), f.b.UUID); n != 0 {
				t.Fatalf("memory reserved after a veto: %d", n)
			}
			if _, err := os.Stat(filepath.Join(f.c.HooksDir, "20.out")); err == nil {
				t.Fatal("a hook after the veto ran")
			}
			if asked := rc.find(hooks.PreMigration) != nil; asked != tc.webhook {
				t.Fatalf("gating webhook asked: %v, want %v", asked, tc.webhook)
			}
			if len(rc.events()) > 1 {
				t.Fatalf("events after a veto: %v", rc.events())
			}
		})
	}
}

// A webhook that did not list pre-migration is never asked, so it cannot veto.
func TestWebhookVetoesOnlyWhenSubscribed(t *testing.T) {
	f := newFixture(t)
	rc := newReceiver(t)
	rc.answer = func(w http.ResponseWriter, r *http.Request, p hooks.Payload) {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}
	f.c.Inventory.Webhooks = []hooks.Webhook{{URL: rc.srv.URL}}
	res, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b"})
	if err != nil {
		t.Fatalf("the move failed: %v", err)
	}
	if rc.find(hooks.PreMigration) != nil {
		t.Fatal("pre-migration sent to a webhook that did not ask for it")
	}
	if len(res.HookErrors) != 3 || !strings.HasPrefix(res.HookErrors[2], "activation: webhook "+rc.srv.URL+": HTTP 503 Service Unavailable") {
		t.Fatalf("hook errors %q", res.HookErrors)
	}
}

// After pre-migration, failing hooks are reported and the move stands.
func TestHookFailuresAfterPreMigrationAreReported(t *testing.T) {
	f := newFixture(t)
	logs := logged(f)
	writeHook(t, f.c.HooksDir, "50-lb", `[ "$1" = activation ] && { echo "lb api: 502"; exit 3; }; exit 0`)
	// Credentials in a URL never reach the result or the log.
	f.c.Inventory.Webhooks = []hooks.Webhook{{URL: "http://ops:hunter2@127.0.0.1:1/hook?key=k3y", Events: []string{hooks.Activation}, Timeout: 2 * time.Second}}
	res, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b"})
	if err != nil || res.State != journal.StateCompleted {
		t.Fatalf("err %v state %s", err, res.State)
	}
	if _, err := f.b.LookupDomain("web-01"); err != nil {
		t.Fatalf("not on the destination: %v", err)
	}
	if len(res.HookErrors) != 2 || res.HookErrors[0] != `activation: hook 50-lb: exit status 3: "lb api: 502"` ||
		!strings.HasPrefix(res.HookErrors[1], "activation: webhook http://127.0.0.1:1/hook: ") {
		t.Fatalf("hook errors %q", res.HookErrors)
	}
	if r := f.lastRecord(t); r.State != journal.StateCompleted || !strings.Contains(r.Notes, "50-lb") {
		t.Fatalf("journal %s notes %q", r.State, r.Notes)
	}
	all := logs() + strings.Join(res.HookErrors, "\n")
	for _, secret := range []string{"hunter2", "ops:", "k3y"} {
		if strings.Contains(all, secret) {
			t.Fatalf("%q leaked:\n%s", secret, all)
		}
	}
	if !strings.Contains(logs(), "webhook=\"http://127.0.0.1:1/hook\"") {
		t.Fatalf("the failure is not logged with the webhook's name:\n%s", logs())
	}
}

func TestRollbackHooks(t *testing.T) {
	f := newFixture(t)
	rc := newReceiver(t)
	f.c.Inventory.Webhooks = []hooks.Webhook{{URL: rc.srv.URL, Events: []string{hooks.Rollback, hooks.Activation}}}
	f.vm.MigrateFn = func(ctx context.Context, d *virttest.Domain, p virt.MigrateParams) error {
		return &virt.Error{Op: "migrate", Sentinel: virt.ErrFailed, Message: "destination QEMU died"}
	}
	_, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b"})
	if !errors.Is(err, ErrRolledBack) {
		t.Fatalf("err %v", err)
	}
	if got := strings.Join(rc.events(), ","); got != "rollback" {
		t.Fatalf("events %s", got)
	}
	p := rc.find(hooks.Rollback).payload
	if p.Stage != "pre-copy" || !strings.Contains(p.Error, "destination QEMU died") || p.Source != "host-a" {
		t.Fatalf("rollback payload %+v", p)
	}
}

func TestDryRunCallsNoHooks(t *testing.T) {
	f := newFixture(t)
	rc := newReceiver(t)
	f.c.Inventory.Webhooks = []hooks.Webhook{{URL: rc.srv.URL, Events: hooks.Events}}
	writeHook(t, f.c.HooksDir, "10-veto", "exit 1")
	res, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b", DryRun: true})
	if err != nil || res.State != "dry_run" {
		t.Fatalf("err %v state %s", err, res.State)
	}
	if len(rc.events()) != 0 {
		t.Fatalf("a dry run notified %v", rc.events())
	}
}

func TestColdMoveVetoed(t *testing.T) {
	f := newFixture(t)
	f.vm.SetState(virt.StateShutoff, "")
	writeHook(t, f.c.HooksDir, "10-freeze", `[ "$FERRY_KIND" = cold ] && [ "$1" = pre-migration ] && { echo "no cold moves today"; exit 1; }; exit 0`)
	res, err := f.c.Migrate(context.Background(), Request{Kind: KindCold, VM: "web-01", To: "host-b"})
	want := `vetoed by hook 10-freeze: exit status 1: "no cold moves today"`
	if !errors.Is(err, ErrVetoed) || !errors.Is(err, ErrRefused) || err.Error() != want {
		t.Fatalf("err %v, want %q", err, want)
	}
	if r := f.lastRecord(t); res.State != journal.StateRefused || r.Kind != "cold" || r.State != journal.StateRefused || r.Error != want {
		t.Fatalf("result %s row %+v", res.State, r)
	}
}

func TestRecoverAnnouncesTheOutcome(t *testing.T) {
	f := newFixture(t)
	rc := newReceiver(t)
	f.c.Inventory.Webhooks = []hooks.Webhook{{URL: rc.srv.URL}}
	ctx := context.Background()
	rec := &journal.Record{ID: "crashed-2", Kind: "live", VM: "web-01", VMUUID: testVMUUID,
		Source: "host-a", SourceURI: uriA, Dest: "host-b", DestURI: uriB, State: journal.StateRunning, Owner: "999999:1"}
	if err := f.c.Journal.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	_ = f.c.Journal.EnterStage(ctx, rec.ID, journal.StagePreCopy, f.c.now(), nil)
	if err := f.vm.MoveTo(uriB); err != nil {
		t.Fatal(err)
	}
	out, err := f.c.Recover(ctx, RecoverOptions{})
	if err != nil || len(out) != 1 || out[0].After != journal.StateCompleted {
		t.Fatalf("recover %v %+v", err, out)
	}
	g := rc.find(hooks.Activation)
	if g == nil || len(rc.events()) != 1 {
		t.Fatalf("events %v", rc.events())
	}
	if p := g.payload; p.MigrationID != "crashed-2" || p.Kind != "live" || p.Destination != "host-b" || p.DowntimeMS != 20 {
		t.Fatalf("payload %+v", p)
	}
}

// testVMUUID is the fixture VM's UUID (newFixture).
const testVMUUID = "6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e6f"

// A hooks directory someone else could change vetoes the move with the
// message that says what to fix (package hooks tests the rules).
func TestUnsafeHooksVetoTheMove(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hooks.d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	f.c.HooksDir = dir
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b"})
	if !errors.Is(err, ErrVetoed) || !strings.Contains(err.Error(), "writable by its group or others") {
		t.Fatalf("migrate with an unsafe hooks directory: %v", err)
	}
	if info, _ := f.vm.Info(); info.State != virt.StateRunning {
		t.Fatal("the vetoed move touched the VM")
	}
}
