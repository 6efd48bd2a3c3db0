package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/ferryvm/ferry/coldmove"
	"github.com/ferryvm/ferry/hooks"
	"github.com/ferryvm/ferry/journal"
	"github.com/ferryvm/ferry/placement"
	"github.com/ferryvm/ferry/units"
	"github.com/ferryvm/ferry/virt"
)

// Cold moves (DESIGN.md §4) are journaled as kind "cold", their six stages
// named checks, reservation, copy, defined, commitment, done
// (journal.StageName). Each artifact's state, destination path, bytes and
// checksum are kept beside the row, so recover can revert or finish and a
// re-run can resume.

// coldState is what a cold move adds to the common one.
type coldState struct {
	prev     map[string]coldmove.Artifact // an interrupted run's artifacts, by key
	prevRow  *journal.Record              // that run's row, taken over by this one
	plan     *coldmove.Plan
	copyFrom time.Time
}

type coldOps struct{ *move }

func (m coldOps) options() map[string]any {
	o := m.req.Cold
	return map[string]any{"cold": true, "to_pool": o.ToPool, "keep_source": o.KeepSource, "start": o.Start,
		"shutdown": o.Shutdown, "shutdown_timeout_ms": o.ShutdownTimeout.Milliseconds(), "force": o.Force, "bandwidth_mibps": m.req.BandwidthMiBps}
}

func (m coldOps) checkSource() error {
	o := m.req.Cold
	switch {
	case m.info.State.Active() && !o.Shutdown:
		return m.check("vm-stopped", refuse(ErrInvalidRequest, nil, "VM %s is %s on %s: a cold move needs it shut off; move it live (ferry migrate %s --to %s) or let ferry stop it first (--shutdown, with --force to destroy it after --shutdown-timeout)",
			m.info.Name, m.info.State, m.src.Name, m.info.Name, m.req.To), "")
	case m.info.State.Active():
		_ = m.check("vm-stopped", nil, fmt.Sprintf("%s is %s: it will be shut down first (timeout %s, force %v)", m.info.Name, m.info.State, o.ShutdownTimeout, o.Force))
	default:
		_ = m.check("vm-stopped", nil, fmt.Sprintf("%s is %s on %s", m.info.Name, m.info.State, m.src.Name))
	}
	if !m.info.Persistent {
		return refuse(ErrInvalidRequest, nil, "VM %s is transient on %s: a cold move needs a persistent definition", m.info.Name, m.src.Name)
	}
	if o.Start {
		var err error
		if m.spec, err = m.dom.Spec(); err != nil {
			return refuse(ErrUnreachable, err, "reading VM %s's definition on %s: %v", m.info.Name, m.src.Name, err)
		}
	}
	return nil
}

// claim makes this move the VM's one unfinished move (Journal.Claim): it
// refuses a VM with an unfinished move, except an interrupted cold move to
// the same destination whose process is gone, which this run takes over
// and resumes.
func (m coldOps) claim(ctx context.Context) error {
	open, err := m.c.Journal.Claim(ctx, m.rec.ID, m.info.UUID, nil, func(open *journal.Record, alive bool) bool {
		return open.Kind == KindCold && open.DestURI == m.dst.URI && open.SourceURI == m.src.URI &&
			open.Stage < journal.StageCommitment && (open.State == journal.StateFailed || !alive)
	})
	if err != nil || open == nil {
		return claimRefusal(err)
	}
	m.cold.prevRow = open
	arts, err := m.c.Journal.Artifacts(ctx, open.ID)
	if err != nil {
		return err
	}
	m.cold.prev = map[string]coldmove.Artifact{}
	for _, a := range arts {
		m.cold.prev[a.Key()] = a
	}
	m.res.Cold.ResumedFrom = open.ID
	// Its space is counted again by this run's reservation.
	if err := m.c.Journal.Release(ctx, open.ID); err != nil {
		return err
	}
	_ = m.check("resume", nil, fmt.Sprintf("resuming the interrupted cold move %s (%d artifacts recorded)", open.ID, len(arts)))
	return nil
}

// beforeDestination removes the definition an interrupted run of this move
// made on the destination (this run defines it again): it is ours, shut off,
// with the VM's UUID.
func (m coldOps) beforeDestination(context.Context) error {
	p := m.cold.prevRow
	if p == nil || p.Stage < journal.StageStopAndCopy {
		return nil
	}
	d, err := m.dstConn.LookupDomain(m.info.UUID)
	if errors.Is(err, virt.ErrNotFound) {
		return nil
	}
	if err != nil {
		return refuse(ErrUnreachable, err, "destination %s: %v", m.dst.Name, err)
	}
	if di, _ := d.Info(); di.UUID != m.info.UUID || di.State.Active() {
		return nil // not ours to remove: the pre-flight reports the clash
	}
	if err := d.Undefine(true); err != nil {
		return refuse(ErrUnreachable, err, "removing the interrupted run's definition on %s: %v", m.dst.Name, err)
	}
	return nil
}

// needs: a cold move asks for CPU and memory only when it starts the VM.
func (m coldOps) needs() placement.VMNeeds {
	return placement.VMNeeds{Name: m.info.Name, MemoryBytes: m.info.MemoryBytes, VCPUs: m.info.VCPUs, Stopped: !m.req.Cold.Start}
}

// reserve plans the artifacts, checks and reserves the destination pool's
// space and holds a move slot.
func (m coldOps) reserve(ctx context.Context) error {
	plan, err := m.planArtifacts()
	if err != nil {
		return err
	}
	if !m.req.DryRun {
		if err := m.acquireSlot(ctx); err != nil {
			return m.check(placement.RuleBusy, err, "")
		}
	}
	if err := m.reserveStorage(ctx, plan); err != nil {
		return err
	}
	if m.journaled {
		if err := m.c.Journal.EnterStage(ctx, m.rec.ID, journal.StageReservation, m.c.now(), map[string]any{"data_total": int64(plan.BytesToMove)}); err != nil {
			return err
		}
		for _, a := range plan.Artifacts {
			if err := m.c.Journal.SaveArtifact(ctx, m.rec.ID, a); err != nil {
				return err
			}
		}
	}
	how := "sparse streams"
	if !plan.Sparse {
		how = plan.SparseNote
	}
	m.coldProgress(coldmove.Progress{Step: "plan", Message: fmt.Sprintf("%d artifacts, %s to move (%s of files), %s", len(plan.Artifacts),
		units.IEC(plan.BytesToMove), units.IEC(plan.TotalBytes), how)}, journal.StageReservation)
	return nil
}

// planArtifacts lists what moves and checks the destination pools' space.
func (m coldOps) planArtifacts() (*coldmove.Plan, error) {
	srcS, err := virt.StorageOf(m.srcConn)
	if err != nil {
		return nil, refuse(ErrInvalidRequest, err, "source %s: %v", m.src.Name, err)
	}
	dstS, err := virt.StorageOf(m.dstConn)
	if err != nil {
		return nil, refuse(ErrInvalidRequest, err, "destination %s: %v", m.dst.Name, err)
	}
	plan, err := coldmove.BuildPlan(m.rec.VMXML, srcS, dstS, coldmove.PlanOptions{ToPool: m.req.Cold.ToPool, SourceName: m.src.Name, Previous: m.cold.prev})
	if err != nil {
		return nil, refuse(ErrInvalidRequest, err, "planning the move of %s: %v", m.info.Name, err)
	}
	m.cold.plan, m.res.Cold.Plan, m.res.Cold.Pools = plan, plan, plan.Pools
	if len(plan.Problems) > 0 {
		kind := ErrInvalidRequest
		for _, p := range plan.Pools {
			if !p.Enough {
				kind = ErrInsufficientStorage
			}
		}
		return nil, m.check("storage", refuse(kind, nil, "cannot move %s to %s: %s", m.info.Name, m.dst.Name, strings.Join(plan.Problems, "; ")), "")
	}
	var parts []string
	for _, p := range plan.Pools {
		if p.New {
			parts = append(parts, fmt.Sprintf("%s needs %s (new directory)", p.Path, units.IEC(p.NeedBytes)))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s needs %s of %s free", p.Path, units.IEC(p.NeedBytes), units.IEC(p.AvailableBytes)))
	}
	_ = m.check("storage", nil, strings.Join(parts, "; "))
	return plan, nil
}

// reserveStorage holds the space of the pool taking the disks (the first
// of the plan; the others were checked) against other moves in flight.
func (m coldOps) reserveStorage(ctx context.Context, plan *coldmove.Plan) error {
	if len(plan.Pools) == 0 {
		return nil
	}
	p := plan.Pools[0]
	key := "storage:" + m.dstID.UUID + ":" + p.Path
	noRoom := func(held uint64, cause error) error {
		return m.check("storage-reservations", refuse(ErrInsufficientStorage, cause, "not enough space in %s on %s once the moves in flight get theirs: %s needed, %s free, %s held",
			p.Path, m.dst.Name, units.IEC(p.NeedBytes), units.IEC(p.AvailableBytes), units.IEC(held)), "")
	}
	if m.req.DryRun {
		held, err := m.c.Journal.Reserved(ctx, key)
		if err != nil {
			return err
		}
		if held+p.NeedBytes > p.AvailableBytes {
			return noRoom(held, nil)
		}
		return nil
	}
	err := m.c.Journal.Reserve(ctx, m.rec.ID, key, m.dst.Name+":"+p.Path, p.NeedBytes, p.AvailableBytes)
	var nr *journal.NoRoomError
	if errors.As(err, &nr) {
		return noRoom(nr.Held, err)
	}
	return err
}

// coldProgress reports a copy step with its stage, rate and ETA.
func (m *move) coldProgress(p coldmove.Progress, s journal.Stage) {
	if m.req.Progress == nil {
		return
	}
	cp := &ColdProgress{Progress: p}
	if from := m.cold.copyFrom; !from.IsZero() {
		if el := m.c.now().Sub(from).Seconds(); el > 0.2 {
			cp.RateBytesPerSec = uint64(float64(p.MoveSentBytes) / el)
			if pos := float64(p.MovePositionBytes) / el; pos > 0 && p.MoveTotalBytes > p.MovePositionBytes {
				cp.ETAMS = int64(float64(p.MoveTotalBytes-p.MovePositionBytes) / pos * 1000)
			}
		}
	}
	pr := Progress{Stage: s, Message: p.Message, Cold: cp}
	if p.MoveTotalBytes > 0 { // the position in the files: a sparse copy skips holes
		pr.Percent = 100 * float64(p.MovePositionBytes) / float64(p.MoveTotalBytes)
	}
	m.progress(pr)
}

// coldRecorder journals a move's artifacts and stages.
type coldRecorder struct {
	m   *move
	ctx context.Context
	mu  sync.Mutex
	cur journal.Stage
}

func (r *coldRecorder) Artifact(a coldmove.Artifact) error {
	return r.m.c.Journal.SaveArtifact(r.ctx, r.m.rec.ID, a)
}

var coldStages = map[string]journal.Stage{
	coldmove.StageCopying: journal.StagePreCopy, coldmove.StageDefined: journal.StageStopAndCopy,
	coldmove.StageCommitted: journal.StageCommitment, coldmove.StageDone: journal.StageActivation,
}

func (r *coldRecorder) Stage(s string) error {
	st, ok := coldStages[s]
	if !ok {
		return nil
	}
	r.mu.Lock()
	r.cur = st
	r.mu.Unlock()
	if st == journal.StagePreCopy {
		r.m.cold.copyFrom = r.m.c.now()
	}
	return r.m.c.Journal.EnterStage(r.ctx, r.m.rec.ID, st, r.m.c.now(), nil)
}

func (r *coldRecorder) stage() journal.Stage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// run carries out the move once the checks passed and space is reserved.
func (m coldOps) run(ctx context.Context) (*Result, error) {
	bg := context.WithoutCancel(ctx)
	m.fire(bg, m.payload(hooks.Reservation))
	rec := &coldRecorder{m: m.move, ctx: bg, cur: journal.StageReservation}
	out, err := m.newColdMove(rec).Run(ctx)
	res := m.res.Cold
	res.Artifacts, res.SentBytes, res.Shutdown, res.StartedOnDest, res.Warnings = out.Artifacts, out.SentBytes, out.Shutdown, out.Started, out.Warnings
	m.finished()
	if err != nil {
		return m.coldFailed(bg, rec, out, err)
	}
	return m.coldDone(bg, rec, out)
}

// newColdMove is the copy job of the plan.
func (m coldOps) newColdMove(rec *coldRecorder) *coldmove.Move {
	srcS, _ := virt.StorageOf(m.srcConn)
	dstS, _ := virt.StorageOf(m.dstConn)
	mv := &coldmove.Move{Src: m.srcConn, Dst: m.dstConn, SrcStorage: srcS, DstStorage: dstS, Domain: m.dom, Plan: m.cold.plan,
		KeepSource: m.req.Cold.KeepSource, Start: m.req.Cold.Start, Previous: m.cold.prev, Recorder: rec,
		BandwidthBytesPerSec: uint64(BandwidthBytesPerSec(m.req.BandwidthMiBps)),
		Observe:              func() (*virt.HostUsage, error) { return virt.ObserveUsage(m.srcConn) },
		Progress:             func(p coldmove.Progress) { m.coldProgress(p, rec.stage()) },
		OnStep: func(ev coldmove.StepEvent) {
			l := m.log.WithFields(logrus.Fields{"step": ev.Step, "phase": ev.Phase})
			if ev.Err != nil {
				l.WithError(ev.Err).Warn("cold move step")
			} else {
				l.Info("cold move step")
			}
		}}
	if m.info.State.Active() {
		mv.Shutdown = &coldmove.ShutdownPolicy{Timeout: m.req.Cold.ShutdownTimeout, Force: m.req.Cold.Force}
	}
	return mv
}

// coldFailed settles a failed copy: rolled back when the steps undid
// everything, otherwise left for recover.
func (m coldOps) coldFailed(bg context.Context, rec *coldRecorder, out *coldmove.Outcome, err error) (*Result, error) {
	c, id := m.c, m.rec.ID
	cols := map[string]any{"data_sent": out.SentBytes}
	rb, ok := coldmove.IsRollback(err)
	if ok && rb.Complete() {
		msg := err.Error()
		if out.Shutdown != "" {
			msg += "; the VM was started again on the source"
		}
		m.res.State, m.res.Error = journal.StateRolledBack, msg
		_ = c.Journal.Release(bg, id)
		if jerr := c.Journal.Finish(bg, id, journal.StateRolledBack, msg, cols); jerr != nil {
			m.log.WithError(jerr).Error("journal")
		}
		p := m.payload(hooks.Rollback)
		p.Stage, p.Error = journal.StageName(KindCold, rec.stage()), msg
		m.fire(bg, p)
		return m.res, fmt.Errorf("%w: %s stays on %s, nothing of it remains on %s: %w", ErrRolledBack, m.info.Name, m.src.Name, m.dst.Name, err)
	}
	m.res.State, m.res.Error = journal.StateFailed, err.Error()
	cols["state"], cols["error"] = journal.StateFailed, err.Error()
	_ = c.Journal.Update(bg, id, cols)
	if ok {
		return m.res, fmt.Errorf("%w (ferry recover will remove the copies from %s; the source was not touched): %w", ErrNeedsRecovery, m.dst.Name, err)
	}
	return m.res, fmt.Errorf("%w (ferry recover will finish removing the source): %w", ErrNeedsRecovery, err)
}

// coldDone completes a move whose copy committed.
func (m coldOps) coldDone(bg context.Context, rec *coldRecorder, out *coldmove.Outcome) (*Result, error) {
	c, id := m.c, m.rec.ID
	m.fire(bg, m.payload(hooks.Activation))
	_ = c.Journal.Release(bg, id)
	var notes []string
	notes = append(notes, out.Warnings...)
	notes = append(notes, m.res.HookErrors...)
	if out.Started {
		notes = append(notes, "started on "+m.dst.Name)
	}
	if p := m.cold.prevRow; p != nil {
		notes = append(notes, "resumed "+p.ID)
	}
	cols := map[string]any{"data_sent": out.SentBytes, "notes": strings.Join(notes, "; ")}
	if rec.stage() < journal.StageActivation {
		_ = c.Journal.EnterStage(bg, id, journal.StageActivation, c.now(), nil)
	}
	if jerr := c.Journal.Finish(bg, id, journal.StateCompleted, "", cols); jerr != nil {
		m.log.WithError(jerr).Error("journal")
	}
	m.res.State = journal.StateCompleted
	m.log.WithField("sent_bytes", out.SentBytes).Info("cold move completed")
	return m.res, nil
}
