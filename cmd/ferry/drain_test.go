package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferryvm/ferry/coldmove"
	"github.com/ferryvm/ferry/drain"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
)

// Bad drain input is refused before anything is opened, naming what is wrong.
func TestDrainCommandInput(t *testing.T) {
	for _, s := range []struct {
		args []string
		want string
	}{
		{[]string{"drain"}, "exactly one host"},
		{[]string{"drain", "bad name!"}, "not a valid inventory name"},
		{[]string{"drain", "host1", "--parallel", "0"}, "--parallel 0"},
		{[]string{"drain", "host1", "--max-per-target", "-1"}, "--max-per-target -1"},
		{[]string{"drain", "host1", "--order", "biggest"}, `--order "biggest"`},
		{[]string{"drain", "host1", "--backoff", "5x"}, `--backoff "5x"`},
		{[]string{"drain", "host1", "--to", "host1"}, "--to host1 is the host being drained"},
		{[]string{"drain", "host1", "--avoid-label", "rack"}, "key=value"},
		{[]string{"drain", "host1", "--cancel", "--status"}, "do not go together"},
		{[]string{"drain", "host1", "--cancel", "--parallel", "3"}, "--parallel with --cancel/--status"},
		{[]string{"drain", "host1", "--status", "--dry-run", "--order", "name"}, "--dry-run, --order with --cancel/--status"},
	} {
		root := newRootCmd()
		var out, errb bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&errb)
		root.SetArgs(append([]string{"--state", filepath.Join(t.TempDir(), "ferry.db"), "--config", filepath.Join(t.TempDir(), "none.yaml")}, s.args...))
		err := root.ExecuteContext(context.Background())
		if code := exitCode(err); code != 2 || err == nil || !strings.Contains(err.Error(), s.want) {
			t.Errorf("ferry %s: exit %d, error %v; want exit 2 and %q", strings.Join(s.args, " "), code, err, s.want)
		}
	}
}

// The summary counts every VM: a cancelled drain's not-started VMs are not
// hidden behind "0 left".
func TestDrainSummaryCountsNotStarted(t *testing.T) {
	r := drain.Report{Moved: 1, VMs: []drain.VM{
		{VM: "a", State: drain.VMMoved},
		{VM: "b", State: drain.VMNotStarted},
		{VM: "c", State: drain.VMNotStarted},
		{VM: "d", State: drain.VMSkipped},
	}}
	if got, want := drainSummary(r), "1/4 moved, 0 moving, 0 failed, 0 left, 0 B sent, 2 not started, 1 skipped"; got != want {
		t.Fatalf("summary %q, want %q", got, want)
	}
}

// On a terminal, kept lines blank what the longer status line left and the
// status line is redrawn in place; end moves below it.
func TestStatusLine(t *testing.T) {
	var b bytes.Buffer
	l := statusLine{w: &b}
	l.redraw("status one, quite long")
	l.keep("kept")
	l.redraw("short")
	l.redraw("s")
	l.end()
	l.end() // once only
	want := "\rstatus one, quite long" + "\rkept" + strings.Repeat(" ", 18) + "\n" + "\rshort" + "\rs    " + "\n"
	if b.String() != want {
		t.Fatalf("drawn %q, want %q", b.String(), want)
	}
}

// Each progress printer, as built for a terminal, keeps messages and
// redraws its figures line.
func TestPrintersOnATerminal(t *testing.T) {
	var b bytes.Buffer
	pp := newProgressPrinter(&b, true)
	pp.update(orchestrator.Progress{Stage: journal.StagePreCopy, Message: "pre-copy started"})
	pp.update(orchestrator.Progress{Stage: journal.StagePreCopy, Percent: 50, Live: &orchestrator.LiveProgress{TotalBytes: 100}})
	pp.finish()
	cp := newColdPrinter(&b, true)
	cp.update(orchestrator.Progress{Message: "2 artifacts", Cold: &orchestrator.ColdProgress{}})
	cp.update(orchestrator.Progress{Percent: 50, Cold: &orchestrator.ColdProgress{Progress: coldmove.Progress{TotalBytes: 100, MoveTotalBytes: 100, MovePositionBytes: 50, Artifact: "disk vda"}}})
	cp.finish()
	dp := newDrainPrinter(&b, true)
	dp.update(drain.Report{Host: "host1", VMs: []drain.VM{{VM: "web", State: drain.VMMoving, Stage: "pre-copy"}}})
	dp.finish()
	for _, want := range []string{"pre-copy started\n", "50.0%", "2 artifacts\n", "disk vda", "web", "host1: 0/1 moved, 1 moving"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("no %q in %q", want, b.String())
		}
	}
}
