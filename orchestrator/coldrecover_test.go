package orchestrator

import (
	"errors"
	"testing"
)

// Every combination recover can meet for an interrupted cold move.
func TestDecideCold(t *testing.T) {
	down := coldSeen{Err: errors.New("connection refused")}
	absent := coldSeen{Reached: true}
	defined := coldSeen{Reached: true, Defined: true}
	running := coldSeen{Reached: true, Defined: true, Active: true}
	for _, tt := range []struct {
		name string
		w    coldWorld
		want coldDecision
	}{
		{"interrupted in the pre-flight", coldWorld{}, coldDecision{Do: coldNothingDone}},
		{"before commit, destination down", coldWorld{Planned: true, Dst: down}, coldDecision{Do: coldWait}},
		{"before commit, nothing defined yet", coldWorld{Planned: true, Dst: absent}, coldDecision{Do: coldRevert}},
		{"before commit, our definition, source holds the VM", coldWorld{Planned: true, Dst: defined, Src: defined}, coldDecision{Do: coldRevert, UndefineDst: true}},
		{"before commit, source down", coldWorld{Planned: true, Dst: defined, Src: down}, coldDecision{Do: coldWait}},
		{"before commit, source lost the VM", coldWorld{Planned: true, Dst: defined, Src: absent}, coldDecision{Do: coldByHand}},
		{"before commit, destination copy runs", coldWorld{Planned: true, Dst: running, Src: defined}, coldDecision{Do: coldByHand}},
		{"after commit, source down", coldWorld{Planned: true, Committed: true, Src: down}, coldDecision{Do: coldWait}},
		{"after commit, source runs again", coldWorld{Planned: true, Committed: true, Src: running}, coldDecision{Do: coldByHand}},
		{"after commit, source still defined", coldWorld{Planned: true, Committed: true, Src: defined}, coldDecision{Do: coldFinish, UndefineSrc: true}},
		{"after commit, source already undefined", coldWorld{Planned: true, Committed: true, Src: absent}, coldDecision{Do: coldFinish}},
	} {
		got := decideCold(tt.w)
		if got.Do != tt.want.Do || got.UndefineDst != tt.want.UndefineDst || got.UndefineSrc != tt.want.UndefineSrc {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
		if (got.Do == coldWait || got.Do == coldByHand) && got.Why == "" {
			t.Errorf("%s: no reason given", tt.name)
		}
	}
}
