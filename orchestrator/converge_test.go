package orchestrator

import (
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
		actions   []Action
	}{
		{"failed pre-copy, nothing on destination", running, absent, false, "source", nil},
		{"source paused by switchover, destination gone", pausedMig, absent, false, "source", []Action{ResumeSource}},
		{"half-made incoming copy", running, pausedIncoming, false, "source", []Action{DestroyDest, UndefineDest}},
		{"paused source and incoming copy", pausedMig, pausedIncoming, false, "source", []Action{DestroyDest, UndefineDest, ResumeSource}},
		{"normal completion", shutoff, running, true, "destination", []Action{UndefineSource}},
		{"completed but journal not committed", shutoff, running, false, "destination", []Action{UndefineSource}},
		{"source already undefined", absent, running, true, "destination", nil},
		{"destination took over, source not yet killed", pausedMig, running, false, "destination", []Action{DestroySource, UndefineSource}},
		{"both running before commit: source wins", running, running, false, "source", []Action{DestroyDest, UndefineDest}},
		{"both running after commit: destination wins", running, running, true, "destination", []Action{DestroySource, UndefineSource}},
		{"destination paused after finish", shutoff, pausedIncoming, true, "destination", []Action{UndefineSource, ResumeDest}},
		{"running nowhere before commit: boot source", shutoff, absent, false, "source", []Action{StartSource}},
		{"running nowhere after commit: boot destination", shutoff, Observed{Present: true, State: virt.StateShutoff, Persistent: true}, true, "destination", []Action{UndefineSource, StartDest}},
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
