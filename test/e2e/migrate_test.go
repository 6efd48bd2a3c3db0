//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
)

// A running, dirtying guest moves host1 -> host2 -> host1; after each move its
// heartbeat continues without corruption, it runs on exactly one host, the
// source no longer defines it, and the journal row holds all six stage
// timestamps and libvirt's measured downtime.
func TestLiveMigrationThereAndBack(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-roundtrip"
	newGuest(t, vm, guestSpec{host: "1", memMiB: 128, wssMiB: 32, rate: 2000})
	for _, hop := range []struct{ from, to string }{{"1", "2"}, {"2", "1"}} {
		before := heartbeat(t, vm)
		r := e.ferry("migrate", vm, "--to", "host"+hop.to, "-o", "json")
		if r.code != 0 {
			t.Fatalf("migrate to host%s: exit %d: %s", hop.to, r.code, r.stderr)
		}
		var res orchestrator.Result
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatalf("result json: %v", err)
		}
		if res.State != journal.StateCompleted || res.Source != "host"+hop.from || res.Dest != "host"+hop.to {
			t.Fatalf("result %+v", res)
		}
		runsExactlyOn(t, vm, hop.to)
		if st := domstate(t, hop.from, vm); st != "" {
			t.Fatalf("source host%s still defines %s (%s)", hop.from, vm, st)
		}
		heartbeatAbove(t, vm, before+4, 30*time.Second) // a second of heartbeats on the destination

		show := e.ferry("show", res.ID, "-o", "json")
		var rec journal.Record
		if err := json.Unmarshal([]byte(show.stdout), &rec); err != nil {
			t.Fatalf("show json: %v", err)
		}
		if rec.State != journal.StateCompleted {
			t.Fatalf("journal state %s", rec.State)
		}
		for i := journal.StagePreMigration; i <= journal.StageActivation; i++ {
			if rec.Stages[i.String()] == "" {
				t.Fatalf("journal row lacks the %s timestamp: %v", i, rec.Stages)
			}
		}
		if rec.DowntimeMS == nil || *rec.DowntimeMS <= 0 {
			t.Fatalf("journal row lacks libvirt's measured downtime: %v", rec.DowntimeMS)
		}
		if rec.DataSent == 0 || rec.Iterations == 0 {
			t.Fatalf("journal row lacks transfer figures: sent %d, iterations %d", rec.DataSent, rec.Iterations)
		}
	}
}

// The human output: progress lines and a summary with the figures.
func TestMigrateTextSummary(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-summary"
	newGuest(t, vm, guestSpec{host: "1"})
	r := e.ferry("migrate", vm, "--to", "host2")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	for _, want := range []string{"[1 reservation", "[4 commitment", "migrated " + vm + ": host1 -> host2", "downtime", "data sent", "iterations", "migration id"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	runsExactlyOn(t, vm, "2")
}

// Every bad input: exit 2, one clear message naming the problem, nothing
// changed on either host, a refused journal row with the reason.
func TestRefusals(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-refuse"
	const stopped = "e2e-refuse-off"
	newGuest(t, vm, guestSpec{host: "1"})
	newGuest(t, stopped, guestSpec{host: "1", noStart: true})

	// A destination too small for the guest: the same lab with host2
	// keeping all but a sliver of its memory for itself.
	tight := filepath.Join(t.TempDir(), "tight.yaml")
	inv, err := os.ReadFile(labConfig)
	if err != nil {
		t.Fatal(err)
	}
	addr2 := "migration_address: " + labNet() + ".2"
	tightInv := strings.Replace(string(inv), addr2, addr2+"\n    reserved_memory_mib: 1048576", 1)
	if err := os.WriteFile(tight, []byte(tightInv), 0o644); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		vm      string
		args    []string
		config  string
		setup   func(t *testing.T)
		message string
	}{
		{name: "unknown VM", vm: "e2e-nosuchvm", args: []string{"--to", "host2"}, message: `VM "e2e-nosuchvm" not found on any inventory host`},
		{name: "unknown destination", vm: vm, args: []string{"--to", "host9"}, message: `unknown host "host9"`},
		{name: "unreachable destination", vm: vm, args: []string{"--to", "qemu+tcp://" + labNet() + ".99/system"}, message: "is unreachable"},
		{name: "source is destination", vm: vm, args: []string{"--to", "host1"}, message: "already runs on host1"},
		{name: "source is destination by URI", vm: vm, args: []string{"--from", "host1", "--to", labInvURI("1")}, message: "source and destination are both host1"},
		{name: "VM not running", vm: stopped, args: []string{"--to", "host2"}, message: "is shutoff on host1"},
		{name: "name clash on destination", vm: vm, args: []string{"--to", "host2"}, message: "already has a domain \"" + vm + "\"",
			setup: func(t *testing.T) {
				// A shut-off definition of the same name on host2.
				xml, err := labGuest(t, "xml", vm, "--mem", "64")
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join(t.TempDir(), "clash.xml")
				os.WriteFile(path, []byte(xml), 0o644)
				virshOK(t, "2", "define", path)
				t.Cleanup(func() { virshOK(t, "2", "undefine", vm) })
			}},
		{name: "UUID clash on destination", vm: vm, args: []string{"--to", "host2"}, message: "already has a domain \"e2e-uuid-twin\"",
			setup: func(t *testing.T) {
				uuid := strings.TrimSpace(virshOut(t, "1", "domuuid", vm))
				xml, err := labGuest(t, "xml", "e2e-uuid-twin", "--mem", "64")
				if err != nil {
					t.Fatal(err)
				}
				xml = replaceUUID(xml, uuid)
				path := filepath.Join(t.TempDir(), "twin.xml")
				os.WriteFile(path, []byte(xml), 0o644)
				virshOK(t, "2", "define", path)
				t.Cleanup(func() { virshOK(t, "2", "undefine", "e2e-uuid-twin") })
			}},
		{name: "not enough memory", vm: vm, config: tight, args: []string{"--to", "host2"}, message: "not enough free memory on host2"},
		{name: "malformed URI", vm: vm, args: []string{"--to", "qemu+tcp:///nowhere"}, message: "malformed"},
		{name: "malformed downtime", vm: vm, args: []string{"--to", "host2", "--max-downtime", "fast"}, message: `--max-downtime "fast"`},
		{name: "malformed bandwidth", vm: vm, args: []string{"--to", "host2", "--bandwidth", "lots"}, message: `--bandwidth "lots"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			te := *e
			te.t = t
			if tc.config != "" {
				te.config = tc.config
			}
			beat := heartbeat(t, vm)
			r := te.ferry(append([]string{"migrate", tc.vm}, tc.args...)...)
			if r.code != 2 {
				t.Fatalf("exit %d, want 2", r.code)
			}
			if !strings.Contains(r.stderr, tc.message) {
				t.Fatalf("message %q does not say %q", r.stderr, tc.message)
			}
			if n := strings.Count(strings.TrimSpace(r.stderr), "\n"); n != 0 {
				t.Fatalf("want one line of error, got %d:\n%s", n+1, r.stderr)
			}
			// Nothing changed: the guest still runs on host1 only, heartbeating.
			runsExactlyOn(t, vm, "1")
			heartbeatAbove(t, vm, beat, 10*time.Second)
			if st := domstate(t, "1", stopped); st != "shut off" {
				t.Fatalf("%s is %q on host1", stopped, st)
			}
			rows := te.history(tc.vm)
			if len(rows) == 0 {
				t.Fatal("no journal row")
			}
			if rows[0].State != journal.StateRefused || !strings.Contains(r.stderr, rows[0].Error) {
				t.Fatalf("journal row %s %q, want refused with the message", rows[0].State, rows[0].Error)
			}
		})
	}
}

func TestHostsAndVMs(t *testing.T) {
	e := newEnv(t)
	const vm = "e2e-list"
	newGuest(t, vm, guestSpec{host: "2"})
	r := e.ferry("hosts", "-o", "json")
	if r.code != 0 {
		t.Fatalf("hosts exit %d", r.code)
	}
	var hosts []orchestrator.HostStatus
	if err := json.Unmarshal([]byte(r.stdout), &hosts); err != nil {
		t.Fatal(err)
	}
	if len(hosts) < 2 || !hosts[0].Reachable || !hosts[1].Reachable || hosts[1].FreeMemoryBytes == 0 || hosts[1].VMsRunning < 1 {
		t.Fatalf("hosts %+v", hosts)
	}
	r = e.ferry("vms", "--host", "host2", "-o", "json")
	var vms []orchestrator.VMStatus
	if err := json.Unmarshal([]byte(r.stdout), &vms); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range vms {
		if v.Name == vm && v.Host == "host2" && v.State == "running" {
			found = true
		}
	}
	if !found {
		t.Fatalf("%s not listed running on host2: %+v", vm, vms)
	}
}
