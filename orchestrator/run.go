package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/precopy"
	"github.com/ferryvm/ferry/virt"
)

// run carries out stages 2 to 5 once the reservation is held.
func (m *migration) run(ctx context.Context, plan *PlanInfo) (*Result, error) {
	c, req, id := m.c, m.req, m.rec.ID
	// Journal writes and cleanup must happen even after the caller cancels.
	bg := context.WithoutCancel(ctx)
	c.emit(bg, m, "planned", 0, "")

	evctx, stopEvents := context.WithCancel(bg)
	defer stopEvents()
	events, err := m.srcConn.Subscribe(evctx)
	if err != nil {
		m.log.WithError(err).Warn("no lifecycle events from the source; stop-and-copy time will be estimated")
	}
	job := plan.Job
	// libvirt can enable auto-converge only when the job starts, so every job
	// starts with it; unless the plan throttles from the start it stays
	// dormant until the policy's auto-converge rung wakes it.
	dormant := !job.AutoConverge
	armThrottle := func() bool {
		return !dormant || m.dom.SetThrottle(job.ThrottleInitialPct, job.ThrottleIncrementPct, throttleTriggerDormantPct) == nil
	}
	throttleArmed := armThrottle()
	limit := time.Duration(job.DowntimeMS) * time.Millisecond
	// libvirt keeps the limit for the next migration job of this domain.
	downtimeSet := m.dom.SetMaxDowntime(limit) == nil

	mctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var postcopyActive atomic.Bool
	if req.Timeout > 0 {
		// A hard wall, except in post-copy: the destination then holds the
		// only current state and the job must finish.
		t := time.AfterFunc(req.Timeout, func() {
			if !postcopyActive.Load() {
				cancel(fmt.Errorf("timed out after %s", req.Timeout))
			}
		})
		defer t.Stop()
	}
	start := c.now()
	st := req.policy().Start(plan.Plan, start)
	lastReason := ""
	if err := c.Journal.EnterStage(bg, id, StagePreCopy, start, nil); err != nil {
		m.log.WithError(err).Error("journal")
	}
	m.log.WithField("stage", StagePreCopy.String()).Info("migration started")
	m.progress(Progress{Stage: StagePreCopy, Message: "pre-copy started"})

	done := make(chan error, 1)
	go func() {
		done <- m.dom.Migrate(mctx, virt.MigrateParams{
			DestURI: m.dst.URI, DataURI: m.dst.DataURI(),
			BandwidthMiBps: uint64(job.BandwidthBytesPerSec >> 20), CopyStorage: req.CopyStorage,
			Postcopy: job.Postcopy, AutoConverge: true,
			AutoConvergeInitial: job.ThrottleInitialPct, AutoConvergeIncrement: job.ThrottleIncrementPct,
		})
	}()

	ticker := time.NewTicker(sampleIntervalMS * time.Millisecond)
	defer ticker.Stop()
	var (
		last         virt.JobStats
		completedJob *virt.JobStats
		stopAt       time.Time
		lastJournal  time.Time
		migErr       error
	)
	sample := func() {
		js, err := m.dom.JobStats(false)
		if err != nil || (js.Type != virt.JobBounded && js.Type != virt.JobUnbounded) {
			return
		}
		if !downtimeSet {
			downtimeSet = m.dom.SetMaxDowntime(limit) == nil
		}
		if !throttleArmed { // libvirt may reset parameters as the job starts
			throttleArmed = armThrottle()
		}
		last = js
		now := c.now()
		if !st.Done() {
			var acts []precopy.Action
			st, acts = precopy.Step(st, sampleOf(js, now, !stopAt.IsZero(), postcopyActive.Load()), now)
			for _, a := range acts {
				err := m.applyAction(a, cancel)
				if err == nil && a.Kind == precopy.ActStartPostcopy {
					postcopyActive.Store(true) // from here the destination holds the state: no abort
				}
				l := m.log.WithFields(logrus.Fields{"stage": StagePreCopy.String(), "action": a.Kind})
				if err != nil {
					st = st.Failed(a)
					a.Reason = fmt.Sprintf("could not %s (%v); %s", a.Kind, err, a.Reason)
					l.WithError(err).Warn("policy action failed")
				} else {
					l.Info(a.Reason)
				}
				lastReason = a.Reason
				m.res.PolicyActions = append(m.res.PolicyActions, a)
				m.progress(Progress{Stage: StagePreCopy, Elapsed: now.Sub(start), Message: "policy: " + a.Reason})
			}
		}
		stage := StagePreCopy
		if !stopAt.IsZero() {
			stage = StageStopAndCopy
		}
		p := Progress{Stage: stage, Elapsed: c.now().Sub(start), Iteration: js.Iteration,
			TotalBytes: js.DataTotal, ProcessedBytes: js.DataProcessed, RemainingBytes: js.DataRemaining,
			DirtyBytesPerSec: js.DirtyBytesPerSec(), BandwidthBytesPerSec: js.MemBytesPerSec}
		if js.DataTotal > 0 {
			p.Percent = 100 * float64(js.DataTotal-js.DataRemaining) / float64(js.DataTotal)
		}
		if js.DowntimeSet {
			p.ExpectedDowntime = js.Downtime
		}
		p.DowntimeLimitMS, p.ThrottlePct, p.Strategy = st.DowntimeMS, js.Throttle, string(st.Strategy)
		p.Postcopy, p.Policy = postcopyActive.Load(), lastReason
		m.progress(p)
		if c.now().Sub(lastJournal) >= journalIntervalMS*time.Millisecond {
			lastJournal = c.now()
			_ = c.Journal.Update(bg, id, map[string]any{"data_sent": int64(js.DataProcessed), "data_total": int64(js.DataTotal), "iterations": js.Iteration})
		}
	}
loop:
	for {
		select {
		case migErr = <-done:
			break loop
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.UUID != m.info.UUID {
				continue
			}
			switch {
			case ev.Kind == virt.EventLifecycle && ev.Lifecycle == "suspended" && (ev.Detail == "migrated" || ev.Detail == "postcopy"):
				msg := "source paused: stop-and-copy"
				if ev.Detail == "postcopy" {
					postcopyActive.Store(true)
					msg = "source paused: the guest now runs on the destination (post-copy)"
				}
				if !stopAt.IsZero() {
					continue
				}
				stopAt = ev.At
				m.log.WithField("stage", StageStopAndCopy.String()).Info(msg)
				_ = c.Journal.EnterStage(bg, id, StageStopAndCopy, stopAt, nil)
				c.emit(bg, m, "switchover", 0, "")
				m.progress(Progress{Stage: StageStopAndCopy, Elapsed: c.now().Sub(start), Message: msg})
			case ev.Kind == virt.EventJobCompleted && ev.Job != nil:
				completedJob = ev.Job
			case ev.Kind == virt.EventIteration:
				sample()
			}
		case <-ticker.C:
			sample()
		}
	}
	end := c.now()
	if migErr != nil {
		return m.rollback(bg, migErr, last)
	}

	// Stage 4: commitment. QEMU and libvirt report success; confirm it on
	// both hosts before the source definition goes.
	js, err := m.dom.JobStats(true)
	if err != nil || js.Type == virt.JobNone {
		if completedJob != nil {
			js = *completedJob
		} else {
			js = last
		}
	}
	if stopAt.IsZero() {
		stopAt = end.Add(-js.Downtime)
		_ = c.Journal.EnterStage(bg, id, StageStopAndCopy, stopAt, nil)
	}
	cols := map[string]any{"data_sent": int64(js.DataProcessed), "data_total": int64(js.DataTotal), "iterations": js.Iteration,
		"policy": policyJSON(plan, m.res.PolicyActions, m.res.Postcopy)}
	if js.DowntimeSet {
		cols["downtime_ms"] = js.Downtime.Milliseconds()
	}
	m.res.Downtime, m.res.DataSent, m.res.Iterations = js.Downtime, js.DataProcessed, js.Iteration
	m.res.Postcopy = postcopyActive.Load()
	m.res.MigrationMS = end.Sub(start).Milliseconds()
	if err := c.Journal.Update(bg, id, cols); err != nil {
		m.log.WithError(err).Error("journal")
	}
	keep, note, err := c.converge(bg, m.log, m.srcConn, m.dstConn, m.info.UUID, true)
	if err != nil || keep != "destination" {
		if err == nil {
			err = fmt.Errorf("libvirt reported success but the VM ended on the %s: %s", keep, note)
		}
		return m.fail(bg, err)
	}
	if err := c.Journal.EnterStage(bg, id, StageCommitment, c.now(), nil); err != nil {
		m.log.WithError(err).Error("journal")
	}
	m.log.WithFields(logrus.Fields{"stage": StageCommitment.String(), "downtime_ms": js.Downtime.Milliseconds()}).Info("migration committed")
	m.progress(Progress{Stage: StageCommitment, Elapsed: c.now().Sub(start), Percent: 100, Message: "committed: the destination is primary"})

	// Stage 5: activation.
	c.emit(bg, m, "completed", js.Downtime, "")
	m.res.HookErrors = c.runHooks(bg, m.log, "activation", m.hookPayload("activation", js.Downtime, ""))
	_ = c.Journal.Release(bg, id)
	m.res.State, m.res.Finished = StateCompleted, c.now()
	m.res.Total = m.res.Finished.Sub(m.res.Started)
	m.res.TotalMS, m.res.DowntimeMS, m.res.MemoryBytes = m.res.Total.Milliseconds(), m.res.Downtime.Milliseconds(), m.info.MemoryBytes
	notes := ""
	if len(m.res.HookErrors) > 0 {
		notes = fmt.Sprintf("hook errors: %v", m.res.HookErrors)
	}
	if err := c.Journal.EnterStage(bg, id, StageActivation, m.res.Finished, map[string]any{"notes": notes}); err != nil {
		m.log.WithError(err).Error("journal")
	}
	if err := c.Journal.Finish(bg, id, StateCompleted, "", nil); err != nil {
		m.log.WithError(err).Error("journal")
	}
	m.progress(Progress{Stage: StageActivation, Elapsed: m.res.Total, Percent: 100, Message: "activated on " + m.dst.Name})
	return m.res, nil
}

// rollback makes the source copy primary again after a failed or cancelled
// migration: resume it if paused, remove any half-made destination copy,
// release the reservation and journal rolled_back.
func (m *migration) rollback(ctx context.Context, cause error, last virt.JobStats) (*Result, error) {
	c := m.c
	m.log.WithError(cause).Info("migration failed, rolling back")
	m.res.DataSent, m.res.Iterations = last.DataProcessed, last.Iteration
	keep, note, err := c.converge(ctx, m.log, m.srcConn, m.dstConn, m.info.UUID, false)
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
		m.res.State, m.res.Error = StateCompleted, "completed despite: "+cause.Error()
		_ = c.Journal.EnterStage(ctx, m.rec.ID, StageCommitment, c.now(), nil)
		_ = c.Journal.Release(ctx, m.rec.ID)
		_ = c.Journal.Finish(ctx, m.rec.ID, StateCompleted, "", map[string]any{"notes": m.res.Error + "; " + note})
		c.emit(ctx, m, "completed", 0, m.res.Error)
		m.res.Finished = c.now()
		return m.res, nil
	}
	_ = c.Journal.Release(ctx, m.rec.ID)
	msg := cause.Error()
	if note != "" {
		msg += "; " + note
	}
	m.res.State, m.res.Error, m.res.Finished = StateRolledBack, msg, c.now()
	if err := c.Journal.Finish(ctx, m.rec.ID, StateRolledBack, msg, map[string]any{"data_sent": int64(last.DataProcessed), "iterations": last.Iteration,
		"policy": policyJSON(m.res.Plan, m.res.PolicyActions, false)}); err != nil {
		m.log.WithError(err).Error("journal")
	}
	c.emit(ctx, m, "rolled_back", 0, msg)
	c.runHooks(ctx, m.log, "rollback", m.hookPayload("rollback", 0, msg))
	return m.res, fmt.Errorf("%w: %s is running on %s: %w", ErrRolledBack, m.info.Name, m.src.Name, cause)
}

// fail leaves the row for `ferry recover`: ferry could not make the outcome consistent.
func (m *migration) fail(ctx context.Context, err error) (*Result, error) {
	m.log.WithError(err).Error("migration needs recovery")
	m.res.State, m.res.Error, m.res.Finished = StateFailed, err.Error(), m.c.now()
	_ = m.c.Journal.Update(ctx, m.rec.ID, map[string]any{"state": StateFailed, "error": err.Error()})
	m.c.emit(ctx, m, "failed", 0, err.Error())
	return m.res, fmt.Errorf("%w (ferry recover will finish it): %w", ErrNeedsRecovery, err)
}

// converge looks at both hosts and makes exactly one copy of the VM run.
func (c *Controller) converge(ctx context.Context, log *logrus.Entry, src, dst virt.Host, uuid string, committed bool) (keep, note string, err error) {
	so, sdom, err := observe(src, uuid)
	if err != nil {
		return "", "", fmt.Errorf("%w: source: %w", ErrUnreachable, err)
	}
	do, ddom, err := observe(dst, uuid)
	dstNote := ""
	if err != nil {
		// Before commitment a live, non-post-copy source is the only copy
		// that can have run: the destination's incoming QEMU stays paused
		// until libvirt finishes the migration, and libvirt discards it when
		// it reconnects. Anything else needs the destination's word.
		if committed || !so.live() || postcopyReason(so.Reason) {
			return "", "", fmt.Errorf("%w: destination: %w", ErrUnreachable, err)
		}
		do, ddom = Observed{}, nil
		dstNote = "destination unreachable, not verified: its incoming copy never ran and libvirt discards it when the host is back"
	}
	d := decide(so, do, committed)
	if dstNote != "" {
		d.Note = strings.TrimPrefix(d.Note+"; "+dstNote, "; ")
	}
	log.WithFields(logrus.Fields{"source_state": so.String(), "destination_state": do.String(), "keep": d.Keep, "actions": d.Actions}).Info("converging")
	if d.Keep == "" {
		return "", d.Note, nil
	}
	if err := apply(d, sdom, ddom); err != nil {
		return "", d.Note, err
	}
	return d.Keep, d.Note, nil
}

func (c *Controller) emit(ctx context.Context, m *migration, kind string, downtime time.Duration, detail string) {
	if c.Events == nil {
		return
	}
	ev := MigrationEvent{Kind: kind, MigrationID: m.rec.ID, VM: m.info.Name, VMUUID: m.info.UUID,
		Source: m.src.Name, Dest: m.dst.Name, At: c.now(), Downtime: downtime, Detail: detail}
	if err := c.Events.MigrationEvent(ctx, ev); err != nil {
		m.log.WithError(err).Warn("SLA event not recorded")
	}
}

func (m *migration) hookPayload(event string, downtime time.Duration, errText string) HookPayload {
	return HookPayload{Event: event, MigrationID: m.rec.ID, VM: m.info.Name, VMUUID: m.info.UUID,
		Source: m.src.Name, SourceURI: m.src.URI, Destination: m.dst.Name, DestinationURI: m.dst.URI,
		DowntimeMS: downtime.Milliseconds(), Error: errText}
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
