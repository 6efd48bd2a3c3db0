//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
)

// slowGuest is a guest whose migration at a low bandwidth cap takes long
// enough to inject a fault during pre-copy.
const slowBandwidth = "4" // MiB/s

func startSlowMigration(t *testing.T, e *env, vm string, extra ...string) (*bytes.Buffer, *bytes.Buffer, func() int) {
	t.Helper()
	newGuest(t, vm, guestSpec{host: "1", memMiB: 256, wssMiB: 96, rate: 3000})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	args := append([]string{"migrate", vm, "--to", "host2", "--bandwidth", slowBandwidth}, extra...)
	c := e.cmd(ctx, args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pid := c.Process.Pid
	t.Cleanup(cancel)
	// Wait until pre-copy is really moving data.
	waitFor(t, "pre-copy to be under way", 60*time.Second, func() bool {
		active, processed := jobActive(t, "1", vm)
		return active && processed > 8<<20
	})
	wait := func() int {
		err := c.Wait()
		t.Logf("ferry exited: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
		if c.ProcessState == nil {
			return -1
		}
		if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -int(ws.Signal())
		}
		return c.ProcessState.ExitCode()
	}
	_ = pid
	return &out, &errb, func() int { return wait() }
}

// The destination's QEMU dies during pre-copy: the VM keeps running on the
// source and the journal says rolled_back.
func TestDestinationQEMUKilledDuringPrecopy(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-kill-qemu"
	_, errb, wait := startSlowMigration(t, e, vm)
	kill(t, qemuPID(t, "2", vm), syscall.SIGKILL)
	if code := wait(); code != 3 {
		t.Fatalf("exit %d, want 3 (rolled back)", code)
	}
	if !strings.Contains(errb.String(), "rolled back") {
		t.Fatalf("stderr does not say rolled back: %s", errb.String())
	}
	runsExactlyOn(t, vm, "1")
	heartbeatAbove(t, vm, heartbeat(t, vm), 15*time.Second)
	rows := e.history(vm)
	if len(rows) != 1 || rows[0].State != journal.StateRolledBack || rows[0].Error == "" {
		t.Fatalf("journal %+v", rows)
	}
}

// The destination's libvirtd dies during pre-copy: same promise.
func TestDestinationLibvirtdKilledDuringPrecopy(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-kill-libvirtd"
	_, _, wait := startSlowMigration(t, e, vm)
	t.Cleanup(func() { restartLabHost(t) })
	kill(t, libvirtdPID(t, "2"), syscall.SIGKILL)
	code := wait()
	if code != 3 {
		t.Fatalf("exit %d, want 3 (rolled back)", code)
	}
	if st := domstate(t, "1", vm); st != "running" {
		t.Fatalf("source state %q, want running", st)
	}
	heartbeatAbove(t, vm, heartbeat(t, vm), 15*time.Second)
	rows := e.history(vm)
	if len(rows) != 1 || rows[0].State != journal.StateRolledBack {
		t.Fatalf("journal %+v", rows)
	}
	// Once host2 is back it holds no running copy.
	restartLabHost(t)
	waitFor(t, "host2 to drop the half-made copy", 60*time.Second, func() bool { return domstate(t, "2", vm) != "running" && domstate(t, "2", vm) != "paused" })
	runsExactlyOn(t, vm, "1")
}

// ferry itself is SIGKILLed mid-migration: `ferry recover` converges to
// exactly one running copy and finishes the journal row.
func TestFerryKilledThenRecover(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-kill-ferry"
	out, _, wait := startSlowMigration(t, e, vm)
	_ = out
	rows := e.history(vm)
	if len(rows) != 1 || rows[0].State != journal.StateRunning {
		t.Fatalf("journal before the kill: %+v", rows)
	}
	// Find ferry's PID through the journal owner token (pid:start).
	pid := ownerPID(t, rows[0].Owner)
	kill(t, pid, syscall.SIGKILL)
	if code := wait(); code != -int(syscall.SIGKILL) {
		t.Fatalf("ferry exit %d, want killed", code)
	}
	r := e.ferry("recover", "-o", "json")
	if r.code != 0 {
		t.Fatalf("recover exit %d: %s", r.code, r.stderr)
	}
	var res []orchestrator.RecoverResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].RunsOn == "" {
		t.Fatalf("recover result %+v", res)
	}
	host := strings.TrimPrefix(res[0].RunsOn, "host")
	runsExactlyOn(t, vm, host)
	heartbeatAbove(t, vm, heartbeat(t, vm), 15*time.Second)
	rows = e.history(vm)
	if rows[0].State != journal.StateRolledBack && rows[0].State != journal.StateCompleted || rows[0].FinishedAt == nil {
		t.Fatalf("journal after recover: %+v", rows[0])
	}
	// A second recover has nothing to do.
	r = e.ferry("recover")
	if r.code != 0 || !strings.Contains(r.stdout, "nothing to recover") {
		t.Fatalf("second recover: %d %s", r.code, r.stdout)
	}
}

// --timeout aborts a migration that takes too long; the VM stays on the source.
func TestTimeoutRollsBack(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-timeout"
	_, errb, wait := startSlowMigration(t, e, vm, "--timeout", "6s")
	if code := wait(); code != 3 {
		t.Fatalf("exit %d, want 3", code)
	}
	if !strings.Contains(errb.String(), "timed out after 6s") {
		t.Fatalf("stderr does not name the timeout: %s", errb.String())
	}
	runsExactlyOn(t, vm, "1")
	if st := domstate(t, "2", vm); st != "" {
		t.Fatalf("destination still has %s: %s", vm, st)
	}
	heartbeatAbove(t, vm, heartbeat(t, vm), 15*time.Second)
}

func ownerPID(t *testing.T, owner string) int {
	t.Helper()
	pid := journal.OwnerPID(owner)
	if pid == 0 {
		t.Fatalf("owner %q names no process", owner)
	}
	return pid
}

// The migration link breaks during pre-copy (its TCP connections destroyed,
// over migration TLS, the lab's default): the move rolls back, the VM keeps
// running on the source, nothing runs on the destination.
func TestLinkCutDuringPrecopy(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-cut-precopy"
	_, errb, wait := startSlowMigration(t, e, vm)
	waitFor(t, "a migration socket to cut", 20*time.Second, func() bool { return cutMigration(t) > 0 })
	if code := wait(); code != 3 {
		t.Fatalf("exit %d, want 3 (rolled back): %s", code, errb.String())
	}
	runsExactlyOn(t, vm, "1")
	heartbeatAbove(t, vm, heartbeat(t, vm), 15*time.Second)
	rows := e.history(vm)
	if len(rows) != 1 || rows[0].State != journal.StateRolledBack || rows[0].Error == "" {
		t.Fatalf("journal %+v", rows)
	}
}
