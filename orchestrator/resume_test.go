package orchestrator

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferryvm/ferry/virt"
)

// A scripted run of the resume loop's decisions: each poll gives QEMU's
// status at a time, and the decision expected.
func TestResumeTrackerStep(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	ms := time.Millisecond
	st := func(s string, transferred uint64) virt.MigrationStatus {
		return virt.MigrationStatus{Status: s, TransferredBytes: transferred}
	}
	type poll struct {
		at     time.Duration
		status virt.MigrationStatus
		qerr   error
		do     resumeDo
		note   string // substring of the note ("" any, "-" none)
		err    error  // sentinel of a resumeFail
	}
	pol := ResumePolicy{Window: 10 * time.Second, Initial: time.Second, Max: 4 * time.Second}
	cases := []struct {
		name  string
		polls []poll
		// what the log holds afterwards
		attempts, pauses int
	}{
		{"paused, resumed at once, reconnects, completes", []poll{
			{at: 0, status: st(virt.MigPostcopyPaused, 10), do: resumeSend, note: "post-copy paused"},
			{at: 250 * ms, status: st(virt.MigPostcopyRecover, 10), do: resumeWait, note: "-"},
			{at: 500 * ms, status: st(virt.MigPostcopyActive, 20), do: resumeWait, note: "resume 1 reconnected"},
			{at: 600 * ms, status: st(virt.MigPostcopyActive, 25), do: resumeWait, note: "-"},
			{at: 750 * ms, status: st(virt.MigCompleted, 30), do: resumeWait, note: "completed"},
		}, 1, 1},
		{"a failed reconnection waits out the backoff", []poll{
			{at: 0, status: st(virt.MigPostcopyPaused, 10), do: resumeSend, note: "paused"},
			{at: 250 * ms, status: st(virt.MigPostcopyPaused, 10), do: resumeWait},
			{at: 1000 * ms, status: st(virt.MigPostcopyPaused, 10), do: resumeWait},
			{at: 1250 * ms, status: st(virt.MigPostcopyPaused, 10), do: resumeSend},
		}, 2, 1},
		{"a handshake hung in postcopy-recover is kicked back, then resumed again", []poll{
			{at: 0, status: st(virt.MigPostcopyPaused, 10), do: resumeSend},
			{at: time.Second, status: st(virt.MigPostcopyRecover, 10), do: resumeWait},
			{at: 5 * time.Second, status: st(virt.MigPostcopyRecover, 10), do: resumeWait},
			{at: 5*time.Second + 250*ms, status: st(virt.MigPostcopyRecover, 10), do: resumeKick, note: "kicking it back"},
			{at: 5*time.Second + 500*ms, status: st(virt.MigPostcopyRecover, 10), do: resumeWait},
			{at: 5*time.Second + 750*ms, status: st(virt.MigPostcopyPaused, 10), do: resumeWait},
			{at: 6*time.Second + 750*ms, status: st(virt.MigPostcopyPaused, 10), do: resumeSend},
		}, 2, 1},
		{"a hung recover-setup is kicked too", []poll{
			{at: 0, status: st(virt.MigPostcopyPaused, 10), do: resumeSend},
			{at: 6 * time.Second, status: st(virt.MigPostcopyRecoverSetup, 10), do: resumeKick},
		}, 1, 1},
		{"a handshake no kick ends is given up soon after the window", []poll{
			{at: 0, status: st(virt.MigPostcopyPaused, 10), do: resumeSend},
			{at: 6 * time.Second, status: st(virt.MigPostcopyRecover, 10), do: resumeKick, note: "resume 1 hung"},
			{at: 12 * time.Second, status: st(virt.MigPostcopyRecover, 10), do: resumeKick, note: "-"},
			{at: 18 * time.Second, status: st(virt.MigPostcopyRecover, 10), do: resumeKick, note: "-"},
			{at: 26 * time.Second, status: st(virt.MigPostcopyRecover, 10), do: resumeFail, err: ErrPostcopyPaused},
		}, 1, 1},
		{"the window lapses while paused", []poll{
			{at: 0, status: st(virt.MigPostcopyPaused, 10), do: resumeSend},
			{at: 11 * time.Second, status: st(virt.MigPostcopyPaused, 10), do: resumeFail, err: ErrPostcopyPaused},
		}, 1, 1},
		{"a second pause is counted", []poll{
			{at: 0, status: st(virt.MigPostcopyPaused, 10), do: resumeSend},
			{at: 250 * ms, status: st(virt.MigPostcopyActive, 20), note: "reconnected"},
			{at: 500 * ms, status: st(virt.MigPostcopyPaused, 20), note: "paused", do: resumeWait},
		}, 1, 2},
		{"a running copy that stops moving is left for recover", []poll{
			{at: 0, status: st(virt.MigPostcopyActive, 10)},
			{at: time.Minute, status: st(virt.MigPostcopyActive, 10)},
			{at: 2*time.Minute + ms, status: st(virt.MigPostcopyActive, 10), do: resumeFail, err: ErrPostcopyPaused},
		}, 0, 0},
		{"libvirt that never finishes after QEMU completed", []poll{
			{at: 0, status: st(virt.MigCompleted, 10), note: "completed"},
			{at: time.Minute + ms, status: st(virt.MigCompleted, 10), do: resumeFail, err: errNotResumable},
		}, 0, 0},
		{"query-migrate failing for good is left for recover", []poll{
			{at: 0, qerr: errors.New("cannot acquire state change lock")},
			{at: 30 * time.Second, qerr: errors.New("cannot acquire state change lock")},
			{at: 60 * time.Second, qerr: errors.New("cannot acquire state change lock")},
			{at: 91 * time.Second, qerr: errors.New("cannot acquire state change lock"), do: resumeFail, err: ErrPostcopyPaused},
		}, 0, 0},
		{"a monitor that answers again resets the clock", []poll{
			{at: 0, qerr: errors.New("busy")},
			{at: 80 * time.Second, status: st(virt.MigPostcopyActive, 10)},
			{at: 100 * time.Second, qerr: errors.New("busy")},
			{at: 180 * time.Second, qerr: errors.New("busy")},
		}, 0, 0},
		{"QEMU failed", []poll{
			{at: 0, status: virt.MigrationStatus{Status: virt.MigFailed, ErrorDesc: "boom"}, do: resumeFail, err: errNotResumable},
		}, 0, 0},
	}
	for _, c := range cases {
		tr := newResumeTracker(pol, t0)
		rl := &resumeLog{}
		for i, p := range c.polls {
			d := tr.step(rl, p.status, p.qerr, true, at(p.at))
			if d.do != p.do {
				t.Fatalf("%s: poll %d (%s at %s): do %d, want %d (note %q, err %v)", c.name, i, p.status.Status, p.at, d.do, p.do, d.note, d.err)
			}
			if (p.note == "-" && d.note != "") || (p.note != "-" && !strings.Contains(d.note, p.note)) {
				t.Fatalf("%s: poll %d: note %q, want one with %q", c.name, i, d.note, p.note)
			}
			if p.err != nil && !errors.Is(d.err, p.err) {
				t.Fatalf("%s: poll %d: err %v, want %v", c.name, i, d.err, p.err)
			}
		}
		if rl.attempts != c.attempts || rl.pauses != c.pauses {
			t.Errorf("%s: attempts %d pauses %d, want %d %d", c.name, rl.attempts, rl.pauses, c.attempts, c.pauses)
		}
	}
}

// Without the destination's port nothing can be resumed: left for recover.
func TestResumeTrackerNoDataURI(t *testing.T) {
	now := time.Now()
	tr := newResumeTracker(ResumePolicy{}, now)
	d := tr.step(&resumeLog{}, virt.MigrationStatus{Status: virt.MigPostcopyPaused}, nil, false, now)
	if d.do != resumeFail || !errors.Is(d.err, ErrPostcopyPaused) {
		t.Fatalf("%+v", d)
	}
}
