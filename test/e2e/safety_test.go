//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
)

// proc is a ferry process started in the background.
type proc struct {
	cmd       *exec.Cmd
	out, errb bytes.Buffer
}

func (e *env) start(ctx context.Context, extraEnv []string, args ...string) *proc {
	e.t.Helper()
	p := &proc{cmd: e.cmd(ctx, args...)}
	p.cmd.Env = append(p.cmd.Env, extraEnv...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.errb
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// wait returns the exit code (negative: killed by that signal).
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	err := p.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("ferry: %v", err)
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -int(ws.Signal())
	}
	return p.cmd.ProcessState.ExitCode()
}

// One VM, one move: ten `ferry migrate` of one VM at once, as ten admins
// would: exactly one moves it, nine are refused naming the winner, and no
// row is rolled back (a loser never touched the winner's job).
func TestTenMovesOfOneVMAtOnce(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-claim"
	newGuest(t, vm, guestSpec{host: "1", memMiB: 128, wssMiB: 16, rate: 500})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	procs := make([]*proc, 10)
	for i := range procs {
		procs[i] = e.start(ctx, nil, "migrate", vm, "--to", "host2", "--bandwidth", "40")
	}
	var ok, refused int
	for i, p := range procs {
		code := p.wait(t)
		t.Logf("ferry %d: exit %d\n%s%s", i, code, p.out.String(), p.errb.String())
		switch code {
		case 0:
			ok++
		case 2:
			refused++
		default:
			t.Errorf("ferry %d: exit %d, want 0 or 2", i, code)
		}
	}
	if ok != 1 || refused != 9 {
		t.Fatalf("%d moved and %d were refused, want 1 and 9", ok, refused)
	}
	runsExactlyOn(t, vm, "2")
	heartbeatAbove(t, vm, heartbeat(t, vm), 15*time.Second)
	rows := e.history(vm)
	var winner string
	states := map[string]int{}
	for _, r := range rows {
		states[r.State]++
		if r.State == journal.StateCompleted {
			winner = r.ID
		}
	}
	if len(rows) != 10 || states[journal.StateCompleted] != 1 || states[journal.StateRefused] != 9 {
		t.Fatalf("journal states %v over %d rows, want 1 completed and 9 refused", states, len(rows))
	}
	// A loser that saw the winner's claim names it; one that came after
	// the move ended finds the VM already on host2.
	named := 0
	for _, p := range procs {
		if strings.Contains(p.errb.String(), winner) {
			named++
		}
	}
	if named == 0 {
		t.Fatalf("no refusal names the winning move %s", winner)
	}
}

// The API and the CLI race for one VM: the same rule holds across processes.
func TestAPIAndCLIMovesOfOneVMAtOnce(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-claim-api"
	newGuest(t, vm, guestSpec{host: "1", memMiB: 128, wssMiB: 16, rate: 500})
	srv := startServe(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var apiCode int
	var apiBody map[string]any
	start := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-start
		apiCode, apiBody, _ = srv.api("POST", "/v1/migrations", `{"vm": "`+vm+`", "to": "host2", "bandwidth_mibps": 40}`)
	}()
	procs := make([]*proc, 4)
	for i := range procs {
		procs[i] = e.start(ctx, nil, "migrate", vm, "--to", "host2", "--bandwidth", "40")
	}
	close(start)
	wg.Wait()
	for _, p := range procs {
		p.wait(t)
	}
	// 202: the server started a move (it may then be refused); 200 with
	// existing: it found a CLI's move of the VM under way and answers that.
	if apiCode != 202 && !(apiCode == 200 && apiBody["existing"] == true) {
		t.Fatalf("API answered %d %v", apiCode, apiBody)
	}
	// The API's move runs in the server: wait for every row to end.
	waitFor(t, "every move to end", 3*time.Minute, func() bool {
		for _, r := range e.history(vm) {
			if r.State == journal.StateRunning {
				return false
			}
		}
		return true
	})
	states := map[string]int{}
	rows := e.history(vm)
	for _, r := range rows {
		states[r.State]++
	}
	if states[journal.StateCompleted] != 1 || states[journal.StateRolledBack] != 0 || states[journal.StateFailed] != 0 {
		t.Fatalf("journal states %v, want exactly one completed and the rest refused", states)
	}
	if states[journal.StateRefused] != len(rows)-1 {
		t.Fatalf("journal states %v over %d rows", states, len(rows))
	}
	runsExactlyOn(t, vm, "2")
}

// The destination's libvirtd dies at the switchover (the source paused for
// stop-and-copy): ferry cannot know whether host2 started the guest, so it
// resumes nothing and exits 4; recover waits while host2 is down (exit 4,
// the row and its reservation kept), and decides once it is back 20 s
// later. At no sample do two copies run.
func TestDestinationLibvirtdKilledAtSwitchover(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-switchover-kill"
	// The guest dirties its 96 MiB working set faster than the 4 MiB/s cap
	// sends it, and a 30 s allowed downtime lets QEMU stop and copy right
	// after the first pass: the switchover then lasts about 20 s.
	newGuest(t, vm, guestSpec{host: "1", memMiB: 256, wssMiB: 96, rate: 3000})
	t.Cleanup(func() { restartLabHost(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// libvirt's own event stream says when the source pauses for the switchover.
	ev := exec.CommandContext(ctx, "virsh", "-c", hostURI("1"), "event", "--domain", vm, "--event", "lifecycle", "--loop")
	evOut, err := ev.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ev.Process.Kill(); _ = ev.Wait() })
	paused := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(evOut)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Suspended Migrated") {
				close(paused)
				return
			}
		}
	}()
	p := e.start(ctx, nil, "migrate", vm, "--to", "host2", "--bandwidth", "4", "--max-downtime", "30s", "--max-downtime-ceiling", "30s")

	var both, samples int
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			samples++
			if sampleState("1", vm) == "running" && sampleState("2", vm) == "running" {
				both++
			}
		}
	}()
	select {
	case <-paused:
	case <-time.After(3 * time.Minute):
		t.Fatal("the source never paused for the switchover")
	}
	kill(t, libvirtdPID(t, "2"), syscall.SIGKILL)
	killedAt := time.Now()
	code := p.wait(t)
	t.Logf("ferry migrate: exit %d\n%s%s", code, p.out.String(), p.errb.String())
	if code != 4 {
		t.Fatalf("exit %d, want 4 (needs recovery): the destination may have started the guest", code)
	}
	rows := e.history(vm)
	if len(rows) != 1 || rows[0].State != journal.StateFailed {
		t.Fatalf("journal %+v", rows)
	}
	if st := domstate(t, "1", vm); st == "running" {
		t.Logf("the source runs: libvirt resumed it itself when its peer went away")
	}

	// Recover while host2 is down: waits, touches nothing, exit 4.
	code, res := e.recoverJSON()
	if code != 4 {
		t.Fatalf("recover with host2 down: exit %d, want 4", code)
	}
	if len(res) != 1 || !strings.Contains(res[0].WaitingFor, "host2") || !strings.Contains(res[0].Note, "--prefer") {
		t.Fatalf("recover result %+v, want it waiting for host2 with a --prefer hint", res)
	}
	if rows := e.history(vm); rows[0].State != journal.StateFailed {
		t.Fatalf("row %s after a waiting recover", rows[0].State)
	}
	if n := openReservations(t, e, rows[0].ID); n != 1 {
		t.Fatalf("%d open reservations for the move, want its one kept", n)
	}
	human := e.ferry("recover")
	if human.code != 4 || !strings.Contains(human.stdout, "waiting for the destination host2") {
		t.Fatalf("recover's human output: exit %d %q", human.code, human.stdout)
	}

	// host2 comes back 20 s after it died (the scenario's delay, not a sync).
	select {
	case <-time.After(time.Until(killedAt.Add(20 * time.Second))):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	restartLabHost(t)
	if code, res = e.recoverJSON(); code != 0 {
		t.Fatalf("recover with host2 back: exit %d", code)
	}
	if len(res) != 1 || res[0].RunsOn == "" {
		t.Fatalf("recover result %+v", res)
	}
	host := strings.TrimPrefix(res[0].RunsOn, "host")
	runsExactlyOn(t, vm, host)
	heartbeatAbove(t, vm, heartbeat(t, vm), 15*time.Second)
	close(stopSampling)
	<-sampled
	if both != 0 {
		t.Fatalf("two copies ran in %d of %d samples", both, samples)
	}
	if n := openReservations(t, e, rows[0].ID); n != 0 {
		t.Fatalf("%d reservations still open after recover", n)
	}
}

// A move owned by a ferry on another machine (FERRY_MACHINE_ID plays one)
// holds a fresh lease: recover on this machine leaves it alone, even after
// that process died, until its lease goes stale; then it is recovered.
func TestForeignOwnerIsLeftAloneUntilItsLeaseIsStale(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-foreign-owner"
	newGuest(t, vm, guestSpec{host: "1", memMiB: 256, wssMiB: 96, rate: 3000})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := e.start(ctx, []string{"FERRY_MACHINE_ID=e2e-other-machine"}, "migrate", vm, "--to", "host2", "--bandwidth", slowBandwidth)
	waitFor(t, "pre-copy to be under way", 60*time.Second, func() bool {
		active, processed := jobActive(t, "1", vm)
		return active && processed > 8<<20
	})
	rows := e.history(vm)
	if len(rows) != 1 || journal.OwnerMachine(rows[0].Owner) != "e2e-other-machine" {
		t.Fatalf("journal %+v", rows)
	}
	skipped := func() {
		t.Helper()
		code, res := e.recoverJSON()
		if code != 0 || len(res) != 1 || !strings.Contains(res[0].Skipped, "e2e-other-m") {
			t.Fatalf("recover took over a live foreign lease: exit %d %+v", code, res)
		}
		if active, _ := jobActive(t, "1", vm); !active {
			t.Fatal("the foreign owner's migration job was stopped")
		}
	}
	skipped()
	// Its process dies; this machine cannot see that, and the lease is fresh.
	kill(t, p.cmd.Process.Pid, syscall.SIGKILL)
	p.wait(t)
	skipped()

	// Let the lease age past its TTL (the clock is moved in the state, not waited for).
	db, err := journal.OpenDB(ctx, e.state)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.ExecContext(ctx, "UPDATE owner_leases SET renewed_at = renewed_at - ? WHERE machine = 'e2e-other-machine'", (10 * time.Minute).Milliseconds())
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	code, res := e.recoverJSON()
	if code != 0 {
		t.Fatalf("recover of a stale lease: exit %d", code)
	}
	if len(res) != 1 || res[0].Skipped != "" || res[0].RunsOn == "" {
		t.Fatalf("recover result %+v", res)
	}
	runsExactlyOn(t, vm, strings.TrimPrefix(res[0].RunsOn, "host"))
	heartbeatAbove(t, vm, heartbeat(t, vm), 15*time.Second)
}

// recoverJSON runs `ferry recover -o json` and decodes its answer.
func (e *env) recoverJSON(args ...string) (int, []orchestrator.RecoverResult) {
	e.t.Helper()
	r := e.ferry(append([]string{"recover", "-o", "json"}, args...)...)
	var res []orchestrator.RecoverResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		e.t.Fatalf("recover -o json: %v\n%s", err, r.stdout)
	}
	return r.code, res
}

// sampleState is domstate for a sampling goroutine: a host that does not
// answer (its libvirtd killed) reads as "" instead of failing the test.
func sampleState(host, name string) string {
	out, err := exec.Command("virsh", "-q", "-c", hostURI(host), "domstate", name).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// openReservations counts a move's unreleased memory reservations.
func openReservations(t *testing.T, e *env, id string) int {
	t.Helper()
	db, err := journal.OpenDB(context.Background(), e.state)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM reservations WHERE migration_id = ? AND released_at IS NULL", id).Scan(&n); err != nil {
		t.Fatal(fmt.Errorf("reservations: %w", err))
	}
	return n
}
