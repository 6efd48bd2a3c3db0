package orchestrator

import (
	"fmt"
	"time"

	"github.com/ferryvm/ferry/virt"
)

// What the resume loop does after one look at the source QEMU's migration.
type resumeDo int

const (
	resumeWait resumeDo = iota // poll again
	resumeSend                 // send `migrate resume` to the destination's port
	resumeKick                 // migrate-pause (or yank) a hung reconnection
	resumeFail                 // stop: err says why
)

type resumeDecision struct {
	do   resumeDo
	note string // a journal line, "" for none
	err  error
}

// resumeTracker is the resume loop's memory between polls; step is a pure
// function of it, the status QEMU reported and the time.
type resumeTracker struct {
	pol         ResumePolicy
	pausedSince time.Time // zero while the copy runs
	scheduled   bool      // nextAt holds the next attempt's time
	nextAt      time.Time
	lastAttempt time.Time // the last resume or kick
	kicked      int       // the attempt last kicked (noted once)
	lastBytes   uint64
	lastMoved   time.Time
	completedAt time.Time
	qmpFailing  time.Time // since when query-migrate fails (zero: it answers)
}

func newResumeTracker(pol ResumePolicy, now time.Time) *resumeTracker {
	return &resumeTracker{pol: pol.withDefaults(), lastAttempt: now, lastMoved: now}
}

// finish closes an open pause when the source is gone or shut off.
func (t *resumeTracker) finish(rl *resumeLog, now time.Time) {
	if !t.pausedSince.IsZero() {
		rl.paused += now.Sub(t.pausedSince)
		t.pausedSince = time.Time{}
	}
}

// step decides from one query-migrate answer (or its error). It updates rl's
// counters; the caller applies the decision and journals its note.
func (t *resumeTracker) step(rl *resumeLog, st virt.MigrationStatus, qerr error, haveURI bool, now time.Time) resumeDecision {
	if qerr != nil {
		// libvirt refuses the monitor while it shuts the source off after
		// completion: look again before giving up.
		if t.qmpFailing.IsZero() {
			t.qmpFailing = now
		}
		if now.Sub(t.qmpFailing) > qmpErrorLimit {
			return resumeDecision{do: resumeFail, err: fmt.Errorf("%w: the source QEMU has not answered query-migrate for %s: %w", ErrPostcopyPaused, qmpErrorLimit, qerr)}
		}
		return resumeDecision{}
	}
	t.qmpFailing = time.Time{}
	switch st.Status {
	case virt.MigPostcopyPaused:
		return t.paused(rl, st, haveURI, now)
	case virt.MigPostcopyRecoverSetup, virt.MigPostcopyRecover:
		// Reconnecting: the handshake goes on to postcopy-active, or back to
		// paused when the new stream breaks. One that hangs (a stream cut in
		// the handshake, or a destination that took the connection before it
		// saw the break) is kicked back to paused and tried again.
		if now.Sub(t.lastAttempt) <= handshakeLimit {
			return resumeDecision{}
		}
		if !rl.pausedAt.IsZero() && now.Sub(rl.pausedAt) > t.pol.Window+3*handshakeLimit {
			return resumeDecision{do: resumeFail, err: fmt.Errorf("%w: reconnection stuck in %s", ErrPostcopyPaused, st.Status)}
		}
		t.lastAttempt = now
		d := resumeDecision{do: resumeKick}
		if t.kicked < rl.attempts { // one line per attempt, however many kicks it takes
			t.kicked = rl.attempts
			d.note = fmt.Sprintf("resume %d hung in %s for %s: kicking it back to paused", rl.attempts, st.Status, handshakeLimit)
		}
		return d
	case virt.MigPostcopyActive:
		var d resumeDecision
		if !t.pausedSince.IsZero() {
			rl.paused += now.Sub(t.pausedSince)
			t.pausedSince = time.Time{}
			d.note = fmt.Sprintf("resume %d reconnected: post-copy running again (%d MiB left)", rl.attempts, st.RemainingBytes>>20)
		}
		if st.TransferredBytes != t.lastBytes {
			t.lastBytes, t.lastMoved = st.TransferredBytes, now
		} else if now.Sub(t.lastMoved) > resumeStallLimit {
			d.do, d.err = resumeFail, fmt.Errorf("%w: post-copy %s but no data moved for %s", ErrPostcopyPaused, st.Status, resumeStallLimit)
		}
		return d
	case virt.MigCompleted:
		// QEMU is done; libvirt finishes the unattended job on both hosts.
		if t.completedAt.IsZero() {
			t.completedAt = now
			t.finish(rl, now)
			return resumeDecision{note: fmt.Sprintf("post-copy completed at %s", now.Format("15:04:05.000"))}
		}
		if now.Sub(t.completedAt) > finishWait {
			return resumeDecision{do: resumeFail, err: fmt.Errorf("%w: QEMU completed the copy but libvirt has not finished the job on the source for %s", errNotResumable, finishWait)}
		}
		return resumeDecision{}
	case "":
		return resumeDecision{}
	default:
		return resumeDecision{do: resumeFail, err: fmt.Errorf("%w: QEMU reports the migration %s: %s", errNotResumable, st.Status, st.ErrorDesc)}
	}
}

// paused handles postcopy-paused: note the pause, then resume on the
// backoff schedule until the window lapses.
func (t *resumeTracker) paused(rl *resumeLog, st virt.MigrationStatus, haveURI bool, now time.Time) resumeDecision {
	var d resumeDecision
	if t.pausedSince.IsZero() {
		t.pausedSince = now
		rl.pauses++
		if rl.pausedAt.IsZero() {
			rl.pausedAt = now
		}
		d.note = fmt.Sprintf("post-copy paused at %s: %s", now.Format("15:04:05.000"), st.ErrorDesc)
		t.scheduled = false
	}
	if !haveURI {
		d.do, d.err = resumeFail, fmt.Errorf("%w: no data URI with the destination's port was recorded for this move", ErrPostcopyPaused)
		return d
	}
	if !t.scheduled {
		wait, ok := nextResume(t.pol, rl.attempts, now.Sub(rl.pausedAt))
		if !ok {
			t.finish(rl, now)
			d.do, d.err = resumeFail, fmt.Errorf("%w since %s: %d resume attempt(s) within %s did not reconnect (last: %s)",
				ErrPostcopyPaused, rl.pausedAt.Format("15:04:05"), rl.attempts, t.pol.Window, st.ErrorDesc)
			return d
		}
		t.nextAt, t.scheduled = now.Add(wait), true
	}
	if now.Before(t.nextAt) {
		return d
	}
	rl.attempts++
	t.lastAttempt, t.scheduled = now, false
	d.do = resumeSend
	return d
}
