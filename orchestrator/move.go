package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/inventory"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/placement"
	"github.com/ferryvm/ferry/virt"
)

// move is the state of one Migrate call, whatever its kind: the common
// pre-flight fills the first block, the kind's plan and run the rest.
type move struct {
	c                *Controller
	req              Request
	rec              *journal.Record
	log              *logrus.Entry
	res              *Result
	src, dst         inventory.Host
	srcConn, dstConn virt.Host
	srcID, dstID     virt.Identity
	dstFree          uint64 // the destination's free memory when judged
	dom              virt.Domain
	info             virt.DomainInfo
	journaled        bool

	// live
	spec  virt.DomainSpec
	watch *watch // the running job's follower, from stage 2 on
	// cold
	cold *coldState
}

// kindOps is what differs between the kinds of move.
type kindOps interface {
	// options is what the journal keeps of the request.
	options() map[string]any
	// checkSource refuses a VM in a state this kind cannot move.
	checkSource() error
	// claim makes this move the VM's one unfinished move.
	claim(ctx context.Context) error
	// beforeDestination runs once the destination is dialled, before its
	// pre-flight (a cold move removes its own interrupted definition).
	beforeDestination(ctx context.Context) error
	// needs is what the VM asks of the destination.
	needs() placement.VMNeeds
	// reserve plans the move and holds what it needs on the destination.
	reserve(ctx context.Context) error
	// run carries the move out once the reservation is held.
	run(ctx context.Context) (*Result, error)
}

func (m *move) ops() kindOps {
	if m.req.Kind == KindCold {
		return coldOps{m}
	}
	return liveOps{m}
}

// Migrate moves one VM. On refusal nothing was changed (the error wraps
// ErrRefused); on failure the VM stays where it was (ErrRolledBack) or the
// journal row is left for `ferry recover` (ErrNeedsRecovery); a failure of
// the state database wraps journal.ErrDatabase.
func (c *Controller) Migrate(ctx context.Context, req Request) (*Result, error) {
	req = req.withDefaults()
	id := req.ID
	if id == "" {
		id = uuid.NewString()
	}
	m := &move{c: c, req: req,
		res: &Result{ID: id, Kind: req.Kind, VM: req.VM, StartedAt: c.now(), DryRun: req.DryRun},
		rec: &journal.Record{ID: id, Kind: req.Kind, VM: req.VM, State: journal.StateRunning, Owner: journal.OwnerToken()},
	}
	if req.Kind == KindCold {
		m.cold = &coldState{}
		m.res.Cold = &ColdResult{PlanOnly: req.PlanOnly, KeepSource: req.Cold.KeepSource}
	} else {
		m.res.Live = &LiveResult{}
	}
	m.log = c.log().WithFields(logrus.Fields{"migration": id, "vm": req.VM, "kind": req.Kind})
	defer m.closeConns()
	ops := m.ops()
	opts, _ := json.Marshal(ops.options())
	m.rec.Options = string(opts)
	if !req.DryRun {
		if err := c.Journal.Create(ctx, m.rec); err != nil {
			return m.res, err
		}
		m.journaled = true
	}
	if err := m.preflight(ctx, ops); err != nil {
		return m.refused(ctx, err)
	}
	if err := ops.reserve(ctx); err != nil {
		return m.refused(ctx, err)
	}
	if req.DryRun {
		m.res.State = "dry_run"
		if req.Kind == KindCold {
			m.res.State = "plan"
		}
		m.finished()
		return m.res, nil
	}
	return ops.run(ctx)
}

func (m *move) closeConns() {
	for _, h := range []virt.Host{m.srcConn, m.dstConn} {
		if h != nil {
			h.Close()
		}
	}
}

// finished dates the end of the move in its result.
func (m *move) finished() {
	m.res.FinishedAt = m.c.now()
	m.res.TotalMS = m.res.Total().Milliseconds()
}

// check records a pre-flight check in the result; it returns err.
func (m *move) check(name placement.Rule, err error, okDetail string) error {
	if err != nil {
		m.res.Checks = append(m.res.Checks, placement.Check{Name: name, Detail: err.Error()})
		return err
	}
	m.res.Checks = append(m.res.Checks, placement.Check{Name: name, OK: true, Detail: okDetail})
	return nil
}

// progress reports p with the move's identity filled in.
func (m *move) progress(p Progress) {
	if m.req.Progress == nil {
		return
	}
	p.ID, p.VM, p.Kind = m.rec.ID, m.req.VM, m.req.Kind
	p.StageName = journal.StageName(m.req.Kind, p.Stage)
	if p.Elapsed == 0 {
		p.Elapsed = m.c.now().Sub(m.res.StartedAt)
	}
	p.ElapsedMS = p.Elapsed.Milliseconds()
	switch {
	case m.req.Kind == KindLive && p.Live == nil:
		p.Live = &LiveProgress{}
	case m.req.Kind == KindCold && p.Cold == nil:
		p.Cold = &ColdProgress{}
	}
	if p.Live != nil {
		p.Live.ExpectedDowntimeMS = p.Live.ExpectedDowntime.Milliseconds()
	}
	m.req.Progress(p)
}

// refused records a refusal in the journal; nothing was changed on any host.
// A failure of the state database is no refusal: it is returned as it is.
func (m *move) refused(ctx context.Context, err error) (*Result, error) {
	if !errors.Is(err, ErrRefused) && !errors.Is(err, journal.ErrDatabase) {
		err = refuse(ErrInvalidRequest, err, "%v", err)
	}
	m.res.State, m.res.Error = journal.StateRefused, err.Error()
	m.res.Source, m.res.Dest, m.res.VMUUID = m.src.Name, m.dst.Name, m.info.UUID
	m.finished()
	m.log.WithError(err).Info("move refused")
	if m.journaled {
		bg := context.WithoutCancel(ctx)
		// A refusal after the reservation (say, while planning) frees it.
		if jerr := m.c.Journal.Release(bg, m.rec.ID); jerr != nil {
			m.log.WithError(jerr).Error("journal")
		}
		cols := map[string]any{"vm_uuid": m.info.UUID, "src_name": m.src.Name, "src_uri": m.src.URI, "dst_name": m.dst.Name, "dst_uri": m.dst.URI}
		if jerr := m.c.Journal.Finish(bg, m.rec.ID, journal.StateRefused, err.Error(), cols); jerr != nil {
			m.log.WithError(jerr).Error("journal")
		}
		m.handBack(bg)
	}
	return m.res, err
}

// preflight runs what every kind checks before its plan: the request, the
// hosts, the VM, the claim, the hooks' consent and the destination.
func (m *move) preflight(ctx context.Context, ops kindOps) error {
	if err := m.validate(); err != nil {
		return err
	}
	if err := m.resolveHosts(); err != nil {
		return err
	}
	// Stage 0: pre-migration. Find the VM.
	if err := m.findSource(ctx); err != nil {
		return err
	}
	m.res.Source, m.res.VMUUID = m.src.Name, m.info.UUID
	m.log = m.log.WithFields(logrus.Fields{"src": m.src.Name, "dst": m.dst.Name})
	if m.src.URI == m.dst.URI {
		return refuse(ErrSameHost, nil, "VM %s already runs on %s, the requested destination", m.req.VM, m.dst.Name)
	}
	if err := ops.checkSource(); err != nil {
		return err
	}
	if !m.req.DryRun {
		// One VM, one move: the check and the claim are one transaction,
		// before the job check, so that the loser of a race names the winner.
		if err := ops.claim(ctx); err != nil {
			return err
		}
	}
	if js, err := m.dom.JobStats(false); err == nil && js.Type != virt.JobNone && js.Type != "" {
		return refuse(ErrBusy, nil, "VM %s has a job in progress on %s (another migration?); wait for it or abort it with virsh domjobabort", m.info.Name, m.src.Name)
	}
	if err := m.snapshot(ctx); err != nil {
		return err
	}
	if err := m.preMigrationHooks(ctx); err != nil {
		return err
	}
	// Stage 1: reservation. The destination's pre-flight.
	conn, err := m.c.dial(ctx, m.dst)
	if err := m.check(placement.RuleReachable, err, m.dst.URI); err != nil {
		return err
	}
	m.dstConn = conn
	if m.srcID, err = m.srcConn.Identity(); err != nil {
		return refuse(ErrUnreachable, err, "source %s: %v", m.src.Name, err)
	}
	if err := ops.beforeDestination(ctx); err != nil {
		return err
	}
	cand, err := m.c.gather(ctx, m.dst, conn, nil, m.info, m.spec, m.src, m.srcID, !ops.needs().Stopped)
	if err != nil {
		return err
	}
	m.dstID.UUID, m.dstFree = cand.HostUUID, cand.FreeMemoryBytes
	return m.judge(ops.needs(), cand)
}

// validate checks the request's own fields; nothing is looked up.
func (m *move) validate() error {
	req := m.req
	if !inventory.ValidName(req.VM) {
		if _, err := uuid.Parse(req.VM); err != nil {
			return refuse(ErrInvalidRequest, nil, "VM %q is not a valid name (letters, digits, '.', '_', '-') nor a UUID", req.VM)
		}
	}
	if req.Kind != KindLive && req.Kind != KindCold {
		return refuse(ErrInvalidRequest, nil, "unknown kind of move %q: live or cold", req.Kind)
	}
	if req.To == "" {
		return refuse(ErrInvalidRequest, nil, "no destination: give --to HOST (an inventory name or a libvirt URI)")
	}
	if req.Live.Timeout < 0 || req.Live.MaxDowntime < 0 || req.Cold.ShutdownTimeout < 0 {
		return refuse(ErrInvalidRequest, nil, "durations must be positive")
	}
	return req.CheckRanges()
}

// resolveHosts finds the destination (and the source if given).
func (m *move) resolveHosts() error {
	var err error
	if m.dst, err = m.c.Resolve(m.req.To); err != nil {
		return err
	}
	m.res.Dest = m.dst.Name
	if m.req.From == "" {
		return nil
	}
	if m.src, err = m.c.Resolve(m.req.From); err != nil {
		return err
	}
	if m.src.URI == m.dst.URI {
		return refuse(ErrSameHost, nil, "source and destination are both %s: nothing to move", m.src.Name)
	}
	return nil
}

// snapshot keeps the VM's definition and whereabouts in the journal.
func (m *move) snapshot(ctx context.Context) error {
	xml, err := m.dom.XML(false)
	if err != nil {
		return refuse(ErrUnreachable, err, "reading VM %s's definition on %s: %v", m.info.Name, m.src.Name, err)
	}
	m.rec.VMXML = xml
	if m.journaled {
		if err := m.c.Journal.Update(ctx, m.rec.ID, map[string]any{"vm_name": m.info.Name, "vm_uuid": m.info.UUID,
			"src_name": m.src.Name, "src_uri": m.src.URI, "dst_name": m.dst.Name, "dst_uri": m.dst.URI,
			"memory_bytes": int64(m.info.MemoryBytes), "vm_xml": xml}); err != nil {
			return err
		}
	}
	m.progress(Progress{Stage: journal.StagePreMigration, Message: fmt.Sprintf("%s found %s on %s", m.info.Name, m.info.State, m.src.Name)})
	return nil
}

// handBack returns an interrupted cold move this run took over to its
// state: its copies are still on the destination for the next run or for
// recover.
func (m *move) handBack(ctx context.Context) {
	if m.cold == nil || m.cold.prevRow == nil {
		return
	}
	p := m.cold.prevRow
	if err := m.c.Journal.Update(ctx, p.ID, map[string]any{"state": p.State, "finished_at": nil, "notes": p.Notes}); err != nil {
		m.log.WithError(err).Error("journal: handing the interrupted move back")
	}
}

// slotPoll is how often a move waiting for a move slot asks again.
const slotPoll = 500 * time.Millisecond

// acquireSlot takes the move slot src→dst within the request's limits
// (merged with the controller's), waiting for one with WaitForSlot.
func (m *move) acquireSlot(ctx context.Context) error {
	lim := m.req.Limits
	if lim.MaxIncoming == 0 {
		lim.MaxIncoming = m.c.Limits.MaxIncoming
	}
	if lim.MaxOutgoing == 0 {
		lim.MaxOutgoing = m.c.Limits.MaxOutgoing
	}
	src, dst := journal.SlotHost{Key: m.srcID.UUID, Name: m.src.Name}, journal.SlotHost{Key: m.dstID.UUID, Name: m.dst.Name}
	for {
		err := slotRefusal(m.c.Journal.AcquireSlot(ctx, m.rec.ID, src, dst, lim.MaxIncoming, lim.MaxOutgoing))
		if err == nil || !m.req.WaitForSlot || !errors.Is(err, ErrLimit) {
			return err
		}
		m.progress(Progress{Stage: journal.StageReservation, Message: "waiting for a move slot: " + err.Error()})
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up waiting for a move slot: %w", err)
		case <-time.After(slotPoll):
		}
	}
}
