package orchestrator

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/ferryvm/ferry/virt"
)

func TestDecide(t *testing.T) {
	running := Observed{Present: true, State: virt.StateRunning, Persistent: true}
	pausedMig := Observed{Present: true, State: virt.StatePaused, Reason: "migration", Persistent: true}
	pausedIncoming := Observed{Present: true, State: virt.StatePaused, Reason: "starting-up", Persistent: true}
	shutoff := Observed{Present: true, State: virt.StateShutoff, Reason: "migrated", Persistent: true}
	absent := Observed{}
	postcopySrc := Observed{Present: true, State: virt.StatePaused, Reason: "postcopy", Persistent: true}
	postcopyDst := Observed{Present: true, State: virt.StateRunning, Reason: "postcopy", Persistent: true}
	postcopyFailed := Observed{Present: true, State: virt.StatePaused, Reason: "postcopy-failed", Persistent: true}

	for _, tc := range []struct {
		name      string
		src, dst  Observed
		committed bool
		keep      string
		actions   []ConvergeStep
	}{
		{"failed pre-copy, nothing on destination", running, absent, false, "source", nil},
		{"source paused by switchover, destination gone", pausedMig, absent, false, "source", []ConvergeStep{ResumeSource}},
		{"half-made incoming copy", running, pausedIncoming, false, "source", []ConvergeStep{DestroyDest, UndefineDest}},
		{"paused source and incoming copy", pausedMig, pausedIncoming, false, "source", []ConvergeStep{DestroyDest, UndefineDest, ResumeSource}},
		{"normal completion", shutoff, running, true, "destination", []ConvergeStep{UndefineSource}},
		{"completed but journal not committed", shutoff, running, false, "destination", []ConvergeStep{UndefineSource}},
		{"source already undefined", absent, running, true, "destination", nil},
		{"destination took over, source not yet killed", pausedMig, running, false, "destination", []ConvergeStep{DestroySource, UndefineSource}},
		{"both running before commit: source wins", running, running, false, "source", []ConvergeStep{DestroyDest, UndefineDest}},
		{"both running after commit: destination wins", running, running, true, "destination", []ConvergeStep{DestroySource, UndefineSource}},
		{"destination paused after finish", shutoff, pausedIncoming, true, "destination", []ConvergeStep{UndefineSource, ResumeDest}},
		{"running nowhere before commit: boot source", shutoff, absent, false, "source", []ConvergeStep{StartSource}},
		{"running nowhere after commit: boot destination", shutoff, Observed{Present: true, State: virt.StateShutoff, Persistent: true}, true, "destination", []ConvergeStep{UndefineSource, StartDest}},
		{"post-copy running on destination", postcopySrc, postcopyDst, true, "", nil},
		{"post-copy failed on destination", absent, postcopyFailed, true, "", nil},
		{"defined nowhere", absent, absent, false, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decide(tc.src, tc.dst, tc.committed)
			if d.Keep != tc.keep || !reflect.DeepEqual(d.Actions, tc.actions) {
				t.Fatalf("decide(%s, %s, committed=%v) = keep %q %v (%s), want keep %q %v",
					tc.src, tc.dst, tc.committed, d.Keep, d.Actions, d.Note, tc.keep, tc.actions)
			}
			if d.Keep == "" && d.Note == "" {
				t.Fatal("a decision to do nothing must say why")
			}
			// Invariant: the losing copy is stopped before the winner resumes.
			stopped := false
			for _, a := range d.Actions {
				switch a {
				case DestroySource, DestroyDest:
					stopped = true
				case ResumeSource, ResumeDest, StartSource, StartDest:
					if (tc.src.live() && tc.dst.live()) && !stopped {
						t.Fatalf("resumes before stopping the other copy: %v", d.Actions)
					}
				}
			}
		})
	}
}

func TestPreferDecision(t *testing.T) {
	running := Observed{Present: true, State: virt.StateRunning, Persistent: true}
	pausedMig := Observed{Present: true, State: virt.StatePaused, Reason: "migration", Persistent: true}
	shutoff := Observed{Present: true, State: virt.StateShutoff, Persistent: true}
	absent := Observed{}
	for _, tc := range []struct {
		name               string
		prefer             string
		src, dst           Observed
		srcKnown, dstKnown bool
		keep               string
		actions            []ConvergeStep
		wantErr            bool
	}{
		{"source, destination down", "source", pausedMig, absent, true, false, "source", []ConvergeStep{ResumeSource}, false},
		{"source, destination runs a copy", "source", pausedMig, running, true, true, "source", []ConvergeStep{DestroyDest, UndefineDest, ResumeSource}, false},
		{"destination, source down", "destination", absent, running, false, true, "destination", nil, false},
		{"destination, source paused", "destination", pausedMig, pausedMig, true, true, "destination", []ConvergeStep{DestroySource, UndefineSource, ResumeDest}, false},
		{"destination shut off boots", "destination", shutoff, shutoff, true, true, "destination", []ConvergeStep{UndefineSource, StartDest}, false},
		{"preferred host down", "source", absent, running, false, true, "", nil, true},
		{"nothing to keep", "destination", running, absent, true, true, "", nil, true},
		{"bad value", "both", running, running, true, true, "", nil, true},
	} {
		d, err := preferDecision(tc.prefer, tc.src, tc.dst, tc.srcKnown, tc.dstKnown)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err = %v, want error %v", tc.name, err, tc.wantErr)
			continue
		}
		if err == nil && (d.Keep != tc.keep || !reflect.DeepEqual(d.Actions, tc.actions)) {
			t.Errorf("%s: keep %q %v, want %q %v", tc.name, d.Keep, d.Actions, tc.keep, tc.actions)
		}
	}
}

// A destructive step needs its journal row first: when the write fails,
// converge does nothing (issue 11, part 7).
func TestConvergeActsOnlyAfterTheJournalRecordsIt(t *testing.T) {
	f := newFixture(t)
	f.vm.SetState(virt.StatePaused, "migration")
	failing := errors.New("disk I/O error")
	_, _, err := f.c.converge(context.Background(), f.c.log(), convergeIn{src: f.a, dst: f.b, uuid: "6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e6f",
		record: func(Decision) error { return failing }})
	if !errors.Is(err, failing) {
		t.Fatalf("err = %v, want the journal's", err)
	}
	if info, _ := f.vm.Info(); info.State != virt.StatePaused {
		t.Fatalf("the source was %s without a journal row", info.State)
	}
	keep, _, err := f.c.converge(context.Background(), f.c.log(), convergeIn{src: f.a, dst: f.b, uuid: "6a7c1c1e-2c55-4d6e-9a55-1d2b3c4d5e6f",
		record: func(Decision) error { return nil }})
	if err != nil || keep != "source" {
		t.Fatalf("converge: %q %v", keep, err)
	}
	if info, _ := f.vm.Info(); info.State != virt.StateRunning {
		t.Fatalf("source %s after converge, want running", info.State)
	}
}
