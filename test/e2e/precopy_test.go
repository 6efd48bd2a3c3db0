//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/precopy"
)

// The over-bandwidth scenario of issue 3: a 512 MiB guest dirtying ~78 MiB/s
// (20 000 pages/s over a 256 MiB working set) against a 40 MiB/s cap. Plain
// pre-copy never converges here.
const (
	busyMemMiB   = 512
	busyWSSMiB   = 256
	busyRate     = 20000
	capMiBps     = "40"
	capBytesPerS = 40 << 20
)

func newBusyGuest(t *testing.T, name string) {
	newGuest(t, name, guestSpec{host: "1", memMiB: busyMemMiB, wssMiB: busyWSSMiB, rate: busyRate})
	// Let the working set fill so the dirty rate is what it will be.
	heartbeatAbove(t, name, heartbeat(t, name)+8, 30*time.Second)
}

func migrateJSON(t *testing.T, e *env, args ...string) (orchestrator.Result, result) {
	t.Helper()
	r := e.ferry(append([]string{"migrate"}, append(args, "-o", "json")...)...)
	var res orchestrator.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("result json (exit %d): %v\n%s", r.code, err, r.stderr)
	}
	return res, r
}

// --plan predicts non-convergence for the busy guest under the cap and
// convergence for an idle one, without moving either.
func TestPlanPredicts(t *testing.T) {
	e := newEnv(t)
	newBusyGuest(t, "e2e-plan-busy")
	newGuest(t, "e2e-plan-idle", guestSpec{host: "1"})

	// A lower cap than the migrations below: --plan moves nothing, and a TCG
	// guest's real dirty rate sags when the machine is busy.
	const planCap = 20
	busy, r := migrateJSON(t, e, "e2e-plan-busy", "--to", "host2", "--bandwidth", fmt.Sprint(planCap), "--plan")
	if r.code != 0 || busy.Live.Plan == nil {
		t.Fatalf("plan busy: exit %d, plan %v", r.code, busy.Live.Plan)
	}
	if busy.Live.Plan.Precopy.Converges || busy.Live.Plan.Strategy == precopy.StrategyPrecopy {
		t.Fatalf("busy guest: plain pre-copy predicted to converge (strategy %s): %s", busy.Live.Plan.Strategy, busy.Live.Plan.Reason)
	}
	if busy.Live.Plan.Inputs.DirtyBytesPerSec <= planCap<<20 {
		t.Fatalf("measured dirty rate %d B/s, want above the %d MiB/s cap", busy.Live.Plan.Inputs.DirtyBytesPerSec, planCap)
	}
	idle, r := migrateJSON(t, e, "e2e-plan-idle", "--to", "host2", "--plan")
	if r.code != 0 || idle.Live.Plan == nil || !idle.Live.Plan.Precopy.Converges || idle.Live.Plan.Strategy != precopy.StrategyPrecopy {
		t.Fatalf("idle guest plan: exit %d %+v", r.code, idle.Live.Plan)
	}
	// Nothing moved, nothing journaled.
	runsExactlyOn(t, "e2e-plan-busy", "1")
	runsExactlyOn(t, "e2e-plan-idle", "1")
	if rows := e.history("e2e-plan-busy"); len(rows) != 0 {
		t.Fatalf("--plan wrote journal rows: %+v", rows)
	}
}

// Default policy: finishes within its deadline, downtime within the ceiling,
// the guest keeps running without corruption.
func TestOverBandwidthDefaultPolicy(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-busy-default"
	newBusyGuest(t, vm)
	before := heartbeat(t, vm)
	res, r := migrateJSON(t, e, vm, "--to", "host2", "--bandwidth", capMiBps)
	if r.code != 0 || res.State != journal.StateCompleted {
		t.Fatalf("exit %d state %s: %s", r.code, res.State, r.stderr)
	}
	deadline := time.Duration(res.Live.Plan.DeadlineMS) * time.Millisecond
	if got := time.Duration(res.Live.MigrationMS) * time.Millisecond; got > deadline {
		t.Fatalf("migration took %s, past its deadline %s", got, deadline)
	}
	if ceiling := time.Duration(res.Live.Plan.CeilingMS) * time.Millisecond; res.Live.Downtime > ceiling || res.Live.DowntimeMS <= 0 {
		t.Fatalf("downtime %d ms, want within the %s ceiling", res.Live.DowntimeMS, ceiling)
	}
	runsExactlyOn(t, vm, "2")
	heartbeatAbove(t, vm, before+4, 30*time.Second)
}

// --allow-postcopy: under 2× M/B.
func TestOverBandwidthPostcopy(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-busy-postcopy"
	newBusyGuest(t, vm)
	before := heartbeat(t, vm)
	res, r := migrateJSON(t, e, vm, "--to", "host2", "--bandwidth", capMiBps, "--allow-postcopy")
	if r.code != 0 || res.State != journal.StateCompleted {
		t.Fatalf("exit %d state %s: %s", r.code, res.State, r.stderr)
	}
	if !res.Live.Postcopy {
		t.Fatalf("finished without post-copy (actions %v)", res.Live.PolicyActions)
	}
	bound := 2 * time.Duration(float64(busyMemMiB<<20)/float64(capBytesPerS)*float64(time.Second))
	if got := time.Duration(res.Live.MigrationMS) * time.Millisecond; got >= bound {
		t.Fatalf("post-copy migration took %s, want under 2×M/B = %s", got, bound)
	}
	runsExactlyOn(t, vm, "2")
	heartbeatAbove(t, vm, before+4, 30*time.Second)
}

// --on-timeout abort: the deadline aborts the copy and the guest keeps running on the source.
func TestOnTimeoutAbort(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-busy-abort"
	newBusyGuest(t, vm)
	res, r := migrateJSON(t, e, vm, "--to", "host2", "--bandwidth", capMiBps, "--completion-timeout", "8s", "--on-timeout", "abort")
	if r.code != 3 || res.State != journal.StateRolledBack {
		t.Fatalf("exit %d state %s, want 3 rolled_back", r.code, res.State)
	}
	if !strings.Contains(res.Error, "completion timeout") {
		t.Fatalf("error does not name the deadline: %s", res.Error)
	}
	aborted := false
	for _, a := range res.Live.PolicyActions {
		aborted = aborted || a.Kind == precopy.ActAbort
	}
	if !aborted {
		t.Fatalf("no abort among the policy's actions: %v", res.Live.PolicyActions)
	}
	runsExactlyOn(t, vm, "1")
	if st := domstate(t, "2", vm); st != "" {
		t.Fatalf("destination still has %s (%s)", vm, st)
	}
	heartbeatAbove(t, vm, heartbeat(t, vm), 15*time.Second)
}
