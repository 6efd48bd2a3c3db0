package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/hooks"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/precopy"
	"github.com/ferryvm/ferry/virt"
)

// runLive carries out stages 2 to 5 once the reservation is held.
func (m *move) runLive(ctx context.Context, plan *PlanInfo) (*Result, error) {
	c, id := m.c, m.rec.ID
	// Journal writes and cleanup must happen even after the caller cancels.
	bg := context.WithoutCancel(ctx)
	c.emit(bg, m, "planned", 0, "")
	m.fire(bg, m.payload(hooks.Reservation))

	evctx, stopEvents := context.WithCancel(bg)
	defer stopEvents()
	events, err := m.srcConn.Subscribe(evctx)
	if err != nil {
		m.log.WithError(err).Warn("no lifecycle events from the source; stop-and-copy time will be estimated")
	}
	mctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := m.newWatch(bg, plan, cancel)
	m.watch = w
	if m.req.Live.Timeout > 0 {
		// A hard wall, except in post-copy: the destination then holds the
		// only current state and the job must finish.
		t := time.AfterFunc(m.req.Live.Timeout, func() {
			if !w.postcopy.Load() {
				cancel(fmt.Errorf("timed out after %s", m.req.Live.Timeout))
			}
		})
		defer t.Stop()
	}
	if err := c.Journal.EnterStage(bg, id, journal.StagePreCopy, w.start, nil); err != nil {
		m.log.WithError(err).Error("journal")
	}
	m.log.WithField("stage", journal.StagePreCopy.String()).Info("migration started")
	m.progress(Progress{Stage: journal.StagePreCopy, Message: "pre-copy started"})

	m.setupPostcopy(bg, w) // postcopy.go
	done := make(chan error, 1)
	go func() { done <- m.dom.Migrate(mctx, w.params()) }()
	migErr := w.follow(done, events)
	end := c.now()
	if migErr != nil && w.postcopy.Load() {
		// The stream broke in post-copy: resume, never roll back (postcopy.go).
		switch err := m.resumePostcopy(bg, w, migErr); {
		case err == nil:
			migErr, end = nil, c.now()
		case errors.Is(err, ErrPostcopyPaused):
			return m.fail(bg, fmt.Errorf("%w; `ferry recover` resumes it", err))
		default:
			migErr = err
		}
	}
	if migErr != nil {
		return m.rollback(bg, migErr, w.last)
	}
	return m.commit(bg, w, plan, end)
}

// commit runs stages 4 and 5 after libvirt reported success.
func (m *move) commit(bg context.Context, w *watch, plan *PlanInfo, end time.Time) (*Result, error) {
	c, id := m.c, m.rec.ID
	// Stage 4: commitment. QEMU and libvirt report success; confirm it on
	// both hosts before the source definition goes.
	js, err := m.dom.JobStats(true)
	if err != nil || js.Type == virt.JobNone {
		if w.completed != nil {
			js = *w.completed
		} else {
			js = w.last
		}
	}
	pausedAt := w.stopAt
	if pausedAt.IsZero() {
		pausedAt = end.Add(-js.Downtime)
		_ = c.Journal.EnterStage(bg, id, journal.StageStopAndCopy, pausedAt, nil)
	}
	m.res.Live.Downtime, m.res.Live.DataSent, m.res.Live.Iterations = js.Downtime, js.DataProcessed, js.Iteration
	m.res.Live.Postcopy = w.postcopy.Load()
	m.res.Live.MigrationMS = end.Sub(w.start).Milliseconds()
	cols := map[string]any{"data_sent": int64(js.DataProcessed), "data_total": int64(js.DataTotal), "iterations": js.Iteration,
		"policy": policyJSON(plan, m.res.Live.PolicyActions, m.res.Live.Postcopy)}
	if js.DowntimeSet {
		cols["downtime_ms"] = js.Downtime.Milliseconds()
	}
	if err := c.Journal.Update(bg, id, cols); err != nil {
		m.log.WithError(err).Error("journal")
	}
	keep, note, err := c.converge(bg, m.log, convergeIn{src: m.srcConn, dst: m.dstConn, uuid: m.info.UUID, committed: true, switched: true,
		record: c.journalDecision(bg, id)})
	if err != nil || keep != "destination" {
		if err == nil {
			err = fmt.Errorf("libvirt reported success but the VM ended on the %s: %s", keep, note)
		}
		return m.fail(bg, err)
	}
	if err := c.Journal.EnterStage(bg, id, journal.StageCommitment, c.now(), nil); err != nil {
		m.log.WithError(err).Error("journal")
	}
	m.log.WithFields(logrus.Fields{"stage": journal.StageCommitment.String(), "downtime_ms": js.Downtime.Milliseconds()}).Info("migration committed")
	m.progress(Progress{Stage: journal.StageCommitment, Elapsed: c.now().Sub(w.start), Percent: 100, Message: "committed: the destination is primary"})

	// Stage 5: activation.
	c.emit(bg, m, "completed", js.Downtime+w.pausedFor(), w.resumes.detail())
	m.awaitSwitchover(bg, true, pausedAt)
	act := m.payload(hooks.Activation)
	act.DowntimeMS, act.Postcopy = js.Downtime.Milliseconds(), m.res.Live.Postcopy
	m.fire(bg, act)
	_ = c.Journal.Release(bg, id)
	m.res.State = journal.StateCompleted
	m.finished()
	m.res.Live.DowntimeMS, m.res.Live.MemoryBytes = m.res.Live.Downtime.Milliseconds(), m.info.MemoryBytes
	notes := w.resumeNotes()
	if len(m.res.HookErrors) > 0 {
		notes = strings.TrimPrefix(notes+"; "+fmt.Sprintf("hook errors: %v", m.res.HookErrors), "; ")
	}
	if err := c.Journal.EnterStage(bg, id, journal.StageActivation, m.res.FinishedAt, map[string]any{"notes": notes}); err != nil {
		m.log.WithError(err).Error("journal")
	}
	if err := c.Journal.Finish(bg, id, journal.StateCompleted, "", nil); err != nil {
		m.log.WithError(err).Error("journal")
	}
	m.progress(Progress{Stage: journal.StageActivation, Elapsed: m.res.Total(), Percent: 100, Message: "activated on " + m.dst.Name})
	return m.res, nil
}

// rollback makes the source copy primary again after a failed or cancelled
// migration: resume it if paused, remove any half-made destination copy,
// release the reservation and journal rolled_back.
func (m *move) rollback(ctx context.Context, cause error, last virt.JobStats) (*Result, error) {
	c := m.c
	m.log.WithError(cause).Info("migration failed, rolling back")
	m.res.Live.DataSent, m.res.Live.Iterations = last.DataProcessed, last.Iteration
	switched := m.watch != nil && !m.watch.stopAt.IsZero()
	keep, note, err := c.converge(ctx, m.log, convergeIn{src: m.srcConn, dst: m.dstConn, uuid: m.info.UUID, switched: switched,
		record: c.journalDecision(ctx, m.rec.ID)})
	if err != nil || keep == "" {
		if err == nil {
			err = errors.New(note)
		}
		return m.fail(ctx, fmt.Errorf("%w; then rollback failed: %w", cause, err))
	}
	if keep == "destination" {
		// The copy finished despite the error (e.g. a lost confirmation):
		// the destination is primary; record that rather than undo it.
		m.log.WithError(cause).Warn("migration error reported after the destination took over; keeping it")
		m.res.State, m.res.Error = journal.StateCompleted, "completed despite: "+cause.Error()
		_ = c.Journal.EnterStage(ctx, m.rec.ID, journal.StageCommitment, c.now(), nil)
		_ = c.Journal.Release(ctx, m.rec.ID)
		c.emit(ctx, m, "completed", 0, m.res.Error)
		m.awaitSwitchover(ctx, true, c.now())
		act := m.payload(hooks.Activation)
		act.Postcopy, act.Error = m.watch != nil && m.watch.postcopy.Load(), m.res.Error
		m.fire(ctx, act)
		notes := m.res.Error + "; " + note
		if len(m.res.HookErrors) > 0 {
			notes += fmt.Sprintf("; hook errors: %v", m.res.HookErrors)
		}
		_ = c.Journal.Finish(ctx, m.rec.ID, journal.StateCompleted, "", map[string]any{"notes": notes})
		m.finished()
		return m.res, nil
	}
	_ = c.Journal.Release(ctx, m.rec.ID)
	msg := cause.Error()
	if note != "" {
		msg += "; " + note
	}
	m.res.State, m.res.Error = journal.StateRolledBack, msg
	m.finished()
	if err := c.Journal.Finish(ctx, m.rec.ID, journal.StateRolledBack, msg, map[string]any{"data_sent": int64(last.DataProcessed), "iterations": last.Iteration,
		"policy": policyJSON(m.res.Live.Plan, m.res.Live.PolicyActions, false)}); err != nil {
		m.log.WithError(err).Error("journal")
	}
	c.emit(ctx, m, "rolled_back", 0, msg)
	m.awaitSwitchover(ctx, false, time.Time{})
	rb := m.payload(hooks.Rollback)
	rb.Stage, rb.Error = journal.StagePreCopy.String(), msg
	if m.watch != nil && !m.watch.stopAt.IsZero() {
		rb.Stage = journal.StageStopAndCopy.String()
	}
	m.fire(ctx, rb)
	if len(m.res.HookErrors) > 0 {
		_ = c.Journal.Update(ctx, m.rec.ID, map[string]any{"notes": fmt.Sprintf("hook errors: %v", m.res.HookErrors)})
	}
	return m.res, fmt.Errorf("%w: %s is running on %s: %w", ErrRolledBack, m.info.Name, m.src.Name, cause)
}

// fail leaves the row for `ferry recover`: ferry could not make the outcome consistent.
func (m *move) fail(ctx context.Context, err error) (*Result, error) {
	m.log.WithError(err).Error("migration needs recovery")
	m.res.State, m.res.Error = journal.StateFailed, err.Error()
	m.finished()
	_ = m.c.Journal.Update(ctx, m.rec.ID, map[string]any{"state": journal.StateFailed, "error": err.Error()})
	m.c.emit(ctx, m, "failed", 0, err.Error())
	m.awaitSwitchover(ctx, false, time.Time{})
	return m.res, fmt.Errorf("%w (ferry recover will finish it): %w", ErrNeedsRecovery, err)
}

// convergeIn is what converge decides from besides the hosts' answers.
type convergeIn struct {
	src, dst virt.Host // nil: that host could not be reached
	uuid     string
	// committed: the journal reached commitment (the destination is primary).
	committed bool
	// switched: the source was paused for the switchover (stop-and-copy), so
	// the destination may have started the guest (libvirt's finish step).
	switched bool
	// prefer is an operator's override ("source" or "destination") used only
	// when no safe decision can be made automatically.
	prefer string
	// record journals the decision before any of its actions runs; when it
	// fails nothing is done (a destructive step needs its journal row first).
	record func(Decision) error
}

// converge looks at both hosts and makes exactly one copy of the VM run.
// keep is "" when it could not decide (note says why).
func (c *Controller) converge(ctx context.Context, log *logrus.Entry, in convergeIn) (keep, note string, err error) {
	var so, do Observed
	var sdom, ddom virt.Domain
	var srcErr, dstErr error
	if in.src == nil {
		srcErr = errors.New("not reachable")
	} else {
		so, sdom, srcErr = observe(in.src, in.uuid)
	}
	if in.dst == nil {
		dstErr = errors.New("not reachable")
	} else {
		do, ddom, dstErr = observe(in.dst, in.uuid)
	}
	var d Decision
	switch {
	case srcErr == nil && dstErr == nil:
		d = decide(so, do, in.committed)
	case srcErr == nil && dstErr != nil && canDecideWithoutDest(so, in):
		// Before the switchover a live, non-post-copy source is the only copy
		// that can have run: the destination's incoming QEMU stays paused
		// until libvirt finishes the migration, and libvirt discards it when
		// it reconnects.
		d = decide(so, Observed{}, false)
		d.Note = strings.TrimPrefix(d.Note+"; destination unreachable, not verified: its incoming copy never ran and libvirt discards it when the host is back", "; ")
	}
	if d.Keep == "" && in.prefer != "" {
		var pd Decision
		pd, err = preferDecision(in.prefer, so, do, srcErr == nil, dstErr == nil)
		if err != nil {
			return "", d.Note, err
		}
		pd.Note = strings.TrimPrefix(d.Note+"; "+pd.Note, "; ")
		d = pd
	}
	if d.Keep == "" {
		switch {
		case srcErr != nil:
			return "", "", fmt.Errorf("%w: source: %w", ErrUnreachable, srcErr)
		case dstErr != nil:
			why := "destination"
			if so.live() && (so.State == virt.StatePaused || in.switched) {
				why = "destination (the source was paused for the switchover, so the destination may already run the guest: the source is left as it is)"
			}
			return "", "", fmt.Errorf("%w: %s: %w", ErrUnreachable, why, dstErr)
		}
		return "", d.Note, nil
	}
	log.WithFields(logrus.Fields{"source_state": so.String(), "destination_state": do.String(), "keep": d.Keep, "actions": d.Actions}).Info("converging")
	if in.record != nil && len(d.Actions) > 0 {
		if err := in.record(d); err != nil {
			return "", d.Note, fmt.Errorf("not acting (%v) before the journal records it: %w", d.Actions, err)
		}
	}
	if err := apply(d, sdom, ddom); err != nil {
		return "", d.Note, err
	}
	return d.Keep, d.Note, nil
}

// canDecideWithoutDest: only a source that runs and never paused for the
// switchover proves the destination never ran the guest.
func canDecideWithoutDest(so Observed, in convergeIn) bool {
	return !in.committed && !in.switched && so.live() && so.State != virt.StatePaused && !postcopyReason(so.Reason)
}

// journalDecision is convergeIn.record for a journal row: the row says what
// is about to be done before it is done.
func (c *Controller) journalDecision(ctx context.Context, id string) func(Decision) error {
	return func(d Decision) error {
		acts := make([]string, len(d.Actions))
		for i, a := range d.Actions {
			acts[i] = string(a)
		}
		return c.Journal.Update(ctx, id, map[string]any{"notes": fmt.Sprintf("converging: keep the %s copy (%s)", d.Keep, strings.Join(acts, ", "))})
	}
}

func (c *Controller) emit(ctx context.Context, m *move, kind string, downtime time.Duration, detail string) {
	if c.Events == nil {
		return
	}
	ev := MigrationEvent{Kind: kind, MigrationID: m.rec.ID, VM: m.info.Name, VMUUID: m.info.UUID,
		Source: m.src.Name, Dest: m.dst.Name, At: c.now(), Downtime: downtime, Detail: detail}
	if w := m.watch; w != nil {
		ev.Postcopy = w.postcopy.Load()
		// The SLA log charges the pause as ending at the completed event:
		// date it at the switchover's end, not at commitment ~2 s later.
		if kind == "completed" && !w.stopAt.IsZero() && downtime > 0 {
			ev.At = w.stopAt.Add(downtime)
		}
	}
	if err := c.Events.MigrationEvent(ctx, ev); err != nil {
		m.log.WithError(err).Warn("SLA event not recorded")
	}
}

// policyJSON is what the journal keeps of the pre-copy plan and decisions.
func policyJSON(plan *PlanInfo, acts []precopy.Action, postcopy bool) string {
	if plan == nil {
		return ""
	}
	b, _ := json.Marshal(map[string]any{
		"strategy": plan.Strategy, "reason": plan.Reason,
		"dirty_bytes_per_sec": plan.Inputs.DirtyBytesPerSec, "bandwidth_bytes_per_sec": plan.Inputs.BandwidthBytesPerSec,
		"actions": acts, "postcopy": postcopy,
	})
	return string(b)
}
