//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ferryvm/ferry/drain"
	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
)

// needHosts fails (not skips) when the lab is too small: make test brings up 3.
func needHosts(t *testing.T, n int) {
	t.Helper()
	if got := len(labHosts(t)); got < n {
		t.Fatalf("this test needs a lab of %d hosts, the lab has %d: run `hack/lab-up.sh %d` (make test does)", n, got, n)
	}
}

// drainReport runs a drain command and decodes its JSON report.
func (e *env) drainReport(args ...string) (drain.Report, result) {
	e.t.Helper()
	r := e.ferry(append(args, "-o", "json")...)
	var rep drain.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		e.t.Fatalf("drain report json: %v\n%s", err, r.stdout)
	}
	return rep, r
}

// undrainAfter clears host1's maintenance when the test ends so later tests
// may place VMs there.
func undrainAfter(e *env, host string) {
	e.t.Cleanup(func() { e.ferry("undrain", host) })
}

type interval struct {
	vm, dst    string
	start, end time.Time
}

// moveIntervals reads, from the journal, when each completed move held its
// slot: from its reservation to its commitment (both inside the slot's life).
func (e *env) moveIntervals(vms []string) []interval {
	e.t.Helper()
	var out []interval
	for _, vm := range vms {
		for _, r := range e.history(vm) {
			if r.State != journal.StateCompleted {
				continue
			}
			s, err1 := time.Parse(time.RFC3339Nano, r.Stages["reservation"])
			f, err2 := time.Parse(time.RFC3339Nano, r.Stages["commitment"])
			if err1 != nil || err2 != nil {
				e.t.Fatalf("%s: stage times %v", vm, r.Stages)
			}
			out = append(out, interval{vm: vm, dst: r.Dest, start: s, end: f})
		}
	}
	return out
}

// maxOverlap is the most intervals open at one instant.
func maxOverlap(iv []interval) int {
	type ev struct {
		at    time.Time
		delta int
	}
	var evs []ev
	for _, i := range iv {
		evs = append(evs, ev{i.start, 1}, ev{i.end, -1})
	}
	// Ends before starts at the same millisecond: touching is not overlapping.
	sort.Slice(evs, func(a, b int) bool {
		if evs[a].at.Equal(evs[b].at) {
			return evs[a].delta < evs[b].delta
		}
		return evs[a].at.Before(evs[b].at)
	})
	n, most := 0, 0
	for _, e := range evs {
		n += e.delta
		most = max(most, n)
	}
	return most
}

// Draining host1 with four running guests and one stopped guest empties it,
// spreads them over host2 and host3, never has more than --max-per-target
// moves into one host nor more than --parallel at once, and exits 0.
func TestDrainEmptiesHost(t *testing.T) {
	needHosts(t, 3)
	e := newEnv(t)
	undrainAfter(e, "host1")
	running := []string{"dr-a", "dr-b", "dr-c", "dr-d"}
	for i, n := range running {
		newGuest(t, n, guestSpec{memMiB: 96 + 32*i})
	}
	newGuest(t, "dr-off", guestSpec{memMiB: 64, noStart: true})
	before := map[string]int{}
	for _, n := range running {
		before[n] = heartbeat(t, n)
	}

	plan, r := e.drainReport("drain", "host1", "--dry-run")
	if r.code != 0 || plan.State != drain.StatePlanned || len(plan.VMs) != 5 {
		t.Fatalf("dry run: exit %d, %+v", r.code, plan)
	}
	if domstate(t, "1", "dr-a") != "running" {
		t.Fatal("the dry run moved something")
	}

	rep, r := e.drainReport("drain", "host1", "--parallel", "2", "--max-per-target", "1")
	if r.code != 0 || !rep.Empty || rep.State != drain.StateDone || rep.Moved != 5 {
		t.Fatalf("drain: exit %d, report %+v", r.code, rep)
	}
	perHost := map[string]int{}
	for _, v := range rep.VMs {
		perHost[v.Dest]++
		if v.VM == "dr-off" {
			if v.Kind != "cold" || domstate(t, strings.TrimPrefix(v.Dest, "host"), "dr-off") != "shut off" {
				t.Fatalf("stopped guest: %+v, state on %s %q", v, v.Dest, domstate(t, strings.TrimPrefix(v.Dest, "host"), "dr-off"))
			}
			continue
		}
		runsExactlyOn(t, v.VM, strings.TrimPrefix(v.Dest, "host"))
		heartbeatAbove(t, v.VM, before[v.VM], 30*time.Second)
	}
	if perHost["host2"] == 0 || perHost["host3"] == 0 || perHost["host1"] != 0 {
		t.Fatalf("not spread over host2 and host3: %v", perHost)
	}
	if out := virshOut(t, "1", "list", "--all", "--name"); strings.TrimSpace(out) != "" {
		t.Fatalf("host1 still defines: %q", out)
	}

	// The limits, from the journal's timestamps.
	iv := e.moveIntervals(append(running, "dr-off"))
	if len(iv) != 5 {
		t.Fatalf("%d completed moves in the journal, want 5", len(iv))
	}
	byDst := map[string][]interval{}
	for _, i := range iv {
		byDst[i.dst] = append(byDst[i.dst], i)
	}
	for dst, list := range byDst {
		if n := maxOverlap(list); n > 1 {
			t.Fatalf("%d moves into %s at once, --max-per-target 1: %+v", n, dst, list)
		}
	}
	if n := maxOverlap(iv); n != 2 {
		t.Fatalf("at most %d moves at once, want --parallel 2 to be used and kept: %+v", n, iv)
	}

	// host1 is in maintenance: placement refuses it until undrain.
	hosts := e.ferry("hosts", "-o", "json")
	if !strings.Contains(hosts.stdout, `"maintenance"`) {
		t.Fatalf("hosts does not show the maintenance mark:\n%s", hosts.stdout)
	}
	p := e.ferry("place", "dr-a", "-o", "json")
	if !strings.Contains(p.stdout, "in maintenance") {
		t.Fatalf("place does not reject host1 for maintenance:\n%s", p.stdout)
	}
	if u := e.ferry("undrain", "host1"); u.code != 0 || !strings.Contains(u.stdout, "back in service") {
		t.Fatalf("undrain: exit %d %s", u.code, u.stdout)
	}
}

// A VM that fits nowhere makes the drain exit non-zero naming it and why;
// every other VM is moved.
func TestDrainReportsVMThatFitsNowhere(t *testing.T) {
	needHosts(t, 3)
	e := newEnv(t)
	undrainAfter(e, "host1")
	// Leave 2 GiB for guests on host2 and host3 via their host reserve: the
	// lab's hosts share this machine's memory, so what is free moves with
	// everything else running; the margins (2 GiB for the small ones, 4 GiB
	// before the huge one would fit) keep the outcome apart from that.
	var hosts []orchestrator.HostStatus
	if err := json.Unmarshal([]byte(e.ferry("hosts", "-o", "json").stdout), &hosts); err != nil {
		t.Fatal(err)
	}
	var inv inventory.Inventory
	data, err := os.ReadFile(labConfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &inv); err != nil {
		t.Fatal(err)
	}
	for i := range inv.Hosts {
		for _, h := range hosts {
			if h.Name == inv.Hosts[i].Name && h.Name != "host1" {
				reserve := h.FreeMemoryBytes>>20 - 2048
				inv.Hosts[i].ReservedMemoryMiB = &reserve
			}
		}
	}
	out, _ := yaml.Marshal(inv)
	e.config = filepath.Join(t.TempDir(), "ferry.yaml")
	if err := os.WriteFile(e.config, out, 0o644); err != nil {
		t.Fatal(err)
	}
	newGuest(t, "fit-a", guestSpec{memMiB: 96})
	newGuest(t, "fit-b", guestSpec{memMiB: 128})
	newGuest(t, "huge", guestSpec{memMiB: 6144})

	rep, r := e.drainReport("drain", "host1")
	if r.code == 0 || rep.Empty || rep.Moved != 2 || rep.Failed != 1 {
		t.Fatalf("drain: exit %d, report %+v", r.code, rep)
	}
	if !strings.Contains(r.stderr, "huge") || !strings.Contains(r.stderr, "not enough memory") {
		t.Fatalf("the error does not name the VM and why:\n%s", r.stderr)
	}
	if len(rep.Remaining) != 1 || !strings.HasPrefix(rep.Remaining[0], "huge") {
		t.Fatalf("remaining %v", rep.Remaining)
	}
	runsExactlyOn(t, "huge", "1")
	for _, v := range rep.VMs {
		if v.VM != "huge" {
			runsExactlyOn(t, v.VM, strings.TrimPrefix(v.Dest, "host"))
		}
	}
}

// Ctrl-C mid-drain stops new moves and lets the one in flight finish; every
// VM runs exactly once; running the drain again completes it.
func TestDrainCancelAndRerun(t *testing.T) {
	needHosts(t, 3)
	e := newEnv(t)
	undrainAfter(e, "host1")
	vms := []string{"cx-a", "cx-b", "cx-c"}
	for i, n := range vms {
		newGuest(t, n, guestSpec{memMiB: 96 + 32*i})
	}
	c := e.cmd(t.Context(), "drain", "host1", "--parallel", "1", "-o", "json")
	var stdout, stderr strings.Builder
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	// Interrupt once the first move has started its copy.
	waitFor(t, "the first move's pre-copy", 60*time.Second, func() bool {
		select {
		case err := <-exited:
			t.Fatalf("the drain ended before it was interrupted (%v):\n%s\n%s", err, stdout.String(), stderr.String())
		default:
		}
		st := e.ferry("drain", "host1", "--status", "-o", "json")
		return strings.Contains(st.stdout, `"stage": "pre-copy"`)
	})
	if err := c.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := <-exited
	t.Logf("first drain:\n%s\n%s", stdout.String(), stderr.String())
	var ee *exec.ExitError
	if err == nil || !asExit(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("cancelled drain: %v, want exit 1", err)
	}
	var rep drain.Report
	if err := json.Unmarshal([]byte(stdout.String()), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.State != drain.StateCancelled || rep.Moved != 1 || rep.Empty {
		t.Fatalf("cancelled report: %+v", rep)
	}
	for _, v := range rep.VMs {
		switch v.State {
		case drain.VMMoved:
			runsExactlyOn(t, v.VM, strings.TrimPrefix(v.Dest, "host"))
		case drain.VMNotStarted:
			runsExactlyOn(t, v.VM, "1")
		default:
			t.Fatalf("%s is %s after the cancel", v.VM, v.State)
		}
	}

	rep, r := e.drainReport("drain", "host1")
	if r.code != 0 || !rep.Empty || rep.Moved != 2 || len(rep.VMs) != 2 {
		t.Fatalf("re-run: exit %d, %+v", r.code, rep)
	}
	for _, n := range vms {
		where := ""
		for _, h := range []string{"2", "3"} {
			if domstate(t, h, n) == "running" {
				where = h
			}
		}
		if where == "" {
			t.Fatalf("%s runs on neither host2 nor host3", n)
		}
		runsExactlyOn(t, n, where)
	}
	if st := e.ferry("drain", "host1", "--status"); !strings.Contains(st.stdout, "done") {
		t.Fatalf("status after the re-run:\n%s", st.stdout)
	}
}

func asExit(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*ee = e
	return ok
}

// Two ferry drain processes sharing one state database both send VMs to
// host3: --max-per-target holds across them (from the journal timestamps).
func TestTwoDrainsShareTargetLimit(t *testing.T) {
	needHosts(t, 3)
	e := newEnv(t)
	undrainAfter(e, "host1")
	undrainAfter(e, "host2")
	vms := []string{"tw-1a", "tw-1b", "tw-2a", "tw-2b"}
	for _, n := range vms {
		newGuest(t, n, guestSpec{host: n[3:4], memMiB: 96})
	}
	type run struct {
		c   *exec.Cmd
		out strings.Builder
	}
	var runs []*run
	for _, h := range []string{"host1", "host2"} {
		r := &run{c: e.cmd(t.Context(), "drain", h, "--to", "host3", "--parallel", "2", "--max-per-target", "1", "-o", "json")}
		r.c.Stdout, r.c.Stderr = &r.out, &r.out
		if err := r.c.Start(); err != nil {
			t.Fatal(err)
		}
		runs = append(runs, r)
	}
	for _, r := range runs {
		err := r.c.Wait()
		t.Logf("drain:\n%s", r.out.String())
		if err != nil {
			t.Fatalf("a drain failed: %v", err)
		}
	}
	for _, n := range vms {
		runsExactlyOn(t, n, "3")
	}
	iv := e.moveIntervals(vms)
	if len(iv) != 4 {
		t.Fatalf("%d completed moves, want 4", len(iv))
	}
	if n := maxOverlap(iv); n > 1 {
		t.Fatalf("%d moves into host3 at once across two drains, --max-per-target 1: %+v", n, iv)
	}
}

// A drain started over ferry serve's API empties host1; GET /v1/drains/ID
// follows it to done.
func TestDrainOverAPI(t *testing.T) {
	needHosts(t, 3)
	e := newEnv(t)
	undrainAfter(e, "host1")
	for _, n := range []string{"api-a", "api-b"} {
		newGuest(t, n, guestSpec{memMiB: 96})
	}
	p := startServe(t, e)
	code, body, raw := p.api("POST", "/v1/hosts/host1/drain", `{"parallel": 2, "max_per_target": 1}`)
	if code != 202 {
		t.Fatalf("POST drain: %d %s", code, raw)
	}
	id, _ := body["id"].(string)
	waitFor(t, "the drain to end", 3*time.Minute, func() bool {
		_, body, _ = p.api("GET", "/v1/drains/"+id, "")
		return body["state"] != drain.StateRunning
	})
	if body["state"] != drain.StateDone || body["empty"] != true || body["moved"] != float64(2) {
		t.Fatalf("drain over the API: %v", body)
	}
	for _, v := range body["vms"].([]any) {
		vm := v.(map[string]any)
		runsExactlyOn(t, vm["vm"].(string), strings.TrimPrefix(vm["destination"].(string), "host"))
	}
	if st := e.ferry("drain", "host1", "--status", "-o", "json"); !strings.Contains(st.stdout, id) {
		t.Fatalf("the CLI does not see the API's drain:\n%s", st.stdout)
	}
}

// The destination's libvirtd dies during a drain's move: the move rolls back,
// is retried on the other host, and the drain still empties host1.
func TestDrainRetriesElsewhereWhenDestinationDies(t *testing.T) {
	needHosts(t, 3)
	e := newEnv(t)
	undrainAfter(e, "host1")
	for _, n := range []string{"rt-a", "rt-b"} {
		newGuest(t, n, guestSpec{memMiB: 256, wssMiB: 64, rate: 3000})
	}
	c := e.cmd(t.Context(), "drain", "host1", "--parallel", "1", "--backoff", "1s", "-o", "json")
	var stdout, stderr strings.Builder
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var first drain.VM
	waitFor(t, "the first move's pre-copy", 60*time.Second, func() bool {
		var rep drain.Report
		st := e.ferry("drain", "host1", "--status", "-o", "json")
		if json.Unmarshal([]byte(st.stdout), &rep) != nil {
			return false
		}
		for _, v := range rep.VMs {
			if v.State == drain.VMMoving && v.Stage == "pre-copy" {
				first = v
				return true
			}
		}
		return false
	})
	dead := strings.TrimPrefix(first.Dest, "host")
	t.Cleanup(func() { restartLabHost(t) }) // before the guests' cleanup
	kill(t, libvirtdPID(t, dead), syscall.SIGKILL)
	err := c.Wait()
	t.Logf("drain:\n%s\n%s", stdout.String(), stderr.String())
	if err != nil {
		t.Fatalf("drain after a destination died: %v", err)
	}
	var rep drain.Report
	if err := json.Unmarshal([]byte(stdout.String()), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Empty || rep.Moved != 2 {
		t.Fatalf("report %+v", rep)
	}
	restartLabHost(t)
	for _, v := range rep.VMs {
		if v.VM == first.VM && (v.Attempts != 2 || len(v.Migrations) != 2 || v.Dest == first.Dest) {
			t.Fatalf("%s: attempts %d, migrations %v, now on %s (first try %s)", v.VM, v.Attempts, v.Migrations, v.Dest, first.Dest)
		}
		runsExactlyOn(t, v.VM, strings.TrimPrefix(v.Dest, "host"))
	}
	if rows := e.history(first.VM); len(rows) < 2 || rows[len(rows)-1].State != journal.StateRolledBack {
		t.Fatalf("the first attempt is not rolled_back in the journal: %+v", rows)
	}
}
