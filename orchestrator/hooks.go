package orchestrator

import (
	"context"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/hooks"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/virt"
)

// Hooks at stage boundaries (package hooks sends them): only pre-migration
// can stop a move; afterwards a hook's failure is reported and never changes
// where the VM runs.

// hooks is the runner of this controller's events: its hooks directory
// (flag, inventory, or hooks.DefaultDir) and the inventory's webhooks.
func (c *Controller) hooks() *hooks.Runner {
	r := &hooks.Runner{Dir: c.HooksDir, Timeout: c.HookTimeout, Now: c.now}
	if c.Inventory != nil {
		if r.Dir == "" {
			r.Dir = c.Inventory.HooksDir
		}
		r.Webhooks = c.Inventory.Webhooks
	}
	return r
}

// payload is the event's document for this move, dated now.
func (m *move) payload(event string) hooks.Payload {
	stage := event
	switch event {
	case hooks.Switchover:
		stage = journal.StageStopAndCopy.String()
	case hooks.Rollback:
		stage = ""
	}
	kind := m.rec.Kind
	if kind == "" {
		kind = "live"
	}
	return hooks.Payload{Event: event, Stage: stage, Kind: kind, Timestamp: m.c.now(), MigrationID: m.rec.ID,
		VM: m.info.Name, VMUUID: m.info.UUID, Source: m.src.Name, SourceURI: virt.PeerURI(m.src.URI),
		Destination: m.dst.Name, DestinationURI: virt.PeerURI(m.dst.URI)}
}

// fire dispatches an event of this move and keeps its failures for the result.
func (m *move) fire(ctx context.Context, p hooks.Payload) {
	m.keepHookErrors(m.c.hooks().Dispatch(ctx, m.log, p))
}

func (m *move) keepHookErrors(rep hooks.Report) {
	m.res.HookErrors = append(m.res.HookErrors, rep.Errors()...)
}

// preMigrationHooks asks the hooks whether the move may go ahead: any
// executable or subscribed webhook that fails refuses it, before anything
// is reserved. Dry runs and plans notify no one.
func (m *move) preMigrationHooks(ctx context.Context) error {
	if m.req.DryRun {
		return nil
	}
	rep := m.c.hooks().Dispatch(ctx, m.log, m.payload(hooks.PreMigration))
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("cancelled while the pre-migration hooks ran: %w", context.Cause(ctx))
	}
	if len(rep.Failures) == 0 {
		if rep.Ran > 0 {
			_ = m.check("pre-migration-hooks", nil, fmt.Sprintf("%d hooks and webhooks agreed", rep.Ran))
		}
		return nil
	}
	msg := "vetoed by " + rep.Failures[0].String()
	if n := len(rep.Failures) - 1; n > 0 {
		msg += fmt.Sprintf(" (and %d more)", n)
	}
	return m.check("pre-migration-hooks", refuse(ErrVetoed, nil, "%s", msg), "")
}

// awaitSwitchover collects the switchover hooks the job watch started. At
// commitment (committed) a switchover libvirt never reported (no lifecycle
// events) is announced late, dated when the pause must have begun, so
// receivers always see reservation, switchover, activation in that order.
func (m *move) awaitSwitchover(ctx context.Context, committed bool, pausedAt time.Time) {
	w := m.watch
	if w == nil || w.hooksDone {
		return
	}
	w.hooksDone = true
	if w.switchover != nil {
		m.keepHookErrors(w.switchover.Wait())
		return
	}
	if committed {
		p := m.payload(hooks.Switchover)
		p.Timestamp, p.Postcopy = pausedAt, w.postcopy.Load()
		m.log.Info("switchover not seen in libvirt's events; announcing it at commitment")
		m.fire(ctx, p)
	}
}

// recoverHooks announces the outcome of a move that `ferry recover`
// finished (activation) or undid (rollback).
func (c *Controller) recoverHooks(ctx context.Context, log *logrus.Entry, r *journal.Record, event, errText string) []string {
	kind := r.Kind
	if kind == "" {
		kind = "live"
	}
	p := hooks.Payload{Event: event, Stage: r.Stage.String(), Kind: kind, MigrationID: r.ID, VM: r.VM, VMUUID: r.VMUUID,
		Source: r.Source, SourceURI: virt.PeerURI(r.SourceURI), Destination: r.Dest, DestinationURI: virt.PeerURI(r.DestURI), Error: errText}
	if event == hooks.Activation {
		p.Stage = journal.StageActivation.String()
		// recover may just have read libvirt's figures into the row.
		if fresh, err := c.Journal.Get(ctx, r.ID); err == nil {
			r = fresh
		}
		if r.DowntimeMS != nil {
			p.DowntimeMS = *r.DowntimeMS
		}
	}
	return c.hooks().Dispatch(ctx, log, p).Errors()
}
