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
	answer func(w http.ResponseWriter, r *http.Request, p HookPayload)
}

type received struct {
	header  http.Header
	payload HookPayload
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p HookPayload
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
	rc.answer = func(w http.ResponseWriter, r *http.Request, p HookPayload) {
		if p.Event == HookSwitchover {
			once.Do(func() { close(seen) })
		}
		w.WriteHeader(http.StatusOK)
	}
	f.c.Inventory.Webhooks = []WebhookConfig{{URL: rc.srv.URL + "/ferry", TokenFile: tokenFile}}
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
		{HookReservation, "reservation"}, {HookSwitchover, "stop-and-copy"}, {HookActivation, "activation"},
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
	if act := rc.find(HookActivation).payload; act.DowntimeMS != 20 || r.DowntimeMS == nil || act.DowntimeMS != *r.DowntimeMS {
		t.Errorf("activation downtime_ms %d, journal %v", act.DowntimeMS, r.DowntimeMS)
	}
	if sw := rc.find(HookSwitchover).payload; sw.Timestamp.UnixMilli() != r.StageTimes[StageStopAndCopy].UnixMilli() {
		t.Errorf("switchover dated %s, journal's stop-and-copy %s", sw.Timestamp, r.StageTimes[StageStopAndCopy])
	}
	// The executable got every event, pre-migration included, on stdin and in its environment.
	for _, ev := range []string{HookPreMigration, HookReservation, HookSwitchover, HookActivation} {
		data, err := os.ReadFile(filepath.Join(out, ev+".json"))
		if err != nil {
			t.Fatalf("hook did not run for %s: %v", ev, err)
		}
		var p HookPayload
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
	rc.answer = func(w http.ResponseWriter, r *http.Request, p HookPayload) {
		if p.Event != HookSwitchover {
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
	f.c.Inventory.Webhooks = []WebhookConfig{{URL: rc.srv.URL, Timeout: 10 * time.Second}}
	switchoverAt(f, started)
	res, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b", Progress: func(p Progress) {
		if p.Stage == StageCommitment {
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
	f.c.Inventory.Webhooks = []WebhookConfig{{URL: rc.srv.URL}}
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
			rc.answer = func(w http.ResponseWriter, r *http.Request, p HookPayload) {
				http.Error(w, "change freeze until 18:00", http.StatusConflict)
			}
		}, `vetoed by webhook %s/gate: HTTP 409 Conflict: "change freeze until 18:00"`, true},
		{"webhook times out", func(t *testing.T, f *fixture, rc *receiver) {
			f.c.Inventory.Webhooks[0].Timeout = 200 * time.Millisecond
			rc.answer = func(w http.ResponseWriter, r *http.Request, p HookPayload) { <-r.Context().Done() }
		}, `vetoed by webhook %s/gate: timed out after 200ms`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			rc := newReceiver(t)
			f.c.Inventory.Webhooks = []WebhookConfig{{URL: rc.srv.URL + "/gate", Events: []string{HookPreMigration}}}
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
			if res.State != StateRefused {
				t.Fatalf("state %s", res.State)
			}
			r := f.lastRecord(t)
			if r.State != StateRefused || r.Error != want || r.Source != "host-a" || r.Dest != "host-b" {
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
			if asked := rc.find(HookPreMigration) != nil; asked != tc.webhook {
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
	rc.answer = func(w http.ResponseWriter, r *http.Request, p HookPayload) {
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}
	f.c.Inventory.Webhooks = []WebhookConfig{{URL: rc.srv.URL}}
	res, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b"})
	if err != nil {
		t.Fatalf("the move failed: %v", err)
	}
	if rc.find(HookPreMigration) != nil {
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
	f.c.Inventory.Webhooks = []WebhookConfig{{URL: "http://ops:hunter2@127.0.0.1:1/hook?key=k3y", Events: []string{HookActivation}, Timeout: 2 * time.Second}}
	res, err := f.c.Migrate(context.Background(), Request{VM: "web-01", To: "host-b"})
	if err != nil || res.State != StateCompleted {
		t.Fatalf("err %v state %s", err, res.State)
	}
	if _, err := f.b.LookupDomain("web-01"); err != nil {
		t.Fatalf("not on the destination: %v", err)
	}
	if len(res.HookErrors) != 2 || res.HookErrors[0] != `activation: hook 50-lb: exit status 3: "lb api: 502"` ||
		!strings.HasPrefix(res.HookErrors[1], "activation: webhook http://127.0.0.1:1/hook: ") {
		t.Fatalf("hook errors %q", res.HookErrors)
	}
	if r := f.lastRecord(t); r.State != StateCompleted || !strings.Contains(r.Notes, "50-lb") {
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
	f.c.Inventory.Webhooks = []WebhookConfig{{URL: rc.srv.URL, Events: []string{HookRollback, HookActivation}}}
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
	p := rc.find(HookRollback).payload
	if p.Stage != "pre-copy" || !strings.Contains(p.Error, "destination QEMU died") || p.Source != "host-a" {
		t.Fatalf("rollback payload %+v", p)
	}
}

func TestDryRunCallsNoHooks(t *testing.T) {
	f := newFixture(t)
	rc := newReceiver(t)
	f.c.Inventory.Webhooks = []WebhookConfig{{URL: rc.srv.URL, Events: HookEvents}}
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
	res, err := f.c.MigrateCold(context.Background(), ColdRequest{VM: "web-01", To: "host-b"})
	want := `vetoed by hook 10-freeze: exit status 1: "no cold moves today"`
	if !errors.Is(err, ErrVetoed) || !errors.Is(err, ErrRefused) || err.Error() != want {
		t.Fatalf("err %v, want %q", err, want)
	}
	if r := f.lastRecord(t); res.State != StateRefused || r.Kind != "cold" || r.State != StateRefused || r.Error != want {
		t.Fatalf("result %s row %+v", res.State, r)
	}
}

func TestRecoverAnnouncesTheOutcome(t *testing.T) {
	f := newFixture(t)
	rc := newReceiver(t)
	f.c.Inventory.Webhooks = []WebhookConfig{{URL: rc.srv.URL}}
	ctx := context.Background()
	rec := &Record{ID: "crashed-2", Kind: "live", VM: "web-01", VMUUID: testVMUUID,
		Source: "host-a", SourceURI: uriA, Dest: "host-b", DestURI: uriB, State: StateRunning, Owner: "999999:1"}
	if err := f.c.Journal.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	_ = f.c.Journal.EnterStage(ctx, rec.ID, StagePreCopy, f.c.now(), nil)
	if err := f.vm.MoveTo(uriB); err != nil {
		t.Fatal(err)
	}
	out, err := f.c.Recover(ctx, RecoverOptions{})
	if err != nil || len(out) != 1 || out[0].After != StateCompleted {
		t.Fatalf("recover %v %+v", err, out)
	}
	g := rc.find(HookActivation)
	if g == nil || len(rc.events()) != 1 {
		t.Fatalf("events %v", rc.events())
	}
	if p := g.payload; p.MigrationID != "crashed-2" || p.Kind != "live" || p.Destination != "host-b" || p.DowntimeMS != 20 {
		t.Fatalf("payload %+v", p)
	}
}

func TestExecutableHooks(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(t.TempDir(), "order")
	writeHook(t, dir, "20-second", `echo 20 >> "`+out+`"`)
	writeHook(t, dir, "10-first", `echo 10 >> "`+out+`"`)
	writeHook(t, dir, ".hidden", `echo hidden >> "`+out+`"`)
	writeHook(t, dir, "30-backup~", `echo backup >> "`+out+`"`)
	if err := os.WriteFile(filepath.Join(dir, "40-not-executable"), []byte("#!/bin/sh\necho no >> "+out), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "50-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeHook(t, dir, "60-fails", "echo one\necho two\nexit 4")
	writeHook(t, dir, "70-after", `echo 70 >> "`+out+`"`)
	c := &Controller{HooksDir: dir, HookTimeout: 5 * time.Second}
	log := logrus.NewEntry(logrus.New())

	rep := c.dispatch(context.Background(), log, HookPayload{Event: HookActivation, Kind: "live"})
	if got, _ := os.ReadFile(out); string(got) != "10\n20\n70\n" {
		t.Fatalf("ran %q", got)
	}
	if rep.ran != 4 || len(rep.failures) != 1 || rep.errors()[0] != `activation: hook 60-fails: exit status 4: "two"` {
		t.Fatalf("report %+v %q", rep, rep.errors())
	}
	// At pre-migration the first failure ends the round.
	_ = os.Remove(out)
	rep = c.dispatch(context.Background(), log, HookPayload{Event: HookPreMigration, Kind: "live"})
	if got, _ := os.ReadFile(out); string(got) != "10\n20\n" || len(rep.failures) != 1 {
		t.Fatalf("ran %q, report %+v", got, rep)
	}
	// No directory: nothing to run.
	c.HooksDir = filepath.Join(dir, "missing")
	if rep := c.dispatch(context.Background(), log, HookPayload{Event: HookActivation}); rep.ran != 0 || len(rep.failures) != 0 {
		t.Fatalf("report %+v", rep)
	}
}

// A timed-out hook's children die with it: the round ends at the timeout,
// not when a grandchild that holds the output pipe would have exited.
func TestHookTimeoutKillsItsChildren(t *testing.T) {
	dir := t.TempDir()
	writeHook(t, dir, "10-hangs", "sleep 30 &\nsleep 30\n")
	c := &Controller{HooksDir: dir, HookTimeout: 200 * time.Millisecond}
	start := time.Now()
	rep := c.dispatch(context.Background(), logrus.NewEntry(logrus.New()), HookPayload{Event: HookActivation})
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %s", d)
	}
	if len(rep.failures) != 1 || rep.failures[0].err != "timed out after 200ms" {
		t.Fatalf("report %+v", rep)
	}
}

// Webhooks of one event run concurrently: two that each take most of their
// timeout both succeed, which they could not one after the other.
func TestWebhooksRunConcurrently(t *testing.T) {
	var wg sync.WaitGroup
	wg.Add(2)
	both := make(chan struct{})
	go func() { wg.Wait(); close(both) }()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wg.Done()
		select {
		case <-both: // each answers only once the other one was called too
			w.WriteHeader(http.StatusOK)
		case <-r.Context().Done():
		}
	})
	s1, s2 := httptest.NewServer(h), httptest.NewServer(h)
	defer s1.Close()
	defer s2.Close()
	c := &Controller{HooksDir: t.TempDir(), Inventory: &Inventory{Webhooks: []WebhookConfig{
		{URL: s1.URL, Timeout: 5 * time.Second}, {URL: s2.URL, Timeout: 5 * time.Second}}}}
	rep := c.dispatch(context.Background(), logrus.NewEntry(logrus.New()), HookPayload{Event: HookActivation})
	if rep.ran != 2 || len(rep.failures) != 0 {
		t.Fatalf("report %+v", rep)
	}
}

// testVMUUID is the fixture VM's UUID (newFixture).
const testVMUUID = "6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e6f"

// A hooks directory or hook that someone other than root or ferry's user
// could change is refused: nothing in it runs, and at pre-migration the move
// is vetoed with a message that says what to fix.
func TestUnsafeHooksAreRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hooks.d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "ran")
	hook := filepath.Join(dir, "10-gate")
	writeHook(t, dir, "10-gate", `echo ran >> "`+out+`"`)
	c := &Controller{HooksDir: dir, HookTimeout: 5 * time.Second}
	log := logrus.NewEntry(logrus.New())
	dispatch := func() hookReport {
		t.Helper()
		_ = os.Remove(out)
		return c.dispatch(context.Background(), log, HookPayload{Event: HookPreMigration, Kind: "live"})
	}
	if rep := dispatch(); rep.ran != 1 || len(rep.failures) != 0 {
		t.Fatalf("safe hooks: %+v", rep)
	}
	for _, tc := range []struct {
		name  string
		setup func() error
		undo  func() error
		want  string
	}{
		{"world-writable directory", func() error { return os.Chmod(dir, 0o777) }, func() error { return os.Chmod(dir, 0o755) },
			"hooks directory " + dir + " is writable by its group or others (mode 0777): run chmod go-w"},
		{"group-writable directory", func() error { return os.Chmod(dir, 0o775) }, func() error { return os.Chmod(dir, 0o755) },
			"(mode 0775)"},
		{"group-writable hook", func() error { return os.Chmod(hook, 0o775) }, func() error { return os.Chmod(hook, 0o755) },
			"hook " + hook + " is writable by its group or others (mode 0775)"},
		{"world-writable hook", func() error { return os.Chmod(hook, 0o757) }, func() error { return os.Chmod(hook, 0o755) },
			"(mode 0757)"},
		{"hook owned by another user", func() error { return os.Chown(hook, 4242, 4242) }, func() error { return os.Chown(hook, os.Geteuid(), os.Getegid()) },
			"hook " + hook + " is owned by uid 4242, not root or ferry's user"},
		{"directory owned by another user", func() error { return os.Chown(dir, 4242, 4242) }, func() error { return os.Chown(dir, os.Geteuid(), os.Getegid()) },
			"hooks directory " + dir + " is owned by uid 4242"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.setup(); err != nil {
				if os.Geteuid() != 0 {
					t.Skipf("needs root: %v", err)
				}
				t.Fatal(err)
			}
			defer func() {
				if err := tc.undo(); err != nil {
					t.Fatal(err)
				}
			}()
			rep := dispatch()
			if _, err := os.Stat(out); err == nil {
				t.Fatal("an unsafe hook ran")
			}
			if len(rep.failures) != 1 || !strings.Contains(rep.failures[0].err, tc.want) || !strings.Contains(rep.failures[0].err, "no hook runs until then") {
				t.Fatalf("report %+v, want a failure containing %q", rep, tc.want)
			}
		})
	}
	// The move is vetoed with that message.
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
