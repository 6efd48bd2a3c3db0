package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/hooks"
	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/virt"
)

// jobWaitTimeout bounds how long recover waits for an interrupted job to
// stop after aborting it (or, in post-copy, to finish).
const jobWaitTimeout = 120 * time.Second

// RecoverResult is what recover did with one journal row.
type RecoverResult struct {
	ID      string `json:"id"`
	VM      string `json:"vm"`
	Before  string `json:"state_before"`
	After   string `json:"state_after"`
	RunsOn  string `json:"runs_on,omitempty"`
	Skipped string `json:"skipped,omitempty"`
	// WaitingFor names what recover needs before it can decide (a host
	// that does not answer); the row and its reservation are kept.
	WaitingFor string `json:"waiting_for,omitempty"`
	Note       string `json:"note,omitempty"`
	Error      string `json:"error,omitempty"`
	// HookErrors: hooks or webhooks that failed to take the outcome.
	HookErrors []string `json:"hook_errors,omitempty"`
}

// RecoverOptions select what recover touches.
type RecoverOptions struct {
	ID string // only this migration
	// Force also takes rows whose owning ferry process still runs.
	Force bool
	// Prefer ("source" or "destination") is the operator's decision for
	// rows ferry cannot decide safely itself (a host down, a split
	// post-copy). It is ignored where ferry can decide.
	Prefer string
}

// Recover finishes unfinished journal rows (a crashed or killed ferry): it
// asks both hosts where the VM runs, stops any migration job left behind,
// and converges to exactly one running copy, like Ganeti's migrate --cleanup.
func (c *Controller) Recover(ctx context.Context, opt RecoverOptions) ([]RecoverResult, error) {
	switch opt.Prefer {
	case "", "source", "destination":
	default:
		return nil, refuse(ErrInvalidRequest, nil, "--prefer %q: give source or destination", opt.Prefer)
	}
	var rows []*journal.Record
	if opt.ID != "" {
		r, err := c.Journal.Get(ctx, opt.ID)
		if err != nil {
			return nil, err
		}
		rows = []*journal.Record{r}
	} else {
		var err error
		if rows, err = c.Journal.Unfinished(ctx); err != nil {
			return nil, err
		}
	}
	var out []RecoverResult
	var errs []error
	for _, r := range rows {
		res := RecoverResult{ID: r.ID, VM: r.VM, Before: r.State, After: r.State}
		switch {
		case r.State != journal.StateRunning && r.State != journal.StateFailed:
			res.Skipped = "already finished (" + r.State + ")"
		case !opt.Force && r.State == journal.StateRunning && c.Journal.OwnerAlive(ctx, r.Owner):
			res.Skipped = "its owner (" + journal.DescribeOwner(r.Owner) + ") is still running; use --force to take it over"
		default:
			if err := c.recoverOne(ctx, r, opt.Prefer, &res); err != nil {
				res.Error = err.Error()
				errs = append(errs, fmt.Errorf("%s (%s): %w", r.ID, r.VM, err))
			}
		}
		out = append(out, res)
	}
	return out, errors.Join(errs...)
}

func (c *Controller) recoverOne(ctx context.Context, r *journal.Record, prefer string, res *RecoverResult) error {
	if r.Kind == KindCold {
		return c.recoverCold(ctx, r, res)
	}
	if r.VMUUID == "" || r.Stage < journal.StageReservation || r.DestURI == "" {
		// Nothing was started on any host before the reservation stage.
		if err := c.Journal.Release(ctx, r.ID); err != nil {
			return err
		}
		res.After = journal.StateRefused
		return c.Journal.Finish(ctx, r.ID, journal.StateRefused, "interrupted during pre-flight checks; nothing was changed", map[string]any{"notes": "recovered"})
	}
	return c.recoverLive(ctx, r, prefer, res)
}

// recoverLive settles any job left behind and converges a live move to one
// running copy.
func (c *Controller) recoverLive(ctx context.Context, r *journal.Record, prefer string, res *RecoverResult) error {
	log := c.log().WithFields(logrus.Fields{"migration": r.ID, "vm": r.VM, "src": r.Source, "dst": r.Dest})
	// A host that does not answer leaves the decision open: the row and its
	// reservation stay, and only the operator's --prefer decides without it.
	var down []string
	src, err := c.dial(ctx, inventory.Host{Name: r.Source, URI: r.SourceURI})
	if err != nil {
		src, down = nil, append(down, fmt.Sprintf("source %s (%s)", r.Source, r.SourceURI))
	} else {
		defer src.Close()
	}
	dst, err := c.dial(ctx, inventory.Host{Name: r.Dest, URI: r.DestURI})
	if err != nil {
		dst, down = nil, append(down, fmt.Sprintf("destination %s (%s)", r.Dest, r.DestURI))
	} else {
		defer dst.Close()
	}
	// A paused post-copy is resumed, not waited for (postcopy.go).
	var pcNote string
	if src != nil && dst != nil {
		if pcNote, err = c.recoverPostcopy(ctx, log, src, dst, r); err != nil {
			return err
		}
	}
	if src != nil {
		if err := settleJob(ctx, log, src, r.VMUUID); err != nil {
			return err
		}
		c.recordCompletedJob(ctx, src, r)
	}
	keep, note, err := c.converge(ctx, log, convergeIn{src: src, dst: dst, uuid: r.VMUUID, committed: r.Stage >= journal.StageCommitment,
		switched: r.Stage >= journal.StageStopAndCopy, prefer: prefer, record: c.journalDecision(ctx, r.ID)})
	if err != nil && errors.Is(err, ErrUnreachable) && len(down) > 0 {
		return c.waitFor(ctx, r, down, res)
	}
	if err != nil {
		return err
	}
	if pcNote != "" {
		note = strings.TrimSuffix(strings.TrimPrefix(pcNote+"; "+note, "; "), "; ")
	}
	res.Note = note
	return c.settleRecovered(ctx, log, r, keep, note, res)
}

// waitFor keeps a row whose decision needs a host that does not answer.
func (c *Controller) waitFor(ctx context.Context, r *journal.Record, down []string, res *RecoverResult) error {
	res.WaitingFor = strings.Join(down, " and ") + " to answer"
	hint := fmt.Sprintf("run `ferry recover %s` again when it is back, or decide without it with `ferry recover %s --prefer source|destination` (see --help for the risk)", short(r.ID), short(r.ID))
	res.Note = hint
	if err := c.Journal.Update(ctx, r.ID, map[string]any{"notes": "recover: waiting for " + res.WaitingFor}); err != nil {
		return err
	}
	return fmt.Errorf("%w: cannot decide where %s runs without the %s; %s", ErrNeedsRecovery, r.VM, strings.Join(down, " and "), hint)
}

// settleRecovered journals where convergence left the VM and tells the
// hooks, which the interrupted run could not.
func (c *Controller) settleRecovered(ctx context.Context, log *logrus.Entry, r *journal.Record, keep, note string, res *RecoverResult) error {
	switch keep {
	case "destination":
		res.After, res.RunsOn = journal.StateCompleted, r.Dest
		if r.Stage < journal.StageCommitment {
			if err := c.Journal.EnterStage(ctx, r.ID, journal.StageCommitment, c.now(), nil); err != nil {
				return err
			}
		}
		if err := c.Journal.EnterStage(ctx, r.ID, journal.StageActivation, c.now(), nil); err != nil {
			return err
		}
	case "source":
		res.After, res.RunsOn = journal.StateRolledBack, r.Source
	default:
		res.After = journal.StateFailed
		if err := c.Journal.Update(ctx, r.ID, map[string]any{"state": journal.StateFailed, "notes": "recover: " + note}); err != nil {
			return err
		}
		return fmt.Errorf("%w: %s", ErrNeedsRecovery, note)
	}
	if err := c.Journal.Release(ctx, r.ID); err != nil {
		return err
	}
	notes := "recovered by `ferry recover`: runs on " + res.RunsOn
	if note != "" {
		notes += "; " + note
	}
	errText := r.Error
	if errText == "" && keep == "source" {
		errText = "interrupted (ferry stopped during the migration); rolled back by recover"
	}
	event := hooks.Rollback
	if keep == "destination" {
		event = hooks.Activation
	}
	if res.HookErrors = c.recoverHooks(ctx, log, r, event, errText); len(res.HookErrors) > 0 {
		notes += fmt.Sprintf("; hook errors: %v", res.HookErrors)
	}
	log.WithField("runs_on", res.RunsOn).Info("recovered")
	return c.Journal.Finish(ctx, r.ID, res.After, errText, map[string]any{"notes": notes})
}

// settleJob makes sure no migration job is still running on the source: an
// interrupted pre-copy is aborted (the source stays primary); a post-copy
// cannot be aborted and is waited for.
func settleJob(ctx context.Context, log *logrus.Entry, h virt.Host, uuid string) error {
	d, err := h.LookupDomain(uuid)
	if errors.Is(err, virt.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	deadline := time.Now().Add(jobWaitTimeout)
	aborted := false
	for {
		js, err := d.JobStats(false)
		if err != nil || (js.Type != virt.JobBounded && js.Type != virt.JobUnbounded) {
			return nil
		}
		info, _ := d.Info()
		if !aborted && !postcopyReason(info.Reason) {
			log.Info("aborting the migration job left behind")
			if err := d.AbortJob(); err != nil && !errors.Is(err, virt.ErrInvalidState) {
				log.WithError(err).Warn("abort job")
			}
			aborted = true
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the migration job on %s did not end within %s", h.URI(), jobWaitTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(sampleIntervalMS * time.Millisecond):
		}
	}
}

// recordCompletedJob keeps libvirt's figures of a job that finished while
// ferry was gone (downtime, data, iterations): they are read from the source
// domain, so before convergence undefines it.
func (c *Controller) recordCompletedJob(ctx context.Context, src virt.Host, r *journal.Record) {
	d, err := src.LookupDomain(r.VMUUID)
	if err != nil {
		return
	}
	js, err := d.JobStats(true)
	if err != nil || js.Type != virt.JobCompleted || !js.DowntimeSet {
		return
	}
	cols := map[string]any{"downtime_ms": js.Downtime.Milliseconds(), "data_sent": int64(js.DataProcessed),
		"data_total": int64(js.DataTotal), "iterations": js.Iteration}
	if r.StageTimes[journal.StagePreCopy] != nil && r.StageTimes[journal.StageStopAndCopy] == nil {
		cols[journal.StageColumn(journal.StageStopAndCopy)] = r.StageTimes[journal.StagePreCopy].Add(js.Elapsed - js.Downtime)
	}
	_ = c.Journal.Update(ctx, r.ID, cols)
}
