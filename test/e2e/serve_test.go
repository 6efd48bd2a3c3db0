//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryvm/ferry/hooks"
	"github.com/ferryvm/ferry/journal"
)

// serveProc is a `ferry serve` child process and a client for its API.
type serveProc struct {
	t      *testing.T
	url    string
	token  string
	out    *syncBuffer
	client *http.Client
}

var listenRE = regexp.MustCompile(`listening on (https?://127\.0\.0\.1:\d+)`)

// startServe starts the real binary on a free loopback port with its own
// token file, waits for /healthz and stops it by PID when the test ends.
func startServe(t *testing.T, e *env, args ...string) *serveProc {
	t.Helper()
	return startServeClient(t, e, http.DefaultClient, args...)
}

// startServeClient is startServe talking to the server through client.
func startServeClient(t *testing.T, e *env, client *http.Client, args ...string) *serveProc {
	t.Helper()
	tokFile := filepath.Join(t.TempDir(), "api-token")
	tok := fmt.Sprintf("e2e-%d-%d-token", os.Getpid(), time.Now().UnixNano())
	if err := os.WriteFile(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := e.cmd(context.Background(), append([]string{"serve", "--listen", "127.0.0.1:0", "--token-file", tokFile,
		"--poll-interval", "1s", "--poll-timeout", "1s", "--log-level", "info"}, args...)...)
	p := &serveProc{t: t, token: tok, out: &syncBuffer{}, client: client}
	var errb syncBuffer
	cmd.Stdout, cmd.Stderr = p.out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("ferry serve exited with %v", err)
				}
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				t.Errorf("ferry serve did not stop within 60 s of SIGTERM")
			}
		}
		if strings.Contains(errb.String(), tok) || strings.Contains(p.out.String(), tok) {
			t.Errorf("ferry serve printed its token")
		}
		t.Logf("ferry serve stdout:\n%s\nstderr:\n%s", p.out.String(), errb.String())
	})
	waitFor(t, "ferry serve's startup line", 30*time.Second, func() bool {
		select {
		case err := <-done:
			t.Fatalf("ferry serve exited: %v\n%s%s", err, p.out.String(), errb.String())
		default:
		}
		m := listenRE.FindStringSubmatch(p.out.String())
		if m != nil {
			p.url = m[1]
		}
		return m != nil
	})
	waitFor(t, "/healthz", 30*time.Second, func() bool {
		resp, err := p.client.Get(p.url + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// do sends a request with the given Authorization header value ("" for
// none) and decodes the JSON answer.
func (p *serveProc) do(method, path, auth, body string) (int, map[string]any, string) {
	p.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, p.url+path, rd)
	if err != nil {
		p.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var v map[string]any
	_ = json.Unmarshal(data, &v)
	return resp.StatusCode, v, string(data)
}

func (p *serveProc) api(method, path, body string) (int, map[string]any, string) {
	p.t.Helper()
	return p.do(method, path, "Bearer "+p.token, body)
}

// hookSink is a webhook receiver on loopback.
type hookSink struct {
	mu    sync.Mutex
	calls []hooks.Payload
}

func (h *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var p hooks.Payload
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.calls = append(h.calls, p)
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (h *hookSink) find(event, migration string) (hooks.Payload, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.calls {
		if c.Event == event && c.MigrationID == migration {
			return c, true
		}
	}
	return hooks.Payload{}, false
}

// ferry serve as a real process: auth, a live migration of a lab guest
// started and followed over HTTP, dedup of a second request, the webhook's
// activation call, and a stop by signal.
func TestServe(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-serve"
	newGuest(t, vm, guestSpec{host: "1", memMiB: 256, wssMiB: 64, rate: 2000})
	start := time.Now()

	// A webhook receiver, listed in a copy of the lab's inventory.
	sink := &hookSink{}
	hookSrv := httptest.NewServer(sink)
	defer hookSrv.Close()
	inv, err := os.ReadFile(labConfig)
	if err != nil {
		t.Fatal(err)
	}
	e.config = filepath.Join(t.TempDir(), "ferry.yaml")
	inv = append(inv, []byte(fmt.Sprintf("\nwebhooks:\n  - url: %s/hook\n    events: [activation]\n", hookSrv.URL))...)
	if err := os.WriteFile(e.config, inv, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, e, "--config", e.config)

	// Auth: no token, a wrong one.
	for _, auth := range []string{"", "Bearer wrong-token-0123456789"} {
		code, body, raw := p.do("GET", "/v1/migrations", auth, "")
		if code != http.StatusUnauthorized || body["code"] != "unauthorized" {
			t.Fatalf("Authorization %q: %d %s", auth, code, raw)
		}
	}
	code, body, raw := p.api("POST", "/v1/migrations", `{"vm": "`+vm+`", "to": "nowhere"}`)
	if code != http.StatusNotFound || body["code"] != "unknown_host" {
		t.Fatalf("unknown host: %d %s", code, raw)
	}

	// A live move, capped so that it is still running for the second request.
	before := heartbeat(t, vm)
	code, body, raw = p.api("POST", "/v1/migrations", `{"vm": "`+vm+`", "to": "host2", "bandwidth_mibps": 40, "max_downtime": "300ms"}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST migration: %d %s", code, raw)
	}
	id, _ := body["id"].(string)
	if body["location"] != "/v1/migrations/"+id {
		t.Fatalf("accepted: %s", raw)
	}
	code, body, raw = p.api("POST", "/v1/migrations", `{"vm": "`+vm+`", "to": "host2"}`)
	if code != http.StatusOK || body["id"] != id || body["existing"] != true {
		t.Fatalf("second POST for the VM being moved: %d %s", code, raw)
	}

	// Follow it until it ends.
	seen := map[string]bool{}
	var final map[string]any
	waitFor(t, "the migration to end", 3*time.Minute, func() bool {
		code, body, raw := p.api("GET", "/v1/migrations/"+id, "")
		if code != http.StatusOK {
			t.Fatalf("GET migration: %d %s", code, raw)
		}
		if pr, ok := body["progress"].(map[string]any); ok {
			if s, _ := pr["stage"].(string); s != "" {
				seen[s] = true
			}
		}
		if s, _ := body["stage"].(string); s != "" {
			seen[s] = true
		}
		if body["state"] != journal.StateRunning && body["result"] != nil {
			final = body
			return true
		}
		return false
	})
	t.Logf("stages seen while polling: %v", seen)
	if final["state"] != journal.StateCompleted {
		t.Fatalf("migration ended %v: %v", final["state"], final["error"])
	}
	if !seen["pre-copy"] {
		t.Fatalf("never saw the pre-copy stage while polling: %v", seen)
	}
	stages, _ := final["stage_times"].(map[string]any)
	var last time.Time
	for _, s := range []string{"pre-migration", "reservation", "pre-copy", "stop-and-copy", "commitment", "activation"} {
		v, _ := stages[s].(string)
		ts, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			t.Fatalf("stage %s timestamp %q: %v", s, v, err)
		}
		if ts.Before(last) {
			t.Fatalf("stage %s at %s is before the previous stage (%s)", s, ts, last)
		}
		last = ts
	}
	downtime, _ := final["downtime_ms"].(float64)
	if downtime <= 0 {
		t.Fatalf("downtime_ms %v", final["downtime_ms"])
	}
	runsExactlyOn(t, vm, "2")
	heartbeatAbove(t, vm, before, 30*time.Second)

	// The journal (read by the CLI, another process) says the same.
	rows := e.history(vm)
	if len(rows) == 0 || rows[0].ID != id || rows[0].State != journal.StateCompleted || rows[0].DowntimeMS == nil || float64(*rows[0].DowntimeMS) != downtime {
		t.Fatalf("journal: %+v", rows)
	}

	// The webhook got the activation with libvirt's downtime.
	var hook hooks.Payload
	waitFor(t, "the activation webhook", 30*time.Second, func() bool {
		var ok bool
		hook, ok = sink.find(hooks.Activation, id)
		return ok
	})
	if float64(hook.DowntimeMS) != downtime || hook.VM != vm || hook.Destination != "host2" {
		t.Fatalf("webhook payload %+v, journal downtime %v ms", hook, downtime)
	}

	// Finished: not cancellable.
	code, body, raw = p.api("DELETE", "/v1/migrations/"+id, "")
	if code != http.StatusConflict || body["code"] != "finished" {
		t.Fatalf("DELETE finished: %d %s", code, raw)
	}

	// A new move back, cancelled as soon as it is accepted: it rolls back
	// and the guest keeps running on host2 only.
	before = heartbeat(t, vm)
	code, body, raw = p.api("POST", "/v1/migrations", `{"vm": "`+vm+`", "to": "host1", "bandwidth_mibps": 20}`)
	if code != http.StatusAccepted || body["id"] == id {
		t.Fatalf("POST the move back: %d %s", code, raw)
	}
	back, _ := body["id"].(string)
	code, body, raw = p.api("DELETE", "/v1/migrations/"+back, "")
	if code != http.StatusAccepted || body["state"] != "cancelling" {
		t.Fatalf("DELETE running: %d %s", code, raw)
	}
	waitFor(t, "the cancelled move to end", 2*time.Minute, func() bool {
		_, body, _ = p.api("GET", "/v1/migrations/"+back, "")
		return body["state"] != journal.StateRunning && body["result"] != nil
	})
	if body["state"] != journal.StateRolledBack || body["cancel_requested"] != true {
		t.Fatalf("cancelled move: %v (%v)", body["state"], body["error"])
	}
	if e, _ := body["error"].(string); !strings.Contains(e, "cancelled by DELETE /v1/migrations/"+back) {
		t.Fatalf("the journal does not say who cancelled: %q", e)
	}
	runsExactlyOn(t, vm, "2")
	heartbeatAbove(t, vm, before, 30*time.Second)
	code, body, raw = p.api("GET", "/v1/migrations?vm="+vm+"&limit=10", "")
	if list, _ := body["migrations"].([]any); code != http.StatusOK || len(list) < 1 {
		t.Fatalf("list: %d %s", code, raw)
	}

	// SLA report and metrics from the same daemon.
	code, body, raw = p.api("GET", "/v1/sla/report?vm="+vm+"&from="+start.Add(-time.Minute).UTC().Format(time.RFC3339Nano), "")
	if vms, _ := body["vms"].([]any); code != http.StatusOK || len(vms) != 1 {
		t.Fatalf("sla report: %d %s", code, raw)
	}
	code, _, raw = p.api("GET", "/metrics", "")
	for _, want := range []string{"ferry_api_requests_total", "ferry_api_migrations_finished_total", "ferry_sla_host_up"} {
		if code != http.StatusOK || !strings.Contains(raw, want) {
			t.Fatalf("metrics lack %s: %d\n%s", want, code, raw)
		}
	}
}
