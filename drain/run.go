package drain

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/orchestrator"
	"github.com/ferryvm/ferry/placement"
	"github.com/ferryvm/ferry/virt"
)

// backoffFor is the wait before attempt n+1 after n failed attempts.
func backoffFor(base time.Duration, failures int) time.Duration {
	d := base
	for i := 1; i < failures && d < 5*time.Minute; i++ {
		d *= 2
	}
	return d
}

// What a drain does after a move ended.
type outcome int

const (
	outMoved   outcome = iota
	outRetry           // failed; try again after a backoff if attempts are left
	outRequeue         // lost a race for a slot or memory: try again, not an attempt
	outFail            // will not succeed by retrying (refused, or needs recover)
)

// outcomeOf classifies a move's error by its kind (errors.Is).
func outcomeOf(err error) outcome {
	switch {
	case err == nil:
		return outMoved
	case errors.Is(err, orchestrator.ErrLimit), errors.Is(err, orchestrator.ErrInsufficientMemory), errors.Is(err, orchestrator.ErrInsufficientStorage):
		return outRequeue
	case errors.Is(err, orchestrator.ErrNeedsRecovery):
		return outFail
	case errors.Is(err, orchestrator.ErrBusy), errors.Is(err, orchestrator.ErrUnreachable):
		return outRetry
	case errors.Is(err, orchestrator.ErrRefused), errors.Is(err, journal.ErrDatabase):
		return outFail
	}
	return outRetry // rolled back or an unexpected error: the VM runs on the source
}

type moveOutcome struct {
	idx      int
	err      error
	downtime time.Duration
	sent     uint64
}

// loop starts moves while the limits allow, until every VM is settled or
// the drain is cancelled and the moves in flight have ended.
func (d *run) loop(ctx context.Context) {
	moveCtx := d.req.Abort
	if moveCtx == nil {
		moveCtx = context.WithoutCancel(ctx)
	}
	bg := context.WithoutCancel(ctx)
	t := time.NewTicker(tick)
	defer t.Stop()
	ctxDone := ctx.Done()
	for {
		if !d.cancelled {
			if ctx.Err() != nil {
				d.cancel("interrupted")
			} else if c, err := d.c.Journal.DrainCancelRequested(bg, d.rep.ID); err == nil && c {
				d.cancel("cancel requested")
			}
		}
		if !d.cancelled {
			d.schedule(bg, moveCtx)
		}
		if d.running == 0 && (d.cancelled || !d.work()) {
			return
		}
		select {
		case o := <-d.done:
			d.running--
			d.finish(bg, o)
		case <-t.C:
		case <-ctxDone:
			ctxDone = nil
		}
	}
}

// work reports whether any VM still waits for a move.
func (d *run) work() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v := range d.rep.VMs {
		if v.State == VMPending || v.State == VMWaiting {
			return true
		}
	}
	return false
}

// cancel stops new moves; VMs not started are marked so.
func (d *run) cancel(why string) {
	d.cancelled = true
	d.log.WithField("reason", why).Info("drain cancelled: no new moves; moves in flight finish")
	d.mu.Lock()
	for i := range d.rep.VMs {
		v := &d.rep.VMs[i]
		if v.State == VMPending || v.State == VMWaiting {
			v.State, v.Reason = VMNotStarted, "drain "+why+" before its turn"
		}
	}
	d.rep.Cancel = true
	d.mu.Unlock()
	d.changed(context.Background(), true)
}

// anyTargetFree reports whether some target may take a move now; when
// none can, placing every waiting VM (several calls per host each) would
// only learn that again, every tick.
func (d *run) anyTargetFree(ctx context.Context) bool {
	for _, h := range d.targets {
		key, ok := d.keys[h.Name]
		if !ok {
			return true // not seen yet
		}
		in, _, err := d.c.Journal.InFlight(ctx, key)
		if err != nil || max(in, d.inflightTo[h.Name]) < d.req.MaxPerTarget {
			return true
		}
	}
	return false
}

// schedule starts moves in order while the drain has room.
func (d *run) schedule(ctx, moveCtx context.Context) {
	if d.running >= d.req.Parallel || !d.anyTargetFree(ctx) {
		return
	}
	now := d.c.Now()
	for i := range d.rep.VMs {
		if d.running >= d.req.Parallel {
			return
		}
		d.mu.Lock()
		v := d.rep.VMs[i]
		ready := (v.State == VMPending || v.State == VMWaiting) && !now.Before(d.nextTry[i])
		d.mu.Unlock()
		if !ready {
			continue
		}
		p, err := d.place(ctx, i, nil)
		d.mu.Lock()
		d.placed(moveCtx, i, p, err, now)
		d.mu.Unlock()
		d.changed(ctx, true)
	}
}

// placed acts on VM i's placement: start its move, wait, or give up; d.mu is held.
func (d *run) placed(moveCtx context.Context, i int, p placement.Placement, err error, now time.Time) {
	vm := &d.rep.VMs[i]
	switch {
	case errors.Is(err, virt.ErrNotFound):
		// Moved or undefined by someone else meanwhile: nothing to do.
		vm.State, vm.Reason, vm.FinishedAt = VMSkipped, "no longer on "+d.src.Name+" (moved or undefined meanwhile)", now
	case err != nil:
		// The source stopped answering, say: try again later, not forever.
		d.requeues[i]++
		if d.requeues[i] > maxRequeues {
			vm.State, vm.Error, vm.FinishedAt = VMFailed, "placement: "+err.Error(), now
			d.errs[i] = err
			return
		}
		vm.State, vm.Reason = VMWaiting, "placement: "+err.Error()
		d.nextTry[i] = now.Add(d.req.Backoff)
	case p.Host == "" && p.OnlyBusy():
		vm.State, vm.Reason = VMWaiting, "waiting for a free destination: "+p.Reason
	case p.Host == "":
		vm.State, vm.Error, vm.FinishedAt = VMFailed, p.Reason, now
		d.errs[i] = orchestrator.PlacementRefusal(&p)
		d.log.WithField("vm", vm.VM).Warn(p.Reason)
	default:
		d.start(moveCtx, i, p)
	}
}

// start launches VM i's move to the placement's host; d.mu is held.
func (d *run) start(moveCtx context.Context, i int, p placement.Placement) {
	v := &d.rep.VMs[i]
	id := uuid.NewString()
	v.State, v.Dest, v.Reason, v.Error = VMMoving, p.Host, p.Reason, ""
	v.Stage, v.Percent = journal.StageName(v.Kind, journal.StagePreMigration), 0
	v.Attempts++
	v.Migrations = append(v.Migrations, id)
	if v.StartedAt.IsZero() {
		v.StartedAt = d.c.Now()
	}
	d.inflightTo[p.Host]++
	d.running++
	log := d.log.WithFields(logrus.Fields{"vm": v.VM, "dst": p.Host, "migration": id, "attempt": v.Attempts})
	log.Info("move started: " + p.Reason)
	r := d.req.moveTemplate(v.Kind)
	r.ID, r.VM, r.From, r.To, r.WaitForSlot = id, v.VM, d.src.Name, p.Host, true
	r.Limits = inventory.Limits{MaxIncoming: d.req.MaxPerTarget, MaxOutgoing: d.req.Parallel}
	r.Progress = func(p orchestrator.Progress) { d.progress(i, p.StageName, p.Percent, p.SentBytes()) }
	go func() {
		o := moveOutcome{idx: i}
		res, err := d.c.Migrate(moveCtx, r)
		o.err = err
		if res != nil {
			o.sent = res.SentBytes()
			if res.Live != nil {
				o.downtime = res.Live.Downtime
			}
		}
		d.done <- o
	}()
}

// progress records a move's stage and bytes. A new stage is saved at once
// (other processes follow stages), figures at most once a second.
func (d *run) progress(i int, stage string, pct float64, sent uint64) {
	d.mu.Lock()
	v := &d.rep.VMs[i]
	newStage := v.Stage != stage
	v.Stage, v.Percent = stage, pct
	if sent > 0 { // stage messages carry no byte count
		v.SentBytes = sent
	}
	d.mu.Unlock()
	d.changed(context.Background(), newStage)
}

// finish settles a move's outcome.
func (d *run) finish(ctx context.Context, o moveOutcome) {
	now := d.c.Now()
	d.mu.Lock()
	v := &d.rep.VMs[o.idx]
	d.inflightTo[v.Dest]--
	log := d.log.WithFields(logrus.Fields{"vm": v.VM, "dst": v.Dest, "attempt": v.Attempts})
	v.SentBytes = o.sent
	switch outcomeOf(o.err) {
	case outMoved:
		v.State, v.Stage, v.Percent, v.DowntimeMS, v.FinishedAt = VMMoved, journal.StageName(v.Kind, journal.StageActivation), 100, o.downtime.Milliseconds(), now
		v.Reason = ""
		log.Info("moved")
	case outRequeue:
		v.Attempts--
		d.requeues[o.idx]++
		if d.requeues[o.idx] > maxRequeues {
			v.State, v.Error, v.FinishedAt, d.errs[o.idx] = VMFailed, o.err.Error(), now, o.err
			break
		}
		v.State, v.Reason = VMWaiting, "will retry: "+o.err.Error()
		d.nextTry[o.idx] = now.Add(tick)
		log.WithError(o.err).Info("move refused for now; requeued")
	case outRetry:
		if v.Attempts <= d.req.Retries && !d.cancelled {
			wait := backoffFor(d.req.Backoff, v.Attempts)
			v.State, v.Error = VMWaiting, o.err.Error()
			v.Reason = fmt.Sprintf("attempt %d failed; retrying in %s", v.Attempts, wait)
			d.nextTry[o.idx] = now.Add(wait)
			log.WithError(o.err).Warn("move failed; will retry")
			break
		}
		fallthrough
	default:
		v.State, v.Error, v.FinishedAt, d.errs[o.idx] = VMFailed, o.err.Error(), now, o.err
		v.NeedsRecovery = errors.Is(o.err, orchestrator.ErrNeedsRecovery)
		log.WithError(o.err).Warn("move failed")
	}
	d.mu.Unlock()
	d.changed(ctx, true)
}
