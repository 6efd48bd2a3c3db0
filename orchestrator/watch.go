package orchestrator

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/hooks"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/precopy"
	"github.com/ferryvm/ferry/virt"
)

// watch follows one migration job through stages 2 and 3: it samples job
// stats every 250 ms and on iteration events, feeds precopy.Step and applies
// its actions, notices the switchover, and keeps the journal current.
type watch struct {
	m      *move
	bg     context.Context // journal writes outlive the caller's cancel
	cancel context.CancelCauseFunc
	job    precopy.Job
	limit  time.Duration
	start  time.Time
	st     precopy.State

	// dormant: the job carries auto-converge, but throttling waits for the
	// policy (libvirt enables auto-converge only when a job starts).
	dormant                    bool
	downtimeSet, throttleArmed bool
	postcopy                   atomic.Bool // read by the --timeout timer
	last                       virt.JobStats
	completed                  *virt.JobStats
	stopAt, lastJournal        time.Time
	lastReason                 string
	// switchover: the switchover hooks, running beside the loop; hooksDone
	// once their report was collected (migration.awaitSwitchover).
	switchover *hooks.Pending
	hooksDone  bool
	// dataURI: the data URI with the destination port ferry picked for a
	// post-copy-capable job; resumes: what resuming a broken post-copy did
	// (postcopy.go).
	dataURI string
	resumes *resumeLog
}

func (m *move) newWatch(bg context.Context, plan *PlanInfo, cancel context.CancelCauseFunc) *watch {
	w := &watch{m: m, bg: bg, cancel: cancel, job: plan.Job, dormant: !plan.Job.AutoConverge,
		limit: time.Duration(plan.Job.DowntimeMS) * time.Millisecond}
	// libvirt keeps these for the next migration job of this domain; if it
	// refuses now, sample retries once the job runs.
	w.downtimeSet = m.dom.SetMaxDowntime(w.limit) == nil
	w.throttleArmed = w.armThrottle()
	w.start = m.c.now()
	w.st = m.req.precopyPolicy().Start(plan.Plan, w.start)
	return w
}

func (w *watch) armThrottle() bool {
	return !w.dormant || w.m.dom.SetThrottle(w.job.ThrottleInitialPct, w.job.ThrottleIncrementPct, throttleTriggerDormantPct) == nil
}

// params is the libvirt job the plan asks for.
func (w *watch) params() virt.MigrateParams {
	m := w.m
	dataURI := m.dst.DataURI()
	if w.dataURI != "" {
		dataURI = w.dataURI // post-copy: a known port to resume at
	}
	return virt.MigrateParams{
		DestURI: virt.PeerURI(m.dst.URI), DataURI: dataURI,
		TLS: m.res.Live.MigrationTLS, TLSDestination: m.dst.MigrationTLSName,
		BandwidthMiBps: uint64(w.job.BandwidthBytesPerSec >> 20), CopyStorage: m.req.Live.CopyStorage,
		Postcopy: w.job.Postcopy, AutoConverge: true,
		AutoConvergeInitial: w.job.ThrottleInitialPct, AutoConvergeIncrement: w.job.ThrottleIncrementPct,
	}
}

// follow runs until the migration call returns, and returns its error.
func (w *watch) follow(done <-chan error, events <-chan virt.Event) error {
	ticker := time.NewTicker(sampleIntervalMS * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case err := <-done:
			return err
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			w.onEvent(ev)
		case <-ticker.C:
			w.sample()
		}
	}
}

func (w *watch) onEvent(ev virt.Event) {
	m := w.m
	if ev.UUID != m.info.UUID {
		return
	}
	switch {
	case ev.Kind == virt.EventLifecycle && ev.Lifecycle == "suspended" && (ev.Detail == "migrated" || ev.Detail == "postcopy"):
		msg := "source paused: stop-and-copy"
		if ev.Detail == "postcopy" {
			w.postcopy.Store(true)
			msg = "source paused: the guest now runs on the destination (post-copy)"
		}
		if !w.stopAt.IsZero() {
			return
		}
		w.stopAt = ev.At
		m.log.WithField("stage", journal.StageStopAndCopy.String()).Info(msg)
		_ = m.c.Journal.EnterStage(w.bg, m.rec.ID, journal.StageStopAndCopy, w.stopAt, nil)
		m.c.emit(w.bg, m, "switchover", 0, "")
		// In a goroutine: the loop must keep sampling (and the policy keep
		// deciding) through the pause, however slow a hook is.
		p := m.payload(hooks.Switchover)
		p.Timestamp, p.Postcopy = w.stopAt, w.postcopy.Load()
		w.switchover = m.c.hooks().DispatchAsync(w.bg, m.log, p)
		m.progress(Progress{Stage: journal.StageStopAndCopy, Elapsed: m.c.now().Sub(w.start), Message: msg})
	case ev.Kind == virt.EventJobCompleted && ev.Job != nil:
		w.completed = ev.Job
	case ev.Kind == virt.EventIteration:
		w.sample()
	}
}

func (w *watch) sample() {
	m := w.m
	js, err := m.dom.JobStats(false)
	if err != nil || (js.Type != virt.JobBounded && js.Type != virt.JobUnbounded) {
		return
	}
	if !w.downtimeSet {
		w.downtimeSet = m.dom.SetMaxDowntime(w.limit) == nil
	}
	if !w.throttleArmed {
		w.throttleArmed = w.armThrottle()
	}
	w.last = js
	now := m.c.now()
	w.applyPolicy(js, now)
	stage := journal.StagePreCopy
	if !w.stopAt.IsZero() {
		stage = journal.StageStopAndCopy
	}
	p := Progress{Stage: stage, Elapsed: now.Sub(w.start), Live: &LiveProgress{Iteration: js.Iteration,
		TotalBytes: js.DataTotal, ProcessedBytes: js.DataProcessed, RemainingBytes: js.DataRemaining,
		DirtyBytesPerSec: js.DirtyBytesPerSec(), BandwidthBytesPerSec: js.MemBytesPerSec,
		DowntimeLimitMS: w.st.DowntimeMS, ThrottlePct: js.Throttle, Strategy: string(w.st.Strategy),
		Postcopy: w.postcopy.Load(), Policy: w.lastReason}}
	if js.DataTotal > 0 {
		p.Percent = 100 * float64(js.DataTotal-js.DataRemaining) / float64(js.DataTotal)
	}
	if js.DowntimeSet {
		p.Live.ExpectedDowntime = js.Downtime
	}
	m.progress(p)
	if now.Sub(w.lastJournal) >= journalIntervalMS*time.Millisecond {
		w.lastJournal = now
		_ = m.c.Journal.Update(w.bg, m.rec.ID, map[string]any{"data_sent": int64(js.DataProcessed), "data_total": int64(js.DataTotal), "iterations": js.Iteration})
	}
}

// applyPolicy feeds one sample to precopy.Step and carries out its actions.
func (w *watch) applyPolicy(js virt.JobStats, now time.Time) {
	if w.st.Done() {
		return
	}
	m := w.m
	var acts []precopy.Action
	w.st, acts = precopy.Step(w.st, sampleOf(js, now, !w.stopAt.IsZero(), w.postcopy.Load()), now)
	for _, a := range acts {
		err := m.applyAction(a, w.cancel)
		l := m.log.WithFields(logrus.Fields{"stage": journal.StagePreCopy.String(), "action": a.Kind})
		switch {
		case err != nil:
			w.st = w.st.Failed(a)
			a.Reason = fmt.Sprintf("could not %s (%v); %s", a.Kind, err, a.Reason)
			l.WithError(err).Warn("policy action failed")
		case a.Kind == precopy.ActStartPostcopy:
			w.postcopy.Store(true) // from here the destination holds the state: no abort
			fallthrough
		default:
			l.Info(a.Reason)
		}
		w.lastReason = a.Reason
		m.res.Live.PolicyActions = append(m.res.Live.PolicyActions, a)
		m.progress(Progress{Stage: journal.StagePreCopy, Elapsed: now.Sub(w.start), Message: "policy: " + a.Reason})
	}
}
